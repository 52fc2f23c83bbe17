"""Information-theoretic measures of a representation Z = g(X) (all values in nats).

Every estimator is a pure function of ALIGNED samples collected in one pass over the data:
row i of ``x`` [n, d_x] (flattened if it has more dims), ``z`` [n, p] and ``y`` [n] (int labels
in [0, K)) belong to the same example.  (The reference implementation read a shuffled loader
twice and paired unrelated x and z; see spec section 6.1.)  Torch tensors and numpy arrays are
accepted; everything is converted to float64 numpy.  Each estimator returns an
:class:`InfoResult` holding the values, a standard error per value (NaN where the method has
none) and every parameter used, seeds included.

Estimators (registry :data:`ESTIMATORS`, call form ``fn(x, z, y, **params)``):

- :func:`kl_knn`   PCA + whitening, then Kozachenko-Leonenko k-NN entropies (3H formula).
- :func:`ksg`      PCA + whitening, then Kraskov-Stoegbauer-Grassberger algorithm 1.
- :func:`nhsic`    normalised HSIC (Fukumizu's NOCCO) with doubly centred Gram matrices.
- :func:`noise_channel`  Theorem 3.4 bounds on I(Z;X|Y) for Z = g(X) + B E.
- :func:`binning`  Shwartz-Ziv & Tishby binning baseline (biased; for comparison only).

Degenerate input (a class with too few samples, a zero-variance representation) gives a
``RuntimeWarning`` and NaN (or an exact 0 where the answer is known), never an exception;
malformed input (shapes, labels, parameters) raises :class:`~latephase.errors.ConfigError`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import linalg, special
from scipy.spatial import cKDTree
from sklearn.decomposition import PCA

from latephase.errors import ConfigError, unknown_choice

__all__ = [
    "ESTIMATORS",
    "InfoResult",
    "binning",
    "estimate",
    "kl_knn",
    "ksg",
    "nhsic",
    "noise_channel",
    "subsample",
    "whiten_x",
]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

NAN = float("nan")


@dataclass(frozen=True)
class InfoResult:
    """Result of one estimator call.

    values: estimated quantities in nats (nHSIC values are dimensionless).
    stderr: standard error per key of ``values`` (NaN where the method gives none).
    params: every parameter used (seeds, sample size, reduced dims, k, bandwidths, ...).
    """

    values: dict[str, float]
    stderr: dict[str, float]
    params: dict[str, object]

    def flat(self, prefix: str = "") -> dict[str, float]:
        """``{prefix+key: value, prefix+key+"_se": stderr}`` for logging one record (the
        ``_se`` entry only where a standard error was computed)."""
        out: dict[str, float] = {}
        for key, val in self.values.items():
            out[prefix + key] = val
            se = self.stderr.get(key, NAN)
            if not math.isnan(se):
                out[prefix + key + "_se"] = se
        return out


# --------------------------------------------------------------------------------------------
# input handling


def _to_numpy(a: Any, name: str) -> np.ndarray:
    if hasattr(a, "detach"):  # torch.Tensor without importing torch
        a = a.detach().cpu()
        if a.is_floating_point():
            a = a.double()
        return np.asarray(a.numpy())
    try:
        return np.asarray(a)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise ConfigError(f"{name} must be a torch tensor or numpy array, got {type(a)}") from exc


def _as_matrix(a: Any, name: str) -> FloatArray:
    """[n, ...] -> float64 [n, d] (1-D input is one feature)."""
    arr = _to_numpy(a, name)
    if arr.ndim == 0:
        raise ConfigError(f"{name} must have a sample axis, got a scalar; valid: shape [n, ...]")
    if arr.dtype.kind not in "biuf":
        raise ConfigError(f"{name} has dtype {arr.dtype}; valid: a real numeric array")
    arr = arr.reshape(arr.shape[0], -1).astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise ConfigError(f"{name} has {bad} rows with NaN/inf values; valid: finite values")
    return arr


def _as_labels(y: Any, num_classes: int | None) -> tuple[IntArray, int]:
    """[n] integer labels in [0, K) -> (int64 array, K)."""
    arr = _to_numpy(y, "y")
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ConfigError(f"y must have shape [n], got {tuple(arr.shape)}; valid: 1-D int labels")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ConfigError("y has non-integer values; valid: int labels in [0, K)")
    elif arr.dtype.kind not in "biu":
        raise ConfigError(f"y has dtype {arr.dtype}; valid: int labels in [0, K)")
    labels = arr.astype(np.int64)
    if num_classes is not None:
        _check_int("num_classes", num_classes, 1)
    if labels.size:
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or (num_classes is not None and hi >= num_classes):
            bound = "K" if num_classes is None else str(num_classes)
            raise ConfigError(f"y has labels in [{lo}, {hi}]; valid: int labels in [0, {bound})")
    k_classes = num_classes if num_classes is not None else int(labels.max(initial=-1)) + 1
    return labels, k_classes


def _check_lengths(**arrays: np.ndarray) -> int:
    lengths = {name: int(a.shape[0]) for name, a in arrays.items()}
    if len(set(lengths.values())) != 1:
        shown = ", ".join(f"{k}={v}" for k, v in lengths.items())
        raise ConfigError(f"mismatched sample counts ({shown}); valid: aligned rows, equal n")
    n = next(iter(lengths.values()))
    if n < 2:
        raise ConfigError(f"need at least 2 samples, got n={n}")
    return n


def _check_int(name: str, value: object, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name}={value!r} must be an int")
    if value < lo or (hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ConfigError(f"{name}={value!r} is out of range; valid: int {rng}")
    return int(value)


def _check_pos(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{name}={value!r} must be a positive finite float")
    if not (math.isfinite(float(value)) and float(value) > 0):
        raise ConfigError(f"{name}={value!r} is invalid; valid: a positive finite float")
    return float(value)


def subsample(n_total: int, n: int | None, seed: int) -> IntArray:
    """Seeded choice of ``min(n, n_total)`` distinct row indices, returned sorted.

    ``n=None`` or ``n >= n_total`` returns ``arange(n_total)`` (every row, original order).
    Uses ``numpy.random.default_rng(seed)``; the same (n_total, n, seed) gives the same rows.
    """
    n_total = _check_int("n_total", n_total, 0)
    seed = _check_int("seed", seed, 0)
    if n is None or n >= n_total:
        return np.arange(n_total, dtype=np.int64)
    n = _check_int("n", n, 1)
    idx = np.random.default_rng(seed).choice(n_total, size=n, replace=False)
    return np.sort(idx).astype(np.int64)


def _warn(msg: str) -> None:
    warnings.warn(msg, RuntimeWarning, stacklevel=3)


# --------------------------------------------------------------------------------------------
# lossy compression: PCA + whitening


def _pca_whiten(
    a: FloatArray, dim: int, seed: int, svd_solver: str
) -> tuple[FloatArray, dict[str, object]]:
    """Project ``a`` [n, d] on its top ``dim`` principal axes and scale each to unit variance.

    Components whose variance is <= 1e-12 x the largest (numerically zero) are dropped, so the
    output has ``dim_used <= min(dim, n - 1, d)`` columns (0 if ``a`` is constant).
    """
    n, d = a.shape
    dim_fit = min(dim, n - 1, d)
    info: dict[str, object] = {"dim_requested": dim}
    centred = a - a.mean(axis=0)
    if dim_fit < 1 or not np.any(centred):
        info.update(dim_used=0, pca_solver="none", explained_variance_ratio=0.0)
        return np.zeros((n, 0)), info
    pca = PCA(n_components=dim_fit, svd_solver=svd_solver, random_state=seed)
    proj = pca.fit_transform(centred)  # [n, dim_fit]
    var = proj.var(axis=0, ddof=1)
    keep = var > 1e-12 * max(float(var.max()), 1e-300)
    proj = proj[:, keep] / np.sqrt(var[keep])
    info.update(
        dim_used=int(keep.sum()),
        pca_solver=str(getattr(pca, "_fit_svd_solver", svd_solver)),
        explained_variance_ratio=float(pca.explained_variance_ratio_[keep].sum()),
    )
    return np.ascontiguousarray(proj), info


def _stratified_groups(y: IntArray, groups: int, rng: np.random.Generator) -> list[IntArray]:
    """Partition rows into ``groups`` disjoint sets, each with ~1/groups of every class."""
    member = np.empty(y.shape[0], dtype=np.int64)
    offset = 0
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        rows = rows[rng.permutation(rows.size)]
        member[rows] = (offset + np.arange(rows.size)) % groups
        offset += rows.size  # continue the round-robin so group sizes stay balanced
    return [np.flatnonzero(member == g) for g in range(groups)]


def _jackknife_se(
    estimator: Callable[[IntArray], dict[str, float]], groups: list[IntArray], n: int
) -> dict[str, float]:
    """Delete-a-group jackknife standard error.

    theta_(g) = estimator on all rows except group g (G groups);
    SE^2 = (G - 1)/G * sum_g (theta_(g) - mean_g theta_(g))^2.  Non-finite values give NaN.
    """
    loo = []
    for g in groups:
        keep = np.ones(n, dtype=bool)
        keep[g] = False
        loo.append(estimator(np.flatnonzero(keep)))
    se: dict[str, float] = {}
    big_g = len(groups)
    for key in loo[0]:
        vals = np.array([d[key] for d in loo], dtype=np.float64)
        if big_g < 2 or not np.all(np.isfinite(vals)):
            se[key] = NAN
        else:
            se[key] = float(math.sqrt((big_g - 1) / big_g * np.sum((vals - vals.mean()) ** 2)))
    return se


# --------------------------------------------------------------------------------------------
# k-NN estimators


def _kl_entropy(a: FloatArray, k: int) -> float:
    """Kozachenko-Leonenko entropy (nats) of samples a [n, d]:

    h = psi(n) - psi(k) + log V_d + (d/n) sum_i log rho_i,  V_d = pi^(d/2) / Gamma(d/2 + 1),
    rho_i the Euclidean distance from a_i to its k-th nearest other sample.
    """
    n, d = a.shape
    if n <= k:
        return NAN
    dist, _ = cKDTree(a).query(a, k=k + 1)  # column 0 is the point itself
    rho = dist[:, k]
    if np.any(rho <= 0.0):
        return NAN
    log_vd = 0.5 * d * math.log(math.pi) - special.gammaln(0.5 * d + 1.0)
    return float(special.digamma(n) - special.digamma(k) + log_vd + d * np.mean(np.log(rho)))


def _kl_mi(zw: FloatArray, xw: FloatArray, y: IntArray, k: int) -> dict[str, float]:
    """3H estimates on whitened, jittered samples (see :func:`kl_knn`)."""
    n = zw.shape[0]
    h_z = _kl_entropy(zw, k)
    izx = h_z + _kl_entropy(xw, k) - _kl_entropy(np.hstack([zw, xw]), k)
    h_z_y = 0.0
    for c in np.unique(y):
        rows = y == c
        h_z_y += float(rows.sum()) / n * _kl_entropy(zw[rows], k)
    izy = h_z - h_z_y
    return {"izx": float(izx), "izy": float(izy), "redundancy": float(izx - izy)}


def _ksg_mi(zw: FloatArray, xw: FloatArray, k: int) -> dict[str, float]:
    """KSG algorithm 1 (max-norm): I = psi(k) + psi(n) - < psi(n_z + 1) + psi(n_x + 1) >."""
    n = zw.shape[0]
    if n <= k:
        return {"izx": NAN}
    joint = np.hstack([zw, xw])
    dist, _ = cKDTree(joint).query(joint, k=k + 1, p=np.inf)
    eps = dist[:, k]
    if np.any(eps <= 0.0):
        return {"izx": NAN}
    radius = np.nextafter(eps, 0.0)  # strict inequality ||.|| < eps_i
    # counts include the point itself, so count = n_i + 1
    cz = cKDTree(zw).query_ball_point(zw, radius, p=np.inf, return_length=True)
    cx = cKDTree(xw).query_ball_point(xw, radius, p=np.inf, return_length=True)
    terms = special.digamma(cz) + special.digamma(cx)
    return {"izx": float(special.digamma(k) + special.digamma(n) - np.mean(terms))}


def _prepare_knn(
    x: Any,
    z: Any,
    y: Any | None,
    *,
    k: int,
    dim_z: int,
    dim_x: int,
    n: int | None,
    se_groups: int,
    jitter: float,
    svd_solver: str,
    num_classes: int | None,
    seed: int,
    x_whitened: tuple[FloatArray, dict[str, object]] | None = None,
) -> tuple[FloatArray, FloatArray, IntArray, dict[str, object], np.random.Generator]:
    """Validate, subsample, PCA-whiten and jitter; shared by kl_knn and ksg."""
    xa, za = _as_matrix(x, "x"), _as_matrix(z, "z")
    if y is None:
        n_total = _check_lengths(x=xa, z=za)
        ya, k_classes = np.zeros(n_total, dtype=np.int64), 1
    else:
        ya, k_classes = _as_labels(y, num_classes)
        n_total = _check_lengths(x=xa, z=za, y=ya)
    seed = _check_int("seed", seed, 0)
    _check_int("dim_z", dim_z, 1)
    _check_int("dim_x", dim_x, 1)
    _check_int("se_groups", se_groups, 0)
    if se_groups == 1:
        raise ConfigError("se_groups=1 is invalid; valid: 0 (no standard error) or an int >= 2")
    if n is not None:
        _check_int("n", n, 2)
    if not (isinstance(jitter, (int, float)) and math.isfinite(jitter) and jitter >= 0):
        raise ConfigError(f"jitter={jitter!r} is invalid; valid: a finite float >= 0")
    if svd_solver not in ("auto", "full", "randomized", "covariance_eigh", "arpack"):
        raise ConfigError(
            unknown_choice(
                "svd_solver",
                svd_solver,
                ["auto", "full", "randomized", "covariance_eigh", "arpack"],
            )
        )
    idx = subsample(n_total, n, seed)
    n_used = int(idx.size)
    _check_int("k", k, 1)
    if k >= n_used:
        raise ConfigError(
            f"k={k} must be smaller than the sample size n={n_used}; valid: 1..{n_used - 1}"
        )
    xa, za, ya = xa[idx], za[idx], ya[idx]
    zw, zinfo = _pca_whiten(za, dim_z, seed, svd_solver)
    if x_whitened is None:
        xw, xinfo = _pca_whiten(xa, dim_x, seed, svd_solver)
    else:
        xw, xinfo = x_whitened
        if xw.shape[0] != n_total or n_used != n_total:
            raise ConfigError("x_whitened must hold one row per sample and n must be None")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    if jitter > 0:
        zw = zw + jitter * rng.standard_normal(zw.shape)
        xw = xw + jitter * rng.standard_normal(xw.shape)
    params: dict[str, object] = {
        "k": k,
        "dim_z": dim_z,
        "dim_x": dim_x,
        "dim_z_used": zinfo["dim_used"],
        "dim_x_used": xinfo["dim_used"],
        "z_explained_variance_ratio": zinfo["explained_variance_ratio"],
        "x_explained_variance_ratio": xinfo["explained_variance_ratio"],
        "pca_solver_z": zinfo["pca_solver"],
        "pca_solver_x": xinfo["pca_solver"],
        "svd_solver": svd_solver,
        "n": n,
        "n_total": n_total,
        "n_used": n_used,
        "num_classes": k_classes,
        "se_groups": se_groups,
        "jitter": float(jitter),
        "seed": seed,
    }
    return zw, xw, ya, params, rng


def whiten_x(x: Any, *, dim_x: int = 3, seed: int = 0,
             svd_solver: str = "auto") -> tuple[FloatArray, dict[str, object]]:
    """The PCA-whitened X that :func:`kl_knn` computes, for reuse across calls."""
    return _pca_whiten(_as_matrix(x, "x"), dim_x, seed, svd_solver)


def kl_knn(
    x: Any,
    z: Any,
    y: Any,
    *,
    k: int = 3,
    dim_z: int = 3,
    dim_x: int = 3,
    n: int | None = None,
    se_groups: int = 10,
    jitter: float = 1e-10,
    svd_solver: str = "auto",
    num_classes: int | None = None,
    seed: int = 0,
    x_whitened: tuple[FloatArray, dict[str, object]] | None = None,
) -> InfoResult:
    """Lossy compression + Kozachenko-Leonenko k-NN estimates of I(Z;X) and I(Z;Y) (nats).

    1. Rows: all, or a seeded subsample of ``n`` (``subsample(N, n, seed)``).
    2. Z and X are each reduced by sklearn PCA (``random_state=seed``) to ``dim_z`` /
       ``dim_x`` components and whitened (unit variance per component; numerically zero
       components dropped, dims actually used are in ``params``).
    3. Every coordinate gets seeded Gaussian jitter of std ``jitter`` (in whitened units) so
       that duplicate points have non-zero neighbour distances; exact duplicates then
       contribute about log(jitter) each, i.e. a very negative entropy, as they should for a
       discrete component.  ``jitter=0`` turns this off (zero distances then give NaN).
    4. h(.) is the KL estimator (Euclidean norm), with k-th neighbour distance rho_i:
       h = psi(n) - psi(k) + log V_d + (d/n) sum_i log rho_i,   V_d = pi^(d/2)/Gamma(d/2+1).
       I(Z;X) = h(Z) + h(X) - h(Z,X);   I(Z;Y) = h(Z) - sum_c (n_c/n) h(Z | Y=c);
       redundancy = I(Z;X) - I(Z;Y)  (the paper's I(Z;X|Y) proxy).  Values are not clipped
       and can be negative.  A class with <= k samples makes I(Z;Y) NaN (warning).
    5. Diagnostics "izx_null" / "izy_null": the same estimates after one seeded re-pairing
       (z rows permuted against x; labels permuted against z), i.e. the estimator's value at
       independence for THESE marginals.  The 3H formula's biases do not cancel: at n = 2000,
       dims 3+3, the null is ~0 for Gaussian marginals but -0.1 to -0.25 nats for bounded,
       clumpy (tanh-like) ones, so compare izx with izx_null rather than with 0 (or use
       :func:`ksg`, which is unbiased at independence).  No stderr for the nulls.

    Standard error: delete-a-group jackknife over ``se_groups`` seeded groups stratified by
    class, SE^2 = (G-1)/G sum_g (theta_(g) - mean theta)^2, theta_(g) the estimate without
    group g (PCA fixed).  It assumes no rate of convergence (a subsampling SE assuming
    variance ~ 1/n was 2x too small on near-deterministic data); by the Efron-Stein
    inequality it is conservative on average: SE / (seed-to-seed sd) measured 0.97-1.5 over
    Gaussian, independent and tanh data.  Costs G extra evaluations; ``se_groups=0`` skips.

    ``x_whitened``: the output of :func:`whiten_x` for these rows (same ``dim_x``, ``seed``,
    ``svd_solver``), to skip re-reducing an X that does not change between calls.

    Defaults (k=3, dims 3+3, 10 groups) were chosen from measured accuracy at n = 2000 on
    Gaussians with per-pair correlation rho (mean over seeds, bias / sd in nats):
      dims 3+3: rho=0 +0.015/0.03, rho=0.5 -0.002/0.03, rho=0.8 -0.07/0.03 (I=1.53);
      dims 4+4: rho=0 -0.07/0.03,  rho=0.5 -0.12/0.03,  rho=0.8 -0.30/0.04 (I=2.04);
      dims 8+8: rho=0 -0.60/0.03,  rho=0.5 -0.89/0.04   (joint dim 16: not usable).
    The 3H bias grows fast with the joint dimension dim_z + dim_x (k=1 halves it at 4+4 but
    doubles the variance); keep dim_z + dim_x <= 6 for values, larger only for trends.
    """
    zw, xw, ya, params, rng = _prepare_knn(
        x,
        z,
        y,
        k=k,
        dim_z=dim_z,
        dim_x=dim_x,
        n=n,
        se_groups=se_groups,
        jitter=jitter,
        svd_solver=svd_solver,
        num_classes=num_classes,
        seed=seed,
        x_whitened=x_whitened,
    )
    keys = ("izx", "izy", "redundancy", "izx_null", "izy_null")
    counts = np.bincount(ya)
    params["class_counts"] = counts.tolist()
    if zw.shape[1] == 0 or xw.shape[1] == 0:
        _warn("kl_knn: z or x has zero variance; I(Z;X) = I(Z;Y) = 0 exactly")
        return InfoResult(dict.fromkeys(keys, 0.0), dict.fromkeys(keys, 0.0), params)
    if np.any((counts > 0) & (counts <= k)):
        _warn(f"kl_knn: a class has <= k={k} samples (counts {counts.tolist()}); I(Z;Y) is NaN")
    values = _kl_mi(zw, xw, ya, k)
    perm = rng.permutation(ya.size)
    null = _kl_mi(zw[perm], xw, ya, k)  # z re-paired with x; (z, y) re-paired too
    values.update(izx_null=null["izx"], izy_null=null["izy"])
    stderr = dict.fromkeys(keys, NAN)
    if se_groups >= 2:
        groups = _stratified_groups(ya, se_groups, rng)
        stderr.update(
            _jackknife_se(lambda rows: _kl_mi(zw[rows], xw[rows], ya[rows], k), groups, ya.size)
        )
    return InfoResult(values, stderr, params)


def ksg(
    x: Any,
    z: Any,
    *,
    k: int = 3,
    dim_z: int = 3,
    dim_x: int = 3,
    n: int | None = None,
    se_groups: int = 10,
    jitter: float = 1e-10,
    svd_solver: str = "auto",
    seed: int = 0,
) -> InfoResult:
    """Kraskov-Stoegbauer-Grassberger (algorithm 1) estimate of I(Z;X) in nats.

    Same subsampling, PCA, whitening and jitter as :func:`kl_knn`.  With the max-norm on the
    joint space, eps_i = distance from (z_i, x_i) to its k-th neighbour, n_z(i), n_x(i) the
    numbers of other points strictly within eps_i in each marginal:
        I(Z;X) = psi(k) + psi(n) - (1/n) sum_i [psi(n_z(i) + 1) + psi(n_x(i) + 1)].
    Using one radius in the joint and marginal spaces cancels the bias at independence that
    the 3H formula of :func:`kl_knn` shows for non-Gaussian marginals; both underestimate
    strong dependence in high joint dimension (see the table in :func:`kl_knn`; KSG at n =
    2000: -0.08 nats at dims 4+4, rho = 0.5).  Standard error: the same delete-a-group
    jackknife as :func:`kl_knn` (random groups).  Key "izx".
    """
    zw, xw, ya, params, rng = _prepare_knn(
        x,
        z,
        None,
        k=k,
        dim_z=dim_z,
        dim_x=dim_x,
        n=n,
        se_groups=se_groups,
        jitter=jitter,
        svd_solver=svd_solver,
        num_classes=None,
        seed=seed,
    )
    del params["num_classes"]
    if zw.shape[1] == 0 or xw.shape[1] == 0:
        _warn("ksg: z or x has zero variance; I(Z;X) = 0 exactly")
        return InfoResult({"izx": 0.0}, {"izx": 0.0}, params)
    values = _ksg_mi(zw, xw, k)
    stderr = {"izx": NAN}
    if se_groups >= 2:
        groups = _stratified_groups(ya, se_groups, rng)
        stderr = _jackknife_se(lambda rows: _ksg_mi(zw[rows], xw[rows], k), groups, ya.size)
    return InfoResult(values, stderr, params)


# --------------------------------------------------------------------------------------------
# normalised HSIC


def _sq_dists(a: FloatArray) -> FloatArray:
    """Pairwise squared Euclidean distances [n, n] (clamped at 0, zero diagonal)."""
    sq = np.einsum("ij,ij->i", a, a)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (a @ a.T)
    np.maximum(d2, 0.0, out=d2)
    np.fill_diagonal(d2, 0.0)
    return d2


def _gaussian_gram(a: FloatArray, bandwidth: str, sigma: float) -> tuple[FloatArray, float]:
    """Gaussian Gram matrix exp(-||a_i - a_j||^2 / w) and its width w."""
    n, d = a.shape
    d2 = _sq_dists(a)
    if bandwidth == "paper":
        width = 2.0 * sigma**2 * d
    else:  # median heuristic: s = median pairwise distance, w = 2 s^2
        off = d2[np.triu_indices(n, 1)]
        med = float(np.median(off)) if off.size else 0.0
        if med <= 0.0:  # more than half the pairs coincide: fall back to the mean
            med = float(off.mean()) if off.size else 0.0
        width = 2.0 * med if med > 0.0 else 1.0  # constant data: K = 1, centred K = 0
    np.multiply(d2, -1.0 / width, out=d2)
    return np.exp(d2, out=d2), width


def _double_centre(k: FloatArray) -> FloatArray:
    """H K H with H = I - 11^T/n."""
    row = k.mean(axis=1)
    return k - row[:, None] - row[None, :] + row.mean()


def _nocco_r(k_centred: FloatArray, reg: float) -> FloatArray:
    """R = K~ (K~ + reg I)^{-1} = I - reg (K~ + reg I)^{-1}  (Cholesky inverse, float64)."""
    n = k_centred.shape[0]
    m = k_centred + reg * np.eye(n)
    chol, info = linalg.lapack.dpotrf(m, lower=0)
    if info != 0:  # pragma: no cover - K~ is PSD, so m >= reg I > 0
        raise np.linalg.LinAlgError(f"Cholesky failed (info={info})")
    inv, info = linalg.lapack.dpotri(chol, lower=0)
    if info != 0:  # pragma: no cover
        raise np.linalg.LinAlgError(f"Cholesky inverse failed (info={info})")
    inv = np.triu(inv) + np.triu(inv, 1).T
    r = -reg * inv
    r[np.diag_indices(n)] += 1.0
    return r


def nhsic(
    x: Any,
    z: Any,
    y: Any,
    *,
    n: int = 1000,
    bandwidth: str = "paper",
    sigma: float = 5.0,
    eps: float = 1e-5,
    num_classes: int | None = None,
    seed: int = 0,
) -> InfoResult:
    """Normalised HSIC (NOCCO, Fukumizu et al. 2008) of Z with X and with Y (dimensionless).

        nHSIC(A;B) = Tr(R_A R_B),   R = K~ (K~ + n eps I)^{-1},   K~ = H K H,  H = I - 11^T/n

    computed ONCE on one seeded subsample of min(n, N) rows (``subsample(N, n, seed)``),
    never averaged over batches, so the value does not depend on how z was collected.
    Kernels: Gaussian for Z and X (x flattened), k(a, b) = exp(-||a - b||^2 / w) with
      * ``bandwidth="paper"``: w = 2 sigma^2 dim, i.e. a Gaussian of variance sigma^2 dim
        (dim = number of columns of that variable: p for Z, d_x for X; sigma = 5).  This is
        the rule of the HSIC-bottleneck code (Ma et al. 2020) whose nHSIC the reference
        implementation uses.  Fixed width: NOT invariant to rescaling Z; feature norms far
        above sigma sqrt(dim) (e.g. init x8) drive K_Z toward I and nhsic_zx toward its null.
      * ``bandwidth="median"``: w = 2 s^2, s = median pairwise distance on the subsample
        (``sigma`` unused).  Invariant to a common rescaling of each variable.
    Linear kernel Y Y^T on one-hot labels, also doubly centred (R_Y is formed in closed form,
    R_Y = A (A^T A + n eps I)^{-1} A^T with A = H onehot(Y)).  The reference implementation
    centred one side only, left the label kernel uncentred and averaged per-batch values.

    eps = 1e-5 (as in that code; n eps = 0.01 at n = 1000) regularises the inverse; the
    Gaussian-kernel eigenvalues below ~n eps are suppressed.  0 <= nHSIC(A;B) <= min(rank).
    Under independence nHSIC is not 0: its mean over random row pairings is exactly
    Tr(R_A) Tr(R_B) / (n - 1), reported as "nhsic_zx_null" / "nhsic_zy_null" for scale.
    Keys: "nhsic_zx", "nhsic_zy", "redundancy" = nhsic_zx - nhsic_zy, and the two nulls.
    Cost O(n^2 (d_x + p) + n^3): about 0.2 s at n = 1000 on one core.
    """
    xa, za = _as_matrix(x, "x"), _as_matrix(z, "z")
    ya, k_classes = _as_labels(y, num_classes)
    n_total = _check_lengths(x=xa, z=za, y=ya)
    _check_int("n", n, 2)
    seed = _check_int("seed", seed, 0)
    if bandwidth not in ("paper", "median"):
        raise ConfigError(unknown_choice("bandwidth", bandwidth, ["paper", "median"]))
    sigma = _check_pos("sigma", sigma)
    eps = _check_pos("eps", eps)
    idx = subsample(n_total, n, seed)
    m = int(idx.size)
    xa, za, ya = xa[idx], za[idx], ya[idx]
    reg = m * eps

    k_z, w_z = _gaussian_gram(za, bandwidth, sigma)
    r_z = _nocco_r(_double_centre(k_z), reg)
    del k_z
    k_x, w_x = _gaussian_gram(xa, bandwidth, sigma)
    r_x = _nocco_r(_double_centre(k_x), reg)
    del k_x

    r_y = _label_r(ya, k_classes, reg)
    params: dict[str, object] = {
        "n": n,
        "n_total": n_total,
        "n_used": m,
        "bandwidth": bandwidth,
        "sigma": sigma if bandwidth == "paper" else None,
        "width_z": w_z,
        "width_x": w_x,
        "dim_z": za.shape[1],
        "dim_x": xa.shape[1],
        "eps": eps,
        "num_classes": k_classes,
        "kernel_z": "gaussian",
        "kernel_x": "gaussian",
        "kernel_y": "linear-onehot",
        "seed": seed,
    }
    tr_z, tr_x, tr_y = (float(np.trace(r)) for r in (r_z, r_x, r_y))
    return _nhsic_result(r_z, r_x, r_y, tr_z=tr_z, tr_x=tr_x, tr_y=tr_y, params=params)


def _label_r(y: IntArray, num_classes: int, reg: float) -> FloatArray:
    """R_Y for the doubly centred linear kernel on one-hot labels, in closed form:
    R_Y = A (A^T A + reg I)^{-1} A^T with A = H onehot(Y)  [m, m]."""
    m = y.shape[0]
    onehot = np.zeros((m, max(num_classes, 1)))
    onehot[np.arange(m), y] = 1.0
    a = onehot - onehot.mean(axis=0)  # H onehot  [m, K]
    gram = a.T @ a + reg * np.eye(a.shape[1])
    return np.asarray(a @ np.linalg.solve(gram, a.T))


def _nhsic_result(r_z: FloatArray, r_x: FloatArray, r_y: FloatArray, *, tr_z: float,
                  tr_x: float, tr_y: float, params: dict[str, object]) -> InfoResult:
    """nHSIC values from the three R matrices (Tr(R_A R_B) = sum(R_A * R_B), symmetric)."""
    m = r_z.shape[0]
    zx = float(np.sum(r_z * r_x))
    zy = float(np.sum(r_z * r_y))
    values = {
        "nhsic_zx": zx,
        "nhsic_zy": zy,
        "redundancy": zx - zy,
        "nhsic_zx_null": tr_z * tr_x / (m - 1),
        "nhsic_zy_null": tr_z * tr_y / (m - 1),
    }
    return InfoResult(values, dict.fromkeys(values, NAN), params)


# --------------------------------------------------------------------------------------------
# Theorem 3.4 noise-channel bounds


def noise_channel(
    z: Any,
    y: Any,
    *,
    sigma: float = 0.1,
    scale: str | float = "max",
    num_classes: int | None = None,
) -> InfoResult:
    """Theorem 3.4 bounds on I(Z;X|Y) = I(Z;X) - I(Z;Y) for Z = g(X) + B E, E ~ N(0, s^2 I).

        logdet_bound = 1/2 sum_c p(c) log det( Cov[g | Y=c] / (B^2 s^2) + I )
        trace_bound  = V / (2 s^2),   V = E || g/B - E[g/B | Y] ||^2   (= RNC1 with scale B)

    with s = ``sigma``, p(c) = n_c/n, Cov the per-class sample covariance with 1/n_c (the
    same normalisation as the within-class scatter Sigma_W, so V = Tr(Sigma_W)/B^2 and
    trace_bound >= logdet_bound holds exactly since log(1 + t) <= t).  The log-det is summed
    over eigenvalues (squared singular values of the centred class block, float64, log1p).
    The log-det bound equals I(Z;X|Y) when g | Y=c is Gaussian.
    B: ``"max"`` = max_i ||g_i|| (proxy for sup_x ||g(x)||), ``"mean"`` = mean_i ||g_i||,
    or a positive float.  Default s = 0.1: noise of 10 % of the representation scale per
    direction, where the bounds are O(1)-O(10) nats rather than saturated or ~0 (a choice,
    not a value from the paper).  A class with a single sample gives NaN (warning).
    Keys "logdet_bound", "trace_bound", "v"; ``params["B"]`` is the scale used.
    """
    za = _as_matrix(z, "z")
    ya, k_classes = _as_labels(y, num_classes)
    n = _check_lengths(z=za, y=ya)
    sigma = _check_pos("sigma", sigma)
    norms = np.linalg.norm(za, axis=1)
    if isinstance(scale, str):
        if scale not in ("max", "mean"):
            raise ConfigError(unknown_choice("scale", scale, ["max", "mean", "<positive float>"]))
        b = float(norms.max() if scale == "max" else norms.mean())
    else:
        b = _check_pos("scale", scale)
    params: dict[str, object] = {
        "sigma": sigma,
        "scale": scale,
        "B": b,
        "n": n,
        "num_classes": k_classes,
    }
    keys = ("logdet_bound", "trace_bound", "v")
    if b <= 0.0:
        _warn("noise_channel: all features are zero, the scale B is 0; returning NaN")
        return InfoResult(dict.fromkeys(keys, NAN), dict.fromkeys(keys, NAN), params)
    counts = np.bincount(ya)
    if np.any(counts == 1):
        _warn(f"noise_channel: a class has a single sample (counts {counts.tolist()}); NaN")
        return InfoResult(dict.fromkeys(keys, NAN), dict.fromkeys(keys, NAN), params)
    noise_var = (b * sigma) ** 2
    logdet, trace = 0.0, 0.0
    for c in np.flatnonzero(counts):
        block = za[ya == c]
        centred = block - block.mean(axis=0)  # [n_c, p]
        s = linalg.svdvals(centred)
        eig = s**2 / counts[c]  # eigenvalues of the class covariance (1/n_c)
        logdet += counts[c] / n * 0.5 * float(np.sum(np.log1p(eig / noise_var)))
        trace += counts[c] / n * float(np.sum(centred**2)) / counts[c]
    v = trace / b**2
    values = {
        "logdet_bound": float(logdet),
        "trace_bound": float(v / (2.0 * sigma**2)),
        "v": float(v),
    }
    params["class_counts"] = counts.tolist()
    return InfoResult(values, dict.fromkeys(keys, NAN), params)


# --------------------------------------------------------------------------------------------
# binning baseline


def _plugin_entropy(codes: IntArray) -> float:
    """Plug-in entropy (nats) of the rows of an int matrix, each row one discrete symbol."""
    if codes.shape[0] == 0:
        return 0.0
    _, counts = np.unique(codes, axis=0, return_counts=True)
    p = counts / counts.sum()
    return float(-np.sum(p * np.log(p)))


def binning(
    x: Any,
    z: Any,
    y: Any,
    *,
    bins: int = 30,
    num_classes: int | None = None,
) -> InfoResult:
    """Shwartz-Ziv & Tishby (2017) binning estimator (a biased baseline, nats).

    Each unit j of z is cut into ``bins`` equal-width bins over its OBSERVED range
    [min_i z_ij, max_i z_ij] (the maximum goes into the last bin; a constant unit is one
    bin); T is the resulting integer pattern of a row.  With plug-in entropies over patterns,
        I(Z;X) = H(T)   (X is taken as the identity of each sample: the network is
                         deterministic and every sample is a distinct, equiprobable x, so
                         H(T|X) = 0, as in their paper; ``x`` is used only for validation)
        I(Z;Y) = H(T) - sum_c p(c) H(T | Y=c),   redundancy = I(Z;X) - I(Z;Y).
    Known to be biased: H(T) saturates at log n once all patterns differ, and the values
    depend on ``bins``.  Default 30 bins as in their paper.
    """
    xa, za = _as_matrix(x, "x"), _as_matrix(z, "z")
    ya, k_classes = _as_labels(y, num_classes)
    n = _check_lengths(x=xa, z=za, y=ya)
    bins = _check_int("bins", bins, 1)
    lo, hi = za.min(axis=0), za.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    codes = np.floor((za - lo) / span * bins).astype(np.int64)
    np.clip(codes, 0, bins - 1, out=codes)
    h_t = _plugin_entropy(codes)
    h_t_y = 0.0
    for c in np.unique(ya):
        rows = ya == c
        h_t_y += float(rows.sum()) / n * _plugin_entropy(codes[rows])
    izy = float(h_t - h_t_y)
    values = {"izx": h_t, "izy": izy, "redundancy": float(h_t - izy)}
    params: dict[str, object] = {
        "bins": bins,
        "range": "observed per unit",
        "n": n,
        "num_classes": k_classes,
        "n_patterns": int(np.unique(codes, axis=0).shape[0]),
    }
    return InfoResult(values, dict.fromkeys(values, NAN), params)


# --------------------------------------------------------------------------------------------
# registry


def _ksg_entry(x: Any, z: Any, y: Any, **params: Any) -> InfoResult:
    """``ksg`` in the registry call form (y is ignored)."""
    return ksg(x, z, **params)


def _noise_channel_entry(x: Any, z: Any, y: Any, **params: Any) -> InfoResult:
    """``noise_channel`` in the registry call form (x is ignored)."""
    return noise_channel(z, y, **params)


ESTIMATORS: dict[str, Callable[..., InfoResult]] = {
    "kl_knn": kl_knn,
    "ksg": _ksg_entry,
    "nhsic": nhsic,
    "noise_channel": _noise_channel_entry,
    "binning": binning,
}


def estimate(name: str, x: Any, z: Any, y: Any, **params: Any) -> InfoResult:
    """Run ``ESTIMATORS[name](x, z, y, **params)``; an unknown name raises ConfigError."""
    if name not in ESTIMATORS:
        raise ConfigError(unknown_choice("estimator", name, ESTIMATORS))
    return ESTIMATORS[name](x, z, y, **params)
