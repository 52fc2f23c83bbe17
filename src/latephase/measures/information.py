"""Information-theoretic measures of a representation Z = g(X) (all values in nats).

Every estimator is a pure function of ALIGNED samples collected in one pass over the data:
row i of ``x`` [n, d_x] (flattened if it has more dims), ``z`` [n, p] and ``y`` [n] (int labels
in [0, K)) belong to the same example.  (The reference implementation read a shuffled loader
twice and paired unrelated x and z; see spec section 6.1.)  Torch tensors and numpy arrays are
accepted; everything is converted to float64 numpy.  Each estimator returns an
:class:`InfoResult` holding the values, a standard error per value (NaN where the method has
none) and every parameter used, seeds included.

Estimators (registry :data:`ESTIMATORS`, call form ``fn(x, z, y, **params)``):

- :func:`cmi_ksg`  the trusted one: I(Z;Y) (mixed KSG), I(Z;X'|Y) (class-wise KSG) and
                   I(Z;(X',Y)) = their sum, with jackknife SEs and shuffled-pairs nulls.
- :func:`kl_knn`   PCA + whitening, then Kozachenko-Leonenko k-NN entropies (3H formula);
                   the paper's estimator, not valid once Z clusters (collapse).
- :func:`ksg`      PCA + whitening, then Kraskov-Stoegbauer-Grassberger algorithm 1.
- :func:`nhsic`    normalised HSIC (Fukumizu's NOCCO) with doubly centred Gram matrices.
- :func:`noise_channel`  Theorem 3.4 bounds on I(Z;X|Y) for Z = g(X) + B E.
- :func:`binning`  Shwartz-Ziv & Tishby binning baseline (biased; for comparison only).

Parameters: :data:`PARAMS` holds each estimator's keyword spec and :func:`check_params`
checks them, for every caller (the pure functions, the probe, the config path).
Standard errors, where given, cover the sampling variance only, never the bias.

Degenerate input (a class with too few samples, a zero-variance representation) gives a
``RuntimeWarning`` and NaN (or an exact 0 where the answer is known), never an exception;
malformed input (shapes, labels, parameters) raises :class:`~latephase.errors.ConfigError`.
"""

from __future__ import annotations

import ctypes
import functools
import math
import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import linalg, sparse, special
from scipy.spatial import cKDTree

from latephase.errors import ConfigError, unknown_choice

__all__ = [
    "ESTIMATORS",
    "PARAMS",
    "InfoResult",
    "NhsicSide",
    "WhitenedX",
    "binning",
    "check_params",
    "cmi_ksg",
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
    """numpy view of a torch tensor (floating types upcast to float64, so bfloat16 and float16
    work) or of anything numpy accepts."""
    if hasattr(a, "detach"):  # torch.Tensor without importing torch
        a = a.detach().cpu()
        if a.is_floating_point():
            a = a.double()
        return np.asarray(a.numpy())
    try:
        return np.asarray(a)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise ConfigError(f"{name} must be a torch tensor or numpy array, got {type(a)}") from exc


#: machine epsilon of the torch floating dtypes (by name, so torch is not imported here)
_TORCH_EPS = {"torch.float16": 2.0**-10, "torch.bfloat16": 2.0**-7, "torch.float32": 2.0**-23,
              "torch.float64": 2.0**-52}
_F64_EPS = float(np.finfo(np.float64).eps)


def _resolution(a: Any) -> float:
    """Relative resolution (machine epsilon) of the floating dtype ``a`` arrives in: values
    closer than about eps * |value| cannot be told apart.  float64's for other dtypes."""
    dtype = getattr(a, "dtype", None)
    if dtype is not None and str(dtype) in _TORCH_EPS:
        return max(_TORCH_EPS[str(dtype)], _F64_EPS)
    if isinstance(a, np.ndarray) and a.dtype.kind == "f":
        return max(float(np.finfo(a.dtype).eps), _F64_EPS)
    return _F64_EPS


def _as_matrix(a: Any, name: str) -> FloatArray:
    """[n, ...] -> float64 [n, d] (1-D input [n] is ONE feature per sample, [n, 1])."""
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
        bad = np.flatnonzero(~np.isfinite(arr) | (arr != np.round(arr)))
        if bad.size:
            first = float(arr[bad[0]])
            raise ConfigError(f"y has non-integer values ({bad.size} rows, first {first!r} at "
                              f"row {bad[0]}); valid: int labels in [0, K), not truncated")
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


# --------------------------------------------------------------------------------------------
# estimator parameters: one spec per estimator, checked in one place

#: checker(name, value) -> normalised value; raises ConfigError("name=value ...; valid: ...")
Check = Callable[[str, object], object]

SVD_SOLVERS = ("auto", "full", "randomized", "covariance_eigh", "arpack")


def _int_param(lo: int, *, none: bool = False, exclude: tuple[int, ...] = ()) -> Check:
    """An int >= lo (or None when ``none``), not in ``exclude``."""

    def check(name: str, value: object) -> object:
        if value is None and none:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            extra = " or None" if none else ""
            raise ConfigError(f"{name}={value!r} must be an int{extra}")
        if int(value) in exclude:
            valid = f"an int >= {lo} other than {', '.join(map(str, exclude))}"
            raise ConfigError(f"{name}={value!r} is invalid; valid: {valid}")
        return _check_int(name, value, lo)

    return check


def _se_groups(name: str, value: object) -> object:
    """0 (no standard error) or an int >= 2 (delete-a-group jackknife groups)."""
    value = _check_int(name, value, 0)
    if value == 1:
        raise ConfigError(f"{name}=1 is invalid; valid: 0 (no standard error) or an int >= 2")
    return value


def _float_param(*, zero_ok: bool = False, none: bool = False) -> Check:
    """A finite float > 0 (>= 0 when ``zero_ok``), or None when ``none``."""

    def check(name: str, value: object) -> object:
        if value is None and none:
            return None
        if zero_ok:
            ok = (not isinstance(value, bool) and isinstance(value, (int, float, np.integer,
                                                                     np.floating))
                  and math.isfinite(float(value)) and float(value) >= 0)
            if not ok:
                raise ConfigError(f"{name}={value!r} is invalid; valid: a finite float >= 0")
            return float(value)  # type: ignore[arg-type]
        return _check_pos(name, value)

    return check


def _choice_param(*choices: str) -> Check:
    def check(name: str, value: object) -> object:
        if not isinstance(value, str) or value not in choices:
            raise ConfigError(unknown_choice(name, value, choices))
        return value

    return check


def _scale_param(name: str, value: object) -> object:
    """``"max"``, ``"mean"`` or a positive float (the noise channel's scale B)."""
    if isinstance(value, str):
        if value not in ("max", "mean"):
            raise ConfigError(unknown_choice(name, value, ["max", "mean", "<positive float>"]))
        return value
    return _check_pos(name, value)


_COMMON: dict[str, Check] = {
    "num_classes": _int_param(1, none=True),  # K; None: max label + 1
    "seed": _int_param(0),  # subsample / PCA / jitter / null / jackknife seed
}
_KNN: dict[str, Check] = {
    "k": _int_param(1),
    "dim_z": _int_param(1),
    "dim_x": _int_param(1),
    "n": _int_param(2, none=True),
    "se_groups": _se_groups,
    "jitter": _float_param(zero_ok=True),
    "svd_solver": _choice_param(*SVD_SOLVERS),
    **_COMMON,
}

#: estimator -> {keyword parameter: checker}.  Every entry of :data:`ESTIMATORS` accepts
#: exactly these keywords in the registry call form ``fn(x, z, y, **params)``; ``num_classes``
#: and ``seed`` are accepted by all (ignored by the deterministic ones) so that one caller
#: (the probe) can pass them to any estimator.  Validated by :func:`check_params`, which the
#: pure functions, :class:`~latephase.measures.probe.InfoProbe` and the config path all use.
PARAMS: dict[str, dict[str, Check]] = {
    "kl_knn": dict(_KNN),
    "ksg": dict(_KNN),
    "cmi_ksg": {**_KNN, "resolution": _float_param(zero_ok=True, none=True),
                "path": _choice_param("auto", "dense", "tree")},
    "nhsic": {
        "n": _int_param(2),
        "bandwidth": _choice_param("paper", "median"),
        "sigma": _float_param(),
        "eps": _float_param(),
        **_COMMON,
    },
    "noise_channel": {"sigma": _float_param(), "scale": _scale_param, **_COMMON},
    "binning": {"bins": _int_param(1), **_COMMON},
}


def check_params(estimator: str, params: Mapping[str, object]) -> dict[str, object]:
    """Validated, normalised copy of an estimator's keyword parameters.

    Raises :class:`~latephase.errors.ConfigError` naming the estimator, the parameter, the
    value and what is valid, e.g. ``nhsic: unknown bandwidth 'medain'; valid choices:
    median, paper`` or ``nhsic: sigma=-1 is invalid; valid: a positive finite float``.
    An unknown parameter name lists the valid ones.
    """
    if estimator not in PARAMS:
        raise ConfigError(unknown_choice("estimator", estimator, PARAMS))
    spec = PARAMS[estimator]
    out: dict[str, object] = {}
    for key, value in params.items():
        if key not in spec:
            raise ConfigError(f"{estimator}: unknown parameter {key!r}; valid: "
                              f"{', '.join(sorted(spec))}")
        try:
            out[key] = spec[key](key, value)
        except ConfigError as exc:
            raise ConfigError(f"{estimator}: {exc}") from None
    return out


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


def _sign_fixed(vecs: FloatArray) -> FloatArray:
    """Columns of ``vecs`` flipped so that each one's largest-magnitude entry is positive
    (an eigenvector's sign is arbitrary; this makes the projection reproducible)."""
    top = vecs[np.argmax(np.abs(vecs), axis=0), np.arange(vecs.shape[1])]
    return vecs * np.where(top < 0, -1.0, 1.0)


def _pca_project(
    centred: FloatArray, dim: int, seed: int, svd_solver: str
) -> tuple[FloatArray, FloatArray, str]:
    """Scores of the column-centred ``centred`` [n, d] on its top ``dim`` principal axes,
    the explained-variance ratio of each, and the solver used.

    ``auto`` / ``covariance_eigh``: exact, from the eigendecomposition of the smaller of the
    scatter matrix A^T A [d, d] (scores A V) and the Gram matrix A A^T [n, n] (scores
    U sqrt(lambda)), in float64: 5 ms for the probe's 1000 x 200 Z, where scikit-learn's
    randomized solver (its ``auto`` there) took 110 ms.  ``full``: exact, thin SVD
    A = U S V^T (scores U S; backward stable, slower).  ``randomized`` / ``arpack``:
    scikit-learn's PCA with ``random_state=seed`` (imported only then)."""
    n, d = centred.shape
    total = float(np.einsum("ij,ij->", centred, centred))
    if svd_solver in ("auto", "covariance_eigh"):
        small = min(n, d)
        gram = centred.T @ centred if d <= n else centred @ centred.T
        lam, vecs = linalg.eigh(gram, subset_by_index=(small - dim, small - 1),
                                check_finite=False)
        lam, vecs = np.clip(lam[::-1], 0.0, None), _sign_fixed(vecs[:, ::-1])
        scores = centred @ vecs if d <= n else vecs * np.sqrt(lam)
        return scores, lam / max(total, 1e-300), "covariance_eigh"
    if svd_solver == "full":
        u, sv, _ = linalg.svd(centred, full_matrices=False, check_finite=False)
        u = _sign_fixed(u[:, :dim])
        return u * sv[:dim], sv[:dim] ** 2 / max(total, 1e-300), "full"
    from sklearn.decomposition import PCA  # ~100 MB of imports: only for these two solvers

    pca = PCA(n_components=dim, svd_solver=svd_solver, random_state=seed)
    scores = pca.fit_transform(centred)
    return scores, pca.explained_variance_ratio_, svd_solver


def _pca_whiten(
    a: FloatArray, dim: int, seed: int, svd_solver: str
) -> tuple[FloatArray, dict[str, object]]:
    """Project ``a`` [n, d] on its top ``dim`` principal axes and scale each to unit variance.

    Components whose variance is <= 1e-12 x the largest (numerically zero) are dropped, so the
    output has ``dim_used <= min(dim, n - 1, d)`` columns (0 if ``a`` is constant).  The info
    also holds ``component_std`` (the sd of each kept component, in the units of ``a``: the
    whitened columns times it are the unscaled projections) and ``norm_max`` = max_i ||a_i||
    (uncentred: the scale of ``a``'s rounding errors).
    """
    n, d = a.shape
    dim_fit = min(dim, n - 1, d)
    info: dict[str, object] = {"dim_requested": dim, "dim_input": d}
    centred = a - a.mean(axis=0)
    norm_max = float(np.sqrt(np.einsum("ij,ij->i", a, a).max())) if n else 0.0
    if dim_fit < 1 or not np.any(centred):
        info.update(dim_used=0, pca_solver="none", explained_variance_ratio=0.0,
                    component_std=np.zeros(0), norm_max=norm_max)
        return np.zeros((n, 0)), info
    proj, ratio, solver = _pca_project(centred, dim_fit, seed, svd_solver)  # [n, dim_fit]
    var = proj.var(axis=0, ddof=1)
    keep = var > 1e-12 * max(float(var.max()), 1e-300)
    std = np.sqrt(var[keep])
    proj = proj[:, keep] / std
    info.update(
        dim_used=int(keep.sum()),
        pca_solver=solver,
        explained_variance_ratio=float(ratio[keep].sum()),
        component_std=std,
        norm_max=norm_max,
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
    return _jackknife_combine(loo)


def _jackknife_combine(loo: list[dict[str, float]]) -> dict[str, float]:
    """SE^2 = (G - 1)/G sum_g (theta_(g) - mean theta)^2 from the G leave-one-group-out
    estimates ``loo``; NaN where G < 2 or a replicate is not finite."""
    se: dict[str, float] = {}
    big_g = len(loo)
    for key in loo[0] if loo else ():
        vals = np.array([d[key] for d in loo], dtype=np.float64)
        if big_g < 2 or not np.all(np.isfinite(vals)):
            se[key] = NAN
        else:
            se[key] = float(math.sqrt((big_g - 1) / big_g * np.sum((vals - vals.mean()) ** 2)))
    return se


# --------------------------------------------------------------------------------------------
# k-NN estimators


class _Neighbours:
    """Each row's L nearest OTHER rows of a point set ``a`` [n, d] in the p-norm (one k-d
    tree query, sorted by distance), from which the distance to the k-th nearest other row
    among any subset of kept rows is read without a new search.  ``spare`` = L - k: a
    jackknife replicate deletes ~1/G of the rows, so with 3 spare entries a list runs short
    (more than 3 of its k + 3 rows deleted) for ~1e-3 of the rows at G = 10; those rows are
    searched exactly by brute force (same distances).  ``spare=0`` for the whole sample only.
    """

    def __init__(self, a: FloatArray, k: int, p: float, spare: int = 3) -> None:
        n = a.shape[0]
        self.a, self.k, self.p = a, k, p
        q = min(n, k + spare + 1)  # itself and L = q - 1 others
        dist, idx = cKDTree(a).query(a, k=q, p=p)
        dist, idx = np.reshape(dist, (n, q)), np.reshape(idx, (n, q))
        # drop the row itself (a duplicate may come first: look it up by index)
        order = np.argsort(idx == np.arange(n)[:, None], axis=1, kind="stable")[:, : q - 1]
        self.dist = np.take_along_axis(dist, order, axis=1)  # [n, L]
        self.idx = np.take_along_axis(idx, order, axis=1)

    def kth(self, keep: NDArray[np.bool_]) -> FloatArray:
        """[R, n] distance from each row to its k-th nearest other row among those kept in
        ``keep`` [R, n] (inf where fewer than k other rows are kept)."""
        r, n = keep.shape
        if self.idx.shape[1] == 0:  # a single row: no other row
            return np.full((r, n), np.inf)
        cum = np.cumsum(keep[:, self.idx], axis=2, dtype=np.int32)  # [R, n, L]
        pos = np.argmax(cum >= self.k, axis=2)
        out = self.dist[np.arange(n)[None, :], pos]
        for g, i in zip(*np.nonzero(cum[:, :, -1] < self.k), strict=True):
            others = np.flatnonzero(keep[g])
            others = others[others != i]
            if others.size < self.k:
                out[g, i] = np.inf
                continue
            diff = np.abs(self.a[others] - self.a[i])
            d = diff.max(axis=1) if math.isinf(self.p) else np.sqrt(np.sum(diff**2, axis=1))
            out[g, i] = np.partition(d, self.k - 1)[self.k - 1]
        return out


def _kl_entropies(rho: FloatArray, keep: NDArray[np.bool_], k: int, d: int) -> FloatArray:
    """Kozachenko-Leonenko entropy (nats) of the kept rows of each replicate [R]:

    h = psi(n) - psi(k) + log V_d + (d/n) sum_i log rho_i,  V_d = pi^(d/2) / Gamma(d/2 + 1),
    n the kept rows, rho_i [R, n] the Euclidean distance from row i to its k-th nearest other
    kept row.  NaN where n <= k or a kept rho_i is 0.
    """
    n_kept = keep.sum(axis=1)
    bad = (n_kept <= k) | np.any(keep & ~(rho > 0.0), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log(np.where(keep & (rho > 0.0), rho, 1.0)).sum(axis=1)
        log_vd = 0.5 * d * math.log(math.pi) - special.gammaln(0.5 * d + 1.0)
        h = special.digamma(n_kept) - special.digamma(k) + log_vd + d * logs / n_kept
    return np.where(bad, NAN, h)


def _kl_mi(zw: FloatArray, xw: FloatArray, y: IntArray, k: int, keep: NDArray[np.bool_],
           near_x: _Neighbours | None = None,
           h_zx: tuple[FloatArray, FloatArray] | None = None) -> dict[str, FloatArray]:
    """3H estimates on whitened, jittered samples (see :func:`kl_knn`) for each row mask of
    ``keep`` [R, n] (the whole sample, jackknife replicates): one neighbour search per point
    set (Z, X, (Z, X), Z within each class), every replicate read from it.  ``near_x``: X's
    neighbour lists, if already known (they depend on X only); ``h_zx``: h(Z) and h(X) [R]
    if already known (the shuffled null re-pairs the rows, its marginal sets are the same)."""
    dz, dx = zw.shape[1], xw.shape[1]
    spare = 3 if keep.shape[0] > 1 else 0
    if h_zx is None:
        near_x = near_x if near_x is not None else _Neighbours(xw, k, 2.0, spare)
        h_z = _kl_entropies(_Neighbours(zw, k, 2.0, spare).kth(keep), keep, k, dz)
        h_x = _kl_entropies(near_x.kth(keep), keep, k, dx)
    else:
        h_z, h_x = h_zx
    near_j = _Neighbours(np.hstack([zw, xw]), k, 2.0, spare)
    h_j = _kl_entropies(near_j.kth(keep), keep, k, dz + dx)
    izx = h_z + h_x - h_j
    n_kept = keep.sum(axis=1)
    h_z_y = np.zeros(keep.shape[0])
    for c in np.unique(y):  # a loop over classes, not samples
        rows = np.flatnonzero(y == c)
        kc = keep[:, rows]
        n_c = kc.sum(axis=1)
        h_c = _kl_entropies(_Neighbours(zw[rows], k, 2.0, spare).kth(kc), kc, k, dz)
        h_z_y += np.where(n_c > 0, n_c / n_kept * np.where(n_c > 0, h_c, 0.0), 0.0)
    izy = h_z - h_z_y
    return {"izx": izx, "izy": izy, "redundancy": izx - izy, "h_z": h_z, "h_x": h_x}


def _replicate_masks(n: int, groups: list[IntArray]) -> NDArray[np.bool_]:
    """[1 + G, n] row masks: every row, then every row but group g (delete-a-group
    jackknife)."""
    keep = np.ones((1 + len(groups), n), dtype=bool)
    for g, rows in enumerate(groups):
        keep[1 + g, rows] = False
    return keep


def _split_replicates(values: Mapping[str, FloatArray]) -> tuple[dict[str, float],
                                                                  list[dict[str, float]]]:
    """(values of replicate 0, [values of replicate g] for g >= 1) as plain floats."""
    first = {key: float(v[0]) for key, v in values.items()}
    r = len(next(iter(values.values())))
    return first, [{key: float(v[g]) for key, v in values.items()} for g in range(1, r)]


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


@dataclass
class _Prepared:
    """Validated, subsampled, PCA-whitened (and jittered) k-NN input."""

    zw: FloatArray  # [n, dim_z_used] whitened Z
    xw: FloatArray  # [n, dim_x_used] whitened X
    y: IntArray  # [n]
    params: dict[str, object]
    rng: np.random.Generator
    zinfo: dict[str, object]
    xinfo: dict[str, object]
    cache: _Cache | None = None  # the X side's store (see :class:`WhitenedX`)


class _Cache:
    """Derived quantities of fixed inputs, each stored with the array it was derived from and
    reused only while a later call passes an EQUAL array (so a stale entry is never read)."""

    def __init__(self) -> None:
        self._store: dict[str, tuple[np.ndarray, Any]] = {}

    def get(self, name: str, source: np.ndarray, build: Callable[[], Any]) -> Any:
        """``build()``, or its stored value if ``source`` equals the array it was built from."""
        held = self._store.get(name)
        if held is not None and held[0].shape == source.shape and np.array_equal(held[0],
                                                                                  source):
            return held[1]
        value = build()
        self._store[name] = (source.copy(), value)
        return value

    def forget(self, prefix: str) -> None:
        """Drop the entries whose name starts with ``prefix``."""
        for name in [n for n in self._store if n.startswith(prefix)]:
            del self._store[name]


def _read_only(pair: tuple[FloatArray, dict[str, object]]) -> tuple[FloatArray,
                                                                    dict[str, object]]:
    """``pair`` with its array made read-only (a shared, cached value)."""
    pair[0].setflags(write=False)
    return pair


class WhitenedX:
    """The PCA-whitened X of the k-NN estimators (``xw`` [n, dim_x_used], ``info``), computed
    once for fixed rows, plus a store of what the estimators derive from X alone (its
    jittered neighbour lists and class blocks) and of the last reduced Z (so kl_knn and
    cmi_ksg on the same z share one PCA).  Unpacks as ``xw, info = whitened``."""

    def __init__(self, xw: FloatArray, info: dict[str, object]) -> None:
        self.xw, self.info = xw, info
        self.cache = _Cache()

    def __iter__(self) -> Iterator[Any]:
        return iter((self.xw, self.info))

    def __getitem__(self, i: int) -> Any:
        return (self.xw, self.info)[i]


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
    x_whitened: tuple[FloatArray, dict[str, object]] | WhitenedX | None = None,
) -> _Prepared:
    """Validate the data, subsample, PCA-whiten and jitter; shared by the k-NN estimators.

    The parameters were checked by :func:`check_params`; what depends on the data (k < n,
    lengths, labels) is checked here."""
    xa, za = _as_matrix(x, "x"), _as_matrix(z, "z")
    if y is None:
        n_total = _check_lengths(x=xa, z=za)
        ya, k_classes = np.zeros(n_total, dtype=np.int64), 1
    else:
        ya, k_classes = _as_labels(y, num_classes)
        n_total = _check_lengths(x=xa, z=za, y=ya)
    idx = subsample(n_total, n, seed)
    n_used = int(idx.size)
    if k >= n_used:
        raise ConfigError(
            f"k={k} must be smaller than the sample size n={n_used}; valid: 1..{n_used - 1}"
        )
    xa, za, ya = xa[idx], za[idx], ya[idx]
    cache = x_whitened.cache if isinstance(x_whitened, WhitenedX) else None
    if cache is None:
        zw, zinfo = _pca_whiten(za, dim_z, seed, svd_solver)
    else:  # the same z reduced the same way by another estimator of the probe: reuse it
        zw, zinfo = cache.get(f"z_pca/{dim_z}/{seed}/{svd_solver}", za,
                              lambda: _read_only(_pca_whiten(za, dim_z, seed, svd_solver)))
    if x_whitened is None:
        xw, xinfo = _pca_whiten(xa, dim_x, seed, svd_solver)
        xinfo["resolution"] = _resolution(x)
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
    return _Prepared(zw, xw, ya, params, rng, zinfo, xinfo, cache)


def whiten_x(x: Any, *, dim_x: int = 3, seed: int = 0,
             svd_solver: str = "auto") -> WhitenedX:
    """The PCA-whitened X that :func:`kl_knn`, :func:`ksg` and :func:`cmi_ksg` compute, for
    reuse across calls (``x_whitened=``); the info carries x's dtype resolution."""
    check_params("kl_knn", {"dim_x": dim_x, "seed": seed, "svd_solver": svd_solver})
    xw, info = _pca_whiten(_as_matrix(x, "x"), dim_x, seed, svd_solver)
    info["resolution"] = _resolution(x)
    return WhitenedX(xw, info)


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
    x_whitened: tuple[FloatArray, dict[str, object]] | WhitenedX | None = None,
) -> InfoResult:
    """Lossy compression + Kozachenko-Leonenko k-NN estimates of I(Z;X) and I(Z;Y) (nats).

    1. Rows: all, or a seeded subsample of ``n`` (``subsample(N, n, seed)``).
    2. Z and X are each reduced by PCA (:func:`_pca_project`; exact by default) to
       ``dim_z`` / ``dim_x`` components and whitened (unit variance per component; numerically zero
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

    What the SE covers: the sampling VARIANCE of the estimate only, not its bias.  Valid
    for: unclustered, roughly unimodal Z and X (Gaussian-like marginals).  NOT valid once Z
    clusters by class (neural collapse): the 3H biases do not cancel, the jackknife SE stays
    small, and the value can be far below 0 (synthetic collapse, truth log 10 = 2.30:
    2.06, -0.4, -7.0, -20.8 nats at s = 1, 0.1, 0.01, 1e-4).  It warns (constant text
    :data:`KL_NULL_WARNING`, so a probe says it once per run) when the shuffled null is far
    from 0: |izx_null| > 0.1 nats AND > 3 SE(izx).  Kept as the paper's estimator (Figure 4);
    the trusted one is :func:`cmi_ksg`.  Cost with a cached X at n = 1000: about 35 ms CPU
    (one neighbour list per point set, every replicate read from it; X's lists cached).
    """
    p = check_params("kl_knn", {"k": k, "dim_z": dim_z, "dim_x": dim_x, "n": n,
                                "se_groups": se_groups, "jitter": jitter,
                                "svd_solver": svd_solver, "num_classes": num_classes,
                                "seed": seed})
    prep = _prepare_knn(x, z, y, x_whitened=x_whitened, **p)  # type: ignore[arg-type]
    zw, xw, ya, params, rng = prep.zw, prep.xw, prep.y, prep.params, prep.rng
    keys = ("izx", "izy", "redundancy", "izx_null", "izy_null")
    counts = np.bincount(ya)
    params["class_counts"] = counts.tolist()
    if zw.shape[1] == 0 or xw.shape[1] == 0:
        _warn("kl_knn: z or x has zero variance; I(Z;X) = I(Z;Y) = 0 exactly")
        return InfoResult(dict.fromkeys(keys, 0.0), dict.fromkeys(keys, 0.0), params)
    if np.any((counts > 0) & (counts <= k)):
        _warn(f"kl_knn: a class has <= k={k} samples (counts {counts.tolist()}); I(Z;Y) is NaN")
    perm = rng.permutation(ya.size)
    groups = _stratified_groups(ya, se_groups, rng) if se_groups >= 2 else []
    near_x = (prep.cache.get(f"kl_knn/x/{k}", xw, lambda: _Neighbours(xw, k, 2.0))
              if prep.cache is not None else None)
    est = _kl_mi(zw, xw, ya, k, _replicate_masks(ya.size, groups), near_x)
    h_zx = est.pop("h_z")[:1], est.pop("h_x")[:1]  # of the whole sample
    values, loo = _split_replicates(est)
    everything = np.ones((1, ya.size), dtype=bool)
    null = _kl_mi(zw[perm], xw, ya, k, everything, h_zx=h_zx)  # z re-paired with x and y
    values.update(izx_null=float(null["izx"][0]), izy_null=float(null["izy"][0]))
    stderr = dict.fromkeys(keys, NAN)
    if groups:
        stderr.update(_jackknife_combine(loo))
    if _null_is_far(values["izx_null"], stderr["izx"]):
        _warn(KL_NULL_WARNING)
    return InfoResult(values, stderr, params)


#: kl_knn's warning when its shuffled-pairs null is far from 0 (a constant text, so a probe
#: that says each distinct warning once says it once per run)
KL_NULL_WARNING = (
    "kl_knn: its shuffled-pairs null izx_null is far from 0 (|izx_null| > "
    f"{0.1:g} nats and > 3 SE): the 3H k-NN biases do not cancel on these marginals (e.g. a "
    "clustered Z after collapse), so its I(Z;X) is not trustworthy here; compare with "
    "izx_null or use cmi_ksg"
)


def _null_is_far(null: float, se: float, *, nats: float = 0.1, n_se: float = 3.0) -> bool:
    """|null| > ``nats`` AND (no SE, or |null| > ``n_se`` SE): beyond both a practical size
    (0.1 nats) and the estimator's noise (3 SE).  NaN nulls are not flagged."""
    if not math.isfinite(null):
        return False
    return abs(null) > nats and (not math.isfinite(se) or abs(null) > n_se * se)


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
    x_whitened: tuple[FloatArray, dict[str, object]] | WhitenedX | None = None,
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
    jackknife as :func:`kl_knn` (random groups); it covers the sampling VARIANCE only, not
    the bias.  Valid for: I(Z;X') between any continuous Z and X' at joint dims <= 6
    (measured |bias| <= 0.03 nats at d = 1 and <= 0.09 at d = 2 up to I = 3 nats, n = 2000);
    it underestimates large MI at small n (dims 3+3, rho = 0.6: -0.2 nats at n = 100, -0.04
    at n = 2000), and is unbiased at independence, clustered data included.  Key "izx".
    ``x_whitened``: as in :func:`kl_knn`.
    """
    p = check_params("ksg", {"k": k, "dim_z": dim_z, "dim_x": dim_x, "n": n,
                             "se_groups": se_groups, "jitter": jitter, "svd_solver": svd_solver,
                             "seed": seed})
    prep = _prepare_knn(x, z, None, num_classes=None, x_whitened=x_whitened,
                        **p)  # type: ignore[arg-type]
    zw, xw, ya, params, rng = prep.zw, prep.xw, prep.y, prep.params, prep.rng
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
# conditional MI: I(Z;X'|Y) by class-wise KSG, I(Z;Y) by the mixed KSG of Ross (2014)

#: a within-class direction whose sd is at most ``_ROUNDING_ULPS`` x eps x max_i ||a_i|| (eps
#: the input dtype's resolution) is numerically constant: storing a row a_i rounds each entry
#: by <= eps |a_ij| / 2, i.e. moves it along any direction by <= eps ||a_i|| / 2, and a
#: forward pass adds a few such roundings; 4 ulps of the largest row is that level (plus the
#: float64 PCA projection's own rounding, see :func:`_rounding_floor`)
_ROUNDING_ULPS = 4.0


def _rounding_floor(resolution: float, info: Mapping[str, object]) -> float:
    """sd at or below which a within-class direction is rounding error (see _ROUNDING_ULPS):
    4 (eps_in + sqrt(d) eps_64) max_i ||a_i||, the storage rounding of the input dtype plus
    the float64 PCA projection's (a sum of d products; typical error sqrt(d) ulps)."""
    d = int(info.get("dim_input", 1))  # type: ignore[call-overload]
    scale = float(info["norm_max"])  # type: ignore[arg-type]
    return _ROUNDING_ULPS * (resolution + math.sqrt(d) * _F64_EPS) * scale


def _class_whiten(
    proj: FloatArray, y: IntArray, floor: float
) -> tuple[FloatArray, NDArray[np.bool_], IntArray]:
    """Re-whiten each class's block of ``proj`` [n, d] (unscaled PCA projections) on its own.

    Class c: centre, SVD of the centred block B_c = U S V^T, keep the directions with sd
    s_j / sqrt(n_c - 1) > ``floor`` (the others are numerically constant in the class: they
    carry no information and would blow up under whitening), and return
    sqrt(n_c - 1) U[:, kept] (unit variance per kept direction, uncorrelated).  Dropped
    directions are returned as 0 columns, so the output is [n, d] for every class.
    Returns (output [n, d], mask [n, d] of kept entries, kept dims per class [K]); a class
    of one row keeps 0 dims.
    """
    n, d = proj.shape
    out = np.zeros((n, d))
    mask = np.zeros((n, d), dtype=bool)
    counts = np.bincount(y)
    kept = np.zeros(counts.size, dtype=np.int64)
    for c in np.flatnonzero(counts > 1):  # a loop over classes, not samples
        rows = np.flatnonzero(y == c)
        block = proj[rows] - proj[rows].mean(axis=0)  # [n_c, d]
        u, sv, _ = np.linalg.svd(block, full_matrices=False)
        keep = sv / math.sqrt(rows.size - 1) > floor
        kept[c] = int(keep.sum())
        out[rows, : kept[c]] = u[:, keep] * math.sqrt(rows.size - 1)
        mask[rows, : kept[c]] = True
    return out, mask, kept


def _class_offset(y: IntArray, *blocks: FloatArray) -> FloatArray:
    """[n, 1] column y * L with L > twice every |coordinate| of ``blocks``, so in the
    max-norm any two rows of different classes are farther apart than any two of one class:
    one k-d tree then answers every class's neighbour queries at once."""
    scale = max((float(np.abs(b).max()) for b in blocks if b.size), default=0.0)
    return (y * (2.0 * scale + 1.0)).astype(np.float64)[:, None]


def _ross_izy(zw: FloatArray, y: IntArray, k: int) -> float:
    """Mixed discrete-continuous KSG estimate of I(Z;Y) (Ross 2014), max-norm:

        I(Z;Y) = psi(n) - < psi(n_c(i)) > + psi(k) - < psi(m_i) >

    d_i = distance from z_i to its k-th neighbour among the samples of its own class,
    m_i = number of samples of ANY class strictly within d_i (itself included), n_c(i) the
    size of its class.  NaN if a class has <= k samples; 0 if Z has no dimension left.
    """
    n, d = zw.shape
    if d == 0:
        return 0.0
    n_c = np.bincount(y)[y]
    if np.any(n_c <= k):
        return NAN
    joint = np.hstack([zw, _class_offset(y, zw)])
    dist, _ = cKDTree(joint).query(joint, k=k + 1, p=np.inf)
    radius = dist[:, k]
    if np.any(radius <= 0.0):
        return NAN
    m = cKDTree(zw).query_ball_point(zw, np.nextafter(radius, 0.0), p=np.inf,
                                     return_length=True)
    return float(special.digamma(n) - np.mean(special.digamma(n_c)) + special.digamma(k)
                 - np.mean(special.digamma(m)))


def _conditional_ksg(zc: FloatArray, xc: FloatArray, y: IntArray, active: FloatArray,
                     k: int) -> float:
    """sum_c p(c) KSG(Z; X | Y=c) on class-whitened blocks (see :func:`cmi_ksg`).

    Only rows whose class is ``active`` (both sides keep >= 1 dim) are searched; the other
    classes contribute exactly 0 (a constant variable has no information) with their weight.
    Per row i of class c (max-norm, one radius eps_i = distance to the k-th neighbour in the
    class's joint space; counts n_z, n_x strictly within eps_i, itself included):
        t_i = psi(k) + psi(n_c) - psi(n_z(i)) - psi(n_x(i)),   result = (1/n) sum_active t_i.
    NaN if an active class has <= k rows.
    """
    n = y.size
    rows = np.flatnonzero(active[y] > 0)
    if rows.size == 0:
        return 0.0
    zs, xs, ys = zc[rows], xc[rows], y[rows]
    n_c = np.bincount(ys)[ys]
    if np.any(n_c <= k):
        return NAN
    off = _class_offset(ys, zs, xs)
    joint = np.hstack([zs, xs, off])
    dist, _ = cKDTree(joint).query(joint, k=k + 1, p=np.inf)
    eps = dist[:, k]
    if np.any(eps <= 0.0):
        return NAN
    radius = np.nextafter(eps, 0.0)  # strict inequality
    zo, xo = np.hstack([zs, off]), np.hstack([xs, off])
    cz = cKDTree(zo).query_ball_point(zo, radius, p=np.inf, return_length=True)
    cx = cKDTree(xo).query_ball_point(xo, radius, p=np.inf, return_length=True)
    terms = (special.digamma(k) + special.digamma(n_c) - special.digamma(cz)
             - special.digamma(cx))
    return float(terms.sum() / n)


def _within_class_permutation(y: IntArray, rng: np.random.Generator) -> IntArray:
    """perm with y[perm] == y: rows shuffled among the rows of their own class."""
    perm = np.arange(y.size)
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        perm[rows] = rows[rng.permutation(rows.size)]
    return perm


#: the dense (per-class distance matrix) path of :func:`cmi_ksg` is used while the padded
#: class blocks hold at most this many pairs (K x m^2, m the largest class: 32 MB per
#: float64 matrix); beyond it the k-d tree path (same numbers, tested) saves the memory
_DENSE_PAIRS = 4_000_000


class _ClassBlocks:
    """The rows of each class in a padded table [K, m] (m = largest class; -1 = padding),
    for per-class pairwise max-norm distances [K, m, m] computed once per variable."""

    def __init__(self, y: IntArray) -> None:
        _, label, counts = np.unique(y, return_inverse=True, return_counts=True)
        self.label = label.astype(np.int64)  # compact class of each row [n]
        order = np.argsort(self.label, kind="stable")
        start = np.repeat(np.cumsum(counts) - counts, counts)
        self.table = np.full((counts.size, int(counts.max())), -1, dtype=np.int64)
        self.table[self.label[order], np.arange(y.size) - start] = order
        self.valid = self.table >= 0  # [K, m]
        self.pairs = int(self.table.size * self.table.shape[1])

    def dist(self, a: FloatArray) -> FloatArray:
        """D[c, i, j] = max_d |a_i - a_j| for rows i, j of class c; inf where either is
        padding; 0 on the diagonal.  [K, m, m]"""
        blocks = a[self.table]  # [K, m, d]; padding rows are garbage, masked below
        out = np.zeros(self.table.shape + (self.table.shape[1],))
        for j in range(a.shape[1]):  # loop over the (<= dim) coordinates
            col = blocks[:, :, j]
            np.maximum(out, np.abs(col[:, :, None] - col[:, None, :]), out=out)
        pad = ~(self.valid[:, :, None] & self.valid[:, None, :])
        out[pad] = np.inf
        return out

    def rows(self, mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
        """A row mask [n] in table form [K, m] (False on padding)."""
        return mask[self.table] & self.valid


def _no_self(d: FloatArray) -> FloatArray:
    """Copy of block distances with an infinite diagonal (a row is not its own neighbour)."""
    out = d.copy()
    idx = np.arange(d.shape[1])
    out[:, idx, idx] = np.inf
    return out


def _kth_within(d_inf: FloatArray, col: NDArray[np.bool_], k: int) -> FloatArray:
    """[K, m] distance from each row to its k-th nearest other KEPT row of its class (inf if
    the class has fewer than k other kept rows)."""
    if d_inf.shape[2] <= k:
        return np.full(col.shape, np.inf)
    masked = np.where(col[:, None, :], d_inf, np.inf)
    return np.partition(masked, k - 1, axis=2)[:, :, k - 1]


class _Nearest:
    """Each row's L = 2k + 6 nearest other rows of its class, sorted, from block distances
    with an infinite diagonal [K, m, m]: the k-th nearest KEPT row of a replicate (which
    deletes ~1/G of the rows) is then read from the short list; rows whose list holds fewer
    than k kept rows fall back to the full :func:`_kth_within` (same values).  The per-class
    analogue of :class:`_Neighbours`."""

    def __init__(self, d_inf: FloatArray, k: int) -> None:
        self.d_inf, self.k = d_inf, k
        n_k, m, _ = d_inf.shape
        self.length = min(m, 2 * k + 6)
        part = np.argpartition(d_inf, self.length - 1, axis=2)[:, :, : self.length]
        dist = np.take_along_axis(d_inf, part, axis=2)
        order = np.argsort(dist, axis=2, kind="stable")
        self.idx = np.take_along_axis(part, order, axis=2)  # [K, m, L]
        self.dist = np.take_along_axis(dist, order, axis=2)
        self.cls = np.arange(n_k)[:, None, None]

    def kth_all(self, cols: NDArray[np.bool_]) -> FloatArray:
        """[R, K, m]: for each replicate's kept rows ``cols`` [R, K, m], the distance from each
        row to its k-th nearest kept other row of its class, as :func:`_kth_within`."""
        if self.d_inf.shape[2] <= self.k:
            return np.full(cols.shape, np.inf)
        cum = np.cumsum(cols[:, self.cls, self.idx], axis=3, dtype=np.int32)  # [R, K, m, L]
        pos = np.argmax(cum >= self.k, axis=3)
        out = np.take_along_axis(self.dist[None], pos[..., None], axis=3)[..., 0]
        for r in np.flatnonzero((cum[..., -1] < self.k).any(axis=(1, 2))):
            short = cum[r, :, :, -1] < self.k
            out[r] = np.where(short, _kth_within(self.d_inf, cols[r], self.k), out[r])
        return out



#: entries of the [replicates, K, m, m] comparisons :func:`_dense_conditional_ksg` makes at
#: once (bytes of one boolean temporary)
_CKSG_CHUNK = 2_000_000


def _dense_conditional_ksg(dz: FloatArray, dx: FloatArray, dj_inf: _Nearest,
                           cols: NDArray[np.bool_], active: NDArray[np.bool_], k: int,
                           n_kept: IntArray) -> FloatArray:
    """:func:`_conditional_ksg` on precomputed class blocks for each replicate [R], its kept
    rows ``cols`` [R, K, m] (``n_kept`` [R] of them): dz, dx the per-class max-norm
    distances (0 diagonal), dj_inf the neighbour lists of max(dz, dx) with an infinite
    diagonal, ``active`` [K] the classes whose both sides keep >= 1 dim.  Per kept row of an
    active class: t_i = psi(k) + psi(n_c) - psi(n_z(i)) - psi(n_x(i)), n_z, n_x the kept
    rows of the class strictly within eps_i (itself included); result sum_i t_i / n_kept."""
    n_rep = cols.shape[0]
    out = np.empty(n_rep)
    step = max(1, _CKSG_CHUNK // max(dz.size, 1))
    for lo in range(0, n_rep, step):
        col = cols[lo:lo + step]  # [r, K, m]
        sel = col & active[None, :, None]
        n_c = col.sum(axis=2)  # [r, K]
        eps = dj_inf.kth_all(col)  # [r, K, m]
        inside = col[:, :, None, :]
        cz = ((dz[None] < eps[..., None]) & inside).sum(axis=3)  # itself included (0 < eps)
        cx = ((dx[None] < eps[..., None]) & inside).sum(axis=3)
        terms = (special.digamma(k) + special.digamma(np.maximum(n_c, 1))[..., None]
                 - special.digamma(np.maximum(cz, 1)) - special.digamma(np.maximum(cx, 1)))
        res = np.where(sel, terms, 0.0).sum(axis=(1, 2)) / n_kept[lo:lo + step]
        small = np.any((n_c <= k) & active[None, :], axis=1)
        zero_eps = np.any(sel & ~(eps > 0.0), axis=(1, 2))
        res = np.where(small | zero_eps, NAN, res)
        out[lo:lo + step] = np.where(sel.any(axis=(1, 2)), res, 0.0)
    return out


#: rows per block of :func:`_radius_pairs` (a block of distances is rows x n float64)
_PAIR_ROWS = 256


def _radius_pairs(a: FloatArray, need: FloatArray) -> tuple[IntArray, IntArray, FloatArray]:
    """Every pair (i, j) with max-norm ||a_i - a_j|| < need_i (i itself included), as
    (rows, cols, dists) arrays, from brute-force max |a_i - a_j| over blocks of
    :data:`_PAIR_ROWS` rows (the k-d tree's arithmetic: exact comparisons with the distances
    it returns)."""
    n = a.shape[0]
    rows, cols, dists = [], [], []
    for lo in range(0, n, _PAIR_ROWS):
        block = np.zeros((min(_PAIR_ROWS, n - lo), n))
        for j in range(a.shape[1]):  # a loop over the (<= dim) coordinates
            np.maximum(block, np.abs(a[lo:lo + block.shape[0], j, None] - a[None, :, j]),
                       out=block)
        r, c = np.nonzero(block < need[lo:lo + block.shape[0], None])
        rows.append(r + lo)
        cols.append(c)
        dists.append(block[r, c])
    return (np.concatenate(rows).astype(np.int64), np.concatenate(cols).astype(np.int64),
            np.concatenate(dists))


#: entries of the [replicates, pairs] arrays :func:`_dense_ross` builds at once
_ROSS_CHUNK = 2_000_000


def _dense_ross(d_rows: FloatArray, pairs: tuple[IntArray, IntArray, FloatArray],
                kept: NDArray[np.bool_], n_c_rows: IntArray, k: int) -> FloatArray:
    """:func:`_ross_izy` for each replicate [R] from the within-class k-th distances
    ``d_rows`` [R, n] and the pairs of :func:`_radius_pairs`; rows with ``kept`` [R, n]
    False are absent (neither points nor neighbours); ``n_c_rows`` [R, n] the kept size of
    each row's class.  m_i = pairs (i, j), j kept, with distance < d_i (i itself included;
    rows not kept are masked out of the result)."""
    n_rep, n = kept.shape
    pi, pj, pd = pairs
    # a pair closer than row i's radius in EVERY replicate counts wherever j is kept: one
    # sparse product for all replicates; only the pairs between the smallest and the largest
    # radius of their row are compared replicate by replicate
    with np.errstate(invalid="ignore"):
        always = pd < np.min(d_rows, axis=0)[pi]
        boundary = ~always & (pd < np.max(d_rows, axis=0)[pi])
    counted = sparse.csr_matrix((np.ones(int(always.sum())), (pi[always], pj[always])),
                                shape=(n, n))
    m = np.asarray((counted @ kept.T.astype(np.float64)).T)  # [R, n] exact integer counts
    bi, bj, bd = pi[boundary], pj[boundary], pd[boundary]
    step = max(1, _ROSS_CHUNK // max(bi.size, 1))
    for lo in range(0, n_rep, step):  # replicates in chunks, all boundary pairs at once
        sl = slice(lo, min(lo + step, n_rep))
        hit = kept[sl, bj] & (bd[None, :] < d_rows[sl, bi])  # [r, B]
        slot = np.arange(hit.shape[0])[:, None] * n + bi[None, :]  # (replicate, row)
        m[sl] += np.bincount(slot.ravel(), weights=hit.ravel(),
                             minlength=hit.shape[0] * n).reshape(-1, n)
    n_kept = kept.sum(axis=1)
    bad = np.any(kept & ((n_c_rows <= k) | (d_rows <= 0.0)), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        psi_c = np.where(kept, special.digamma(np.maximum(n_c_rows, 1)), 0.0).sum(axis=1)
        psi_m = np.where(kept, special.digamma(np.maximum(m, 1)), 0.0).sum(axis=1)
        out = (special.digamma(n_kept) - psi_c / n_kept + special.digamma(k)
               - psi_m / n_kept)
    return np.where(bad, NAN, out)


def _cmi_replicates(zj: FloatArray, zc: FloatArray, xj: FloatArray, zc_perm: FloatArray,
                    y: IntArray, active: NDArray[np.bool_], active_perm: NDArray[np.bool_],
                    perm: IntArray, within: IntArray, masks: list[NDArray[np.bool_]],
                    k: int, cache: _Cache | None = None) -> list[dict[str, float]]:
    """cmi_ksg's six values for each row mask in ``masks`` (the whole sample, then each
    jackknife replicate), from per-class distance matrices computed once (X's, which depend
    on X and Y only, taken from ``cache`` when it holds them for these xj, y)."""
    if cache is None:
        blocks = _ClassBlocks(y)
        dx = blocks.dist(xj)
    else:
        blocks = cache.get("cmi_ksg/blocks", y, lambda: _ClassBlocks(y))
        dx = cache.get("cmi_ksg/dx", np.hstack([xj, y[:, None]]), lambda: blocks.dist(xj))
    label = blocks.label
    act, act_perm = active[np.unique(y)], active_perm[np.unique(y)]  # compact class order
    dz, dz_w, dz_g = (blocks.dist(a) for a in (zc, zc[within], zc_perm))
    dj, dj_w, dj_g = (_Nearest(_no_self(np.maximum(a, dx)), k) for a in (dz, dz_w, dz_g))
    dg, dg0 = (_Nearest(_no_self(blocks.dist(a)), k) for a in (zj, zj[perm]))
    rows_of = blocks.table[blocks.valid]  # row of each valid table entry

    def scatter(tab: FloatArray) -> FloatArray:
        out = np.empty(y.size)
        out[rows_of] = tab[blocks.valid]
        return out

    cols = np.stack([blocks.rows(mk) for mk in masks])  # [R, K, m]
    kth = list(zip(map(scatter, dg.kth_all(cols)), map(scatter, dg0.kth_all(cols)),
                   strict=True))
    # pairs of Z rows closer than any radius a replicate needs; the null sample (row i
    # holds z[perm[i]]) reuses them: its row i is Z's row perm[i]
    need = np.zeros(y.size)
    for d_main, d_null in kth:
        np.maximum(need, np.where(np.isfinite(d_main), d_main, 0.0), out=need)
        np.maximum.at(need, perm, np.where(np.isfinite(d_null), d_null, 0.0))
    pairs = _radius_pairs(zj, need)
    inv = np.empty_like(perm)
    inv[perm] = np.arange(perm.size)
    pairs0 = (inv[pairs[0]], inv[pairs[1]], pairs[2])  # the same pairs, in null-row numbers
    keep = np.stack(masks)  # [R, n]
    n_c_kept = np.stack([blocks.rows(mk).sum(axis=1)[label] for mk in masks])
    izy_all = _dense_ross(np.stack([d for d, _ in kth]), pairs, keep, n_c_kept, k)
    izy0_all = _dense_ross(np.stack([d for _, d in kth]), pairs0, keep, n_c_kept, k)
    n_kept = keep.sum(axis=1)
    red_all = _dense_conditional_ksg(dz, dx, dj, cols, act, k, n_kept)
    red_w_all = _dense_conditional_ksg(dz_w, dx, dj_w, cols, act, k, n_kept)
    red_g_all = _dense_conditional_ksg(dz_g, dx, dj_g, cols, act_perm, k, n_kept)
    out = []
    for r in range(len(masks)):
        izy, izy0 = float(izy_all[r]), float(izy0_all[r])
        red, red_w, red_g = float(red_all[r]), float(red_w_all[r]), float(red_g_all[r])
        out.append({"izx": izy + red, "izy": izy, "redundancy": red, "izx_null": izy0 + red_g,
                    "izy_null": izy0, "redundancy_null": red_w})
    return out

def cmi_ksg(
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
    resolution: float | None = None,
    num_classes: int | None = None,
    seed: int = 0,
    x_whitened: tuple[FloatArray, dict[str, object]] | WhitenedX | None = None,
    path: str = "auto",
) -> InfoResult:
    """I(Z;Y), the redundancy I(Z;X'|Y) and I(Z;(X',Y)) by k-NN estimators that respect the
    data-processing inequality by construction (nats).  The trusted information estimator.

    1. Rows, PCA and global whitening as in :func:`kl_knn`: X' = X reduced to ``dim_x``
       PCA components (lossy compression), Z reduced to ``dim_z``.
    2. ``izy`` = I(Z;Y) by the mixed discrete-continuous KSG estimator of Ross (2014) on the
       globally whitened Z (max-norm; d_i = k-th neighbour distance within the class, m_i =
       samples of any class strictly within d_i):
           I(Z;Y) = psi(n) - <psi(n_c)> + psi(k) - <psi(m_i)>   (<= psi(n) - <psi(n_c)>).
    3. ``redundancy`` = I(Z;X'|Y) = sum_c p(c) I(Z;X'|Y=c), p(c) = n_c/n, each term a KSG
       (algorithm 1) estimate on the class's own rows, with Z and X' RE-WHITENED WITHIN THE
       CLASS (class SVD; KSG is then invariant to any invertible linear map of either side
       within the class, in particular to how tightly the class is collapsed).
       Rank-deficiency clamp: within a class, a direction whose sd is <= 4 (eps + sqrt(d)
       eps_64) max_i ||a_i|| (eps = ``resolution``, default the machine epsilon of the dtype
       the array came in, e.g. 1.2e-7 for float32; a = the raw Z or X [n, d]; the second
       term is the float64 projection's rounding) is numerically constant and dropped; a
       class whose Z (or X') keeps no direction (a fully collapsed class) contributes exactly
       0, never NaN or an amplified rounding error.
    4. ``izx`` = izy + redundancy = I(Z;(X',Y)) by the chain rule.  The truth lies between
       I(Z;Y) and I(Z;X) (X' and Y are functions of X), and izx - izy = redundancy exactly.
       The estimated redundancy is unbiased at conditional independence, so it can come out
       slightly negative (noise, within ~2 SE); it is not clipped.
    5. Shuffled-pairs nulls (one seeded permutation each, same estimator, same SE groups):
       ``izy_null`` with Z permuted globally against Y; ``redundancy_null`` with Z permuted
       WITHIN each class against X' (conditional independence given Y, class marginals kept);
       ``izx_null`` = izy_null + the redundancy of the globally permuted Z (re-whitened within
       the classes it now falls in), the value for Z independent of (X', Y).  True value 0
       for all three; the band null +- 2 null_se is the estimator's noise at independence.

    Standard errors (``*_se``): delete-a-group jackknife over ``se_groups`` groups stratified
    by class (PCA and class whitening fixed), as in :func:`kl_knn`.  They cover the sampling
    VARIANCE only, not the bias: KSG underestimates large MI (per-class dims 3+3 at n_c = 100:
    bias about -0.1 nats at I(Z;X'|Y=c) = 1), and the PCA compression X -> X' is a choice, not
    an error.  Valid for: any number of classes with n_c > k samples each (else NaN with a
    warning), collapsed or not; joint per-class dims dim_z + dim_x <= 6; I(Z;Y) up to about
    log K.  Measured accuracy is in the README table (docs) and the tests.
    Keys: izx, izy, redundancy, izx_null, izy_null, redundancy_null (each with ``_se``).
    Cost at n = 1000, dims 3+3, 10 groups, cached X (the probe): about 50 ms CPU on one core
    (the dense path: per-class distance matrices computed once, X's cached, every replicate
    and null read from them; ``path="tree"`` is the slower k-d tree reference, same numbers).
    """
    p = check_params("cmi_ksg", {"k": k, "dim_z": dim_z, "dim_x": dim_x, "n": n,
                                 "se_groups": se_groups, "jitter": jitter,
                                 "svd_solver": svd_solver, "resolution": resolution,
                                 "num_classes": num_classes, "seed": seed, "path": path})
    res_z = float(resolution) if resolution is not None else _resolution(z)
    del p["resolution"], p["path"]
    p["jitter"] = 0.0  # jitter is added after the class whitening, below
    prep = _prepare_knn(x, z, y, x_whitened=x_whitened, **p)  # type: ignore[arg-type]
    zw, xw, ya, params, rng = prep.zw, prep.xw, prep.y, prep.params, prep.rng
    params["jitter"] = float(jitter)
    res_x = float(prep.xinfo.get("resolution", _F64_EPS))  # type: ignore[arg-type]
    floor_z = _rounding_floor(res_z, prep.zinfo)
    floor_x = _rounding_floor(res_x, prep.xinfo)
    z_raw = zw * np.asarray(prep.zinfo["component_std"])  # unscaled projections [n, dz]
    x_raw = xw * np.asarray(prep.xinfo["component_std"])
    counts = np.bincount(ya)
    params.update(class_counts=counts.tolist(), resolution_z=res_z, resolution_x=res_x,
                  rounding_ulps=_ROUNDING_ULPS, izy_estimator="ross2014-mixed-ksg",
                  redundancy_estimator="class-whitened-ksg1")
    keys = ("izx", "izy", "redundancy", "izx_null", "izy_null", "redundancy_null")
    if np.any((counts > 0) & (counts <= k)):
        _warn(f"cmi_ksg: a class has <= k={k} samples (counts {counts.tolist()}); NaN")

    def jitter_(a: FloatArray, mask: NDArray[np.bool_] | bool = True) -> FloatArray:
        # seeded ties-breaking noise; dropped (constant) directions stay exactly 0
        return a + jitter * rng.standard_normal(a.shape) * mask

    zc, mask_z, kept_z = _class_whiten(z_raw, ya, floor_z)
    if prep.cache is None:
        xc, mask_x, kept_x = _class_whiten(x_raw, ya, floor_x)
    else:  # X's class whitening depends on X, Y and the floor only
        xc, mask_x, kept_x = prep.cache.get(
            f"cmi_ksg/xc/{floor_x!r}", np.hstack([x_raw, ya[:, None]]),
            lambda: _class_whiten(x_raw, ya, floor_x))
    active = ((kept_z > 0) & (kept_x > 0)).astype(np.float64)  # [K]
    params.update(class_dims_z=kept_z.tolist(), class_dims_x=kept_x.tolist())
    zj = jitter_(zw)
    zc, xj = jitter_(zc, mask_z), jitter_(xc, mask_x)

    perm = rng.permutation(ya.size)  # Z against (X', Y)
    zc_perm, mask_perm, kept_perm = _class_whiten(z_raw[perm], ya, floor_z)
    zc_perm = jitter_(zc_perm, mask_perm)
    active_perm = ((kept_perm > 0) & (kept_x > 0)).astype(np.float64)
    within = _within_class_permutation(ya, rng)  # Z against X' given Y

    def estimates(rows: IntArray) -> dict[str, float]:  # the k-d tree path
        yr = ya[rows]
        izy = _ross_izy(zj[rows], yr, k)
        red = _conditional_ksg(zc[rows], xj[rows], yr, active, k)
        izy0 = _ross_izy(zj[perm[rows]], yr, k)
        red_g = _conditional_ksg(zc_perm[rows], xj[rows], yr, active_perm, k)
        red0 = _conditional_ksg(zc[within[rows]], xj[rows], yr, active, k)
        return {"izx": izy + red, "izy": izy, "redundancy": red, "izx_null": izy0 + red_g,
                "izy_null": izy0, "redundancy_null": red0}

    groups = _stratified_groups(ya, se_groups, rng) if se_groups >= 2 else []
    dense = _ClassBlocks(ya).pairs <= _DENSE_PAIRS if path == "auto" else path == "dense"
    params["path"] = "dense" if dense else "tree"
    if dense:
        masks = [np.ones(ya.size, dtype=bool)]
        for g in groups:
            masks.append(np.ones(ya.size, dtype=bool))
            masks[-1][g] = False
        reps = _cmi_replicates(zj, zc, xj, zc_perm, ya, active > 0, active_perm > 0, perm,
                               within, masks, k, prep.cache)
        values, loo = reps[0], reps[1:]
    else:
        values = estimates(np.arange(ya.size))
        loo = [estimates(np.flatnonzero(mk)) for mk in
               (np.isin(np.arange(ya.size), g, invert=True) for g in groups)]
    stderr = dict.fromkeys(keys, NAN)
    if groups:
        stderr.update(_jackknife_combine(loo))
    return InfoResult(values, stderr, params)


# --------------------------------------------------------------------------------------------
# normalised HSIC


#: rows per block of :func:`_sq_dists`' outer sum (a [64, n] temporary instead of [n, n])
SQ_BLOCK = 64


def _sq_dists(a: FloatArray, out: FloatArray | None = None) -> FloatArray:
    """Pairwise squared Euclidean distances [n, n]: (|a_i|^2 + |a_j|^2) - 2 a_i.a_j, clamped at
    0, zero diagonal, written into ``out`` (C-ordered float64 [n, n]) if given.  One n x n
    buffer: the Gram product, doubled in place, then the outer sum subtracted from it in
    blocks of :data:`SQ_BLOCK` rows (the same floats as the whole outer sum at once)."""
    n = a.shape[0]
    sq = np.einsum("ij,ij->i", a, a)
    d2 = np.matmul(a, a.T, out=out if out is not None else np.empty((n, n)))
    d2 *= 2.0  # exact
    for i in range(0, n, SQ_BLOCK):
        rows = d2[i:i + SQ_BLOCK]
        np.subtract(np.add.outer(sq[i:i + SQ_BLOCK], sq), rows, out=rows)
    np.maximum(d2, 0.0, out=d2)
    np.fill_diagonal(d2, 0.0)
    return d2


def _gaussian_gram(a: FloatArray, bandwidth: str, sigma: float,
                   out: FloatArray | None = None) -> tuple[FloatArray, float]:
    """Gaussian Gram matrix exp(-||a_i - a_j||^2 / w) and its width w (into ``out`` if
    given)."""
    n, d = a.shape
    d2 = _sq_dists(a, out)
    if bandwidth == "paper":
        width = 2.0 * sigma**2 * d
    else:  # median heuristic: s = median pairwise distance, w = 2 s^2
        off = d2[np.triu_indices(n, 1)]
        med = float(np.median(off)) if off.size else 0.0
        if med <= 0.0:  # more than half the pairs coincide: fall back to the mean
            med = float(off.mean()) if off.size else 0.0
        width = 2.0 * med if med > 0.0 else 1.0  # constant data: K = 1, centred K = 0
        del off
    np.multiply(d2, -1.0 / width, out=d2)
    return np.exp(d2, out=d2), width


def _centre_regularise(k: FloatArray, reg: float) -> FloatArray:
    """In place: K -> H K H + reg I with H = I - 11^T/n, i.e. ((K - r 1^T) - 1 r^T) + mean(r)
    with r the row means, then reg added to the diagonal."""
    row = k.mean(axis=1)
    k -= row[:, None]
    k -= row[None, :]
    k += row.mean()
    k[np.diag_indices(k.shape[0])] += reg
    return k


#: the C signature SciPy's cython_lapack gives dpotrf / dpotri (its capsules' names)
_POTRF_SIGNATURE = re.compile(rb"void \(char \*, int \*, \w+ \*, int \*, int \*\)")


def _lapack_gil_free(name: str) -> Callable[..., None] | None:
    """SciPy's own LAPACK routine ``name`` (signature ``(char*, int*, double*, int*, int*)``:
    dpotrf, dpotri) as a ctypes function, which releases the GIL while it runs; the
    ``scipy.linalg.lapack`` wrappers hold it, so nHSIC's inverse (~35 ms) would stall a
    second Python thread.  Same library, same arithmetic.  None where SciPy does not export
    it with that signature (e.g. 64-bit integers): then the wrappers are used."""
    try:
        from scipy.linalg import cython_lapack

        capsule = cython_lapack.__pyx_capi__[name]
    except (ImportError, AttributeError, KeyError):  # pragma: no cover
        return None
    api = ctypes.pythonapi  # private prototypes: the shared ctypes.pythonapi is left alone
    get_name = ctypes.PYFUNCTYPE(ctypes.c_char_p, ctypes.py_object)(
        ("PyCapsule_GetName", api))
    get_pointer = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object, ctypes.c_char_p)(
        ("PyCapsule_GetPointer", api))
    signature = get_name(capsule)
    if not signature or not _POTRF_SIGNATURE.fullmatch(signature):  # pragma: no cover
        return None
    i = ctypes.POINTER(ctypes.c_int)
    proto = ctypes.CFUNCTYPE(None, ctypes.c_char_p, i, ctypes.c_void_p, i, i)
    return proto(get_pointer(capsule, signature))


@functools.lru_cache(maxsize=1)
def _potrf_potri() -> tuple[Callable[..., None], Callable[..., None]] | None:
    pair = _lapack_gil_free("dpotrf"), _lapack_gil_free("dpotri")
    return None if None in pair else pair  # type: ignore[return-value]


def _inverse_lower(m: FloatArray) -> FloatArray:
    """In place: symmetric positive definite m [n, n] (C order; its LOWER triangle is read)
    -> the lower triangle of m^{-1}, zeros above (Cholesky potrf + potri on the transposed,
    Fortran-ordered view, i.e. its upper triangle, so no copy is made).  The GIL is released
    while LAPACK runs (:func:`_lapack_gil_free`)."""
    routines = _potrf_potri()
    if routines is None or not (m.flags.c_contiguous and m.flags.writeable
                                and m.dtype == np.float64):  # pragma: no cover
        chol, info = linalg.lapack.dpotrf(m.T, lower=0, clean=1, overwrite_a=1)
        if info != 0:  # pragma: no cover - K~ is PSD, so m >= reg I > 0
            raise np.linalg.LinAlgError(f"Cholesky failed (info={info})")
        inv, info = linalg.lapack.dpotri(chol, lower=0, overwrite_c=1)
        if info != 0:  # pragma: no cover
            raise np.linalg.LinAlgError(f"Cholesky inverse failed (info={info})")
        return np.asarray(inv.T)
    n, info = ctypes.c_int(m.shape[0]), ctypes.c_int(0)
    data = m.ctypes.data_as(ctypes.c_void_p)
    for routine, what in zip(routines, ("Cholesky", "Cholesky inverse"), strict=True):
        routine(b"U", ctypes.byref(n), data, ctypes.byref(n), ctypes.byref(info))
        if info.value != 0:  # pragma: no cover - K~ is PSD, so m >= reg I > 0
            raise np.linalg.LinAlgError(f"{what} failed (info={info.value})")
    for i in range(m.shape[0] - 1):  # C's upper = Fortran's lower, which LAPACK left as m
        m[i, i + 1:] = 0.0
    return m


@dataclass(frozen=True)
class NhsicSide:
    """What nHSIC needs of X and Y, computed once for fixed rows (the probe keeps one per run).

    With M_A = K~_A + reg I and R_A = I - reg M_A^{-1}:
      Tr(R_Z R_X) = Tr(R_X) - reg sum_ij (M_Z^{-1})_ij (R_X)_ij, read from the lower triangles
      as sum_{i >= j} (M_Z^{-1})_ij W_ij with W = R_X on the diagonal, 2 R_X below it
      (``w_x``, the only n x n array kept);
      Tr(R_Z R_Y) = Tr(R_Y) - reg sum((M_Z^{-1} A) * A G^{-1}), R_Y = A G^{-1} A^T with
      A = H onehot(Y) [m, K] and G = A^T A + reg I (closed form, nothing n x n).
    """

    reg: float
    bandwidth: str
    sigma: float
    width_x: float
    tr_x: float  # Tr(R_X)
    tr_y: float  # Tr(R_Y)
    w_x: FloatArray  # [m, m] lower-triangle weights of R_X (see above)
    a_y: FloatArray  # [m, K] H onehot(Y)
    ag_y: FloatArray  # [m, K] A G^{-1}

    @classmethod
    def build(cls, x: FloatArray, y: IntArray, num_classes: int, *, bandwidth: str,
              sigma: float, eps: float) -> NhsicSide:
        """The X and Y side for the rows ``x`` [m, d_x], ``y`` [m]; reg = m eps."""
        m = x.shape[0]
        reg = m * eps
        k_x, w_x = _gaussian_gram(x, bandwidth, sigma)
        w = _inverse_lower(_centre_regularise(k_x, reg))  # lower triangle of M_X^{-1}
        diag = 1.0 - reg * np.diagonal(w)  # (R_X)_ii
        w *= -2.0 * reg  # 2 (R_X)_ij below the diagonal (R_X = I - reg M_X^{-1})
        w[np.diag_indices(m)] = diag
        onehot = np.zeros((m, max(num_classes, 1)))
        onehot[np.arange(m), y] = 1.0
        a = onehot - onehot.mean(axis=0)
        gram = a.T @ a + reg * np.eye(a.shape[1])
        ag = np.linalg.solve(gram, a.T).T  # A G^{-1} (G symmetric)
        return cls(reg=reg, bandwidth=bandwidth, sigma=sigma, width_x=w_x,
                   tr_x=float(diag.sum()), tr_y=float(np.sum(a * ag)), w_x=w,
                   a_y=np.asfortranarray(a), ag_y=ag)

    def values(self, z: FloatArray, work: FloatArray | None = None
               ) -> tuple[dict[str, float], float]:
        """nHSIC values for the rows ``z`` [m, p] (aligned with the side's rows) and Z's
        kernel width.  One n x n buffer: K_Z, then M_Z, then M_Z^{-1} in place (with
        ``bandwidth="median"`` the upper triangle is also gathered for its median); ``work``
        (C-ordered float64 [m, m], overwritten) is used as that buffer if given, so a caller
        that keeps one allocates nothing large per call."""
        m = z.shape[0]
        k_z, w_z = _gaussian_gram(z, self.bandwidth, self.sigma, work)
        inv = _inverse_lower(_centre_regularise(k_z, self.reg))  # lower triangle, 0 above
        tr_z = m - self.reg * float(np.trace(inv))
        zx = self.tr_x - self.reg * float(np.vdot(inv, self.w_x))
        inv_a = linalg.blas.dsymm(1.0, inv.T, self.a_y, side=0, lower=0)  # M_Z^{-1} A
        zy = self.tr_y - self.reg * float(np.sum(inv_a * self.ag_y))
        values = {
            "nhsic_zx": zx,
            "nhsic_zy": zy,
            "redundancy": zx - zy,
            "nhsic_zx_null": tr_z * self.tr_x / (m - 1),
            "nhsic_zy_null": tr_z * self.tr_y / (m - 1),
        }
        return values, w_z


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
    Cost O(n^2 (d_x + p) + n^3): about 0.15 s at n = 1000 on one core; about 50 ms CPU per
    call with the probe's cached :class:`NhsicSide` (the Cholesky factorisation and inverse
    of M_Z, n^3 flops, are 45 ms of it).  No standard error (the keys have none; a
    jackknife would cost G more n^3 inversions); the nulls are exact permutation means, not
    noise bands.  Valid as a dependence score for comparing steps of one run (fixed n, eps,
    widths), not as nats.
    """
    xa, za = _as_matrix(x, "x"), _as_matrix(z, "z")
    ya, k_classes = _as_labels(y, num_classes)
    n_total = _check_lengths(x=xa, z=za, y=ya)
    p = check_params("nhsic", {"n": n, "bandwidth": bandwidth, "sigma": sigma, "eps": eps,
                               "seed": seed})
    sigma, eps = float(p["sigma"]), float(p["eps"])  # type: ignore[arg-type]
    idx = subsample(n_total, n, seed)
    m = int(idx.size)
    xa, za, ya = xa[idx], za[idx], ya[idx]
    side = NhsicSide.build(xa, ya, k_classes, bandwidth=str(bandwidth), sigma=sigma, eps=eps)
    values, w_z = side.values(za)
    params: dict[str, object] = {
        "n": n,
        "n_total": n_total,
        "n_used": m,
        "bandwidth": bandwidth,
        "sigma": sigma if bandwidth == "paper" else None,
        "width_z": w_z,
        "width_x": side.width_x,
        "dim_z": za.shape[1],
        "dim_x": xa.shape[1],
        "eps": eps,
        "num_classes": k_classes,
        "kernel_z": "gaussian",
        "kernel_x": "gaussian",
        "kernel_y": "linear-onehot",
        "seed": seed,
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
    The log-det bound equals I(Z;X|Y) when g | Y=c is Gaussian.  No standard error: both
    are deterministic functions of the class moments of these rows (a plug-in for the
    population moments; their sampling error is not reported).
    B: ``"max"`` = max_i ||g_i|| (proxy for sup_x ||g(x)||), ``"mean"`` = mean_i ||g_i||,
    or a positive float.  Default s = 0.1: noise of 10 % of the representation scale per
    direction, where the bounds are O(1)-O(10) nats rather than saturated or ~0 (a choice,
    not a value from the paper).  A class with a single sample gives NaN (warning).
    Keys "logdet_bound", "trace_bound", "v"; ``params["B"]`` is the scale used.
    """
    za = _as_matrix(z, "z")
    ya, k_classes = _as_labels(y, num_classes)
    n = _check_lengths(z=za, y=ya)
    checked = check_params("noise_channel", {"sigma": sigma, "scale": scale})
    sigma = float(checked["sigma"])  # type: ignore[arg-type]
    norms = np.linalg.norm(za, axis=1)
    if isinstance(scale, str):
        b = float(norms.max() if scale == "max" else norms.mean())
    else:
        b = float(scale)
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
    depend on ``bins``.  Default 30 bins as in their paper.  No standard error; valid only
    as the classic baseline to compare with, not as an estimate of MI.
    """
    xa, za = _as_matrix(x, "x"), _as_matrix(z, "z")
    ya, k_classes = _as_labels(y, num_classes)
    n = _check_lengths(x=xa, z=za, y=ya)
    bins = int(check_params("binning", {"bins": bins})["bins"])  # type: ignore[call-overload]
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


def _entry(name: str, fn: Callable[..., InfoResult], *, drop: tuple[str, ...] = (),
           call: Callable[..., InfoResult] | None = None) -> Callable[..., InfoResult]:
    """Registry form ``fn(x, z, y, **params)`` of estimator ``name``: the parameters are
    checked against PARAMS[name] first (an unknown or bad one is a ConfigError, never a
    TypeError), then the keywords in ``drop`` (accepted for the uniform call form, unused by
    this estimator) are removed and ``call(x, z, y, **rest)`` (default ``fn``) runs."""
    run = call if call is not None else fn

    def entry(x: Any, z: Any, y: Any, **params: Any) -> InfoResult:
        check_params(name, params)
        return run(x, z, y, **{k: v for k, v in params.items() if k not in drop})

    entry.__name__ = entry.__qualname__ = f"{name}_entry"
    entry.__doc__ = f"``{name}`` in the registry call form (see :func:`{fn.__name__}`)."
    return entry


#: name -> estimator, call form ``fn(x, z, y, **params)`` with the keywords of PARAMS[name]
#: (all accept ``num_classes`` and ``seed``; ksg ignores y and num_classes, noise_channel
#: ignores x, noise_channel and binning are deterministic and ignore seed)
ESTIMATORS: dict[str, Callable[..., InfoResult]] = {
    "kl_knn": _entry("kl_knn", kl_knn),
    "ksg": _entry("ksg", ksg, drop=("num_classes",),
                  call=lambda x, z, y, **kw: ksg(x, z, **kw)),
    "cmi_ksg": _entry("cmi_ksg", cmi_ksg),
    "nhsic": _entry("nhsic", nhsic),
    "noise_channel": _entry("noise_channel", noise_channel, drop=("seed",),
                            call=lambda x, z, y, **kw: noise_channel(z, y, **kw)),
    "binning": _entry("binning", binning, drop=("seed",)),
}


def estimate(name: str, x: Any, z: Any, y: Any, **params: Any) -> InfoResult:
    """Run ``ESTIMATORS[name](x, z, y, **params)``; an unknown name raises ConfigError."""
    if name not in ESTIMATORS:
        raise ConfigError(unknown_choice("estimator", name, ESTIMATORS))
    return ESTIMATORS[name](x, z, y, **params)
