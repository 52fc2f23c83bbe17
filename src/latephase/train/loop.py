"""The training loop: minibatch steps between evaluation points, checkpoints, resume.

One evaluation point = one forward pass per split (``latephase.measures.evaluate``) -> one
record appended to metrics.jsonl.  Records hold no wall-clock values, so a resumed run writes
exactly the same metrics.jsonl as an uninterrupted one (CPU, same seed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from latephase.config import Config
from latephase.data import Dataset, build_dataset
from latephase.errors import RunDirError
from latephase.keys import forecast_key, record_key
from latephase.measures import PENULTIMATE
from latephase.measures.probe import estimator_params
from latephase.models import build_model
from latephase.runs import RunDir, RunRecorder, Status
from latephase.timescales import compute_timescales
from latephase.tracker import Tracker, forecast_fields, forecast_now, forecast_summary
from latephase.train.grad import GradFn, make_grad_fn

# ----------------------------------------------------------------------------- registries
# (defined in losses.py, optim.py and schedule.py; re-exported here)
from latephase.train.losses import LOSSES, SSE, CrossEntropy  # noqa: E402, F401
from latephase.train.optim import OPTIMIZERS, LeanAdamW, Optimizer, _adamw, _sgd  # noqa: E402, F401
from latephase.train.runtime import flushes_denormals, in_training_runtime
from latephase.train.schedule import (  # noqa: E402, F401
    SCHEDULES,
    _log_schedule,
    _paper_schedule,
    eval_steps,
)

# ----------------------------------------------------------------------------- sampler


class EpochSampler:
    """Minibatches drawn without replacement within each epoch (a fresh permutation per
    epoch; an incomplete last batch is dropped).  Its state is saved in checkpoints."""

    def __init__(self, n: int, batch_size: int, seed: int,
                 device: torch.device | str = "cpu") -> None:
        self.n, self.batch_size = n, min(batch_size, n)
        self.gen = torch.Generator().manual_seed(seed)  # on the host: same order on any device
        self.device = torch.device(device)
        self.perm = torch.empty(0, dtype=torch.long, device=self.device)
        self.pos = 0

    def next(self) -> torch.Tensor:
        if self.pos + self.batch_size > len(self.perm):  # one host->device copy per epoch
            self.perm = torch.randperm(self.n, generator=self.gen).to(self.device)
            self.pos = 0
        idx = self.perm[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return idx

    def state_dict(self) -> dict[str, Any]:
        return {"gen": self.gen.get_state(), "perm": self.perm.cpu().clone(), "pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gen.set_state(state["gen"].cpu())
        self.perm, self.pos = state["perm"].to(self.device).clone(), int(state["pos"])


# ----------------------------------------------------------------------------- the loop


class StopFlag:
    """Turns SIGINT/SIGTERM into a request checked between optimizer steps, so a checkpoint
    is always taken at a step boundary.  A second signal interrupts immediately."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def run_steps(grad_fn: GradFn, opt: Optimizer, sampler: EpochSampler,
              xs: torch.Tensor, ys: torch.Tensor, n: int,
              should_stop: Callable[[], bool] = lambda: False) -> int:
    """Up to ``n`` optimizer steps on minibatches of (xs, ys); ``grad_fn`` (see
    :mod:`latephase.train.grad`) writes the gradient of the batch-mean loss.  Stops early
    (between steps) when ``should_stop()``; returns the number of steps taken."""
    for i in range(n):
        if should_stop():
            return i
        idx = sampler.next()  # index_select: ~6x faster than xs[idx] for row gathers on CPU
        grad_fn(xs.index_select(0, idx), ys.index_select(0, idx))
        opt.step()
    return max(n, 0)


def _progress(total: int, initial: int, enabled: bool, per: int = 1,
              postfix: bool = False) -> Any:
    """tqdm on a terminal; elsewhere a line every 30 s (latephase.train.progress)."""
    from latephase.train.progress import progress_bar

    return progress_bar(total, initial, enabled, per=per, postfix=postfix, file=sys.stderr)


def _postfix(rec: dict[str, Any], rnc1_key: str) -> str:
    train, test = rec.get(record_key("train", "acc"), math.nan), rec.get(
        record_key("test", "acc"), math.nan)
    text = f"train {train:.3f} | test {test:.3f} | RNC1 {rec.get(rnc1_key, math.nan):.3g}"
    return text + forecast_eta(rec)


def _steps_text(s: float) -> str:
    return f"{s / 1000:.1f}k" if s >= 1000 else f"{s:.0f}"


def forecast_eta(rec: dict[str, Any]) -> str:
    """`` | grok ~35.2k [28.0k-41.3k]`` from a record's forecast (empty without one)."""
    t = rec.get(forecast_key("t_grok"), math.nan)
    if not isinstance(t, float) or not math.isfinite(t):
        return ""
    lo, hi = (rec.get(forecast_key(q), math.nan) for q in ("t_grok_lo", "t_grok_hi"))
    if t <= rec.get("step", math.inf):
        return f" | grokked {_steps_text(t)}"
    band = (f" [{_steps_text(lo)}-{_steps_text(hi)}]"
            if math.isfinite(lo) and math.isfinite(hi) else "")
    return f" | grok ~{_steps_text(t)}{band}"


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if available, else mps, else cpu; an unavailable device is an error."""
    from latephase.errors import ConfigError

    available = {"cpu": True, "cuda": torch.cuda.is_available(),
                 "mps": bool(getattr(torch.backends, "mps", None)
                             and torch.backends.mps.is_available())}
    if name == "auto":
        return torch.device(next(d for d in ("cuda", "mps", "cpu") if available[d]))
    if not available.get(name, False):
        here = ", ".join(["auto", *(d for d, ok in available.items() if ok)])
        raise ConfigError(f"device={name!r} is not available on this machine; valid here: {here}")
    return torch.device(name)


def move_dataset(data: Dataset, device: torch.device) -> Dataset:
    """The dataset with its tensors on ``device`` (once, before training)."""
    if data.x_train.device == device:
        return data
    return dataclasses.replace(data, x_train=data.x_train.to(device),
                               y_train=data.y_train.to(device), x_test=data.x_test.to(device),
                               y_test=data.y_test.to(device))


def forecast_options(cfg: Config) -> Any:
    """The run's :class:`latephase.forecast.ForecastOptions` (None: ``forecast.enabled`` off):
    the ``forecast.*`` config keys, validated."""
    if not cfg.forecast.enabled:
        return None
    from latephase.forecast import from_config

    return from_config(cfg.forecast)


def nonfinite_reason(model: nn.Module) -> str | None:
    """Name of the first parameter holding NaN or inf (None when all are finite)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not bool(torch.isfinite(p).all()):
                return f"parameter {name!r} is not finite"
    return None


class Member:
    """One run being trained: model, optimizer, sampler, tracker (measuring only) and its
    :class:`~latephase.runs.RunRecorder`, the only writer of its run directory.  ``train``
    drives one member, the ensemble executor (:mod:`latephase.train.ensemble`) several in
    lockstep, both through :func:`drive`.

    On resume the recorder first verifies that the checkpoint is intact and that the
    records it covers are present and unchanged; only then is the state loaded and are the
    records beyond it dropped.  The schedule is the covered records' steps followed by the
    config's evaluation steps after them (so ``train.steps`` can be raised to extend a run).
    """

    def __init__(self, cfg: Config, run: RunDir, data: Dataset, *, resume: bool = False) -> None:
        self.cfg, self.data = cfg, data
        self.run = RunRecorder.take(run)
        K = data.num_classes
        device = data.x_train.device
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg.model, data.input_shape, K, data.meta).to(device)
        self.opt = OPTIMIZERS[cfg.optim.name](self.model.parameters(), cfg.optim)
        self.loss_fn = LOSSES[cfg.train.loss](K)
        self.sampler = EpochSampler(len(data.y_train), cfg.train.batch_size, cfg.seed + 1_000_003,
                                    device=device)
        self.rnc1_key = record_key("train", f"rnc1_{cfg.measures.rnc1_scale}")
        m = cfg.measures
        splits = {"train": (data.x_train, data.y_train), "test": (data.x_test, data.y_test)}
        self.tracker = Tracker(self.model, splits, head="head", num_classes=K,
                               loss_fn=self.loss_fn, information=estimator_params(m),
                               information_splits=m.information_splits,
                               information_layers=[PENULTIMATE], information_n=m.information_n,
                               seed=m.information_seed, batch_size=cfg.train.eval_batch_size)
        self.step = self.done = 0
        self.wall_before = 0.0
        self.history: list[dict[str, Any]] = []  # the records so far (the forecast reads them)
        self.forecast = forecast_options(cfg)
        self.forecasts: list[tuple[int, Any]] = []  # (step, Forecast) of this session
        covered: list[int] = []
        if resume:
            ck = self.run.verify_resume(map_location=device)  # raises before touching files
            if ck is not None:
                self.model.load_state_dict(ck["model"])
                self.opt.load_state_dict(ck["optim"])
                self.sampler.load_state_dict(ck["sampler"])
                torch.set_rng_state(ck["torch_rng"].cpu())
                self.step, self.done = int(ck["step"]), int(ck["evals_done"])
                self.wall_before = float(ck["wall_time"])
            self.run.commit_resume()
            self.history = self.run.records()
            covered = [int(r["step"]) for r in self.history]
        planned = eval_steps(cfg.train.steps, cfg.train.eval_schedule, cfg.train.eval_points)
        self.schedule = covered + [s for s in planned if s > (covered[-1] if covered else -1)]
        self.t0 = time.perf_counter()
        self.times = {"train": 0.0, "eval": 0.0}
        self.last: dict[str, Any] = {}
        self.run.write_summary({**self._safe_summary(), "status": Status.RUNNING,
                                "step": self.step})

    def _safe_summary(self) -> dict[str, Any]:
        try:
            return self.run.summary()
        except RunDirError:  # an unreadable summary is rewritten, not trusted
            return {}

    @property
    def remaining(self) -> list[int]:
        """Evaluation steps still to reach."""
        return self.schedule[self.done:]

    def evaluate(self, checkpoint: bool = False) -> dict[str, Any]:
        """Measure at the current step and append the record (then checkpoint if asked)."""
        t = time.perf_counter()
        self.last = record = {"step": self.step, **self.tracker.measure()}
        self.history.append(record)
        if self.forecast is not None:
            fc = self._forecast(len(self.history))
            record.update(forecast_fields(fc))
            self.forecasts.append((self.step, fc))
        self.times["eval"] += time.perf_counter() - t
        self.run.append(record)
        self.done += 1
        if checkpoint:
            self.checkpoint()
        return record

    def _forecast(self, n: int) -> Any:
        """The forecast from the first ``n`` records."""
        return forecast_now(self.history[:n], self.forecast, train_split="train",
                            heldout_split="test", thresholds=self.cfg.timescales)

    def forecast_history(self) -> list[tuple[int, Any]]:
        """(step, Forecast) at every record: this session's, and recomputed (the forecast is
        a pure function of the records before it) for records from before a resume."""
        earlier = len(self.history) - len(self.forecasts)
        return [*((int(self.history[i]["step"]), self._forecast(i + 1))
                  for i in range(earlier)), *self.forecasts]

    @property
    def diverged(self) -> str | None:
        """Why the last record says the run diverged (non-finite train loss), else None."""
        loss = self.last.get("train/loss", 0.0) if self.last else 0.0
        return None if math.isfinite(loss) else f"train loss is {loss}"

    def checkpoint(self) -> None:
        self.run.checkpoint({
            # clone: a member of an ensemble holds views into the stacked parameters
            "model": {k: v.clone() for k, v in self.model.state_dict().items()},
            "optim": self.opt.state_dict(), "sampler": self.sampler.state_dict(),
            "torch_rng": torch.get_rng_state(), "step": self.step, "evals_done": self.done,
            "wall_time": self.wall_before + time.perf_counter() - self.t0,
        })

    def finish(self, status: Status | str, **extra: Any) -> dict[str, Any]:
        def scales(records: list[dict[str, Any]]) -> dict[str, Any]:
            return compute_timescales(records, self.cfg.timescales, self.rnc1_key)

        return self.run.finish(
            Status(status), expected_steps=self.schedule, timescales=scales,
            wall_time_s=self.wall_before + time.perf_counter() - self.t0,
            session_train_s=self.times["train"], session_eval_s=self.times["eval"],
            # float sums depend on the thread count and "auto" depends on the machine's load:
            # the count this session trained with is what reproduces its records exactly
            runtime={"threads": torch.get_num_threads(),
                     "flush_denormal": flushes_denormals()},
            information_params={f"{s}/{layer}".rstrip("/"): p.params
                                for (s, layer), p in self.tracker.probes.items()},
            **({"forecast": forecast_summary(self.forecast_history(), self.forecast)}
               if self.forecast is not None and self.history else {}),
            **extra)

    def finish_diverged(self, reason: str) -> dict[str, Any]:
        error = f"{reason} at step {self.step}"
        print(f"latephase: {self.run.path.name}: diverged: {error}", file=sys.stderr)
        return self.finish(Status.DIVERGED, error=error)

    def interrupted(self) -> None:
        self.checkpoint()
        self.run.write_summary({**self._safe_summary(), "status": Status.INTERRUPTED,
                                "step": self.step, "error": f"interrupted at step {self.step}; "
                                "continue with --resume"})


Advance = Callable[[int, Callable[[], bool], Sequence[bool]], int]


def drive(members: Sequence[Member], advance: Advance, *, progress: bool = True,
          stop_after: int | None = None, isolate: bool = False,
          postfix: Callable[[Sequence[Member], Sequence[bool]], str] | None = None
          ) -> list[dict[str, Any]]:
    """The run life cycle shared by a solo run and an ensemble; the members' summaries.

    ``advance(target, pause, active)`` trains every active member from their common step up to
    ``target`` and returns the step reached (earlier when ``pause()`` turns true: a stop
    request, or a checkpoint due).  At each evaluation point a member with a non-finite
    parameter is recorded ``diverged`` before any measure runs; then each member measures
    and its recorder appends the record; a non-finite train loss is ``diverged`` too.
    Checkpoints are taken every ``train.checkpoint_every_s`` seconds (between evaluation
    points too), at the last step, and on interruption.  With ``isolate`` (an ensemble) a
    member whose evaluation raises fails alone; else the exception ends the run as failed.
    """
    cfg0 = members[0].cfg
    every = cfg0.train.checkpoint_every_s
    last_step = members[0].schedule[-1]
    M = len(members)
    active = [True] * M
    results: list[dict[str, Any] | None] = [None] * M
    step = members[0].step
    bar = _progress(cfg0.train.steps * M, step * M, progress, per=M,
                    postfix=postfix is not None)
    clock = {"last": time.perf_counter()}

    def checkpoint_due() -> bool:  # every <= 0: at every evaluation point only
        return every > 0 and time.perf_counter() - clock["last"] >= every

    def checkpoint_all() -> None:
        for m, on in zip(members, active, strict=True):
            if on:
                m.checkpoint()
        clock["last"] = time.perf_counter()

    for m in members:
        m.model.train()
    with StopFlag() as stop:
        try:
            for target in members[0].remaining:
                t_train = time.perf_counter()
                limit = target if stop_after is None else min(target, stop_after)
                while step < limit:
                    step = advance(limit, lambda: stop.requested or checkpoint_due(), active)
                    for m in members:
                        m.step = step
                    if stop.requested:
                        break
                    if step < limit and checkpoint_due():
                        checkpoint_all()
                if step < target:
                    raise KeyboardInterrupt
                spent = (time.perf_counter() - t_train) / max(1, sum(active))
                due = every <= 0 or checkpoint_due() or step == last_step
                for i, m in enumerate(members):
                    if not active[i]:
                        continue
                    m.times["train"] += spent
                    reason = nonfinite_reason(m.model)
                    if reason is None:
                        try:
                            m.evaluate()
                        except Exception as exc:
                            if not isolate:
                                raise
                            results[i] = m.finish(Status.FAILED,
                                                  error=f"{type(exc).__name__}: {exc}")
                            active[i] = False
                            continue
                        reason = m.diverged
                    if reason is not None:
                        m.checkpoint()
                        results[i] = m.finish_diverged(reason)
                        active[i] = False
                if due:
                    checkpoint_all()
                bar.update(step * M - bar.n)
                if postfix is not None and any(active):
                    bar.set_postfix_str(postfix(members, active), refresh=False)
                if not any(active):
                    break
        except KeyboardInterrupt:
            for i, m in enumerate(members):
                if active[i]:
                    m.interrupted()
            raise
        except Exception as exc:
            for i, m in enumerate(members):
                if active[i]:
                    with contextlib.suppress(Exception):  # e.g. the disk is still full
                        m.finish(Status.FAILED, error=f"{type(exc).__name__}: {exc}")
            raise
        finally:
            bar.close()
            for m in members:
                m.run.close()
    for i, m in enumerate(members):
        if results[i] is None:
            results[i] = m.finish(Status.FINISHED, **({"ensemble": M} if M > 1 else {}))
            m.run.close()
    return [r for r in results if r is not None]


@in_training_runtime
def train(cfg: Config, run: RunDir, *, resume: bool = False, progress: bool = True,
          data: Dataset | None = None, stop_after: int | None = None) -> dict[str, Any]:
    """Train ``cfg`` into ``run`` (continuing from its checkpoint when ``resume``).

    Returns the summary written to summary.json.  ``stop_after`` (tests) interrupts the run
    right after that many optimizer steps, saving a checkpoint as a Ctrl-C would.
    """
    device = resolve_device(cfg.device)
    data = move_dataset(build_dataset(cfg.data) if data is None else data, device)
    recorder = RunRecorder.take(run)
    try:
        m = Member(cfg, recorder, data, resume=resume)
    except BaseException:
        recorder.close()
        raise
    grad_fn = make_grad_fn(m.model, m.loss_fn, fast=cfg.train.fast_mlp)
    xs, ys = data.x_train, data.y_train

    def advance(target: int, pause: Callable[[], bool], active: Sequence[bool]) -> int:
        return m.step + run_steps(grad_fn, m.opt, m.sampler, xs, ys, target - m.step, pause)

    def postfix(members: Sequence[Member], active: Sequence[bool]) -> str:
        return _postfix(members[0].last, m.rnc1_key)

    return drive([m], advance, progress=progress, stop_after=stop_after, postfix=postfix)[0]
