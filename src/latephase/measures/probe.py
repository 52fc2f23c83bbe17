"""Information measures at every evaluation point, on a fixed subsample of one split.

:class:`InfoProbe` is the thin stateful shell around the pure estimators of
:mod:`latephase.measures.information`.  It fixes ONE seeded subsample of a split (so a curve
follows the model, not the sample), and computes once what does not change during training:
the X side and the label side (nHSIC's R_X and R_Y; the PCA-whitened X of the k-NN
estimators).  The subsample is stratified by class (proportional allocation).  At each
evaluation point only the Z side is recomputed, from the features of
the evaluation's single forward pass.  ``InfoProbe(...)(z)`` equals calling the pure
estimators on the same subsample (tested).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from latephase.errors import ConfigError, unknown_choice
from latephase.measures import information as info

Computer = Callable[[np.ndarray], info.InfoResult]


def _np(a: Any) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64).reshape(len(a), -1)


def stratified_subsample(y: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """Sorted row indices of a seeded subsample of ``n`` rows stratified by class.

    Class c gets floor(n n_c / N) rows, the remaining rows going to the largest remainders,
    so class proportions are kept exactly (up to rounding) and a rare class is not left
    with fewer rows than the k-NN estimators need by chance.  ``n`` None or >= N: all rows.
    """
    N = len(y)
    if n is None or n >= N:
        return np.arange(N)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
    classes, counts = np.unique(y, return_counts=True)
    share = counts * n / N
    take = np.floor(share).astype(int)
    extra = n - int(take.sum())
    take[np.argsort(-(share - take), kind="stable")[:extra]] += 1
    chosen = [rng.choice(np.flatnonzero(y == c), size=t, replace=False)
              for c, t in zip(classes, take, strict=True) if t > 0]
    return np.sort(np.concatenate(chosen))


class InfoProbe:
    """``probe(z_split) -> {estimator/key: value}`` for the rows ``probe.idx`` of a split.

    ``x`` [N, ...] and ``y`` [N] are the split's inputs and labels; ``estimators`` maps a name
    of :data:`~latephase.measures.information.ESTIMATORS` to its keyword parameters (seed and
    sample size are set here, not there).
    """

    def __init__(self, x: Any, y: Any, num_classes: int,
                 estimators: Mapping[str, Mapping[str, Any]] | Sequence[str] = ("nhsic", "kl_knn"),
                 *, n: int | None = 1000, seed: int = 0) -> None:
        if not isinstance(estimators, Mapping):
            estimators = {name: {} for name in estimators}
        for name in estimators:
            if name not in info.ESTIMATORS:
                raise ConfigError(f"measures.information: "
                                  f"{unknown_choice('estimator', name, info.ESTIMATORS)}")
        labels = np.asarray(torch.as_tensor(y).cpu().numpy(), dtype=np.int64)
        self.idx = stratified_subsample(labels, n, seed)
        self.x = _np(x)[self.idx]
        self.y = labels[self.idx]
        self.num_classes, self.seed = num_classes, seed
        builders: dict[str, Callable[[dict[str, Any]], Computer]] = {
            "nhsic": self._nhsic, "kl_knn": self._kl_knn,
        }
        self.computers: dict[str, Computer] = {}
        for name, params in estimators.items():
            build = builders.get(name, self._generic(name))
            self.computers[name] = build(dict(params))
        self.params: dict[str, dict[str, Any]] = {}
        self._warned: set[tuple[type[Warning], str]] = set()

    def __call__(self, z: Any) -> dict[str, float]:
        """Every estimator on the probe's rows of ``z`` [N, p]; keys ``name/key``."""
        zs = _np(z[self.idx] if isinstance(z, torch.Tensor) else np.asarray(z)[self.idx])
        out: dict[str, float] = {}
        for name, compute in self.computers.items():
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                res = compute(zs)
            for w in caught:  # the subsample is fixed: say each distinct problem once
                key = (w.category, str(w.message))
                if key not in self._warned:
                    self._warned.add(key)
                    warnings.warn(str(w.message), w.category, stacklevel=2)
            self.params[name] = res.params
            out.update(res.flat(f"{name}/"))
        return out

    # ---- estimators without a cached fast path: call the pure function on the subsample
    def _generic(self, name: str) -> Callable[[dict[str, Any]], Computer]:
        def build(params: dict[str, Any]) -> Computer:
            fn = info.ESTIMATORS[name]
            return lambda z: fn(self.x, z, self.y, num_classes=self.num_classes, **params)
        return build

    # ---- nHSIC: R_X and R_Y fixed, R_Z per call
    def _nhsic(self, params: dict[str, Any]) -> Computer:
        bandwidth = params.get("bandwidth", "paper")
        sigma = float(params.get("sigma", 5.0))
        eps = float(params.get("eps", 1e-5))
        unknown = set(params) - {"bandwidth", "sigma", "eps"}
        if unknown:
            raise ConfigError(f"nhsic: unknown parameter {sorted(unknown)[0]!r}; valid: "
                              "bandwidth, sigma, eps")
        m = len(self.y)
        reg = m * eps
        k_x, w_x = info._gaussian_gram(self.x, bandwidth, sigma)
        r_x = info._nocco_r(info._double_centre(k_x), reg)
        del k_x
        r_y = info._label_r(self.y, self.num_classes, reg)
        tr_x, tr_y = float(np.trace(r_x)), float(np.trace(r_y))

        def compute(z: np.ndarray) -> info.InfoResult:
            k_z, w_z = info._gaussian_gram(z, bandwidth, sigma)
            r_z = info._nocco_r(info._double_centre(k_z), reg)
            return info._nhsic_result(r_z, r_x, r_y, tr_z=float(np.trace(r_z)), tr_x=tr_x,
                                      tr_y=tr_y, params={
                                          "n_used": m, "bandwidth": bandwidth, "sigma": sigma,
                                          "eps": eps, "width_z": w_z, "width_x": w_x,
                                          "seed": self.seed})
        return compute

    # ---- k-NN (KL): whitened X fixed, Z reduced per call
    def _kl_knn(self, params: dict[str, Any]) -> Computer:
        def compute(z: np.ndarray) -> info.InfoResult:
            return info.kl_knn(self.x, z, self.y, num_classes=self.num_classes, seed=self.seed,
                               x_whitened=x_cache, **params)

        k = dict(params)
        dim_x = int(k.get("dim_x", 3))
        x_cache = info.whiten_x(self.x, dim_x=dim_x, seed=self.seed,
                                svd_solver=str(k.get("svd_solver", "auto")))
        return compute


def estimator_params(m: Any) -> dict[str, dict[str, Any]]:
    """Keyword parameters of each selected estimator from a :class:`MeasureConfig`."""
    knn = {"k": m.knn_k, "dim_z": m.knn_dim, "dim_x": m.knn_dim, "se_groups": m.knn_se_groups}
    table: dict[str, dict[str, Any]] = {
        "nhsic": {"bandwidth": m.nhsic_bandwidth, "sigma": m.nhsic_sigma},
        "kl_knn": dict(knn),
        "ksg": dict(knn),
        "noise_channel": {"sigma": m.noise_sigma, "scale": m.rnc1_scale},
        "binning": {"bins": m.binning_bins},
    }
    return {name: table[name] for name in m.information}
