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

import contextlib
import functools
import inspect
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from latephase.errors import ConfigError, unknown_choice
from latephase.measures import information as info

Computer = Callable[[Any], info.InfoResult]

#: largest nHSIC buffer (8 m^2 bytes) a probe keeps between calls: 64 MiB, m <= 2896
KEEP_WORK_BYTES = 64 * 2**20

#: keywords the probe sets itself (from its own arguments) and users may not pass
PROBE_OWNED = ("n", "seed", "num_classes", "x_whitened")


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


class _Background:
    """``fn()`` started now on a thread; :meth:`result` joins it and returns its value or
    raises its exception in the caller.  The thread computes under the caller's NumPy error
    settings (per thread in NumPy) and, as every POSIX thread, starts with its creator's
    floating-point environment, so a training runtime's subnormal flushing holds there too
    (both tested; a Windows thread starts at the default environment instead)."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._value: Any = None
        self._error: BaseException | None = None
        errors = np.geterr()

        def run() -> None:
            try:
                with np.errstate(**errors):
                    self._value = fn()
            except BaseException as e:  # re-raised in the caller by result()
                self._error = e

        self._thread = threading.Thread(target=run, name="latephase-nhsic")
        self._thread.start()

    def join(self) -> None:
        """Wait for the thread, even through Ctrl-C (re-raised once it has ended: a thread
        left running would write into the probe's kept buffer during the next call)."""
        interrupted: BaseException | None = None
        while self._thread.is_alive():
            try:
                self._thread.join()
            except KeyboardInterrupt as e:
                interrupted = e
        if interrupted is not None:
            raise interrupted

    def result(self) -> Any:
        self.join()
        if self._error is not None:
            raise self._error
        return self._value


@functools.lru_cache(maxsize=1)
def _blas_controller() -> Any:
    """threadpoolctl's view of the BLAS libraries loaded with NumPy and SciPy (built once;
    limiting through it costs microseconds)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _user_params(name: str) -> list[str]:
    """The parameters of ``name`` a user may set through the probe."""
    return sorted(set(info.PARAMS[name]) - set(PROBE_OWNED))


def _defaults(name: str) -> dict[str, Any]:
    """Keyword defaults of an estimator's pure function (one source of truth)."""
    fns: dict[str, Callable[..., info.InfoResult]] = {
        "nhsic": info.nhsic, "kl_knn": info.kl_knn, "ksg": info.ksg, "cmi_ksg": info.cmi_ksg}
    fn = fns[name]
    return {k: p.default for k, p in inspect.signature(fn).parameters.items()
            if p.default is not inspect.Parameter.empty}


class InfoProbe:
    """``probe(z_split) -> {estimator/key: value}`` for the rows ``probe.idx`` of a split.

    ``x`` [N, ...] and ``y`` [N] are the split's inputs and labels (aligned rows; torch or
    numpy; floating types of any precision, bfloat16 included, are upcast to float64; labels
    must be integers in [0, num_classes)); ``estimators`` maps a name of
    :data:`~latephase.measures.information.ESTIMATORS` to its keyword parameters, checked
    here by :func:`~latephase.measures.information.check_params` (``n``, ``seed`` and
    ``num_classes`` are the probe's own and may not be given there).  ``n``: the subsample
    size, None (every row) or an int >= 2.
    """

    def __init__(self, x: Any, y: Any, num_classes: int,
                 estimators: Mapping[str, Mapping[str, Any]] | Sequence[str] = ("nhsic",
                                                                                "cmi_ksg"),
                 *, n: int | None = 1000, seed: int = 0) -> None:
        if not isinstance(estimators, Mapping):
            estimators = {name: {} for name in estimators}
        for name in estimators:
            if name not in info.ESTIMATORS:
                raise ConfigError(f"measures.information: "
                                  f"{unknown_choice('estimator', name, info.ESTIMATORS)}")
        if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer))
                              or n < 2):
            raise ConfigError(f"information_n={n!r} is invalid; valid: None (every row) or "
                              "an int >= 2")
        info.check_params("kl_knn", {"seed": seed, "num_classes": num_classes})
        labels, _ = info._as_labels(y, num_classes)
        if not hasattr(x, "detach"):
            x = np.asarray(x)
        if x.ndim == 0:
            info._as_matrix(x, "x")  # raises: x has no sample axis
        info._check_lengths(x=np.empty((x.shape[0], 0)), y=labels)
        self.n_rows = len(labels)
        self.idx = stratified_subsample(labels, n, seed)
        # only the subsample's rows are converted to float64 (and checked): the split's
        # other rows are never used (a float64 copy of a 4000 x 784 split is 25 MB)
        self.x = info._as_matrix(x[self.idx], "x")
        self.x_resolution = info._resolution(x)
        self.y = labels[self.idx]
        self.num_classes, self.seed = int(num_classes), int(seed)
        builders: dict[str, Callable[[dict[str, Any]], Computer]] = {
            "nhsic": self._nhsic, "kl_knn": self._knn("kl_knn"), "ksg": self._knn("ksg"),
            "cmi_ksg": self._knn("cmi_ksg"),
        }
        self.computers: dict[str, Computer] = {}
        self._x_sides: dict[tuple[int, str], info.WhitenedX] = {}  # shared by the k-NN ones
        for name, params in estimators.items():
            owned = sorted(set(params) & set(PROBE_OWNED))
            if owned:
                raise ConfigError(f"{name}: parameter {owned[0]!r} is set by the probe "
                                  "(information_n, information_seed, the model's classes); "
                                  f"valid: {', '.join(_user_params(name))}")
            build = builders.get(name, self._generic(name))
            self.computers[name] = build(info.check_params(name, params))
        self.params: dict[str, dict[str, Any]] = {}
        self._warned: set[tuple[type[Warning], str]] = set()

    def __call__(self, z: Any, *, workers: int = 1) -> dict[str, float]:
        """Every estimator on the probe's rows of ``z`` [N, p]; keys ``name/key``.

        ``workers`` >= 2 (a caller with a second idle core): nHSIC runs in a second thread
        alongside the k-NN estimators (its Gram product and Cholesky inverse release the
        GIL), with BLAS limited to one thread meanwhile.  The values are the same floats as
        with ``workers=1`` at one BLAS thread (the Tracker's setting): each estimator does the
        same single-threaded arithmetic; only the wall time differs."""
        n_z = len(z) if hasattr(z, "__len__") else None
        if n_z != self.n_rows:
            raise ConfigError(f"z has {n_z} rows; valid: one row per row of the probe's split "
                              f"(N={self.n_rows}), in the same order as x and y")
        zs = z[self.idx] if hasattr(z, "detach") else np.asarray(z)[self.idx]
        for side in self._x_sides.values():  # a reduced Z is shared within this call only
            side.cache.forget("z_pca/")
        results: dict[str, info.InfoResult] = {}
        aside = (["nhsic"] if workers >= 2 and "nhsic" in self.computers
                 and len(self.computers) > 1 else [])
        # one warnings recorder for both threads (the worker is joined inside it; warnings are
        # said once per probe, the subsample being fixed), and BLAS at one thread in both: no
        # oversubscription, each estimator doing the arithmetic it would do alone
        with warnings.catch_warnings(record=True) as caught, \
                (_blas_controller().limit(limits=1, user_api="blas") if aside
                 else contextlib.nullcontext()):
            warnings.simplefilter("always")
            worker = _Background(lambda: {n: self.computers[n](zs) for n in aside}) \
                if aside else None
            try:
                for name, compute in self.computers.items():
                    if name not in aside:
                        results[name] = compute(zs)
            finally:  # never leave the worker running past the recorder, even on an error
                if worker is not None:
                    worker.join()
            if worker is not None:
                results.update(worker.result())
        for w in caught:
            key = (w.category, str(w.message))
            if key not in self._warned:
                self._warned.add(key)
                warnings.warn(str(w.message), w.category, stacklevel=2)
        out: dict[str, float] = {}
        for name in self.computers:  # the estimators' order, whichever thread ran them
            self.params[name] = results[name].params
            out.update(results[name].flat(f"{name}/"))
        return out

    # ---- estimators without a cached fast path: call the pure function on the subsample
    def _generic(self, name: str) -> Callable[[dict[str, Any]], Computer]:
        def build(params: dict[str, Any]) -> Computer:
            fn = info.ESTIMATORS[name]
            return lambda z: fn(self.x, z, self.y, num_classes=self.num_classes, seed=self.seed,
                                **params)
        return build

    # ---- nHSIC: the X and Y side (info.NhsicSide) fixed, Z per call
    def _nhsic(self, params: dict[str, Any]) -> Computer:
        p = {**_defaults("nhsic"), **params}
        bandwidth, sigma, eps = str(p["bandwidth"]), float(p["sigma"]), float(p["eps"])
        m = len(self.y)
        side = info.NhsicSide.build(self.x, self.y, self.num_classes, bandwidth=bandwidth,
                                    sigma=sigma, eps=eps)

        # nHSIC's one n x n buffer, kept: allocated per call, the 8 MB (n = 1000) buffers of
        # the thread nHSIC runs on stay cached in that thread's malloc arena (measured: a
        # paper-mnist run's resident memory +40-50 MB with nHSIC on a second thread); not
        # kept above KEEP_WORK_BYTES, where holding it between evaluations costs more
        work = np.empty((m, m)) if 8 * m * m <= KEEP_WORK_BYTES else None

        def compute(z: Any) -> info.InfoResult:
            values, w_z = side.values(info._as_matrix(z, "z"), work)
            return info.InfoResult(values, dict.fromkeys(values, info.NAN), {
                "n_used": m, "bandwidth": bandwidth, "sigma": sigma, "eps": eps,
                "width_z": w_z, "width_x": side.width_x, "seed": self.seed})
        return compute

    # ---- k-NN estimators: whitened X fixed, Z reduced per call
    def _knn(self, name: str) -> Callable[[dict[str, Any]], Computer]:
        # the pure functions (they take the cached x_whitened, the registry form does not)
        pure: dict[str, Callable[..., info.InfoResult]] = {
            "kl_knn": info.kl_knn, "cmi_ksg": info.cmi_ksg,
            "ksg": lambda x, z, y, num_classes, **kw: info.ksg(x, z, **kw)}
        fn = pure[name]

        def build(params: dict[str, Any]) -> Computer:
            p = {**_defaults(name), **params}
            key = (int(p["dim_x"]), str(p["svd_solver"]))
            if key not in self._x_sides:  # one X side per reduction, shared by kl_knn, cmi_ksg
                self._x_sides[key] = info.whiten_x(self.x, dim_x=key[0], seed=self.seed,
                                                   svd_solver=key[1])
                self._x_sides[key].info["resolution"] = self.x_resolution  # the split's dtype
            x_cache = self._x_sides[key]

            def compute(z: Any) -> info.InfoResult:
                kw = dict(params)
                if name == "cmi_ksg" and kw.get("resolution") is None:
                    kw["resolution"] = info._resolution(z)  # z's own dtype (e.g. float32)
                return fn(self.x, z, self.y, num_classes=self.num_classes, seed=self.seed,
                          x_whitened=x_cache, **kw)
            return compute
        return build


def estimator_params(m: Any) -> dict[str, dict[str, Any]]:
    """Keyword parameters of each selected estimator from a :class:`MeasureConfig`, checked by
    :func:`~latephase.measures.information.check_params` (a bad value fails here, before
    training)."""
    knn = {"k": m.knn_k, "dim_z": m.knn_dim, "dim_x": m.knn_dim, "se_groups": m.knn_se_groups}
    table: dict[str, dict[str, Any]] = {
        "nhsic": {"bandwidth": m.nhsic_bandwidth, "sigma": m.nhsic_sigma},
        "kl_knn": dict(knn),
        "ksg": dict(knn),
        "cmi_ksg": dict(knn),
        "noise_channel": {"sigma": m.noise_sigma, "scale": m.rnc1_scale},
        "binning": {"bins": m.binning_bins},
    }
    unknown = [name for name in m.information if name not in table]
    if unknown:
        raise ConfigError(f"measures.information: "
                          f"{unknown_choice('estimator', unknown[0], table)}")
    return {name: info.check_params(name, table[name]) for name in m.information}
