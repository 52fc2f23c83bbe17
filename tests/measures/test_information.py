"""Tests of latephase.measures.information against ground truth, naive references,
invariances and error messages.  Every tolerance is stated next to its assertion with the
reason for its size (numbers measured over 10-30 seeds during development)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist
from scipy.special import logsumexp
from scipy.stats import ortho_group
from threadpoolctl import threadpool_limits

from latephase.errors import ConfigError
from latephase.measures.information import (
    ESTIMATORS,
    InfoResult,
    binning,
    estimate,
    kl_knn,
    ksg,
    nhsic,
    noise_channel,
    subsample,
)

# --------------------------------------------------------------------------------------------
# helpers


@pytest.fixture(autouse=True)
def _one_blas_thread():
    # One BLAS thread: the suite is sized for one core, and multi-threaded OpenBLAS on a
    # loaded machine made single nHSIC calls 10-100x slower (busy-waiting threads).
    with threadpool_limits(1):
        yield


def correlated_gaussian(
    n: int, d: int, rho: float, seed: int
) -> tuple[np.ndarray, np.ndarray, float]:
    """X, Z in R^d with corr(X_i, Z_i) = rho per pair, then each side mixed by its own random
    invertible linear map (MI is invariant, so PCA/whitening must undo it).  Returns the
    analytic MI -1/2 sum_i log(1 - rho^2)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    z = rho * x + math.sqrt(1.0 - rho**2) * rng.standard_normal((n, d))
    if d > 1:
        ax = ortho_group.rvs(d, random_state=seed) * rng.uniform(0.5, 3.0, d)
        az = ortho_group.rvs(d, random_state=seed + 1) * rng.uniform(0.5, 3.0, d)
        x, z = x @ ax, z @ az + 5.0
    return x, z, -0.5 * d * math.log(1.0 - rho**2)


def dependent_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x [n, 20] (3 dominant directions), a bounded nonlinear noisy representation
    z [n, 10] = tanh(x W / 3) + noise driven mostly by them, and 4 labels y from x."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 20)) * np.r_[3.0, 2.5, 2.0, np.full(17, 0.5)]
    w = np.random.default_rng(0).standard_normal((20, 10)) / math.sqrt(20)
    w[:3] *= 3.0
    z = np.tanh(x @ w / 3.0) + 0.1 * rng.standard_normal((n, 10))
    y = (x[:, 0] > 0).astype(int) + 2 * (x[:, 1] > 0).astype(int)
    return x, z, y


def naive_nhsic(a: np.ndarray, b: np.ndarray, kind_b: str, w_a: float, w_b: float, eps: float):
    """Textbook NOCCO with explicit H and matrix inverses (slow, obviously correct)."""
    n = a.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    ka = np.exp(-cdist(a, a, "sqeuclidean") / w_a)
    kb = b @ b.T if kind_b == "linear" else np.exp(-cdist(b, b, "sqeuclidean") / w_b)
    ra = h @ ka @ h @ np.linalg.inv(h @ ka @ h + n * eps * np.eye(n))
    rb = h @ kb @ h @ np.linalg.inv(h @ kb @ h + n * eps * np.eye(n))
    return float(np.trace(ra @ rb))


# --------------------------------------------------------------------------------------------
# k-NN estimators against ground truth


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_knn_estimators_match_analytic_gaussian_mi(d: int, rho: float) -> None:
    # dim_z = dim_x = d so PCA is lossless.  Tolerance max(0.1 nats, 10 %) (the brief's):
    # measured |bias| <= 0.07 and sd <= 0.04 at joint dims <= 6, so this is >= 2 sd of slack.
    x, z, true = correlated_gaussian(2000, d, rho, seed=10 * d + int(10 * rho))
    y = np.zeros(2000, dtype=int)
    tol = max(0.1, 0.1 * true)
    est_kl = kl_knn(x, z, y, dim_z=d, dim_x=d, seed=1).values["izx"]
    est_ksg = ksg(x, z, dim_z=d, dim_x=d, seed=1).values["izx"]
    assert abs(est_kl - true) < tol, (est_kl, true)
    assert abs(est_ksg - true) < tol, (est_ksg, true)


def compressible_gaussian(n: int, d: int, rho: float, seed: int):
    """X, Z in R^d, pairs (X_i, Z_i) with correlation rho and scale s_i, s decreasing with a
    clear gap after the third (3, 2.2, 1.6 | 0.6, 0.5, ...), then each side rotated by its own
    random orthogonal map.  The top-3 principal subspace of each side is spanned by the first
    three pairs, so the MI that lossy compression to 3 PCA dims targets is analytic:
    -1/2 sum_{i < min(d, 3)} log(1 - rho^2) (the remaining pairs are independent of it)."""
    rng = np.random.default_rng(seed)
    s = np.array([3.0, 2.2, 1.6, 0.6, 0.5, 0.4, 0.3, 0.2])[:d]
    u = rng.standard_normal((n, d))
    x = u * s
    z = (rho * u + math.sqrt(1.0 - rho**2) * rng.standard_normal((n, d))) * s
    if d > 1:
        x = x @ ortho_group.rvs(d, random_state=seed)
        z = z @ ortho_group.rvs(d, random_state=seed + 1) - 2.0
    return x, z, -0.5 * min(d, 3) * math.log(1.0 - rho**2)


@pytest.mark.parametrize("d", range(1, 9))
@pytest.mark.parametrize("rho", [0.3, 0.6])
def test_lossy_compression_pipeline_gaussian_dims_1_to_8(d: int, rho: float) -> None:
    # The estimators with their DEFAULT lossy compression (PCA to 3 dims per side) on
    # Gaussian (X, Z) of dimension 1..8: the estimate must match the analytic MI of the
    # compressed variables (up to 0.67 nats here).  Tolerance max(0.1 nats, 10 %) (the
    # issue's): at these MI values the 3+3-dim k-NN bias is <= 0.07 and its sd <= 0.04
    # (measured), and the sample PCA subspace at n = 2000 with an eigen-gap of 1.6^2 : 0.6^2
    # is within ~0.02 rad of the population one.  Not covered, and a documented limitation:
    # at rho = 0.8 (1.53 nats over 3 pairs) KSG's bias is -0.05 to -0.17 and KL's up to -0.12,
    # at or just past the 10 % line (k-NN MI estimators underestimate large MI).
    x, z, target = compressible_gaussian(2000, d, rho, seed=100 + 10 * d + int(10 * rho))
    y = np.zeros(2000, dtype=int)
    tol = max(0.1, 0.1 * target)
    est_kl = kl_knn(x, z, y, seed=2).values["izx"]
    est_ksg = ksg(x, z, seed=2).values["izx"]
    assert abs(est_kl - target) < tol, (est_kl, target)
    assert abs(est_ksg - target) < tol, (est_ksg, target)


@pytest.mark.xfail(
    strict=True,
    reason="known limitation: at n=2000 the 3H KL estimator is biased by about -0.12 nats at "
    "dims 4+4 and -0.9 nats at 8+8 (rho=0.5); KSG by -0.08 and -0.5. Documented in kl_knn.",
)
@pytest.mark.parametrize("d", [4, 8])
def test_knn_estimators_high_dim_gaussian_known_bias(d: int) -> None:
    # Kept as a strict xfail so the limitation stays visible: if an improvement makes these
    # pass, the xfail must be removed (and the docstring's bias table updated).
    x, z, true = correlated_gaussian(2000, d, 0.5, seed=7 + d)
    y = np.zeros(2000, dtype=int)
    tol = max(0.1, 0.1 * true)
    assert abs(kl_knn(x, z, y, dim_z=d, dim_x=d).values["izx"] - true) < tol
    assert abs(ksg(x, z, dim_z=d, dim_x=d).values["izx"] - true) < tol


@pytest.mark.parametrize("seed", range(5))
def test_kl_knn_independent_within_3_standard_errors(seed: int) -> None:
    # Independent X [20 dims] and Z [10 dims], default parameters (PCA to 3+3).  True I = 0.
    # In a 30-seed run the estimates had mean +0.009, sd 0.023, and the jackknife SE averaged
    # 0.041 (10-90 % range 0.027-0.056): conservative by ~1.7x here, which the calibration
    # test below bounds (< 2x).  The SE is also capped at 0.1 nats (4x the true sd) so a
    # blown-up SE cannot make this test pass.
    rng = np.random.default_rng(100 + seed)
    x = rng.standard_normal((2000, 20))
    z = rng.standard_normal((2000, 10)) * rng.uniform(0.1, 10, 10)
    y = rng.integers(0, 10, 2000)
    res = kl_knn(x, z, y, seed=seed)
    se = res.stderr["izx"]
    assert 0.0 < se < 0.1
    assert abs(res.values["izx"]) < 3 * se, (res.values["izx"], se)
    # I(Z;Y) is also 0 here; same band.
    assert abs(res.values["izy"]) < 3 * res.stderr["izy"] + 1e-12


@pytest.mark.parametrize("case", ["independent", "gaussian", "tanh"])
def test_knn_standard_error_is_calibrated(case: str) -> None:
    # The reported SE should match the actual spread over independent datasets.  The
    # delete-a-group jackknife is conservative on average (Efron-Stein); development runs
    # (25 seeds) gave SE/sd = 1.7 (independent, 3+3), 1.3 (Gaussian, 2+2), 1.24 (clustered)
    # and 0.92 (tanh, near-deterministic, where a 1/n subsampling SE was 2x too small).  20
    # replicates know the sd to about +-16 %, so we accept SE/sd in [0.7, 2.2]: neither too
    # small (dishonest) nor absurdly inflated.
    est, se = [], []
    for s in range(20):
        if case == "independent":
            rng = np.random.default_rng(300 + s)
            x, z = rng.standard_normal((1000, 20)), rng.standard_normal((1000, 10))
            y = rng.integers(0, 10, 1000)
        elif case == "gaussian":
            x, z, _ = correlated_gaussian(1000, 2, 0.6, seed=200 + s)
            y = np.zeros(1000, dtype=int)
        else:
            x, z, y = dependent_data(1000, seed=200 + s)
        res = kl_knn(x, z, y, seed=s)
        est.append(res.values["izx"])
        se.append(res.stderr["izx"])
    ratio = float(np.mean(se) / np.std(est, ddof=1))
    assert 0.7 < ratio < 2.2, ratio


def mixture_reference(k_classes: int, radius: float, m: int = 200_000) -> float:
    """Monte-Carlo I(Z;Y) for Z | Y=c ~ N(mu_c, I_2), uniform Y, means on a circle:
    I = E[log p(z|y) - log p(z)] with the exact mixture density (independent of the module).
    MC standard error < 0.002 nats at m = 2e5."""
    rng = np.random.default_rng(12345)
    ang = 2 * np.pi * np.arange(k_classes) / k_classes
    mu = radius * np.c_[np.cos(ang), np.sin(ang)]
    y = rng.integers(0, k_classes, m)
    z = mu[y] + rng.standard_normal((m, 2))
    loglik = -0.5 * ((z[:, None, :] - mu[None]) ** 2).sum(-1)  # [m, K], shared constant cancels
    return float(np.mean(loglik[np.arange(m), y] - logsumexp(loglik, axis=1) + np.log(k_classes)))


@pytest.mark.parametrize(("k_classes", "radius"), [(2, 1.5), (3, 2.5), (5, 2.5), (10, 4.0)])
def test_kl_knn_izy_gaussian_mixture(k_classes: int, radius: float) -> None:
    # Tolerance 0.1 nats: measured bias <= 0.03 and sd <= 0.03 over 10 seeds for K = 2..10.
    rng = np.random.default_rng(k_classes)
    ang = 2 * np.pi * np.arange(k_classes) / k_classes
    mu = radius * np.c_[np.cos(ang), np.sin(ang)]
    y = rng.integers(0, k_classes, 2000)
    z = mu[y] + rng.standard_normal((2000, 2))
    x = rng.standard_normal((2000, 5))
    res = kl_knn(x, z, y, dim_z=2, dim_x=2)
    assert abs(res.values["izy"] - mixture_reference(k_classes, radius)) < 0.1


def test_kl_knn_clustered_marginals_null_bias_is_reported() -> None:
    # Known limitation of the 3H formula (the paper's estimator): with clustered marginals
    # (10 tight classes, as after neural collapse) the joint space holds 100 small clusters
    # and h(Z,X) is overestimated, so at independence I(Z;X) comes out near -0.8 nats
    # (measured -0.83 +- 0.04 on 784-d inputs).  izx_null reports that level; KSG does not
    # have the bias (within 3 SE of 0).  Bands: null < -0.3 (far from 0) and
    # |estimate - null| < 3 sqrt(2) SE.
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 2000)
    x = rng.standard_normal((2000, 50)) + 2.0 * rng.standard_normal((10, 50))[y]
    z = np.maximum(x @ rng.standard_normal((50, 30)), 0.0)
    z_shuf = z[np.random.default_rng(1).permutation(2000)]
    res = kl_knn(x, z_shuf, y)
    assert res.values["izx_null"] < -0.3
    assert abs(res.values["izx"] - res.values["izx_null"]) < 3 * math.sqrt(2) * res.stderr["izx"]
    k = ksg(x, z_shuf)
    assert abs(k.values["izx"]) < 3 * k.stderr["izx"]


def test_kl_knn_izy_bounded_and_redundancy_consistent() -> None:
    x, z, y = dependent_data(1500, seed=3)
    res = kl_knn(x, z, y)
    # I(Z;Y) <= H(Y) = log 4 for 4 balanced classes; 0.05 nats of estimator noise allowed.
    assert res.values["izy"] < math.log(4) + 0.05
    assert res.values["redundancy"] == pytest.approx(res.values["izx"] - res.values["izy"])


# --------------------------------------------------------------------------------------------
# shuffling one side (the reference implementation's pairing bug)


def test_shuffling_one_side_destroys_dependence() -> None:
    x, z, y = dependent_data(1500, seed=0)
    z_shuf = z[np.random.default_rng(1).permutation(len(z))]  # x and y keep their order
    paired = kl_knn(x, z, y)
    broken = kl_knn(x, z_shuf, y)
    # kl_knn: for these bounded (tanh) marginals the 3H estimator's value at independence is
    # not 0 but about -0.25 nats (izx_null, one seeded re-pairing).  The aligned estimate is
    # > 10 SE above that null; the mis-paired one is within 3 sqrt(2) SE of it (two noisy
    # estimates of the same quantity).  I(Z;Y) has no such bias here: within 3 SE of 0.
    assert paired.values["izx"] - paired.values["izx_null"] > 10 * paired.stderr["izx"]
    se = broken.stderr["izx"]
    assert abs(broken.values["izx"] - broken.values["izx_null"]) < 3 * math.sqrt(2) * se
    assert abs(broken.values["izy"]) < 3 * broken.stderr["izy"]
    # KSG is unbiased at independence: the mis-paired estimate is within 3 SE of 0.
    k_paired, k_broken = ksg(x, z), ksg(x, z_shuf)
    assert k_paired.values["izx"] > 10 * k_paired.stderr["izx"]
    assert abs(k_broken.values["izx"]) < 3 * k_broken.stderr["izx"]
    # nHSIC: the mis-paired value falls to its permutation-null mean Tr(R_Z)Tr(R_X)/(n-1)
    # (nHSIC is not 0 under independence).  The aligned excess over the null is large; the
    # shuffled excess is < 5 % of it (measured 0.5 %).
    for bw in ("median", "paper"):
        hp = nhsic(x, z, y, n=600, bandwidth=bw).values
        hb = nhsic(x, z_shuf, y, n=600, bandwidth=bw).values
        excess = hp["nhsic_zx"] - hp["nhsic_zx_null"]
        assert excess > 1.0
        assert abs(hb["nhsic_zx"] - hb["nhsic_zx_null"]) < 0.05 * excess
        excess_y = hp["nhsic_zy"] - hp["nhsic_zy_null"]
        assert excess_y > 0.5
        assert abs(hb["nhsic_zy"] - hb["nhsic_zy_null"]) < 0.05 * excess_y


# --------------------------------------------------------------------------------------------
# nHSIC


@pytest.mark.parametrize("bandwidth", ["median", "paper"])
def test_nhsic_matches_naive_reference(bandwidth: str) -> None:
    # Same numbers as a textbook implementation (explicit H, inverses): relative 1e-8 allows
    # for the Cholesky route vs explicit inverses at condition number <= 1/eps = 1e5.
    x, z, y = dependent_data(200, seed=5)
    res = nhsic(x, z, y, bandwidth=bandwidth)
    w_z, w_x = float(res.params["width_z"]), float(res.params["width_x"])  # type: ignore[arg-type]
    if bandwidth == "paper":
        assert w_z == 2 * 25.0 * 10 and w_x == 2 * 25.0 * 20  # 2 sigma^2 dim, sigma = 5
    else:
        med = np.median(cdist(z, z, "sqeuclidean")[np.triu_indices(200, 1)])
        assert w_z == pytest.approx(2 * med, rel=1e-12)
    onehot = np.eye(4)[y]
    ref_zx = naive_nhsic(z, x, "gauss", w_z, w_x, 1e-5)
    ref_zy = naive_nhsic(z, onehot, "linear", w_z, 1.0, 1e-5)
    assert res.values["nhsic_zx"] == pytest.approx(ref_zx, rel=1e-8)
    assert res.values["nhsic_zy"] == pytest.approx(ref_zy, rel=1e-8)
    assert res.values["redundancy"] == pytest.approx(ref_zx - ref_zy, rel=1e-8)


def test_nhsic_permutation_and_scale_invariance() -> None:
    x, z, y = dependent_data(300, seed=2)  # n=300 <= default n=1000: every row is used
    perm = np.random.default_rng(0).permutation(300)
    base = nhsic(x, z, y, bandwidth="median").values
    permuted = nhsic(x[perm], z[perm], y[perm], bandwidth="median").values
    scaled = nhsic(x, 37.0 * z, y, bandwidth="median").values
    for key in ("nhsic_zx", "nhsic_zy", "redundancy"):
        # a common row permutation or a rescaling only reorders/rounds the sums: 1e-9 rel.
        assert permuted[key] == pytest.approx(base[key], rel=1e-9)
        assert scaled[key] == pytest.approx(base[key], rel=1e-9)
    # The paper's fixed width 2 sigma^2 dim is NOT scale invariant: a 37x larger z makes the
    # Z kernel nearly the identity and nHSIC(Z;X) moves to a different value (> 10 % here).
    paper = nhsic(x, z, y, bandwidth="paper").values
    paper_scaled = nhsic(x, 37.0 * z, y, bandwidth="paper").values
    assert abs(paper_scaled["nhsic_zx"] - paper["nhsic_zx"]) > 0.1 * paper["nhsic_zx"]
    # ... but it is still invariant to a common permutation of the rows.
    paper_perm = nhsic(x[perm], z[perm], y[perm], bandwidth="paper").values
    assert paper_perm["nhsic_zx"] == pytest.approx(paper["nhsic_zx"], rel=1e-9)


def test_nhsic_independent_near_null_and_dependent_larger() -> None:
    rng = np.random.default_rng(4)
    n = 400
    x = rng.standard_normal((n, 5))
    z_ind = rng.standard_normal((n, 4))
    z_dep = np.tanh(x[:, :4]) + 0.1 * rng.standard_normal((n, 4))
    y = rng.integers(0, 3, n)
    ind = nhsic(x, z_ind, y, bandwidth="median").values
    dep = nhsic(x, z_dep, y, bandwidth="median").values
    # Under independence the value sits at its permutation null.  Band: 4 x the sd of the
    # null, estimated here from 10 random re-pairings (nHSIC is a sum over n^2 entries, so
    # this sd is small; 4 sd keeps the false-alarm rate < 1e-3).
    null = [
        nhsic(x, z_ind[np.random.default_rng(s).permutation(n)], y, bandwidth="median").values[
            "nhsic_zx"
        ]
        for s in range(10)
    ]
    assert abs(ind["nhsic_zx"] - ind["nhsic_zx_null"]) < 4 * np.std(null, ddof=1)
    assert abs(np.mean(null) - ind["nhsic_zx_null"]) < 2 * np.std(null, ddof=1)
    # Dependent data: well above its own null and above the independent value.
    assert dep["nhsic_zx"] - dep["nhsic_zx_null"] > 10 * np.std(null, ddof=1)
    # Labels independent of z: nhsic_zy near its null; bounded by rank(K_Y~) = K - 1 = 2.
    assert 0.0 <= ind["nhsic_zy"] <= 2.0
    assert abs(ind["nhsic_zy"] - ind["nhsic_zy_null"]) < 0.1


def test_nhsic_does_not_depend_on_collection_batch_size() -> None:
    # Features collected by a network in batches of 7 or 250, or passed as chunks
    # concatenated, give the same nHSIC: it is computed once on the whole sample.
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(20, 16), torch.nn.ReLU()).double()
    x, _, y = dependent_data(250, seed=9)
    xt = torch.from_numpy(x)
    with torch.no_grad():
        z7 = torch.cat([net(b) for b in xt.split(7)])
        z250 = net(xt)
    a = nhsic(xt, z7, torch.from_numpy(y)).values
    b = nhsic(x, z250.numpy(), y).values
    c = nhsic(x, np.concatenate(np.array_split(z250.numpy(), 13)), y).values
    for key in a:
        # batch-wise matmuls may differ in the last ulp: 1e-9 relative
        assert a[key] == pytest.approx(b[key], rel=1e-9)
        assert c[key] == b[key]


def test_nhsic_subsample_is_seeded() -> None:
    x, z, y = dependent_data(500, seed=1)
    r1 = nhsic(x, z, y, n=200, seed=3)
    r2 = nhsic(x, z, y, n=200, seed=3)
    r3 = nhsic(x, z, y, n=200, seed=4)
    assert r1.values == r2.values
    assert r1.values["nhsic_zx"] != r3.values["nhsic_zx"]
    assert r1.params["n_used"] == 200 and r1.params["seed"] == 3


# --------------------------------------------------------------------------------------------
# noise channel (Theorem 3.4)


def gaussian_classes(n_per: int, p: int, k_classes: int, seed: int):
    rng = np.random.default_rng(seed)
    covs, zs, ys = [], [], []
    for c in range(k_classes):
        a = rng.standard_normal((p, p)) * rng.uniform(0.1, 1.0, p)
        cov = a @ a.T / p
        zs.append(rng.multivariate_normal(rng.normal(0, 3, p), cov, size=n_per))
        ys.append(np.full(n_per, c))
        covs.append(cov)
    return np.concatenate(zs), np.concatenate(ys), covs


def test_noise_channel_logdet_is_exact_for_gaussian_classes() -> None:
    z, y, covs = gaussian_classes(20_000, 5, 3, seed=0)
    b, sigma = 2.0, 0.3
    res = noise_channel(z, y, sigma=sigma, scale=b)
    # For g | Y=c ~ N(m_c, S_c), Z | Y=c ~ N(m_c, S_c + B^2 s^2 I) and Z | X ~ N(g, B^2 s^2 I),
    # so I(Z;X|Y=c) = 1/2 log det(S_c / (B^2 s^2) + I) exactly.  With the TRUE S_c: the
    # sample covariance of 20000 points is off by O(1/sqrt(20000)) per entry -> 2 % relative.
    exact = np.mean([0.5 * np.linalg.slogdet(s / (b * sigma) ** 2 + np.eye(5))[1] for s in covs])
    assert res.values["logdet_bound"] == pytest.approx(exact, rel=0.02)
    # With the sample covariances (1/n_c, as documented) it is the same formula: 1e-10.
    sample = np.mean(
        [
            0.5 * np.linalg.slogdet(np.cov(z[y == c].T, ddof=0) / (b * sigma) ** 2 + np.eye(5))[1]
            for c in range(3)
        ]
    )
    assert res.values["logdet_bound"] == pytest.approx(sample, rel=1e-10)
    # trace bound = V / (2 s^2), V = mean within-class squared distance / B^2, and >= logdet.
    v = np.mean([np.sum((z[y == c] - z[y == c].mean(0)) ** 2, axis=1).mean() for c in range(3)])
    assert res.values["v"] == pytest.approx(v / b**2, rel=1e-12)
    assert res.values["trace_bound"] == pytest.approx(v / b**2 / (2 * sigma**2), rel=1e-12)
    assert res.values["trace_bound"] >= res.values["logdet_bound"]


@pytest.mark.parametrize("sigma", [0.01, 0.1, 1.0, 10.0])
def test_noise_channel_scales_and_ordering(sigma: float) -> None:
    rng = np.random.default_rng(1)
    z = np.abs(rng.standard_normal((300, 50))) * 8.0  # ReLU-like, large scale
    y = rng.integers(0, 10, 300)
    norms = np.linalg.norm(z, axis=1)
    r_max = noise_channel(z, y, sigma=sigma)
    r_mean = noise_channel(z, y, sigma=sigma, scale="mean")
    assert r_max.params["B"] == pytest.approx(norms.max(), rel=1e-12)
    assert r_mean.params["B"] == pytest.approx(norms.mean(), rel=1e-12)
    for r in (r_max, r_mean):
        # log(1+t) <= t per eigenvalue; the last 1e-12 absorbs rounding
        assert 0.0 <= r.values["logdet_bound"] <= r.values["trace_bound"] * (1 + 1e-12)
    # B = max norm makes g/B lie in the unit ball, so V <= 1
    assert r_max.values["v"] <= 1.0
    # invariance to the scale of g when B is a norm-based proxy
    assert noise_channel(3.0 * z, y, sigma=sigma).values["logdet_bound"] == pytest.approx(
        r_max.values["logdet_bound"], rel=1e-9
    )


# --------------------------------------------------------------------------------------------
# binning


def test_binning_hand_computed_example() -> None:
    # bins = 2 per unit over the observed range: unit 0 in [0, 3] -> edges at 1.5,
    # unit 1 in [0, 10] -> edges at 5 (the value 5 is in the upper bin, 10 is clipped into it).
    z = np.array([[0, 0], [1, 0], [2, 10], [3, 10], [3, 10], [0, 5]], dtype=float)
    y = np.array([0, 0, 1, 1, 0, 1])
    x = np.arange(6)  # identities
    # patterns: (0,0) (0,0) (1,1) (1,1) (1,1) (0,1) -> probabilities 2/6, 3/6, 1/6
    h_t = -(1 / 3 * math.log(1 / 3) + 1 / 2 * math.log(1 / 2) + 1 / 6 * math.log(1 / 6))
    # class 0: (0,0) (0,0) (1,1); class 1: (1,1) (1,1) (0,1) -> both H(2/3, 1/3)
    h_t_y = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
    res = binning(x, z, y, bins=2)
    assert res.values["izx"] == pytest.approx(h_t, abs=1e-12)
    assert res.values["izy"] == pytest.approx(h_t - h_t_y, abs=1e-12)
    assert res.values["redundancy"] == pytest.approx(h_t_y, abs=1e-12)
    assert res.params["n_patterns"] == 3
    # with many bins every row but the duplicated (3, 10) is its own pattern: H = log-ish
    fine = binning(x, z, y, bins=1000).values["izx"]
    assert fine == pytest.approx(-(4 / 6 * math.log(1 / 6) + 2 / 6 * math.log(2 / 6)), abs=1e-12)


# --------------------------------------------------------------------------------------------
# robustness, inputs, registry


def test_duplicates_and_degenerate_inputs() -> None:
    rng = np.random.default_rng(0)
    base = rng.standard_normal((20, 6))
    z = base[rng.integers(0, 20, 1000)]  # every row duplicated ~50 times
    x = rng.standard_normal((1000, 8))
    y = rng.integers(0, 4, 1000)
    res = kl_knn(x, z, y, seed=3)
    assert all(np.isfinite(v) for v in res.values.values())  # jitter keeps distances > 0
    assert res.values == kl_knn(x, z, y, seed=3).values  # seeded: reproducible
    with pytest.warns(RuntimeWarning, match="zero variance"):
        const = kl_knn(x, np.ones((1000, 6)), y)
    assert set(const.values.values()) == {0.0}
    y_small = y.copy()
    y_small[:2] = 9  # class 9 has 2 <= k samples
    with pytest.warns(RuntimeWarning, match="<= k=3"):
        res = kl_knn(x, rng.standard_normal((1000, 6)), y_small, se_groups=0)
    assert math.isnan(res.values["izy"]) and np.isfinite(res.values["izx"])


def test_torch_and_numpy_inputs_agree() -> None:
    x, z, y = dependent_data(300, seed=4)
    xt = torch.from_numpy(x).float().reshape(300, 4, 5)  # extra dims are flattened
    zt, yt = torch.from_numpy(z), torch.from_numpy(y)
    for name in ESTIMATORS:
        a = estimate(name, xt, zt, yt)
        b = estimate(name, x.astype(np.float32).astype(np.float64), z, y)
        assert isinstance(a, InfoResult)
        assert a.values == b.values, name


def test_registry_and_call_form() -> None:
    assert set(ESTIMATORS) == {"kl_knn", "ksg", "cmi_ksg", "nhsic", "noise_channel", "binning"}
    x, z, y = dependent_data(300, seed=6)
    expected = {
        "kl_knn": {"izx", "izy", "redundancy", "izx_null", "izy_null"},
        "ksg": {"izx"},
        "cmi_ksg": {"izx", "izy", "redundancy", "izx_null", "izy_null", "redundancy_null"},
        "nhsic": {"nhsic_zx", "nhsic_zy", "redundancy", "nhsic_zx_null", "nhsic_zy_null"},
        "noise_channel": {"logdet_bound", "trace_bound", "v"},
        "binning": {"izx", "izy", "redundancy"},
    }
    for name, fn in ESTIMATORS.items():
        res = fn(x, z, y)
        assert set(res.values) == expected[name] and set(res.stderr) == set(res.values)
        assert res.params, name
    # wrappers: ksg ignores y, noise_channel ignores x
    assert ESTIMATORS["ksg"](x, z, None).values == ksg(x, z).values
    assert ESTIMATORS["noise_channel"](None, z, y, sigma=0.5).values == (
        noise_channel(z, y, sigma=0.5).values
    )
    flat = binning(x, z, y).flat("test/")  # binning has no standard error: no _se keys
    assert set(flat) == {f"test/{k}" for k in ("izx", "izy", "redundancy")}
    flat = kl_knn(x, z, y).flat("test/")  # the jackknife SE is logged, nulls have none
    assert {"test/izx_se", "test/redundancy_se"} <= set(flat)
    assert "test/izx_null_se" not in flat
    with pytest.raises(ConfigError, match="unknown estimator 'mine'; valid choices: binning"):
        estimate("mine", x, z, y)


def test_subsample() -> None:
    idx = subsample(100, 30, seed=1)
    assert len(idx) == 30 and len(np.unique(idx)) == 30 and np.all(np.diff(idx) > 0)
    assert np.array_equal(idx, subsample(100, 30, seed=1))
    assert not np.array_equal(idx, subsample(100, 30, seed=2))
    assert np.array_equal(subsample(10, 50, seed=0), np.arange(10))
    assert np.array_equal(subsample(10, None, seed=0), np.arange(10))


def test_bad_input_raises_config_error() -> None:
    x, z, y = dependent_data(50, seed=0)
    with pytest.raises(ConfigError, match=r"mismatched sample counts \(x=50, z=49, y=50\)"):
        kl_knn(x, z[:49], y)
    with pytest.raises(ConfigError, match=r"mismatched sample counts \(x=50, z=50, y=40\)"):
        nhsic(x, z, y[:40])
    with pytest.raises(ConfigError, match=r"mismatched sample counts \(z=50, y=10\)"):
        noise_channel(z, y[:10])
    y_bad = y.copy()
    y_bad[0] = -1
    with pytest.raises(ConfigError, match=r"y has labels in \[-1, 3\]; valid: int labels in \[0"):
        binning(x, z, y_bad)
    with pytest.raises(ConfigError, match=r"y has labels in \[0, 3\]; valid: .* \[0, 3\)"):
        kl_knn(x, z, y, num_classes=3)
    with pytest.raises(ConfigError, match="y has non-integer values"):
        nhsic(x, z, y + 0.5)
    with pytest.raises(ConfigError, match=r"k=50 must be smaller than the sample size n=50"):
        kl_knn(x, z, y, k=50)
    with pytest.raises(ConfigError, match=r"k=60 must be smaller than the sample size n=50"):
        ksg(x, z, k=60)
    with pytest.raises(ConfigError, match=r"k=0 is out of range; valid: int >= 1"):
        kl_knn(x, z, y, k=0)
    with pytest.raises(ConfigError, match="unknown bandwidth 'silverman'; valid choices"):
        nhsic(x, z, y, bandwidth="silverman")
    with pytest.raises(ConfigError, match=r"sigma=-1.0 is invalid; valid: a positive"):
        noise_channel(z, y, sigma=-1.0)
    with pytest.raises(ConfigError, match="unknown scale 'median'"):
        noise_channel(z, y, scale="median")
    with pytest.raises(ConfigError, match=r"bins=0 is out of range"):
        binning(x, z, y, bins=0)
    z_nan = z.copy()
    z_nan[3, 2] = np.nan
    with pytest.raises(ConfigError, match="z has 1 rows with NaN/inf values"):
        nhsic(x, z_nan, y)
    with pytest.raises(ConfigError, match="se_groups=1 is invalid"):
        kl_knn(x, z, y, se_groups=1)


def test_probe_subsample_is_stratified_and_seeded() -> None:
    from latephase.measures.probe import stratified_subsample

    y = np.repeat(np.arange(97), 48)  # 97 classes as in modular addition's held-out split
    idx = stratified_subsample(y, 1000, seed=0)
    counts = np.bincount(y[idx], minlength=97)
    assert len(idx) == 1000 and len(set(idx.tolist())) == 1000
    assert counts.min() >= 10 and counts.max() <= 11  # proportional: 1000/97 = 10.3
    assert np.array_equal(idx, stratified_subsample(y, 1000, seed=0))
    assert not np.array_equal(idx, stratified_subsample(y, 1000, seed=1))
    y2 = np.r_[np.zeros(900, int), np.ones(100, int)]
    assert np.bincount(y2[stratified_subsample(y2, 100, 3)]).tolist() == [90, 10]
    assert np.array_equal(stratified_subsample(y2, None, 0), np.arange(1000))
