"""``latephase.Tracker``: the paper's measures for any PyTorch model and training loop.

See :class:`Tracker` (``help(latephase.Tracker)``): usage, the evaluation schedule, the
split rules, how rows are chosen and what each measure costs.
"""

from __future__ import annotations

import difflib
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeGuard

import torch
import torch.nn.functional as F
from torch import nn

from latephase.errors import TrackerError
from latephase.keys import FORECAST, forecast_key
from latephase.measures import (
    PENULTIMATE,
    LossFn,
    Probe,
    SplitAccumulator,
    check_margin_pair,
    flatten_record,
    parameter_norms,
)
from latephase.measures.collapse import check_labels
from latephase.measures.information import ESTIMATORS
from latephase.measures.probe import InfoProbe
from latephase.runs import RunDir, RunRecorder, Status

SplitSpec = tuple[torch.Tensor, torch.Tensor] | Iterable[Any] | Callable[[], Iterable[Any]]

# ----------------------------------------------------------------------------- row keys
class RowKeys:
    """Content keys: one int64 per input row, equal for equal rows, whatever the batch.

    The row's bytes are read as 32-bit integers v_j in [-2^31, 2^31) (1- and 2-byte dtypes
    are widened value by value; floats have -0.0 folded onto 0.0).  Over column chunks of at
    most 2^12 words, two sums

        s_m = sum_j v_j w_mj,   w_mj seeded integers in [1, 2^q),  m = 1, 2,

    are one float64 matrix product; q = 22 - bit_length(chunk width) keeps every partial sum
    an integer of magnitude < 2^53, so the result is exact whatever the BLAS's summation order
    or the batch shape (a float projection is not: its last bits change with the batch).  The
    chunk sums are reduced mod P = 2^31 - 1 and added; each s_m mod P is then mixed by the
    permutation t -> t^5 mod P (5 is prime to P - 1), and key = h_1 2^31 + h_2.  Sorting by key
    is a seeded order unrelated to the content, so the ``keep_rows`` smallest keys are a
    uniform subsample.  Cost: about 1.5 ns per input word (5 ms for 4000 MNIST rows, CPU).
    """

    PRIME = 2**31 - 1
    CHUNK = 2**12

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._weights: dict[tuple[int, str], torch.Tensor] = {}

    def _w(self, width: int, device: torch.device) -> torch.Tensor:
        """Weights [width, 2] (float64 integers), chunk by chunk of CHUNK columns."""
        key = (width, str(device))
        if key not in self._weights:
            gen = torch.Generator().manual_seed(self.seed)
            parts = []
            for start in range(0, width, self.CHUNK):
                n = min(self.CHUNK, width - start)
                q = 22 - n.bit_length()  # n * 2^31 * 2^q <= 2^53
                parts.append(torch.randint(1, 2**q, (n, 2), generator=gen, dtype=torch.int64))
            self._weights[key] = torch.cat(parts).to(torch.float64).to(device)
        return self._weights[key]

    @classmethod
    def _mix(cls, t: torch.Tensor) -> torch.Tensor:
        """t^5 mod P for t in [0, P) (int64; every product < 2^62)."""
        t2 = t * t % cls.PRIME
        return t2 * t2 % cls.PRIME * t % cls.PRIME

    #: rows hashed at a time: the float64 copy of the words is at most ROWS x width x 8 bytes
    #: (a 4000 x 784 MNIST split at once was a 25 MB transient, the top of a run's peak RSS)
    ROWS = 512

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Keys [b] (int64) of the rows of ``x`` [b, ...] (row blocks of :attr:`ROWS`; each
        key depends on its own row only, so the blocks change nothing)."""
        if len(x) > self.ROWS:
            return torch.cat([self._keys(x[i:i + self.ROWS])
                              for i in range(0, len(x), self.ROWS)])
        return self._keys(x)

    def _keys(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach()
        if x.device.type not in ("cpu", "cuda"):  # e.g. mps: no float64
            x = x.cpu()
        flat = x.reshape(len(x), -1)
        if flat.is_complex():
            flat = torch.view_as_real(flat).reshape(len(x), -1)
        if flat.is_floating_point():
            flat = flat + 0.0  # -0.0 -> 0.0: the same input to the model
        size = flat.element_size()
        if size >= 4:
            words = flat.contiguous().view(torch.int32)  # [b, width]: the bits, exactly
        elif size == 2:
            words = flat.contiguous().view(torch.int16).to(torch.int32)
        else:  # bool, uint8, int8: their values
            words = flat.to(torch.int32)
        exact = words.to(torch.float64)
        w = self._w(words.shape[1], exact.device)
        total = torch.zeros(len(x), 2, dtype=torch.int64, device=exact.device)
        for start in range(0, words.shape[1], self.CHUNK):
            stop = start + self.CHUNK
            sums = exact[:, start:stop] @ w[start:stop]  # [b, 2]: exact integers
            total += torch.remainder(sums.to(torch.int64), self.PRIME)
        h = self._mix(torch.remainder(total, self.PRIME))
        return h[:, 0] * 2**31 + h[:, 1]


# ----------------------------------------------------------------------------- helpers
def _cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy, computed in at least float32 (half precision is upcast)."""
    if logits.dtype not in (torch.float32, torch.float64):
        logits = logits.float()
    return F.cross_entropy(logits, y, reduction="none")


def _find_head(model: nn.Module, head: str | None) -> tuple[str, nn.Linear]:
    modules = dict(model.named_modules())
    if head is None:
        linears = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
        if not linears:
            raise TrackerError(f"{type(model).__name__} has no nn.Linear to use as the head; "
                               "pass head=<name of the classifier layer>")
        head = linears[-1]
    module = _module(modules, head, "head")
    if not isinstance(module, nn.Linear):
        raise TrackerError(f"head {head!r} is a {type(module).__name__}, not an nn.Linear; the "
                           "bounds, NC3 and NC4 need a linear classifier f(x) = W g(x) + b")
    return head, module


def _module(modules: Mapping[str, nn.Module], name: str, what: str) -> nn.Module:
    if name not in modules:
        close = difflib.get_close_matches(name, [n for n in modules if n], n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise TrackerError(f"{what} {name!r} is not a module of the model{hint} (names come "
                           "from model.named_modules())")
    return modules[name]


def _count(value: object, name: str, minimum: int, none_ok: bool = False) -> int:
    """An integer argument >= ``minimum``, else a TrackerError (``none_ok``: None allowed,
    see :func:`_optional_count`)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        valid = f"an integer >= {minimum}" + (" or None" if none_ok else "")
        raise TrackerError(f"{name} must be {valid}; got {value!r}")
    return value


def _optional_count(value: object, name: str, minimum: int) -> int | None:
    """None, or an integer argument >= ``minimum``."""
    return None if value is None else _count(value, name, minimum, none_ok=True)


def _is_tensor_split(spec: object) -> TypeGuard[tuple[torch.Tensor, Any]]:
    return isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], torch.Tensor)


FORECAST_FIELDS = ("t_grok", "t_grok_lo", "t_grok_hi")


def _forecast_options(value: Any) -> Any:
    """``forecast=``: False/None (off), True (the defaults) or a ForecastOptions."""
    if value is None or value is False:
        return None
    from latephase.forecast import ForecastOptions

    if value is True:
        return ForecastOptions()
    if not isinstance(value, ForecastOptions):
        raise TrackerError(f"forecast={value!r:.60}: expected True, False or a "
                           "latephase.forecast.ForecastOptions")
    return value.validate()


def forecast_now(records: Sequence[Mapping[str, Any]], options: Any, *, train_split: str,
                 heldout_split: str, thresholds: Any = None) -> Any:
    """:func:`latephase.forecast.forecast` on ``records`` (those up to the last one) with the
    thresholds of ``thresholds`` (a TimescaleConfig; default: its defaults)."""
    from latephase.config import TimescaleConfig
    from latephase.forecast import Forecast, forecast

    th = TimescaleConfig() if thresholds is None else thresholds
    try:
        return forecast(records, options, train_split=train_split, heldout_split=heldout_split,
                        grok_threshold=th.grok_threshold, fit_threshold=th.fit_threshold,
                        collapse_fraction=th.collapse_fraction)
    except Exception as exc:  # a forecaster bug must not end a training run: warn, go on
        reason = f"{type(exc).__name__}: {exc}"
        warnings.warn(f"forecast failed at step {records[-1].get('step')}: {reason}; its "
                      "record gets NaN (status 'error')", RuntimeWarning, stacklevel=2)
        return Forecast(step=records[-1].get("step"), status="error", reason=reason)


def forecast_fields(fc: Any) -> dict[str, float]:
    """A forecast's record values ``forecast/t_grok``, ``_lo``, ``_hi`` (NaN where none)."""
    out = {}
    for q in FORECAST_FIELDS:
        v = getattr(fc, q)
        out[forecast_key(q)] = float("nan") if v is None else float(v)
    return out


def forecast_summary(history: Sequence[tuple[int, Any]], options: Any) -> dict[str, Any]:
    """summary.json's ``forecast``: the options, then per evaluation step the status and
    t_grok with its interval (columns), and the last forecast."""
    import dataclasses

    cols: dict[str, list[Any]] = {"step": [], "status": [],
                                  **{q: [] for q in FORECAST_FIELDS}}
    for step, fc in history:
        cols["step"].append(step)
        cols["status"].append(fc.status)
        for q in FORECAST_FIELDS:
            v = getattr(fc, q)
            cols[q].append(None if v is None or not float(v) == float(v) else float(v))
    last = {k: v[-1] for k, v in cols.items()} if history else {}
    return {"options": dataclasses.asdict(options), "last": last, "history": cols}


def _floating(x: torch.Tensor) -> torch.Tensor:
    """Inputs/features as float64 when NumPy cannot hold their dtype (bfloat16, half)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.to(torch.float64)


#: whether the information estimators may use a second thread when the run has >= 2 (see
#: :func:`_one_thread`); ``latephase bench`` turns it off to time the sequential path
PROBE_THREADS = True


def _one_thread(probe: InfoProbe, feats: torch.Tensor) -> dict[str, float]:
    """``probe(feats)`` with torch and NumPy's BLAS at one thread (per Python thread), restoring
    both after. The estimators work on 1000-row NumPy arrays, mostly single-threaded
    element-wise code between small LAPACK calls; with two threads the idle BLAS and OpenMP
    workers spin and take the core the main thread needs. Measured on 2 cores (paper-mnist, a
    whole evaluation point at train.threads=2, best of 4, two rounds): 282-345 ms with the
    estimators on 2 threads, 211-226 ms with them on 1. With a thread budget >= 2, nHSIC
    (GIL-free LAPACK) runs in a second Python thread beside the k-NN estimators, each on one
    BLAS thread: the same floats, less wall time (``latephase bench`` prints the ratio)."""
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    if threads == 1:
        return probe(feats)
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            return probe(feats, workers=threads if PROBE_THREADS else 1)
    finally:
        torch.set_num_threads(threads)


class Tracker:
    """Measure a model's representations at evaluation points.

        steps = set(latephase.eval_steps(num_steps))   # the paper's schedule (below)
        tracker = latephase.Tracker(model, splits={"train": (x_tr, y_tr), "test": test_loader},
                                    run_dir="runs/my-run")
        for step in range(num_steps + 1):
            if step in steps:
                tracker.evaluate(step)            # one record, appended to runs/my-run
            ...                                   # your own training step
        tracker.close()                           # then: latephase report runs/my-run

    **Schedule.** ``latephase.eval_steps(num_steps)`` is the paper's: every step below 30, every
    10th below 150, then every ``num_steps // 150`` steps, and always 0 and ``num_steps`` (about
    200 points whatever ``num_steps``).  Any steps work; the time scales interpolate between them.

    **One pass.** At each ``evaluate`` the tracker runs ONE forward pass per split (eval mode,
    no_grad; every module's training flag is restored afterwards), reads the representations with
    forward hooks (they exist only during ``evaluate``) and feeds a
    :class:`~latephase.measures.SplitAccumulator`, the same measuring path ``latephase run`` uses.
    BLAS/OpenMP pools (NumPy, SciPy, scikit-learn) are capped at ``torch.get_num_threads()``
    threads while it measures.  The information estimators run on one torch/BLAS thread; with
    ``torch.get_num_threads()`` >= 2, nHSIC runs on a second Python thread beside the k-NN
    estimators (joined before ``evaluate`` returns; the values are the same floats).

    - ``head``: the classifier layer (an ``nn.Linear`` with ``num_classes`` outputs; default: the
      last ``nn.Linear`` in ``model.named_modules()``).  Logits are the head's output, so models
      whose ``forward`` returns a dict or tuple work unchanged.
    - ``layers``: extra modules (dotted names) whose outputs are measured as representations, each
      reported as ``{split}/{layer}/{measure}``.  The head's input (the penultimate
      representation) is always measured, as ``{split}/{measure}``, with the measures that need
      the head (NC3, NC4, the Theorem 3.2 bounds, the ``margin_pair`` margins of Figure 2).
    - ``splits``: name -> ``(x, y)`` tensors (chunked by ``batch_size``), a re-iterable of
      ``(x, y)`` batches (list, DataLoader; extra fields such as an index are ignored), or a
      zero-argument callable returning such an iterable (e.g. a generator function).  Labels are
      1-D class indices in [0, num_classes) (integer-valued floats are accepted).
    - ``information``: estimator names of :data:`latephase.measures.information.ESTIMATORS`
      (or name -> parameters), on ``information_n`` seeded, class-stratified rows (None: all
      kept rows); ``seed`` seeds that subsample and the row keys.
    - ``margin_pair`` (a, b): record the signed margins of the class-a and class-b rows for the
      paper's Figure 2 (None: off).  ``keep_rows``: at most this many rows are kept (None: all).
    - ``forecast``: True (or a :class:`latephase.forecast.ForecastOptions`) adds the online
      grokking forecast to each record, ``forecast/t_grok``, ``forecast/t_grok_lo``,
      ``forecast/t_grok_hi`` (NaN while there is none), from the records up to that step only,
      and its history to summary.json; default False (its constants are calibrated on the
      paper's MNIST MLP; see ``latephase forecast-eval``).

    **Split rules.** ``train_split`` (default ``"train"``) is the training set: its accuracy and
    RNC1 give t_fit and t_collapse (a run without a split of that name has none).
    ``heldout_split`` is the population estimate (held-out error, t_grok, the bound figure):
    default ``"test"`` if present, else the only split other than the training one; with several
    candidates it must be named.  ``information_splits`` default to ``[heldout_split]`` and
    ``information_layers`` to the penultimate layer only (``[""]``; None: every measured layer).
    Split names are free (``"val"``, ``"holdout"``, ...) but may not contain ``/``.

    **Rows.** Batches are streamed: class moments are merged exactly in float64 over every row.
    NC4 and the information estimators need the rows themselves: up to ``keep_rows`` rows are
    kept, chosen by a content key of each input row (:class:`RowKeys`: a seeded hash, exact and
    independent of the batch), as the ``keep_rows`` smallest keys and in key order.  So a shuffled
    DataLoader, a generator, a list of batches and tensors hand the estimators the same rows in
    the same order, and (x, z, y) always come from one pass.  At every evaluation the keys of an
    information split are compared with those its probes were built on; if the split really
    changed (random augmentation, a source yielding other samples) the probes are rebuilt from
    this pass, with a one-time warning, instead of pairing unrelated rows.

    **Cost** (ms per ``evaluate``, one thread; the paper's MLP 784-200-200-200-10 on 1000 + 4000
    embedded MNIST rows, information on the 4000 held-out rows with ``information_n=1000``;
    ``python benchmarks/tracker_cost.py``, best of 7 on a shared 2-core machine, +-50 %):

        collapse measures, both splits (information=())     ~70-95
        each estimator, extra:  nhsic ~140-260   kl_knn ~140-260   ksg ~210
                                cmi_ksg ~165-200  noise_channel ~50-160  binning ~80-110
        its first evaluate also builds the fixed X side:   +100-550
        default before cmi_ksg (nhsic + kl_knn), evaluate ~520
        content keys of the 4000 held-out rows              ~8  (about 2 % of the default)

    So the information estimators dominate: keep them to the penultimate layer (the default) and
    to one split, or pass ``information=()`` for the collapse measures alone.
    """

    def __init__(self, model: nn.Module, splits: Mapping[str, SplitSpec], *,
                 layers: Sequence[str] = (), head: str | None = None,
                 num_classes: int | None = None, loss_fn: LossFn | None = None,
                 train_split: str = "train", heldout_split: str | None = None,
                 information: Sequence[str] | Mapping[str, Mapping[str, Any]] = ("nhsic",
                                                                                  "cmi_ksg"),
                 information_splits: Sequence[str] | None = None,
                 information_layers: Sequence[str] | None = (PENULTIMATE,),
                 information_n: int | None = 1000, seed: int = 0, batch_size: int = 5000,
                 keep_rows: int | None = 100_000,
                 margin_pair: tuple[int, int] | None = (0, 1),
                 forecast: Any = False,
                 run_dir: str | Path | RunDir | None = None) -> None:
        self.model = model
        self.head_name, self.head = _find_head(model, head)
        modules = dict(model.named_modules())
        for name in layers:
            _module(modules, name, "layer")
        self.layers = [PENULTIMATE, *dict.fromkeys(n for n in layers if n != PENULTIMATE)]
        out = self.head.out_features
        self.num_classes = out if num_classes is None else _count(num_classes, "num_classes", 1)
        if self.num_classes != out:
            raise TrackerError(f"num_classes={num_classes!r} does not match the head "
                               f"{self.head_name!r} ({out} outputs); the head must have one "
                               "output per class (pass head=<the classifier layer>)")
        self.loss_fn = loss_fn if loss_fn is not None else _cross_entropy
        self.batch_size = _count(batch_size, "batch_size", 1)
        self.keep_rows = _optional_count(keep_rows, "keep_rows", 1)
        self.information_n = _optional_count(information_n, "information_n", 2)
        self.seed = seed
        self.splits = self._check_splits(splits)
        self.train_split: str | None = self._train_split(train_split)
        self.heldout_split: str | None = self._heldout_split(heldout_split)
        self.information = information
        self.information_splits = self._names(
            information_splits, "information_splits", list(self.splits),
            [] if self.heldout_split is None else [self.heldout_split])
        self.information_layers = self._names(
            information_layers, "information_layers", self.layers, self.layers,
            hint=f"add it to layers (measured: {self.layers[1:] or 'only the head input'})")
        names = information if isinstance(information, Mapping) else list(information)
        unknown = [n for n in names if n not in ESTIMATORS]
        if unknown:
            raise TrackerError(f"information: unknown estimator {unknown[0]!r}; valid choices: "
                               f"{', '.join(sorted(ESTIMATORS))}")
        self.margin_pair = self._margin_pair(margin_pair)
        self.forecast = _forecast_options(forecast)
        self.keys = RowKeys(seed)
        self.probes: dict[tuple[str, str], InfoProbe] = {}
        self._probe_rows: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # keys, labels
        self._rebuilt: set[str] = set()  # splits whose probes were rebuilt (warned once)
        self._rows_seen: dict[str, int] = {}  # rows of each split's last pass
        self._store: dict[str, torch.Tensor] = {}  # filled by the hooks during one forward
        self._closed = False
        self.run = self._open_run(run_dir)
        self.records: list[dict[str, Any]] = []
        self.forecasts: list[tuple[int, Any]] = []  # (step, Forecast) when forecast is on

    # ------------------------------------------------------------------ arguments
    def _check_splits(self, splits: Mapping[str, SplitSpec]) -> dict[str, SplitSpec]:
        if not isinstance(splits, Mapping) or not splits:
            raise TrackerError(f"splits must be a non-empty mapping name -> data; got "
                               f"{splits!r:.60}; pass e.g. splits={{'train': (x, y)}}")
        for name, spec in splits.items():
            if not isinstance(name, str) or not name or "/" in name or name == FORECAST:
                raise TrackerError(f"split name {name!r} is not valid: use a non-empty string "
                                   "without '/' (record keys are '<split>/<measure>'), "
                                   f"other than {FORECAST!r}")
            if _is_tensor_split(spec):
                x, y = spec
                y = self._labels(y, name)
                if len(x) != len(y):
                    raise TrackerError(f"split {name!r}: x has {len(x)} rows but y has "
                                       f"{len(y)}; one label per input row is required")
        return dict(splits)

    def _train_split(self, name: str) -> str | None:
        if name in self.splits:
            return name
        if name == "train":  # the default, and no split of that name: no training split
            return None
        raise TrackerError(f"train_split {name!r} is not a split; valid choices: "
                           f"{', '.join(map(repr, self.splits))}")

    def _heldout_split(self, name: str | None) -> str | None:
        if name is not None:
            others = [s for s in self.splits if s != self.train_split]
            if name not in others:
                raise TrackerError(f"heldout_split {name!r} is not a split other than the "
                                   f"training one; valid choices: {', '.join(map(repr, others))}")
            return name
        if "test" in self.splits and self.train_split != "test":
            return "test"
        others = [s for s in self.splits if s != self.train_split]
        if len(others) <= 1:
            return others[0] if others else None
        raise TrackerError(f"which split is held out? splits {others} are all candidates: "
                           "pass heldout_split=<name> (used for the held-out error, t_grok and "
                           "the information measures)")

    @staticmethod
    def _names(value: Sequence[str] | None, what: str, valid: list[str], default: list[str],
               hint: str = "") -> list[str]:
        if value is None:
            return list(default)
        if isinstance(value, str):
            raise TrackerError(f"{what} must be a list of names, not the string {value!r}")
        names = list(dict.fromkeys(value))
        bad = [n for n in names if n not in valid]
        if bad:
            raise TrackerError(f"{what}: {bad[0]!r} is not measured; valid choices: "
                               f"{', '.join(map(repr, valid))}" + (f"; {hint}" if hint else ""))
        return names

    def _margin_pair(self, pair: object) -> tuple[int, int] | None:
        try:
            return check_margin_pair(pair, self.num_classes)
        except ValueError as exc:
            raise TrackerError(str(exc)) from None

    def _labels(self, y: Any, name: str, n: int | None = None) -> torch.Tensor:
        try:
            return check_labels(y, self.num_classes, n, f"split {name!r}: labels")
        except (ValueError, TypeError, RuntimeError) as exc:
            raise TrackerError(str(exc).splitlines()[0]) from None

    # ------------------------------------------------------------------ run directory
    def _open_run(self, run_dir: str | Path | RunDir | None) -> RunRecorder | None:
        if run_dir is None:
            return None
        if isinstance(run_dir, RunDir):
            return RunRecorder.take(run_dir)
        run = RunDir(run_dir)
        if run.config_path.exists():
            raise TrackerError(f"run directory {str(run.path)!r} already holds a run; "
                               "choose a new run_dir")
        info = {"config": None,
                "tracker": {"model": type(self.model).__name__, "head": self.head_name,
                            "layers": self.layers[1:], "splits": list(self.splits),
                            "num_classes": self.num_classes, "train_split": self.train_split,
                            "heldout_split": self.heldout_split,
                            "information_splits": self.information_splits,
                            "margin_pair": (None if self.margin_pair is None
                                            else list(self.margin_pair))}}
        return RunDir.create(run.path, None, info)

    # ------------------------------------------------------------------ batches
    def _batches(self, name: str) -> Iterator[tuple[Any, Any]]:
        spec = self.splits[name]
        if _is_tensor_split(spec):
            x, y = spec
            for start in range(0, len(x), self.batch_size):
                yield x[start:start + self.batch_size], y[start:start + self.batch_size]
            return
        source = spec() if callable(spec) else spec
        for batch in source:
            if not (isinstance(batch, list | tuple) and len(batch) >= 2):
                raise TrackerError(f"split {name!r}: each batch must be an (x, y) pair, got "
                                   f"{type(batch).__name__}")
            yield batch[0], batch[1]

    def _to_model(self, x: Any, y: Any, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(x, torch.Tensor):
            raise TrackerError(f"split {name!r}: inputs must be tensors, got "
                               f"{type(x).__name__}")
        if not isinstance(y, torch.Tensor):
            try:
                y = torch.as_tensor(y)
            except (TypeError, ValueError, RuntimeError):
                raise TrackerError(f"split {name!r}: labels must be a tensor of class indices; "
                                   f"got {type(y).__name__}") from None
        rows = len(x) if x.ndim else 0
        if y.ndim == 1 and rows != len(y):
            raise TrackerError(f"split {name!r}: a batch has {rows} input rows but {len(y)} "
                               "labels; one label per input row is required")
        y = self._labels(y, name, rows)
        p = next(self.model.parameters())
        x = x.to(p.device, p.dtype) if x.is_floating_point() else x.to(p.device)
        return x, y.to(p.device)

    def _keyed(self, name: str, info: bool) -> bool:
        """Whether the rows of ``name`` are chosen by key: information splits, and splits
        that may exceed ``keep_rows`` (unknown size: the first pass of an iterable)."""
        if info:
            return True
        if self.keep_rows is None:
            return False
        spec = self.splits[name]
        size = len(spec[0]) if _is_tensor_split(spec) else self._rows_seen.get(name)
        return size is None or size > self.keep_rows

    # ------------------------------------------------------------------ measuring
    def _hooks(self) -> list[Any]:
        modules = dict(self.model.named_modules())
        store = self._store

        def head_hook(mod: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            store[PENULTIMATE], store["__logits__"] = inp[0], out

        handles = [self.head.register_forward_hook(head_hook)]
        for name in self.layers[1:]:
            def hook(mod: nn.Module, inp: Any, out: Any, name: str = name) -> None:
                if not isinstance(out, torch.Tensor):
                    raise TrackerError(f"layer {name!r} returns a {type(out).__name__}, not a "
                                       "tensor; name a module whose output is a tensor")
                store[name] = out
            handles.append(modules[name].register_forward_hook(hook))
        return handles

    def _probes(self, name: str, acc: SplitAccumulator) -> dict[str, Probe]:
        """The split's probes, (re)built when its kept rows are not those they hold."""
        keys, ys = acc.row_keys(), acc.labels()  # the inputs only when (re)building
        held = self._probe_rows.get(name)
        if held is None or not (torch.equal(held[0], keys) and torch.equal(held[1], ys)):
            xs = acc.inputs()[0]
            if held is not None and name not in self._rebuilt:
                self._rebuilt.add(name)
                warnings.warn(f"split {name!r} gave other rows than when its information "
                              "probes were built (random augmentation, or a source yielding "
                              "other samples?); they are rebuilt from this pass, so the "
                              "information curves follow the sample as well as the model "
                              "(said once)", RuntimeWarning, stacklevel=4)
            for layer in self.information_layers:
                self.probes[(name, layer)] = InfoProbe(
                    _floating(xs), ys, self.num_classes, self.information,
                    n=self.information_n, seed=self.seed)
            self._probe_rows[name] = (keys, ys)

        def feed(probe: InfoProbe) -> Probe:
            return lambda feats: _one_thread(probe, _floating(feats))

        return {layer: feed(self.probes[(name, layer)]) for layer in self.information_layers}

    def _measure_split(self, name: str) -> dict[str, Any]:
        info = bool(self.information) and name in self.information_splits
        keyed = self._keyed(name, info)
        acc = SplitAccumulator(self.num_classes, self.loss_fn, self.layers,
                               keep_rows=self.keep_rows, keep_inputs=info,
                               margin_pair=self.margin_pair)
        store = self._store
        for x, y in self._batches(name):
            x, y = self._to_model(x, y, name)
            store.clear()
            self.model(x)
            if "__logits__" not in store:
                raise TrackerError(f"the head {self.head_name!r} was not called in forward")
            acc.update(store["__logits__"], store, y, x, keys=self.keys(x) if keyed else None)
        if acc.n == 0:
            raise TrackerError(f"split {name!r} yielded no batches; a generator is used up "
                               "after one pass: pass a zero-argument callable returning a "
                               "fresh iterable (e.g. lambda: iter(loader))")
        self._rows_seen[name] = acc.n
        probes = self._probes(name, acc) if info else {}
        return flatten_record(name, acc.compute(self.head, probes))

    def measure(self) -> dict[str, Any]:
        """One record (without ``step``): every split, every layer, parameter norms."""
        from threadpoolctl import threadpool_limits

        flags = {m: m.training for m in self.model.modules()}
        self.model.eval()
        handles = self._hooks()
        try:
            record: dict[str, Any] = {}
            with torch.no_grad(), threadpool_limits(limits=torch.get_num_threads()):
                for name in self.splits:
                    record.update(self._measure_split(name))
            record.update(parameter_norms(self.model, self.head))
            return record
        finally:
            self._store.clear()
            for h in handles:
                h.remove()
            for m, flag in flags.items():
                m.training = flag

    def evaluate(self, step: int) -> dict[str, Any]:
        """Measure at ``step``; returns the record and appends it to ``run_dir`` if given.
        Steps must increase from one call to the next."""
        step = int(step)
        if self.records and step <= self.records[-1]["step"]:
            raise TrackerError(f"evaluate(step={step}): steps must increase; the last "
                               f"evaluation was at step {self.records[-1]['step']}")
        record: dict[str, Any] = {"step": step, **self.measure()}
        if self.forecast is not None and self.train_split and self.heldout_split:
            fc = forecast_now([*self.records, record], self.forecast,
                              train_split=self.train_split, heldout_split=self.heldout_split)
            record.update(forecast_fields(fc))
            self.forecasts.append((step, fc))
        self.records.append(record)
        if self.run is not None and not self._closed:
            self.run.append(record)
            self.run.write_summary({"status": Status.RUNNING, "step": step,
                                    "evaluations": len(self.records),
                                    "updated": time.strftime("%Y-%m-%dT%H:%M:%S")})
        return record

    def _timescales(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        from latephase.config import TimescaleConfig
        from latephase.timescales import compute_timescales

        if self.train_split is None:
            return {}
        return compute_timescales(records, TimescaleConfig(), train_split=self.train_split,
                                  heldout_split=self.heldout_split)

    def close(self, status: str | Status = Status.FINISHED) -> None:
        """Write the final summary (``status``, time scales computed once from the records)
        and release the run directory.  Calling it again does nothing."""
        if self.run is not None and not self._closed:
            try:
                extra: dict[str, Any] = (
                    {"forecast": forecast_summary(self.forecasts, self.forecast)}
                    if self.forecasts else {})
                self.run.finish(Status(status), timescales=self._timescales,
                                updated=time.strftime("%Y-%m-%dT%H:%M:%S"), **extra)
            finally:
                self.run.close()
                self._closed = True

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type: Any, *exc: object) -> None:
        self.close(Status.FINISHED if exc_type is None else Status.FAILED)
