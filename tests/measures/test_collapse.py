"""Tests of latephase.measures.collapse (ClassMoments, collapse_measures, ncc_agreement) and of
latephase.measures.measure_split, against a naive NumPy reference written here from the
formulas of science.md section 2-3, ground truth, streaming/merging identities, the
float32 cancellation case of science.md section 6.2, and degenerate inputs.

Every tolerance is stated next to its assertion with the reason for its size.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy.stats import ortho_group
from torch import nn

from latephase.measures import measure_split
from latephase.measures.collapse import ClassMoments, collapse_measures, ncc_agreement

# Good data must not trigger any of the module's "returning NaN" warnings; the degenerate-input
# tests below capture the warnings they expect explicitly.
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

KEYS = {
    "tr_sw", "tr_sb", "rnc1_max", "rnc1_mean", "nc1", "nc1_pinv", "cdnv", "nc2", "nc2_etf",
    "nc3", "feat_norm_mean", "feat_norm_max",
}

# --------------------------------------------------------------------------------------------
# data and the naive reference


def unbalanced_labels(rng: np.random.Generator, n: int, K: int,
                      absent: tuple[int, ...] = ()) -> np.ndarray:
    """Shuffled labels with strongly unequal class sizes: one present class has exactly one
    sample (V_c = 0, exercises the single-row edge of CDNV), the others share the rest with
    Dirichlet(0.7) proportions (at least 2 each).  Classes in ``absent`` get no sample."""
    present = [c for c in range(K) if c not in absent]
    counts = np.zeros(K, dtype=np.int64)
    counts[present[0]] = 1
    others = present[1:]
    counts[others] = 2 + rng.multinomial(n - 1 - 2 * len(others),
                                         rng.dirichlet(0.7 * np.ones(len(others))))
    y = np.repeat(np.arange(K), counts)
    return rng.permutation(y)


def gaussian_features(rng: np.random.Generator, y: np.ndarray, K: int, p: int, *,
                      spread: float = 1.0, noise: float = 0.5, offset: float = 0.0) -> np.ndarray:
    """Class means ~ N(0, spread^2) (+ offset), anisotropic per-class noise."""
    means = offset + spread * rng.standard_normal((K, p))
    mix = noise * rng.standard_normal((K, p, p)) / math.sqrt(p)
    z = rng.standard_normal((len(y), p))
    return means[y] + np.einsum("npq,nq->np", mix[y], z)


def naive_measures(g: np.ndarray, y: np.ndarray, K: int, W: np.ndarray | None) -> dict:
    """The measures straight from their definitions, with explicit matrices and loops."""
    g = np.asarray(g, dtype=np.float64)
    N, p = g.shape
    classes = [c for c in range(K) if np.any(y == c)]
    Kp = len(classes)
    mu = {}
    for c in classes:
        rows = g[y == c]
        mu[c] = rows.sum(axis=0) / len(rows)
    mu_g = g.sum(axis=0) / N
    sigma_w = np.zeros((p, p))
    for i in range(N):
        d = g[i] - mu[y[i]]
        sigma_w += np.outer(d, d)
    sigma_w /= N
    sigma_b = np.zeros((p, p))
    for c in classes:
        d = mu[c] - mu_g
        sigma_b += (np.sum(y == c) / N) * np.outer(d, d)
    tr_sw, tr_sb = np.trace(sigma_w), np.trace(sigma_b)
    norms = np.array([math.sqrt(float(np.dot(row, row))) for row in g])
    out = {
        "tr_sw": tr_sw, "tr_sb": tr_sb,
        "rnc1_max": tr_sw / norms.max() ** 2, "rnc1_mean": tr_sw / norms.mean() ** 2,
        "nc1": tr_sw / tr_sb,
        "feat_norm_mean": norms.mean(), "feat_norm_max": norms.max(),
    }
    # Sigma_B has rank min(K'-1, p) exactly; its genuine eigenvalues are O(1) relative to its
    # largest for this random data while the rounding "null" eigenvalue is ~1e-16 relative, so
    # the cut-off 1e-10 separates them with a wide margin on both sides.
    out["nc1_pinv"] = np.trace(sigma_w @ np.linalg.pinv(sigma_b, rtol=1e-10, hermitian=True)) / Kp
    var = {}
    for c in classes:
        rows = g[y == c]
        var[c] = sum(float(np.dot(r - mu[c], r - mu[c])) for r in rows) / len(rows)
    ratios = []
    for a in range(Kp):
        for b in range(a + 1, Kp):
            c, d = classes[a], classes[b]
            ratios.append((var[c] + var[d]) / (2.0 * float(np.sum((mu[c] - mu[d]) ** 2))))
    out["cdnv"] = float(np.mean(ratios))
    M = np.stack([mu[c] for c in classes])  # uncentred K' x p
    out["nc2"] = float(np.linalg.cond(M))
    Mc = M - M.mean(axis=0)
    G = Mc @ Mc.T
    T = np.eye(Kp) - np.ones((Kp, Kp)) / Kp
    out["nc2_etf"] = float(np.linalg.norm(G / np.linalg.norm(G) - T / np.linalg.norm(T)))
    if W is not None:
        Wp = np.asarray(W, dtype=np.float64)[classes]
        out["nc3"] = float(np.linalg.norm(Wp / np.linalg.norm(Wp) - Mc / np.linalg.norm(Mc)))
    return out


def naive_ncc(g: np.ndarray, y: np.ndarray, K: int, logits: np.ndarray) -> float:
    """NC4 by explicit distances to every present class mean."""
    g = np.asarray(g, dtype=np.float64)
    classes = [c for c in range(K) if np.any(y == c)]
    mus = {c: g[y == c].mean(axis=0) for c in classes}
    agree = 0
    for i in range(len(g)):
        dists = {c: math.sqrt(float(np.sum((g[i] - mus[c]) ** 2))) for c in classes}
        agree += int(min(dists, key=dists.get) == int(np.argmax(logits[i])))
    return agree / len(g)


def sigma_b_condition(g: np.ndarray, y: np.ndarray, K: int) -> float:
    """Ratio of largest to smallest NONZERO eigenvalue of Sigma_B (rank min(K'-1, p))."""
    classes = [c for c in range(K) if np.any(y == c)]
    A = np.stack([math.sqrt(np.mean(y == c)) * (g[y == c].mean(0) - g.mean(0)) for c in classes])
    s = np.linalg.svd(A, compute_uv=False)[: min(len(classes) - 1, g.shape[1])]
    return float((s[0] / s[-1]) ** 2)


def moments(g, y, K) -> ClassMoments:
    return ClassMoments.from_batch(torch.as_tensor(g), torch.as_tensor(y), K)


def assert_close(got: dict, ref: dict, rtol: float, atol: float = 0.0, keys=None) -> None:
    for k in keys if keys is not None else ref:
        a, b = got[k], ref[k]
        if isinstance(b, list):  # margins_a / margins_b: elementwise
            assert a == pytest.approx(b, rel=rtol, abs=atol), k
        elif math.isnan(b):
            assert math.isnan(a), (k, a, b)
        else:
            assert a == pytest.approx(b, rel=rtol, abs=atol), (k, a, b)


def random_case(seed: int, K: int, p: int, n: int, absent=()):
    rng = np.random.default_rng(seed)
    y = unbalanced_labels(rng, n, K, absent)
    g = gaussian_features(rng, y, K, p)
    W = rng.standard_normal((K, p))
    return rng, g, y, W


# --------------------------------------------------------------------------------------------
# 1. against the naive reference

CASES = [  # (K, p, n, absent classes)
    (2, 3, 40, ()),
    (3, 5, 150, ()),
    (5, 4, 200, ()),  # K > p: Sigma_B full rank, NC2 over min(K, p) singular values
    (6, 8, 120, (2,)),  # one class absent: every measure over the present classes only
    (10, 20, 400, ()),
    (4, 64, 90, ()),  # p > n_c for every class: Sigma_W singular
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("K", "p", "n", "absent"), CASES)
def test_matches_naive_reference(K, p, n, absent, dtype):
    for seed in range(2):
        _, g, y, W = random_case(seed, K, p, n, absent)
        g = g.astype(dtype)
        got = collapse_measures(moments(g, y, K), torch.as_tensor(W))
        assert set(got) == KEYS
        assert sigma_b_condition(g.astype(np.float64), y, K) < 1e5  # premise of the rtol below
        # float32 -> float64 is exact, so the reference sees the same numbers as the module
        # and both compute in float64; they differ only by summation order and the
        # pinv-vs-thin-SVD route (relative errors ~ cond(Sigma_B) * 1e-16 < 1e-11).  rtol 1e-9
        # holds for both input dtypes with >= 1000x margin.  atol 1e-13: for K = 2 two centred
        # means are always antipodal, so nc2_etf is exactly 0 and both sides are rounding
        # noise (~1e-16) of a distance between unit-norm matrices.
        assert_close(got, naive_measures(g.astype(np.float64), y, K, W), rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize(("K", "p", "n", "absent"), CASES)
def test_ncc_agreement_matches_naive(K, p, n, absent):
    rng, g, y, W = random_case(7, K, p, n, absent)
    # logits from a random head plus noise: the agreement is strictly between 0 and 1, and an
    # absent class (empty mean row) can win the argmax of the logits but never the NCC
    logits = g @ W.T + rng.standard_normal((n, K))
    m = moments(g, y, K)
    got = ncc_agreement(torch.as_tensor(g), torch.as_tensor(logits), m)
    # a fraction of integer counts computed the same way: equal up to one rounding
    assert got == pytest.approx(naive_ncc(g, y, K, logits), rel=1e-15, abs=0)


def test_ncc_ignores_absent_classes():
    """The absent class's empty mean row (zeros) sits closest to every feature; it must not be
    used as a centre."""
    rng = np.random.default_rng(3)
    K, p, n = 4, 3, 60
    y = rng.integers(0, 3, n)  # class 3 absent
    centres = 10.0 + np.arange(3)[:, None] * np.ones(p)
    g = centres[y] + 0.1 * rng.standard_normal((n, p))
    m = moments(g, y, K)
    assert float(m.n[3]) == 0.0 and torch.all(m.mean[3] == 0)
    logits = np.eye(K)[y]  # predicts the true class, which here is the NCC class
    assert ncc_agreement(torch.as_tensor(g), torch.as_tensor(logits), m) == 1.0


# --------------------------------------------------------------------------------------------
# 2. streaming: update/merge equals the one-shot result


def uneven_cuts(rng: np.random.Generator, n: int) -> list[tuple[int, int]]:
    """Random chunk boundaries, forced to include single-row chunks at both ends."""
    inner = rng.choice(np.arange(3, n - 1), size=n // 12, replace=False)
    cuts = np.unique(np.concatenate([[0, 1, 2, n - 1, n], inner]))
    return list(zip(cuts[:-1], cuts[1:], strict=True))


def _moment_tensors(m: ClassMoments):
    return [m.n, m.mean, m.m2, m.m2_class, m.norm_sum, m.norm_max]


@pytest.mark.parametrize("sort_by_label", [False, True])
@pytest.mark.parametrize(("K", "p", "n", "absent"), CASES[1:5])
def test_streaming_equals_one_shot(K, p, n, absent, sort_by_label):
    rng, g, y, W = random_case(11, K, p, n, absent)
    if sort_by_label:  # contiguous chunks then miss most classes
        order = np.argsort(y, kind="stable")
        g, y = g[order], y[order]
    cuts = uneven_cuts(rng, n)
    assert any(b - a == 1 for a, b in cuts)
    if sort_by_label:
        assert any(len(np.unique(y[a:b])) < K - len(absent) for a, b in cuts)
    one = moments(g, y, K)
    ref = collapse_measures(one, torch.as_tensor(W))

    streamed = ClassMoments(K, p)  # update() from an empty accumulator
    for a, b in cuts:
        out = streamed.update(torch.as_tensor(g[a:b]), torch.as_tensor(y[a:b]))
        assert out is streamed
    parts = [moments(g[a:b], y[a:b], K) for a, b in cuts]  # merge() in a random tree order
    while len(parts) > 1:
        i, j = sorted(rng.choice(len(parts), size=2, replace=False))
        b_part = parts.pop(j)
        parts[i] = parts[i].merge(b_part)
    merged = parts[0]

    for acc in (streamed, merged):
        # Chan's update is exact in exact arithmetic; in float64 each merge adds ~1e-16
        # relative error, a few hundred merges stay below 1e-13.  rtol 1e-10 is generous;
        # atol 1e-12 covers entries of M2 that are ~0 by cancellation (|M2| ~ 1e2 here).
        for t_got, t_ref in zip(_moment_tensors(acc), _moment_tensors(one), strict=True):
            torch.testing.assert_close(t_got, t_ref, rtol=1e-10, atol=1e-12)
        assert_close(collapse_measures(acc, torch.as_tensor(W)), ref, rtol=1e-10)
        assert ncc_agreement(torch.as_tensor(g), torch.as_tensor(g @ W.T), acc) == \
            ncc_agreement(torch.as_tensor(g), torch.as_tensor(g @ W.T), one)


def test_merge_order_independent_and_associative():
    _, g, y, W = random_case(5, 4, 6, 120)
    sl = [slice(0, 50), slice(50, 51), slice(51, 120)]

    def part(i):
        return moments(g[sl[i]], y[sl[i]], 4)

    ab = part(0).merge(part(1))
    ba = part(1).merge(part(0))
    ab_c = part(0).merge(part(1)).merge(part(2))
    a_bc = part(0).merge(part(1).merge(part(2)))
    # different rounding order only: float64, a handful of operations -> ~1e-15 relative
    for x, z in ((ab, ba), (ab_c, a_bc)):
        for t1, t2 in zip(_moment_tensors(x), _moment_tensors(z), strict=True):
            torch.testing.assert_close(t1, t2, rtol=1e-12, atol=1e-13)
        assert_close(collapse_measures(x, torch.as_tensor(W)),
                     collapse_measures(z, torch.as_tensor(W)), rtol=1e-10)
    # merging an empty accumulator is the identity (exactly: all its weights are zero)
    e = part(2)
    before = [t.clone() for t in _moment_tensors(e)]
    e.merge(ClassMoments(4, 6))
    for t1, t2 in zip(_moment_tensors(e), before, strict=True):
        assert torch.equal(t1, t2)


def test_accumulates_in_float64_for_float32_input():
    m = moments(np.ones((3, 2), dtype=np.float32), np.array([0, 1, 1]), 2)
    assert all(t.dtype == torch.float64 for t in _moment_tensors(m))


# --------------------------------------------------------------------------------------------
# 3. ground truth


@pytest.mark.parametrize("integer_means", [True, False])
def test_perfect_collapse_gives_zero_within_class_measures(integer_means):
    rng = np.random.default_rng(0)
    K, p, n = 5, 7, 200
    y = unbalanced_labels(rng, n, K)
    mu = rng.integers(-9, 10, (K, p)).astype(float) if integer_means else rng.normal(size=(K, p))
    g = mu[y]
    m = ClassMoments(K, p)
    for a, b in uneven_cuts(rng, n):
        m.update(torch.as_tensor(g[a:b]), torch.as_tensor(y[a:b]))
    got = collapse_measures(m, torch.as_tensor(mu))
    if integer_means:
        # small integers: every sum, mean and difference is exact in float64 -> exactly 0
        for k in ("tr_sw", "rnc1_max", "rnc1_mean", "nc1", "nc1_pinv", "cdnv"):
            assert got[k] == 0.0, k
    else:
        # mean of n_c copies of x is x up to a few ulps (|x| ~ 1 -> 1e-15), so tr_sw is a sum
        # of p squares of ~1e-15: <= 1e-28 relative to ||mu||^2 ~ p
        for k in ("tr_sw", "rnc1_max", "rnc1_mean", "nc1", "nc1_pinv", "cdnv"):
            assert 0.0 <= got[k] < 1e-26, (k, got[k])
    assert got["tr_sb"] > 0.1  # the between-class part is intact


def simplex_etf_means(rng, K: int, p: int, scale: float) -> np.ndarray:
    """K x p means whose centred Gram is proportional to I - 11^T/K, randomly rotated."""
    T = np.eye(K) - np.ones((K, K)) / K
    M = np.zeros((K, p))
    M[:, :K] = scale * T
    return M @ ortho_group.rvs(p, random_state=rng.integers(1 << 31)).T


@pytest.mark.parametrize(("K", "p"), [(2, 3), (3, 3), (5, 9), (10, 12)])
def test_simplex_etf_and_self_duality(K, p):
    rng = np.random.default_rng(K)
    y = unbalanced_labels(rng, 300, K)  # unequal n_c: the ETF centring must be unweighted
    M = simplex_etf_means(rng, K, p, scale=3.0)
    offset = 5.0 * rng.standard_normal(p)  # a global offset must not matter for NC2_etf/NC3
    g = (M + offset)[y]
    # W = centred means times any positive scale: perfectly self-dual
    got = collapse_measures(moments(g, y, K), torch.as_tensor(2.5 * M))
    # the means are recovered to ~1e-15 (|offset| ~ 5, eps 2e-16); NC2_etf and NC3 are
    # Frobenius distances of O(1) unit-norm matrices, so rounding gives < 1e-13
    assert got["nc2_etf"] == pytest.approx(0.0, abs=1e-12)
    assert got["nc3"] == pytest.approx(0.0, abs=1e-12)
    # W = minus the centred means: || a - (-a) || = 2 for unit-norm a
    got = collapse_measures(moments(g, y, K), torch.as_tensor(-M))
    assert got["nc3"] == pytest.approx(2.0, rel=1e-12)
    # an equal-norm orthogonal frame (uncentred) has condition number exactly 1
    frame = 4.0 * ortho_group.rvs(p, random_state=K)[:K]
    got = collapse_measures(moments(frame[y], y, K))
    assert got["nc2"] == pytest.approx(1.0, rel=1e-12)
    assert "nc3" not in got  # no head given


def test_etf_distance_detects_non_etf():
    """A non-equiangular configuration is far from the ETF (guards against a vacuous 0)."""
    rng = np.random.default_rng(1)
    K, p = 4, 6
    y = np.repeat(np.arange(K), 10)
    M = simplex_etf_means(rng, K, p, 1.0)
    M[0] *= 3.0  # unequal norms
    got = collapse_measures(moments(M[y], y, K))
    assert got["nc2_etf"] > 0.2


def test_ncc_is_one_when_logits_are_minus_distance():
    rng, g, y, _ = random_case(2, 5, 6, 300)
    mus = np.stack([g[y == c].mean(axis=0) for c in range(5)])
    logits = -np.sqrt(((g[:, None, :] - mus[None]) ** 2).sum(-1))
    assert ncc_agreement(torch.as_tensor(g), torch.as_tensor(logits), moments(g, y, 5)) == 1.0
    # and the farthest-mean rule disagrees everywhere
    assert ncc_agreement(torch.as_tensor(g), torch.as_tensor(-logits), moments(g, y, 5)) == 0.0


def test_rotation_and_translation_invariance():
    """Rotating features and head together leaves every measure unchanged; translating the
    features leaves the translation-invariant ones unchanged (nc1_pinv: tested separately)."""
    rng, g, y, W = random_case(9, 4, 6, 200)
    ref = collapse_measures(moments(g, y, 4), torch.as_tensor(W))
    Q = ortho_group.rvs(6, random_state=1)
    rot = collapse_measures(moments(g @ Q.T, y, 4), torch.as_tensor(W @ Q.T))
    # an orthogonal map changes values only by rounding (~1e-15); nc1_pinv/nc2 amplify that
    # by cond(Sigma_B) ~ 1e2 at most here
    assert_close(rot, ref, rtol=1e-10)
    shift = 3.0 * rng.standard_normal(6)  # |shift| / spread ~ 3: below the nc1_pinv failure
    tr = collapse_measures(moments(g + shift, y, 4), torch.as_tensor(W))
    # shifting by ~3 costs ~3 * 1e-16 absolute per coordinate: relative 1e-14 on traces
    assert_close(tr, ref, rtol=1e-9,
                 keys=["tr_sw", "tr_sb", "nc1", "cdnv", "nc2_etf", "nc3"])


@pytest.mark.parametrize(("seed", "K", "p", "n", "offset"), [
    (38, 2, 3, 40, 0.0),  # no offset at all: K = 2, one single-sample class
    (0, 4, 6, 400, 30.0),
    (0, 4, 6, 400, 1e4),
])
def test_nc1_pinv_with_offset_or_tiny_class(seed, K, p, n, offset):
    _, g, y, W = random_case(seed, K, p, n)
    ref = naive_measures(g, y, K, W)["nc1_pinv"]  # NC1_pinv is translation invariant
    got = collapse_measures(moments(g + offset, y, K), torch.as_tensor(W))["nc1_pinv"]
    # float64 centring of values ~offset costs offset * 1e-16 absolute: relative <= 1e-11 on a
    # quantity of conditioning <= 1e3 here; rtol 1e-6 is far looser than needed
    assert got == pytest.approx(ref, rel=1e-6)


# --------------------------------------------------------------------------------------------
# 4. cancellation: large mean, tiny spread, float32 input, streamed


def cancellation_data(n=30000, p=4, K=3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, K, n)
    g64 = 1e4 + 0.05 * y[:, None] + 1e-2 * rng.standard_normal((n, p))
    return g64, g64.astype(np.float32), y


def two_pass_tr_sw(g: np.ndarray, y: np.ndarray, K: int) -> float:
    """Tr(Sigma_W) in float64: subtract each class mean first, then sum squares."""
    g = np.asarray(g, dtype=np.float64)
    tot = 0.0
    for c in range(K):
        d = g[y == c] - g[y == c].mean(axis=0)
        tot += float(np.sum(d * d))
    return tot / len(g)


def stream(g, y, K, rng) -> ClassMoments:
    m = ClassMoments(K, g.shape[1])
    cuts = np.unique(np.concatenate([[0, len(g)], rng.choice(len(g), 300, replace=False)]))
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        m.update(torch.as_tensor(g[a:b]), torch.as_tensor(y[a:b]))
    return m


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cancellation_within_class_variance(dtype):
    g64, g32, y = cancellation_data()
    g = g32 if dtype == np.float32 else g64
    got = collapse_measures(stream(g, y, 3, np.random.default_rng(1)))["tr_sw"]
    # Reference from exactly the values the module receives (float32 -> float64 is exact).
    # In float64, values ~1e4 carry absolute rounding ~1e4 * 1.1e-16 = 1e-12 against
    # deviations ~1e-2, i.e. ~1e-10 relative per deviation and less after averaging; the
    # batch means are differences of such numbers too.  rtol 1e-8 leaves a 100x margin.
    ref = two_pass_tr_sw(g, y, 3)
    assert got == pytest.approx(ref, rel=1e-8)
    # Against the unquantised data: float32 spacing at 1e4 is 2^-10 = 9.8e-4, so rounding adds
    # ~(2^-10)^2 / 12 = 8.0e-8 per coordinate to a variance of 1e-4: a +8e-4 relative bias,
    # plus the sampling fluctuation of the cross term 2 cov(x, rounding error), std
    # 2 * 1e-2 * 2.8e-4 / sqrt(1.2e5 values) / 1e-4 = 1.6e-4 relative.  So "< 1e-3" is NOT
    # justifiable (seed 2 of this generator gives 1.05e-3); 2e-3 is bias + 7 std.  For float64
    # input there is no quantisation: same 1e-8 as above.
    true = two_pass_tr_sw(g64, y, 3)
    assert got == pytest.approx(true, rel=2e-3 if dtype == np.float32 else 1e-8)


def test_naive_float32_formula_fails_on_cancellation_data():
    """The reference implementation's sum||h||^2 - n||mu||^2 in float32 is badly wrong on the
    same data, so the test above can fail."""
    _, g32, y = cancellation_data()
    h, yt = torch.as_tensor(g32), torch.as_tensor(y)
    naive = 0.0
    for c in range(3):
        hc = h[yt == c]
        naive += float((hc * hc).sum() - len(hc) * (hc.mean(0) ** 2).sum())
    naive /= len(h)
    ref = two_pass_tr_sw(g32, y, 3)  # ~4e-4
    # sum||h||^2 ~ 1e4 * 4 * 1e8 = 4e12 per class, float32 eps 6e-8 -> absolute error ~2e5
    # against a true 1e4 * 4e-4 = 4: the result is off by orders of magnitude
    assert abs(naive - ref) > 10 * ref
    # even in float64 the naive formula misses the 1e-8 tolerance used above: its absolute
    # rounding ~1.1e-16 * 4e12 = 4e-4 per class against a true 4 is ~1e-4 relative
    g64, _, _ = cancellation_data()
    h64 = torch.as_tensor(g64)
    naive64 = sum(float((h64[yt == c] ** 2).sum() - (yt == c).sum() * (h64[yt == c].mean(0) ** 2)
                        .sum()) for c in range(3)) / len(h64)
    assert abs(naive64 / two_pass_tr_sw(g64, y, 3) - 1) > 1e-6


# --------------------------------------------------------------------------------------------
# 5. degenerate inputs


def test_single_class_present_gives_nan_not_exception():
    rng = np.random.default_rng(0)
    g, y = rng.standard_normal((20, 3)), np.full(20, 2)
    with pytest.warns(RuntimeWarning) as rec:
        got = collapse_measures(moments(g, y, 4), torch.as_tensor(rng.standard_normal((4, 3))))
    assert any("NC1" in str(w.message) for w in rec)
    assert got["tr_sb"] == 0.0
    assert got["tr_sw"] > 0 and math.isfinite(got["rnc1_max"]) and math.isfinite(got["rnc1_mean"])
    for k in ("nc1", "nc1_pinv", "cdnv", "nc2_etf", "nc3"):
        assert math.isnan(got[k]), k
    # the only candidate centre is class 2
    logits = torch.as_tensor(np.eye(4)[[2] * 15 + [0] * 5])
    assert ncc_agreement(torch.as_tensor(g), logits, moments(g, y, 4)) == 0.75


def test_all_zero_features_give_nan_not_exception():
    g, y = np.zeros((12, 5)), np.arange(12) % 3
    with pytest.warns(RuntimeWarning) as rec:
        got = collapse_measures(moments(g, y, 3), torch.ones(3, 5))
    msgs = " ".join(str(w.message) for w in rec)
    assert "RNC1 (max-norm" in msgs and "RNC1 (mean-norm" in msgs and "NC1" in msgs
    assert got["tr_sw"] == got["tr_sb"] == got["feat_norm_mean"] == got["feat_norm_max"] == 0
    for k in ("rnc1_max", "rnc1_mean", "nc1", "nc1_pinv", "cdnv", "nc2_etf", "nc3"):
        assert math.isnan(got[k]), k


def test_all_zero_features_nc2_is_nan():
    g, y = np.zeros((12, 5)), np.arange(12) % 3
    with pytest.warns(RuntimeWarning):
        got = collapse_measures(moments(g, y, 3))
    assert math.isnan(got["nc2"])


def _coincident_means():
    g = np.array([[0.0, 0], [2, 0], [0, 0], [2, 0], [5, 5], [6, 5]])  # mu_0 = mu_1 = (1, 0)
    return g, np.array([0, 0, 1, 1, 2, 2]), torch.eye(3, 2)


def _zero_head():
    _, g, y, _ = random_case(0, 3, 4, 30)
    return g, y, torch.zeros(3, 4)


@pytest.mark.parametrize("case", [_coincident_means, _zero_head])
def test_every_nan_comes_with_a_warning(case):
    g, y, W = case()
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        got = collapse_measures(moments(g, y, 3), W)
    nans = [k for k, v in got.items() if math.isnan(v)]
    assert nans  # the case is degenerate for at least one measure
    assert any(issubclass(w.category, RuntimeWarning) for w in rec), nans


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("with_head", [False, True])
def test_non_finite_features_give_nan_with_one_warning(bad, with_head):
    """A diverged network: every measure NaN (same keys as on good data), one warning, no
    exception (the SVDs would raise on NaN)."""
    _, g, y, W = random_case(0, 4, 5, 40)
    good = collapse_measures(moments(g, y, 4), torch.as_tensor(W) if with_head else None)
    g[3, 2] = bad
    with pytest.warns(RuntimeWarning, match="not finite") as rec:
        got = collapse_measures(moments(g, y, 4), torch.as_tensor(W) if with_head else None)
    assert len(rec) == 1
    assert set(got) == set(good)
    assert all(math.isnan(v) for v in got.values()), got
    with pytest.warns(RuntimeWarning, match="not finite"):
        assert math.isnan(ncc_agreement(torch.as_tensor(g), torch.as_tensor(g[:, :4]),
                                        moments(g, y, 4)))


def test_non_finite_head_gives_nan():
    _, g, y, W = random_case(1, 3, 4, 30)
    W[1, 1] = math.nan
    with pytest.warns(RuntimeWarning, match="not finite"):
        got = collapse_measures(moments(g, y, 3), torch.as_tensor(W))
    assert math.isnan(got["nc3"]) and math.isnan(got["nc1"])


# --------------------------------------------------------------------------------------------
# 6. bad arguments: one-line ValueError naming the argument, the value and what is valid


@pytest.mark.parametrize(("feats", "labels", "match"), [
    (torch.ones(6), torch.zeros(6, dtype=torch.long), r"features must be \[n, p\].*1-D.*\(6,\)"),
    (torch.ones(6, 2), torch.zeros(6, 1, dtype=torch.long), r"labels must be a 1-D.*\(6, 1\)"),
    (torch.ones(6, 2), torch.zeros(5, dtype=torch.long), r"labels has 5 rows.*have 6"),
    (torch.ones(3, 2), torch.tensor([0, 1, 3]), r"labels must be in \[0, 3\).*0\.\.3"),
    (torch.ones(3, 2), torch.tensor([0, -1, 2]), r"labels must be in \[0, 3\).*-1\.\.2"),
    (torch.ones(3, 2), torch.tensor([0.0, 1.5, 2.0]), r"integer class indices.*1\.5.*truncated"),
    (torch.ones(3, 2), torch.tensor([0.0, math.nan, 2.0]), r"integer class indices.*nan"),
])
def test_from_batch_rejects_bad_input(feats, labels, match):
    with pytest.raises(ValueError, match=match):
        ClassMoments.from_batch(feats, labels, 3)


def test_from_batch_accepts_integer_valued_float_labels():
    g = torch.randn(9, 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 2] * 3)
    a, b = ClassMoments.from_batch(g, y.double(), 3), ClassMoments.from_batch(g, y, 3)
    for t1, t2 in zip(_moment_tensors(a), _moment_tensors(b), strict=True):
        assert torch.equal(t1, t2)


@pytest.mark.parametrize("K", [0, -2, 2.0, True])
def test_from_batch_rejects_bad_num_classes(K):
    with pytest.raises(ValueError, match=r"num_classes must be an integer >= 1; got"):
        ClassMoments.from_batch(torch.ones(2, 2), torch.zeros(2, dtype=torch.long), K)


def test_no_samples_raises_value_error():
    with pytest.raises(ValueError, match="no samples"):
        collapse_measures(ClassMoments(3, 2))


def test_empty_batch_is_a_no_op():
    m = moments(np.ones((4, 3)), np.array([0, 1, 1, 0]), 2)
    before = [t.clone() for t in _moment_tensors(m)]
    m.update(torch.empty(0, 3, dtype=torch.float64), torch.empty(0, dtype=torch.long))
    for t1, t2 in zip(_moment_tensors(m), before, strict=True):
        assert torch.equal(t1, t2)


# --------------------------------------------------------------------------------------------
# 7. measure_split: one pass, independent of the chunk size


class Tiny(nn.Module):
    """Linear-ReLU feature map with dropout (so eval mode matters) and a linear head."""

    def __init__(self, d: int, p: int, K: int):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d, p), nn.ReLU(), nn.Dropout(0.5))
        self.head = nn.Linear(p, K)

    def forward_with_features(self, x):
        g = self.body(x)
        return self.head(g), g

    def forward(self, x):
        return self.forward_with_features(x)[0]


def sse_loss(logits, y):
    return ((logits - nn.functional.one_hot(y, logits.shape[1]).to(logits.dtype)) ** 2).sum(1)


def ce_loss(logits, y):
    return nn.functional.cross_entropy(logits, y, reduction="none")


def naive_bound(g, y, K, W, b) -> float:
    """Theorem 3.2 from the split's sample moments, by loops."""
    N = len(g)
    total = 0.0
    for c in range(K):
        rows = g[y == c]
        if len(rows) == 0:
            continue
        mu = rows.mean(0)
        V = float(((rows - mu) ** 2).sum(1).mean())
        for k in range(K):
            if k == c:
                continue
            d = W[c] - W[k]
            M = (float(mu @ d) + b[c] - b[k]) / float(np.linalg.norm(d))
            term = float(M <= 0) if V == 0 else 1.0 / (1.0 + max(M, 0.0) ** 2 / V)
            total += len(rows) / N * term
    return total


@pytest.mark.parametrize(("dtype", "absent", "loss_fn"), [
    (torch.float64, (), sse_loss), (torch.float64, (3,), ce_loss), (torch.float32, (), ce_loss),
])
def test_measure_split_independent_of_batch_size(dtype, absent, loss_fn):
    torch.manual_seed(0)
    K, d, p, n = 4, 5, 6, 61
    model = Tiny(d, p, K).to(dtype)
    model.train()
    x = torch.randn(n, d, dtype=dtype)
    rng = np.random.default_rng(0)
    y = torch.as_tensor(unbalanced_labels(rng, n, K, absent))
    results = {bs: measure_split(model, x, y, K, loss_fn=loss_fn, head=model.head, batch_size=bs)
               for bs in (1, 7, n, n + 5)}
    assert model.training  # mode restored
    # float64: only the summation order of the merges differs (~1e-15).  float32: the network
    # may round rows differently per batch size (eps 6e-8), which nc1_pinv/nc2 amplify by their
    # conditioning (~1e2): rtol 1e-4 then.
    rtol = 1e-10 if dtype == torch.float64 else 1e-4
    ref = results[n]
    for out in results.values():
        assert set(out) == set(ref)
        assert_close(out, ref, rtol=rtol, atol=1e-12)

    # direct computation, model in eval mode (dropout off)
    model.eval()
    with torch.no_grad():
        logits, g = model.forward_with_features(x)
    acc = float((logits.argmax(1) == y).double().mean())
    loss = float(loss_fn(logits, y).double().mean())
    for out in results.values():
        assert out["acc"] == pytest.approx(acc, abs=1e-15)  # same integer count / n
        assert out["error"] == pytest.approx(1 - acc, abs=1e-15)
        # summed per batch in float64: float32 per-sample losses ~1, relative 1e-6 covers their
        # float32 rounding; float64 ~1e-15
        assert out["loss"] == pytest.approx(loss, rel=1e-10 if dtype == torch.float64 else 1e-6)
    gn, yn = g.double().numpy(), y.numpy()
    Wn, bn = model.head.weight.detach().double().numpy(), model.head.bias.detach().double().numpy()
    ref_nc = naive_measures(gn, yn, K, Wn)
    for out in results.values():
        # naive float64 reference on the eval-mode features; float32 rows computed in another
        # batch composition may differ by ~1 ulp -> same 1e-4 as above
        assert_close(out, ref_nc, rtol=rtol, atol=1e-12, keys=sorted(KEYS))
        assert out["nc4"] == pytest.approx(naive_ncc(gn, yn, K, logits.double().numpy()))
        assert out["bound"] == pytest.approx(naive_bound(gn, yn, K, Wn, bn), rel=rtol)
