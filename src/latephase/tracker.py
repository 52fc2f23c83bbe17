"""``latephase.Tracker``: the paper's measures for any PyTorch model and training loop.

    tracker = latephase.Tracker(model, splits={"train": (x_tr, y_tr), "test": test_batches},
                                run_dir="runs/my-run")
    for step in range(steps):
        ...                                   # your own training step
        if step in eval_steps:
            tracker.evaluate(step)            # one record, appended to runs/my-run
    tracker.close()                           # then: latephase report runs/my-run

At each ``evaluate`` the tracker runs ONE forward pass per split (eval mode, no_grad; every
module's training flag is restored afterwards), reads the representations with forward
hooks (the hooks exist only during ``evaluate``), and feeds a
:class:`~latephase.measures.SplitAccumulator`, the same measuring path ``latephase run`` uses.

- ``head``: the classifier layer (an ``nn.Linear``; default: the last ``nn.Linear`` in
  ``model.named_modules()``).  Logits are the head's output, so models whose ``forward``
  returns a dict or tuple work unchanged.
- ``layers``: extra modules (dotted names) whose outputs are measured as representations, each
  reported as ``{split}/{layer}/{measure}``.  The head's input (the penultimate
  representation) is always measured, as ``{split}/{measure}``, with the measures that need
  the head (NC3, NC4, the Theorem 3.2 bound).
- ``splits``: name -> ``(x, y)`` tensors (chunked by ``batch_size``), a re-iterable of
  ``(x, y)`` batches (list, DataLoader), or a zero-argument callable returning such an
  iterable (e.g. a generator function).  Batches are streamed: moments are merged exactly in
  float64 and only the first ``keep_rows`` rows' features are kept (for NC4 and the
  information estimators, which use a seeded capped subsample of them).
"""

from __future__ import annotations

import difflib
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from latephase.errors import TrackerError
from latephase.measures import (
    PENULTIMATE,
    LossFn,
    Probe,
    SplitAccumulator,
    flatten_record,
    parameter_norms,
)
from latephase.measures.information import ESTIMATORS
from latephase.measures.probe import InfoProbe
from latephase.runs import RunDir, atomic_write_text, environment

SplitSpec = tuple[torch.Tensor, torch.Tensor] | Iterable[Any] | Callable[[], Iterable[Any]]


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


class Tracker:
    """Measure a model's representations at evaluation points (see the module docstring)."""

    def __init__(self, model: nn.Module, splits: Mapping[str, SplitSpec], *,
                 layers: Sequence[str] = (), head: str | None = None,
                 num_classes: int | None = None, loss_fn: LossFn | None = None,
                 information: Sequence[str] | Mapping[str, Mapping[str, Any]] = ("nhsic",
                                                                                  "kl_knn"),
                 information_splits: Sequence[str] = ("test",),
                 information_layers: Sequence[str] | None = None,
                 information_n: int | None = 1000, seed: int = 0, batch_size: int = 5000,
                 keep_rows: int = 100_000, run_dir: str | Path | RunDir | None = None) -> None:
        self.model = model
        self.head_name, self.head = _find_head(model, head)
        modules = dict(model.named_modules())
        for name in layers:
            _module(modules, name, "layer")
        self.layers = [PENULTIMATE, *dict.fromkeys(n for n in layers if n != PENULTIMATE)]
        self.num_classes = int(num_classes or self.head.out_features)
        self.loss_fn = loss_fn if loss_fn is not None else _cross_entropy
        if not splits:
            raise TrackerError("splits is empty; pass e.g. splits={'train': (x, y)}")
        self.splits = dict(splits)
        self.information = information
        self.information_splits = [s for s in information_splits if s in self.splits]
        self.information_layers = list(self.layers if information_layers is None
                                       else information_layers)
        missing = [n for n in self.information_layers if n not in self.layers]
        if missing:
            raise TrackerError(f"information_layers {missing[0]!r} is not measured; add it to "
                               f"layers (measured: {self.layers[1:] or 'only the head input'})")
        names = information if isinstance(information, Mapping) else list(information)
        unknown = [n for n in names if n not in ESTIMATORS]
        if unknown:
            raise TrackerError(f"information: unknown estimator {unknown[0]!r}; valid choices: "
                               f"{', '.join(sorted(ESTIMATORS))}")
        self.information_n, self.seed = information_n, seed
        self.batch_size, self.keep_rows = batch_size, keep_rows
        self.probes: dict[tuple[str, str], InfoProbe] = {}
        self._store: dict[str, torch.Tensor] = {}  # filled by the hooks during one forward
        self.run = self._open_run(run_dir)
        self.records: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ run directory
    def _open_run(self, run_dir: str | Path | RunDir | None) -> RunDir | None:
        if run_dir is None or isinstance(run_dir, RunDir):
            return run_dir
        run = RunDir(run_dir)
        if run.config_path.exists():
            raise TrackerError(f"run directory {str(run.path)!r} already holds a run; "
                               "choose a new run_dir")
        run.path.mkdir(parents=True, exist_ok=True)
        info = {"config": None, "environment": environment(),
                "tracker": {"model": type(self.model).__name__, "head": self.head_name,
                            "layers": self.layers[1:], "splits": list(self.splits),
                            "num_classes": self.num_classes}}
        atomic_write_text(run.config_path, json.dumps(info, indent=2) + "\n")
        run.write_summary({"status": "running", "step": None})
        return run

    # ------------------------------------------------------------------ batches
    def _batches(self, name: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        spec = self.splits[name]
        if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], torch.Tensor):
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

    def _to_model(self, x: torch.Tensor, y: torch.Tensor,
                  name: str) -> tuple[torch.Tensor, torch.Tensor]:
        p = next(self.model.parameters())
        x = x.to(p.device, p.dtype) if x.is_floating_point() else x.to(p.device)
        y = torch.as_tensor(y).to(p.device).long()
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
            raise TrackerError(f"split {name!r}: labels must be in [0, {self.num_classes}), "
                               f"found {int(y.min())}..{int(y.max())}")
        return x, y

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

    def _measure_split(self, name: str) -> dict[str, float]:
        build = self.information and name in self.information_splits and not any(
            key[0] == name for key in self.probes)
        acc = SplitAccumulator(self.num_classes, self.loss_fn, self.layers,
                               keep_rows=self.keep_rows, keep_inputs=bool(build))
        store = self._store
        for x, y in self._batches(name):
            x, y = self._to_model(x, y, name)
            store.clear()
            self.model(x)
            if "__logits__" not in store:
                raise TrackerError(f"the head {self.head_name!r} was not called in forward")
            acc.update(store["__logits__"], store, y, x)
        if acc.n == 0:
            raise TrackerError(f"split {name!r} yielded no batches; a generator is used up "
                               "after one pass: pass a zero-argument callable returning a "
                               "fresh iterable (e.g. lambda: iter(loader))")
        if build:
            xs, ys = acc.inputs()
            for layer in self.information_layers:
                self.probes[(name, layer)] = InfoProbe(
                    xs, ys, self.num_classes, self.information, n=self.information_n,
                    seed=self.seed)
        probes: dict[str, Probe] = {layer: probe for (split, layer), probe in self.probes.items()
                                    if split == name}
        return flatten_record(name, acc.compute(self.head, probes))

    def measure(self) -> dict[str, float]:
        """One record (without ``step``): every split, every layer, parameter norms."""
        flags = {m: m.training for m in self.model.modules()}
        self.model.eval()
        handles = self._hooks()
        try:
            record: dict[str, float] = {}
            with torch.no_grad():
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
        """Measure at ``step``; returns the record and appends it to ``run_dir`` if given."""
        record: dict[str, Any] = {"step": int(step), **self.measure()}
        self.records.append(record)
        if self.run is not None:
            self.run.append(record)
            self._write_summary("running")
        return record

    def _write_summary(self, status: str) -> None:
        from latephase.config import TimescaleConfig
        from latephase.timescales import compute_timescales

        assert self.run is not None
        scales = (compute_timescales(self.records, TimescaleConfig())
                  if "train" in self.splits and "test" in self.splits else {})
        self.run.write_summary({"status": status, "step": self.records[-1]["step"],
                                "timescales": scales, "final": self.records[-1],
                                "updated": time.strftime("%Y-%m-%dT%H:%M:%S")})

    def close(self, status: str = "finished") -> None:
        """Mark the run directory finished (or ``status``) and close its metrics file."""
        if self.run is not None:
            if self.records:
                self._write_summary(status)
            else:
                self.run.write_summary({"status": status, "step": None})
            self.run.close()

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type: Any, *exc: object) -> None:
        self.close("finished" if exc_type is None else "failed")
