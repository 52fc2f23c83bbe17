"""The training loop: minibatch steps between evaluation points, checkpoints, resume.

One evaluation point = one forward pass per split (``latephase.measures.evaluate``) -> one
record appended to metrics.jsonl.  Records hold no wall-clock values, so a resumed run writes
exactly the same metrics.jsonl as an uninterrupted one (CPU, same seed).
"""

from __future__ import annotations

import dataclasses
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits
from torch import nn

from latephase.config import Config, OptimConfig
from latephase.data import Dataset, build_dataset
from latephase.measures import PENULTIMATE
from latephase.measures.probe import estimator_params
from latephase.models import build_model
from latephase.runs import RunDir, atomic_torch_save
from latephase.timescales import compute_timescales
from latephase.tracker import Tracker
from latephase.train.grad import GradFn, make_grad_fn
from latephase.train.optim import LeanAdamW

# ----------------------------------------------------------------------------- registries
# (defined in losses.py, optim.py and schedule.py; re-exported here)

from latephase.train.losses import LOSSES, SSE, CrossEntropy  # noqa: E402, F401
from latephase.train.optim import OPTIMIZERS, _adamw, _sgd  # noqa: E402, F401
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


def run_steps(grad_fn: GradFn, opt: torch.optim.Optimizer, sampler: EpochSampler,
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


def _progress(total: int, initial: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="step", disable=not enabled,
                dynamic_ncols=True, file=sys.stderr, smoothing=0.05)


def _postfix(rec: dict[str, Any], rnc1_key: str) -> str:
    return (f"train {rec['train/acc']:.3f} | test {rec['test/acc']:.3f} | "
            f"RNC1 {rec.get(rnc1_key, math.nan):.3g}")


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


class Member:
    """One run being trained: model, optimizer, sampler, tracker, run directory and the
    bookkeeping of evaluations, checkpoints and the summary.  ``train`` drives one member;
    the ensemble executor (:mod:`latephase.train.ensemble`) drives several in lockstep."""

    def __init__(self, cfg: Config, run: RunDir, data: Dataset, *, resume: bool = False) -> None:
        self.cfg, self.run, self.data = cfg, run, data
        K = data.num_classes
        device = data.x_train.device
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg.model, data.input_shape, K, data.meta).to(device)
        self.opt = OPTIMIZERS[cfg.optim.name](self.model.parameters(), cfg.optim)
        self.loss_fn = LOSSES[cfg.train.loss](K)
        self.sampler = EpochSampler(len(data.y_train), cfg.train.batch_size, cfg.seed + 1_000_003,
                                    device=device)
        self.schedule = eval_steps(cfg.train.steps, cfg.train.eval_schedule,
                                   cfg.train.eval_points)
        self.rnc1_key = f"train/rnc1_{cfg.measures.rnc1_scale}"
        m = cfg.measures
        splits = {"train": (data.x_train, data.y_train), "test": (data.x_test, data.y_test)}
        self.tracker = Tracker(self.model, splits, head="head", num_classes=K,
                               loss_fn=self.loss_fn, information=estimator_params(m),
                               information_splits=m.information_splits,
                               information_layers=[PENULTIMATE], information_n=m.information_n,
                               seed=m.information_seed, batch_size=cfg.train.eval_batch_size)
        self.step = self.done = 0
        self.wall_before = 0.0
        if resume and run.checkpoint_path.exists():
            ck = torch.load(run.checkpoint_path, weights_only=False, map_location=device)
            self.model.load_state_dict(ck["model"])
            self.opt.load_state_dict(ck["optim"])
            self.sampler.load_state_dict(ck["sampler"])
            torch.set_rng_state(ck["torch_rng"].cpu())
            self.step, self.done = int(ck["step"]), int(ck["evals_done"])
            self.wall_before = float(ck["wall_time"])
        if resume:
            run.truncate_after(self.schedule[self.done - 1] if self.done else -1)
        self.t0 = self.last_ckpt = time.perf_counter()
        self.times = {"train": 0.0, "eval": 0.0}
        self.summary: dict[str, Any] = {"status": "running", "step": self.step}
        self.last: dict[str, Any] = {}
        run.write_summary({**run.summary(), "status": "running", "step": self.step})

    @property
    def remaining(self) -> list[int]:
        """Evaluation steps still to reach."""
        return self.schedule[self.done:]

    def evaluate(self, checkpoint: bool | None = None) -> dict[str, Any]:
        """Measure at the current step, append the record; checkpoint when due (after
        ``checkpoint_every_s`` and at the last step), or when ``checkpoint`` says so (an
        ensemble checkpoints all its members at the same evaluation point)."""
        t = time.perf_counter()
        self.last = record = {"step": self.step, **self.tracker.measure()}
        self.times["eval"] += time.perf_counter() - t
        self.run.append(record)
        self.done += 1
        now = time.perf_counter()
        if checkpoint is None:
            checkpoint = (now - self.last_ckpt >= self.cfg.train.checkpoint_every_s
                          or self.step == self.schedule[-1])
        if checkpoint:
            self.checkpoint()
            self.last_ckpt = now
        return record

    @property
    def diverged(self) -> bool:
        return bool(self.last) and not math.isfinite(self.last["train/loss"])

    def checkpoint(self) -> None:
        self.run.sync()
        atomic_torch_save({
            # clone: a member of an ensemble holds views into the stacked parameters
            "model": {k: v.clone() for k, v in self.model.state_dict().items()},
            "optim": self.opt.state_dict(), "sampler": self.sampler.state_dict(),
            "torch_rng": torch.get_rng_state(), "step": self.step, "evals_done": self.done,
            "wall_time": self.wall_before + time.perf_counter() - self.t0,
        }, self.run.checkpoint_path)

    def finish(self, status: str, **extra: Any) -> dict[str, Any]:
        records = self.run.records()
        scales = compute_timescales(records, self.cfg.timescales, self.rnc1_key)
        self.summary.update(
            status=status, step=self.step, timescales=scales,
            final=records[-1] if records else {},
            wall_time_s=self.wall_before + time.perf_counter() - self.t0,
            session_train_s=self.times["train"], session_eval_s=self.times["eval"],
            evaluations=len(records),
            information_params={f"{s}/{layer}".rstrip("/"): p.params
                                for (s, layer), p in self.tracker.probes.items()},
            **extra)
        self.run.write_summary(self.summary)
        return self.summary

    def finish_diverged(self) -> dict[str, Any]:
        self.checkpoint()
        return self.finish("diverged", error=f"train loss is {self.last['train/loss']} at "
                                             f"step {self.step}")

    def interrupted(self) -> None:
        self.checkpoint()
        self.finish("interrupted", error=f"interrupted at step {self.step}; continue with "
                                         "--resume")


def train(cfg: Config, run: RunDir, *, resume: bool = False, progress: bool = True,
          data: Dataset | None = None, stop_after: int | None = None) -> dict[str, Any]:
    """Train ``cfg`` into ``run`` (continuing from its checkpoint when ``resume``).

    Returns the summary written to summary.json.  ``stop_after`` (tests) interrupts the run
    right after that many optimizer steps, saving a checkpoint as a Ctrl-C would.
    """
    torch.set_num_threads(cfg.train.threads)
    threadpool_limits(cfg.train.threads)  # NumPy/SciPy BLAS (estimators): same thread budget
    device = resolve_device(cfg.device)
    data = move_dataset(build_dataset(cfg.data) if data is None else data, device)
    m = Member(cfg, run, data, resume=resume)
    grad_fn = make_grad_fn(m.model, m.loss_fn, fast=cfg.train.fast_mlp)
    bar = _progress(cfg.train.steps, m.step, progress)
    xs, ys = data.x_train, data.y_train
    m.model.train()
    with StopFlag() as stop:
        try:
            for target in m.remaining:
                t_train = time.perf_counter()
                limit = target if stop_after is None else min(target, stop_after)
                m.step += run_steps(grad_fn, m.opt, m.sampler, xs, ys, limit - m.step,
                                    lambda: stop.requested)
                if m.step < target:
                    raise KeyboardInterrupt
                m.times["train"] += time.perf_counter() - t_train
                record = m.evaluate()
                bar.update(m.step - bar.n)
                bar.set_postfix_str(_postfix(record, m.rnc1_key), refresh=False)
                if m.diverged:
                    return m.finish_diverged()
        except KeyboardInterrupt:
            m.interrupted()
            raise
        except Exception as exc:
            m.finish("failed", error=f"{type(exc).__name__}: {exc}")
            raise
        finally:
            bar.close()
            run.close()
        return m.finish("finished")
