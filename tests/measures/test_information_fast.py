"""The fast paths of the information estimators (issue 12, target 3) against small reference
implementations of what they replaced, on the paper's regime: n = 1000 rows of the demo's
dims (Z [n, 200], X [n, 784], 10 classes), Z random (before training), clustered, collapsed
and ReLU-like with exact duplicates.

What changed and what is compared:
- nhsic: Tr(R_Z R_X) from the lower triangle of M_Z^{-1} and fixed X / Y weights
  (:class:`NhsicSide`) instead of two full R matrices; reference: the definition with
  ``np.linalg.inv``.
- kl_knn: every jackknife replicate read from one neighbour list per point set
  (``_Neighbours``) instead of one k-d tree per replicate; reference: a k-d tree per
  replicate and point set (the former code), on the package's unchanged preprocessing.
- cmi_ksg: the dense path with brute-force radius pairs, all replicates of Ross's I(Z;Y) at
  once and X's class blocks cached; reference: its k-d tree path (``path="tree"``).
- the probe's cached X side and shared Z reduction (:class:`WhitenedX`).
Each tolerance is stated with its reason next to the assertion.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special
from scipy.spatial import cKDTree
from threadpoolctl import threadpool_limits

from latephase.measures import information as info
from latephase.measures.information import WhitenedX, cmi_ksg, kl_knn, nhsic, whiten_x
from latephase.measures.probe import InfoProbe

N, P, D_X, K_CLASSES = 1000, 200, 784, 10
EPS64 = float(np.finfo(np.float64).eps)


@pytest.fixture(autouse=True)
def _one_blas_thread():
    with threadpool_limits(1):
        yield


def regime(kind: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x [N, 784], z [N, 200], y [N]) of one regime.  X: class means plus noise, embedded in
    784 dims (like MNIST, more variance than the 3 PCA dims keep).  Z: ``random`` Gaussian
    features of norm ~ 8 sqrt(200) (the x8 init); ``clustered``: class mean + 0.3 noise;
    ``collapsed``: class mean + 1e-3 noise; ``relu``: ReLU of a clustered Z with many units
    and some rows exactly equal (duplicates: zero neighbour distances before the jitter)."""
    rng = np.random.default_rng(seed)
    y = np.arange(N) % K_CLASSES
    mu_x = rng.standard_normal((K_CLASSES, 40))
    x = (mu_x[y] + rng.standard_normal((N, 40))) @ rng.standard_normal((40, D_X))
    mu = 8.0 * rng.standard_normal((K_CLASSES, P))
    scale = {"random": None, "clustered": 0.3, "collapsed": 1e-3, "relu": 0.3}[kind]
    if scale is None:
        z = 8.0 * rng.standard_normal((N, P))
    else:
        z = mu[y] + scale * 8.0 * rng.standard_normal((N, P))
    if kind == "relu":
        z = np.maximum(z - 6.0, 0.0)
        z[1::50] = z[0::50]  # exact duplicate rows
    return x, z, y


REGIMES = ("random", "clustered", "collapsed", "relu")


def close(a: float, b: float, rel: float, abs_: float = 0.0) -> bool:
    """Equal within rel * |b| + abs_, and both NaN counts as equal."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= rel * abs(b) + abs_


# --------------------------------------------------------------------------------------------
# nHSIC


def nhsic_reference(x: np.ndarray, z: np.ndarray, y: np.ndarray, sigma: float = 5.0,
                    eps: float = 1e-5) -> dict[str, float]:
    """The definition: R = K~ (K~ + n eps I)^{-1}, K~ = H K H, Gaussian kernels of width
    2 sigma^2 dim, linear kernel on one-hot labels; np.linalg.inv, full matrices."""
    n = len(y)
    h = np.eye(n) - 1.0 / n

    def r_of(k: np.ndarray) -> np.ndarray:
        kc = h @ k @ h
        return kc @ np.linalg.inv(kc + n * eps * np.eye(n))

    def gauss(a: np.ndarray) -> np.ndarray:
        sq = (a**2).sum(1)
        d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * a @ a.T, 0.0)
        return np.exp(-d2 / (2 * sigma**2 * a.shape[1]))

    onehot = np.eye(K_CLASSES)[y]
    r_z, r_x, r_y = r_of(gauss(z)), r_of(gauss(x)), r_of(onehot @ onehot.T)
    zx, zy = float(np.sum(r_z * r_x)), float(np.sum(r_z * r_y))
    tr = [float(np.trace(r)) for r in (r_z, r_x, r_y)]
    return {"nhsic_zx": zx, "nhsic_zy": zy, "redundancy": zx - zy,
            "nhsic_zx_null": tr[0] * tr[1] / (n - 1), "nhsic_zy_null": tr[0] * tr[2] / (n - 1)}


@pytest.mark.parametrize("kind", REGIMES)
def test_nhsic_equals_definition(kind: str) -> None:
    x, z, y = regime(kind)
    got = nhsic(x, z, y, num_classes=K_CLASSES).values
    want = nhsic_reference(x, z, y)
    # Both are float64 inversions of M = K~ + reg I, whose condition number is at most
    # (lambda_max + reg) / reg: ~3e2 here (the x8 features make K_Z ~ I; X's kernel is
    # flat), so either side's rounding is ~ n eps64 kappa ~ 7e-11 relative at worst
    # (measured differences 1e-15 .. 6e-15).  Tolerance 1e-9 relative; the redundancy, a
    # difference of two values, within 1e-9 of the larger one.
    for key, val in want.items():
        scale = max(abs(want["nhsic_zx"]), abs(want["nhsic_zy"]))
        assert close(got[key], val, 1e-9, 1e-9 * scale if key == "redundancy" else 0.0), (
            key, got[key], val)


def test_nhsic_side_keeps_one_square_matrix() -> None:
    # Memory (issue 12): the X / Y side holds one n x n array (R_X's weights), not R_X and
    # R_Y; the label side is n x K.
    x, _, y = regime("random")
    side = info.NhsicSide.build(x, y, K_CLASSES, bandwidth="paper", sigma=5.0, eps=1e-5)
    square = [a for a in (side.w_x, side.a_y, side.ag_y) if a.shape == (N, N)]
    assert len(square) == 1
    assert side.a_y.shape == side.ag_y.shape == (N, K_CLASSES)


# --------------------------------------------------------------------------------------------
# kl_knn


def _kl_entropy_tree(a: np.ndarray, k: int) -> float:
    """KL entropy with one k-d tree on exactly these rows (the former code)."""
    n, d = a.shape
    if n <= k:
        return math.nan
    rho = cKDTree(a).query(a, k=k + 1)[0][:, k]
    if np.any(rho <= 0.0):
        return math.nan
    log_vd = 0.5 * d * math.log(math.pi) - special.gammaln(0.5 * d + 1.0)
    return float(special.digamma(n) - special.digamma(k) + log_vd + d * np.mean(np.log(rho)))


def _kl_mi_tree(zw: np.ndarray, xw: np.ndarray, y: np.ndarray, k: int) -> dict[str, float]:
    n = len(y)
    h_z = _kl_entropy_tree(zw, k)
    izx = h_z + _kl_entropy_tree(xw, k) - _kl_entropy_tree(np.hstack([zw, xw]), k)
    h_z_y = sum(float((y == c).sum()) / n * _kl_entropy_tree(zw[y == c], k)
                for c in np.unique(y))
    return {"izx": izx, "izy": h_z - h_z_y, "redundancy": izx - (h_z - h_z_y)}


def kl_knn_reference(x: np.ndarray, z: np.ndarray, y: np.ndarray, k: int = 3,
                     se_groups: int = 10, seed: int = 0) -> tuple[dict, dict]:
    """kl_knn as it was: the package's preprocessing (subsample, PCA, jitter, permutation,
    groups: unchanged code, same random streams), then a k-d tree per replicate."""
    prep = info._prepare_knn(x, z, y, k=k, dim_z=3, dim_x=3, n=None, se_groups=se_groups,
                             jitter=1e-10, svd_solver="auto", num_classes=K_CLASSES,
                             seed=seed)
    zw, xw, ya, rng = prep.zw, prep.xw, prep.y, prep.rng
    values = _kl_mi_tree(zw, xw, ya, k)
    perm = rng.permutation(ya.size)
    null = _kl_mi_tree(zw[perm], xw, ya, k)
    values.update(izx_null=null["izx"], izy_null=null["izy"])
    groups = info._stratified_groups(ya, se_groups, rng)
    loo = []
    for g in groups:
        rows = np.setdiff1d(np.arange(ya.size), g)
        loo.append(_kl_mi_tree(zw[rows], xw[rows], ya[rows], k))
    return values, info._jackknife_combine(loo)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("kind", REGIMES)
def test_kl_knn_equals_tree_per_replicate(kind: str) -> None:
    x, z, y = regime(kind)
    want, want_se = kl_knn_reference(x, z, y)
    for xw in (None, whiten_x(x)):  # from scratch, and with a cached X side (the probe)
        got = kl_knn(x, z, y, num_classes=K_CLASSES, x_whitened=xw)
        # The same neighbour distances (the k-d tree's own, read from lists; rows whose list
        # runs short are searched by brute force), so only the order of summation in the
        # mean of log rho differs: measured <= 1.3e-14 relative (values) and 5e-14 (SEs).
        # Tolerance 1e-11 relative, plus 1e-11 nats absolute for values near 0.
        for key, val in want.items():
            assert close(got.values[key], val, 1e-11, 1e-11), (key, got.values[key], val)
        for key, val in want_se.items():
            assert close(got.stderr[key], val, 1e-9, 1e-12), (key, got.stderr[key], val)


@pytest.mark.parametrize("p", [2.0, np.inf])
def test_neighbour_lists_kth_exact(p: float) -> None:
    # The k-th nearest kept other row from the lists equals brute force over the kept rows,
    # including the fallback: with half the rows deleted many lists run short.  The list
    # distances are the k-d tree's, the fallback's numpy's: equal to 1 ulp (tolerance
    # 4 eps64 relative).  Exact duplicates (distance 0) included.
    rng = np.random.default_rng(3)
    a = rng.standard_normal((300, 3))
    a[1::30] = a[0::30]
    k = 3
    near = info._Neighbours(a, k, p)
    keep = rng.random((5, 300)) < np.array([[1.0], [0.9], [0.5], [0.05], [0.0]])
    keep[4, :3] = True  # 3 kept rows: each has 2 < k other kept rows
    got = near.kth(keep)
    diff = np.abs(a[:, None, :] - a[None, :, :])
    dist = diff.max(-1) if math.isinf(p) else np.sqrt((diff**2).sum(-1))
    np.fill_diagonal(dist, np.inf)
    for r in range(keep.shape[0]):
        masked = np.where(keep[r][None, :], dist, np.inf)
        want = np.sort(masked, axis=1)[:, k - 1]
        np.testing.assert_allclose(got[r], want, rtol=4 * EPS64, atol=0.0)
    assert np.isinf(got[4, :3]).all()  # fewer than k other kept rows: inf, never a distance


# --------------------------------------------------------------------------------------------
# cmi_ksg


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("kind", REGIMES)
def test_cmi_ksg_dense_equals_tree(kind: str) -> None:
    x, z, y = regime(kind)
    tree = cmi_ksg(x, z, y, num_classes=K_CLASSES, path="tree")
    xw = whiten_x(x)
    for xside in (None, xw, xw):  # scratch; cached X side built, then read from its store
        dense = cmi_ksg(x, z, y, num_classes=K_CLASSES, path="dense", x_whitened=xside)
        assert dense.params["path"] == "dense"
        # Integer neighbour counts on the same distances (max-norm: exact arithmetic, no
        # rounding but the coordinates'), so the counts agree exactly; the digamma sums
        # differ in summation order only: measured <= 3e-14 relative.  Tolerance 1e-11
        # relative + 1e-11 nats.
        for key, val in tree.values.items():
            assert close(dense.values[key], val, 1e-11, 1e-11), (key, dense.values[key], val)
            assert close(dense.stderr[key], tree.stderr[key], 1e-9, 1e-12), key


def test_radius_pairs_are_the_tree_ball_pairs() -> None:
    # Brute-force pairs within a radius per row = the k-d tree's ball query (strict <),
    # exactly: the same pairs and the same max-norm distances, with ties at the radius.
    rng = np.random.default_rng(5)
    a = np.round(rng.standard_normal((700, 3)), 1)  # a coarse grid: many exact ties
    need = rng.uniform(0.0, 1.0, 700)
    rows, cols, dists = info._radius_pairs(a, need)
    lists = cKDTree(a).query_ball_point(a, np.nextafter(need, 0.0), p=np.inf)
    want = {(i, j) for i, js in enumerate(lists) for j in js}
    assert set(zip(rows.tolist(), cols.tolist(), strict=True)) == want
    assert np.array_equal(dists, np.abs(a[rows] - a[cols]).max(axis=1))


# --------------------------------------------------------------------------------------------
# the cached X side and the probe


def test_cache_never_serves_a_stale_entry() -> None:
    # The store keys every entry by the array it was derived from: the same WhitenedX used
    # with another z or another x side gives the values of a fresh call, bit for bit.
    x, z, y = regime("clustered")
    _, z2, _ = regime("random", seed=1)
    xw = whiten_x(x)
    for zz in (z, z2, z):
        a = kl_knn(x, zz, y, num_classes=K_CLASSES, x_whitened=xw, se_groups=2)
        b = kl_knn(x, zz, y, num_classes=K_CLASSES, se_groups=2)
        c = cmi_ksg(x, zz, y, num_classes=K_CLASSES, x_whitened=xw, se_groups=2)
        d = cmi_ksg(x, zz, y, num_classes=K_CLASSES, se_groups=2)
        assert a.values == b.values and c.values == d.values
    xs, mapping = whiten_x(x)  # still unpacks as (xw, info)
    assert isinstance(whiten_x(x), WhitenedX) and xs.shape == (N, 3) and "norm_max" in mapping


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_probe_shares_x_side_and_recomputes_z_each_call() -> None:
    x, z, y = regime("clustered")
    _, z2, _ = regime("collapsed", seed=2)
    probe = InfoProbe(x, y, K_CLASSES, {"kl_knn": {}, "cmi_ksg": {}}, n=None)
    assert len(probe._x_sides) == 1  # one PCA of X for both estimators
    first, second, again = probe(z), probe(z2), probe(z)
    assert first == again and first != second
    want = cmi_ksg(x, z2, y, num_classes=K_CLASSES).flat("cmi_ksg/")
    assert {k: second[k] for k in want} == want
