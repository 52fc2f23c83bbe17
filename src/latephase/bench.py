"""``latephase bench``: throughput of the paper's setting, as ratios measured in one process.

Absolute timings on shared machines are noisy, so every target is a ratio of two timings
taken in the same process on one thread:

- training step (paper MLP 784-200-200-200-10, batch 100, AdamW, summed squared error, the
  hand-derived backward of :mod:`latephase.train.grad`; the autograd step is printed too)
  against its FLOP floor: the same step's matrix multiplies done with plain ``torch.mm``
  (forward X W^T, weight gradients dY^T X, input gradients dY W except for the first layer);
  target: step time <= 1.5 x floor;
- one evaluation point (train 1000 + held-out 4000, every neural-collapse measure and the
  Theorem 3.2 bound) in training steps; target: < 40 steps;
- the default information estimators (nHSIC and k-NN/KL, with its jackknife standard error)
  on n = 2000 held-out samples of 200-dimensional features, called from scratch; target:
  < 1 s; and the per-evaluation cost of the same estimators as run during training (fixed
  subsample of ``measures.information_n``, X side cached), in training steps;
- the main run (``paper-mnist``: 100k steps, its evaluation schedule and information
  measures) at its own ``train.threads`` and ``train.flush_denormal``: the training step late
  in the run against a floor of its matrix multiplies plus AdamW's memory traffic
  (:data:`ADAMW_FLOATS_PER_PARAM` floats per parameter at the bandwidth of a large tensor
  copy measured in the same process; target <= 1.3), one evaluation point in steps (target
  <= 40; at >= 2 threads nHSIC runs on a second thread beside the k-NN estimators, and the
  same point with every estimator in sequence is timed in alternation for the ratio), and the
  run's projected time: steps x late step + first evaluation + the other
  evaluations x one evaluation.

The late step is measured on a state built to look like the run after the fit
(:func:`late_phase_state`): there, the AdamW moments of parameters whose gradient is exactly
zero (dead ReLU units, their incoming and outgoing weights) have decayed until IEEE rounding
stops them, at a few multiples of 2**-149 (``exp_avg``: 0.9 * 4 ulps rounds back to 4), and
every later step computes on those subnormals.  The bench kills enough hidden units to make
the measured share of such ``exp_avg`` entries :data:`LATE_SUBNORMAL`, puts the moments at
their stall values, and times steps of it with and without flushing (the state is
stationary: it is the same after every step).
"""

from __future__ import annotations

import copy
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from latephase import tracker as tracker_module
from latephase.config import Config, make_config
from latephase.data import build_dataset
from latephase.measures import PENULTIMATE, SplitAccumulator
from latephase.measures import information as info
from latephase.measures.probe import InfoProbe, estimator_params
from latephase.models import build_model, head_of
from latephase.runs import RunDir
from latephase.tracker import Tracker
from latephase.train.grad import GradFn, autograd_fn, make_grad_fn
from latephase.train.loop import LOSSES, OPTIMIZERS, EpochSampler, Member, run_steps
from latephase.train.optim import Optimizer
from latephase.train.runtime import set_flush_denormal, training_runtime
from latephase.train.schedule import eval_steps

#: share of AdamW moment entries that are subnormal late in the main run (issue 12: 70-97 %
#: of exp_avg and up to 24 % of exp_avg_sq in paper-mnist, wd 0.01, after step 20k)
LATE_SUBNORMAL = {"exp_avg": 0.9, "exp_avg_sq": 0.24}
#: floats one fused AdamW step moves per parameter: reads p, grad, exp_avg, exp_avg_sq and
#: writes p, exp_avg, exp_avg_sq
ADAMW_FLOATS_PER_PARAM = 7
#: the run whose time ``latephase bench`` projects
MAIN_PRESET = "paper-mnist"


def best_time(fn: Callable[[], object], repeats: int, inner: int) -> float:
    """Minimum over ``repeats`` of the mean time of ``inner`` calls (seconds per call)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        best = min(best, (time.perf_counter() - t) / inner)
    return best


def paired_times(a: Callable[[], object], b: Callable[[], object], repeats: int,
                 inner: int, modes: tuple[Callable[[], object], Callable[[], object]] | None = None
                 ) -> tuple[float, float]:
    """Best-of-``repeats`` time per call of ``a`` and of ``b``, measured in alternating bursts
    of ``inner`` calls so both see the same machine load (their ratio is what we report).
    ``modes``: called (untimed) before each burst of ``a`` and of ``b`` respectively."""
    enter = modes or (lambda: None, lambda: None)
    enter[0]()
    a()
    enter[1]()
    b()
    best_a = best_b = float("inf")
    for _ in range(repeats):
        for fn, which in ((a, 0), (b, 1)):
            enter[which]()
            t = time.perf_counter()
            for _ in range(inner):
                fn()
            dt = (time.perf_counter() - t) / inner
            if which == 0:
                best_a = min(best_a, dt)
            else:
                best_b = min(best_b, dt)
    return best_a, best_b


def matmul_floor(widths: list[int], batch: int) -> Callable[[], None]:
    """The matrix multiplies of one training step of an MLP with layer sizes ``widths``."""
    g = torch.Generator().manual_seed(0)
    layers = []
    for i, (din, dout) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layers.append((torch.randn(batch, din, generator=g), torch.randn(dout, din, generator=g),
                       torch.randn(batch, dout, generator=g), i > 0))

    def step() -> None:
        for x, w, dy, need_dx in layers:
            torch.mm(x, w.T)  # forward
            torch.mm(dy.T, x)  # weight gradient
            if need_dx:
                torch.mm(dy, w)  # input gradient

    return step


def tracker_overhead(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Any,
                     repeats: int) -> tuple[float, float]:
    """(bare, tracked) seconds to measure one split: a bare forward pass plus the measure
    computation on its outputs, against ``Tracker.measure`` (hooks, mode switches, batching)
    on the same split, every measure but the information estimators."""
    head = head_of(model)
    forward: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    forward = model.forward_with_features  # type: ignore[assignment]

    def bare() -> None:
        with torch.no_grad():
            logits, g = forward(x)
            acc = SplitAccumulator(head.out_features, loss_fn, [PENULTIMATE])
            acc.update(logits, {PENULTIMATE: g}, y)
            acc.compute(head)

    tracker = Tracker(model, {"test": (x, y)}, head="head", loss_fn=loss_fn, information=())
    return paired_times(bare, tracker.measure, repeats, 3)


def ensemble_speedup(cfg: Any, data: Any, members: int, steps: int,
                     repeats: int) -> tuple[float, float]:
    """(sequential, ensemble) seconds per member-step: ``members`` runs of ``cfg`` (seeds and
    weight decays differ) trained one after another through the solo path, against the same
    runs as one vectorized ensemble (:func:`latephase.train.ensemble.ensemble_step`)."""
    from latephase.train.ensemble import StackedMLP, ensemble_step

    def build() -> tuple[list[Any], list[Any], list[Any]]:
        models, opts, samplers = [], [], []
        for i in range(members):
            torch.manual_seed(i)
            model = build_model(cfg.model, data.input_shape, data.num_classes, data.meta)
            optim = cfg.optim.__class__(**{**cfg.optim.__dict__,
                                           "weight_decay": 0.1 / 2**i})
            models.append(model)
            opts.append(OPTIMIZERS[optim.name](model.parameters(), optim))
            samplers.append(EpochSampler(len(data.y_train), cfg.train.batch_size, i))
        return models, opts, samplers

    loss_fn = LOSSES[cfg.train.loss](data.num_classes)
    xs, ys = data.x_train.flatten(1), data.y_train
    models, opts, samplers = build()
    grads = [make_grad_fn(m, loss_fn) for m in models]
    e_models, e_opts, e_samplers = build()
    stack = StackedMLP(e_models)
    eye = torch.eye(data.num_classes)
    active = [True] * members
    sse = cfg.train.loss == "sse"

    def sequential() -> None:
        for g, o, s in zip(grads, opts, samplers, strict=True):
            run_steps(g, o, s, xs, ys, steps)

    def together() -> None:
        for _ in range(steps):
            ensemble_step(stack, e_opts, e_samplers, xs, ys, eye, sse, active)

    t_seq, t_ens = paired_times(sequential, together, repeats, 1)
    return t_seq / (members * steps), t_ens / (members * steps)


def copy_bandwidth(floats: int, repeats: int) -> float:
    """Bytes per second of ``dst.copy_(src)`` on float32 tensors of ``floats`` elements; each
    copy reads and writes ``4 * floats`` bytes."""
    src = torch.randn(floats)
    dst = torch.empty_like(src)
    return 2 * src.element_size() * floats / best_time(lambda: dst.copy_(src), repeats, 3)


def stall_ulps(beta: float) -> int:
    """Multiple of 2**-149 at which the float32 recursion ``m <- beta * m`` (an AdamW moment
    whose gradient is exactly zero) stops, under IEEE round-half-even, started at the smallest
    normal float32 (2**23 ulps).  Exact: ``k * beta32`` needs 48 bits, a double holds 53."""
    b = float(torch.tensor(beta, dtype=torch.float32))  # beta as the float32 kernel sees it
    k = 2**23
    while (nxt := round(k * b)) != k:
        k = nxt
    return k


#: a dead unit's pre-activation is pushed this many times the layer's largest |pre-activation|
#: below zero, so the inputs training keeps changing cannot revive it during the bench
DEAD_MARGIN = 10.0


def _dead_units(model: torch.nn.Module, xs: torch.Tensor, share: float) -> None:
    """Make the first ``share`` of every hidden layer's units output 0 on all of ``xs``, and
    keep the units that already do so dead: their bias lowered until the pre-activation is at
    most -DEAD_MARGIN x (max |z| + 1)."""
    h = xs.flatten(1)
    with torch.no_grad():
        for layer in model.hidden:  # type: ignore[union-attr]
            k = int(round(share * layer.out_features))
            z = torch.nn.functional.linear(h, layer.weight, layer.bias)
            dead = (z <= 0).all(0)
            dead[:k] = True
            margin = DEAD_MARGIN * (float(z.abs().amax()) + 1.0)
            layer.bias[dead] -= z[:, dead].amax(0).clamp(min=0) + margin
            h = torch.relu(torch.nn.functional.linear(h, layer.weight, layer.bias))


def _still(p: torch.Tensor) -> torch.Tensor:
    """Mask of the entries of ``p`` whose gradient is exactly zero."""
    assert p.grad is not None, "compute a gradient first"
    return p.grad == 0


def _subnormal_share(opt: Optimizer, key: str) -> float:
    tensors = [st[key] for st in opt.state.values()]
    tiny = torch.finfo(tensors[0].dtype).tiny
    n = sum(int(((t != 0) & (t.abs() < tiny)).sum()) for t in tensors)
    return n / sum(t.numel() for t in tensors)


def late_phase_state(model: torch.nn.Module, opt: Optimizer, loss_fn: Any,
                     xs: torch.Tensor, ys: torch.Tensor, seed: int = 0) -> dict[str, float]:
    """Turn an MLP and its AdamW (after a few steps) into the run's late-phase state, in
    place; call it under IEEE subnormals.  Kills the smallest share of hidden units (steps of
    1/20) that gives :data:`LATE_SUBNORMAL` ``exp_avg`` entries zero gradient, sets those
    moments to their stall value (:func:`stall_ulps` of beta1) and a random subset of them,
    :data:`LATE_SUBNORMAL` ``exp_avg_sq`` of all entries, to beta2's.  Returns the dead share
    and the measured subnormal shares of both moments."""
    params = list(model.parameters())
    total = sum(p.numel() for p in params)
    trial, dead = copy.deepcopy(model), 0.0
    for i in range(1, 20):
        trial = copy.deepcopy(model)
        _dead_units(trial, xs, i / 20)
        make_grad_fn(trial, loss_fn)(xs, ys)
        zero = sum(int(_still(p).sum()) for p in trial.parameters())
        dead = i / 20
        if zero / total >= LATE_SUBNORMAL["exp_avg"]:
            break
    model.load_state_dict(trial.state_dict())
    make_grad_fn(model, loss_fn)(xs, ys)
    group = opt.param_groups[0]
    b1, b2 = group["betas"]
    m_stall, v_stall = stall_ulps(b1) * 2.0**-149, stall_ulps(b2) * 2.0**-149
    zeros = sum(int(_still(p).sum()) for p in params)
    keep = min(1.0, LATE_SUBNORMAL["exp_avg_sq"] * total / max(zeros, 1))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            st, still = opt.state[p], _still(p)
            st["exp_avg"][still] = m_stall
            old = still & (torch.rand(p.shape, generator=gen) < keep)
            st["exp_avg_sq"][old] = v_stall
    return {"dead": dead, "exp_avg": _subnormal_share(opt, "exp_avg"),
            "exp_avg_sq": _subnormal_share(opt, "exp_avg_sq")}


def _clone(member: Member) -> tuple[torch.nn.Module, Optimizer, GradFn]:
    """An independent copy of a member's model and optimizer state, and its gradient."""
    model = copy.deepcopy(member.model)
    opt = OPTIMIZERS[member.cfg.optim.name](model.parameters(), member.cfg.optim)
    opt.load_state_dict(copy.deepcopy(member.opt.state_dict()))
    return model, opt, make_grad_fn(model, member.loss_fn, fast=member.cfg.train.fast_mlp)


@dataclass(frozen=True)
class MainRun:
    """What :func:`measure_main_run` measured (seconds, bytes per second)."""

    cfg: Config
    threads: int
    state: dict[str, float]  # late_phase_state's shares
    t_flushed: float  # late step, subnormals flushed
    t_ieee: float  # late step, IEEE subnormals
    t_one_thread: float  # late step as configured, on one thread
    t_threads: float  # the same on ``threads`` threads
    t_late: float  # late step as configured (paired with the floor)
    t_matmul: float  # the step's matrix multiplies alone
    bandwidth: float
    n_params: int
    t_first_eval: float  # the first evaluation point (builds the estimators' X side)
    t_eval: float  # a later evaluation point
    t_eval_seq: float  # the same with every estimator on the calling thread (paired)
    evals: int

    @property
    def t_adamw(self) -> float:
        """AdamW's memory traffic at the measured bandwidth: 7 x 4 bytes x n_params / B."""
        return ADAMW_FLOATS_PER_PARAM * 4 * self.n_params / self.bandwidth

    @property
    def floor(self) -> float:
        return self.t_matmul + self.t_adamw

    @property
    def projected(self) -> float:
        """steps x late step + first evaluation + (evaluations - 1) x evaluation."""
        return (self.cfg.train.steps * self.t_late + self.t_first_eval
                + (self.evals - 1) * self.t_eval)


def _probe_threads(on: bool) -> Callable[[], None]:
    """Set :data:`latephase.tracker.PROBE_THREADS` (nHSIC beside the k-NN estimators)."""
    def enter() -> None:
        tracker_module.PROBE_THREADS = on
    return enter


def measure_main_run(cfg: Config, quick: bool) -> MainRun:
    """The late step of ``cfg``'s run (an MLP with AdamW) against its floor, its evaluation
    point and the inputs of its projected time, at ``cfg``'s own ``train.threads`` and
    ``train.flush_denormal`` (see the module docstring)."""
    repeats, inner = (4, 20) if quick else (12, 50)
    flush = cfg.train.flush_denormal
    with tempfile.TemporaryDirectory() as tmp, \
            training_runtime(cfg.train.threads, flush) as threads:
        data = build_dataset(cfg.data)
        member = Member(cfg, RunDir.create(Path(tmp) / "run", cfg), data)
        try:
            xs, ys = data.x_train, data.y_train
            grad_fn = make_grad_fn(member.model, member.loss_fn, fast=cfg.train.fast_mlp)
            run_steps(grad_fn, member.opt, member.sampler, xs, ys, 20)  # AdamW state exists
            t = time.perf_counter()
            member.tracker.measure()  # the first one also builds the estimators' X side
            t_first = time.perf_counter() - t
            was = tracker_module.PROBE_THREADS
            try:
                t_eval, t_eval_seq = paired_times(
                    member.tracker.measure, member.tracker.measure, 2 if quick else 4, 1,
                    (_probe_threads(True), _probe_threads(False)))
            finally:
                tracker_module.PROBE_THREADS = was

            set_flush_denormal(False, threads)  # the subnormal state needs IEEE to be written
            state = late_phase_state(member.model, member.opt, member.loss_fn, xs, ys)
            (_, o_on, g_on), (_, o_off, g_off) = _clone(member), _clone(member)
            set_flush_denormal(flush, threads)

            def step_on() -> None:
                run_steps(g_on, o_on, member.sampler, xs, ys, 1)

            def step_off() -> None:
                run_steps(g_off, o_off, member.sampler, xs, ys, 1)

            def mode(on: bool, n: int) -> Callable[[], None]:
                def enter() -> None:
                    torch.set_num_threads(n)
                    set_flush_denormal(on, n)
                return enter

            t_on, t_off = paired_times(step_on, step_off, repeats, inner,
                                       (mode(True, threads), mode(False, threads)))
            late = step_on if flush else step_off
            t_one, t_all = paired_times(late, late, repeats, inner,
                                        (mode(flush, 1), mode(flush, threads)))
            widths = [xs[0].numel(), *cfg.model.widths, data.num_classes]
            t_late, t_mm = paired_times(late, matmul_floor(widths, cfg.train.batch_size),
                                        repeats, inner, (mode(flush, threads),) * 2)
            bandwidth = copy_bandwidth(2**24, repeats)
            n_params = sum(p.numel() for p in member.model.parameters())
        finally:
            member.run.close()
    evals = len(eval_steps(cfg.train.steps, cfg.train.eval_schedule, cfg.train.eval_points))
    return MainRun(cfg=cfg, threads=threads, state=state, t_flushed=t_on, t_ieee=t_off,
                   t_one_thread=t_one, t_threads=t_all, t_late=t_late, t_matmul=t_mm,
                   bandwidth=bandwidth, n_params=n_params, t_first_eval=t_first,
                   t_eval=t_eval, t_eval_seq=t_eval_seq, evals=evals)


def main_run_rows(m: MainRun) -> list[tuple[str, str]]:
    """The printed lines of :func:`measure_main_run`, with their targets."""
    cfg, state = m.cfg, m.state
    names = "+".join(cfg.measures.information) or "none"
    t_evals = m.t_first_eval + (m.evals - 1) * m.t_eval
    return [
        (f"threads (train.threads={cfg.train.threads}), flush_denormal",
         f"{m.threads}, {str(cfg.train.flush_denormal).lower()}"),
        ("memory bandwidth (copy of 2**24 floats)", f"{m.bandwidth / 1e9:.1f} GB/s"),
        ("late-phase state (IEEE): subnormal exp_avg / exp_avg_sq",
         f"{state['exp_avg']:.0%} / {state['exp_avg_sq']:.0%}  "
         f"({state['dead']:.0%} of hidden units dead)"),
        ("late step, subnormals flushed / IEEE",
         f"{m.t_flushed * 1e3:.3f} / {m.t_ieee * 1e3:.3f} ms  "
         f"(IEEE / flushed {m.t_ieee / m.t_flushed:.2f})"),
        (f"late step on 1 thread / on {m.threads}", f"{m.t_one_thread / m.t_threads:.2f}"),
        ("floor: matmuls + AdamW traffic "
         f"({ADAMW_FLOATS_PER_PARAM} x {m.n_params / 1e3:.0f}k floats)",
         f"{m.t_matmul * 1e3:.3f} + {m.t_adamw * 1e3:.3f} = {m.floor * 1e3:.3f} ms"),
        ("late step / floor  (target <= 1.3)", f"{m.t_late / m.floor:.2f}"),
        (f"evaluation point ({names})",
         f"{m.t_eval * 1e3:.1f} ms  (first {m.t_first_eval * 1e3:.0f} ms)"),
        ("evaluation, estimators in sequence / nHSIC on a second thread",
         f"{m.t_eval_seq / m.t_eval:.2f}" if m.threads > 1 else "- (one thread)"),
        ("evaluation / late step  (target <= 40)", f"{m.t_eval / m.t_late:.1f}"),
        (f"projected {cfg.name} run ({cfg.train.steps} steps, {m.evals} evaluations)",
         f"{m.projected:.0f} s = {cfg.train.steps * m.t_late:.0f} s training + "
         f"{t_evals:.0f} s evaluation"),
    ]


def _print_rows(title: str, rows: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    print(title)
    for k, v in rows:
        print(f"  {k.ljust(width)}  {v}")


def one_thread_rows(quick: bool) -> list[tuple[str, str]]:
    """The demo's step, evaluation, Tracker, estimator and ensemble costs on the calling
    thread's settings (``main`` runs it on one thread)."""
    repeats, inner = (5, 50) if quick else (25, 100)
    cfg = make_config("demo")
    data = build_dataset(cfg.data)
    torch.manual_seed(0)
    model = build_model(cfg.model, data.input_shape, data.num_classes, data.meta)
    opt = OPTIMIZERS[cfg.optim.name](model.parameters(), cfg.optim)
    loss_fn = LOSSES[cfg.train.loss](data.num_classes)
    sampler = EpochSampler(len(data.y_train), cfg.train.batch_size, 0)
    xs, ys = data.x_train, data.y_train

    widths = [xs[0].numel(), *cfg.model.widths, data.num_classes]
    floor = matmul_floor(widths, cfg.train.batch_size)
    fast, slow = make_grad_fn(model, loss_fn), autograd_fn(model, loss_fn)
    t_step, t_floor = paired_times(lambda: run_steps(fast, opt, sampler, xs, ys, 1), floor,
                                   repeats, inner)
    t_auto, t_floor2 = paired_times(lambda: run_steps(slow, opt, sampler, xs, ys, 1), floor,
                                    repeats, inner)
    splits = {"train": (xs, ys), "test": (data.x_test, data.y_test)}
    nc_only = Tracker(model, splits, head="head", loss_fn=loss_fn, information=())
    t_eval = best_time(nc_only.measure, max(2, repeats // 2), 3)
    t_bare, t_tracked = tracker_overhead(model, data.x_test, data.y_test, loss_fn,
                                         max(3, repeats // 2))
    pairs = list(zip(widths[:-1], widths[1:], strict=True))
    with torch.no_grad():
        _, z = model.forward_with_features(data.x_test)  # type: ignore[operator]  # [4000, 200]
    idx = info.subsample(len(z), 2000, 0)
    x2, z2, y2 = data.x_test[idx], z[idx], data.y_test[idx]
    params = estimator_params(cfg.measures)

    def scratch() -> None:
        for name, kw in params.items():
            info.ESTIMATORS[name](x2, z2, y2, num_classes=data.num_classes, **kw)

    t_info = best_time(scratch, max(2, repeats // 2), 1)
    probe = InfoProbe(data.x_test, data.y_test, data.num_classes, params,
                      n=cfg.measures.information_n, seed=cfg.measures.information_seed)
    t_probe = best_time(lambda: probe(z), max(2, repeats // 2), 2)
    t_seq, t_ens = ensemble_speedup(cfg, data, 6, 20 if quick else 50, max(3, repeats // 3))
    names = "+".join(params)
    flops = 2 * cfg.train.batch_size * sum(a * b * (3 if i else 2)
                                           for i, (a, b) in enumerate(pairs))
    rows = [
        ("threads", f"{torch.get_num_threads()}"),
        ("training step (batch 100)", f"{t_step * 1e3:.3f} ms  ({1 / t_step:,.0f} steps/s)"),
        ("matmul FLOP floor of one step", f"{t_floor * 1e3:.3f} ms  "
                                          f"({flops / t_floor / 1e9:.1f} GFLOP/s, "
                                          f"{flops / 1e6:.0f} MFLOP)"),
        ("step / floor  (target <= 1.5)", f"{t_step / t_floor:.2f}"),
        ("same step through autograd (train.fast_mlp=false) / floor",
         f"{t_auto / t_floor2:.2f}"),
        ("evaluation point (1000 + 4000, all measures)", f"{t_eval * 1e3:.1f} ms"),
        ("evaluation / step  (target < 40)", f"{t_eval / t_step:.1f}"),
        ("held-out split: forward + measures, bare", f"{t_bare * 1e3:.1f} ms"),
        ("held-out split through the Tracker", f"{t_tracked * 1e3:.1f} ms"),
        ("Tracker / bare  (target <= 1.2)", f"{t_tracked / t_bare:.2f}"),
        (f"{names}, n=2000, p=200, from scratch (target < 1 s)", f"{t_info:.3f} s"),
        (f"{names} per evaluation (n={cfg.measures.information_n}, cached X)",
         f"{t_probe * 1e3:.1f} ms = {t_probe / t_step:.1f} steps"),
        ("6 runs one after another, per member-step", f"{t_seq * 1e3:.3f} ms"),
        ("the same 6 runs as one vectorized ensemble", f"{t_ens * 1e3:.3f} ms"),
        ("ensemble speed-up  (target >= 3)", f"{t_seq / t_ens:.2f}"),
        ("upper bound on one core: sequential step / FLOP floor",
         f"{t_seq / t_floor:.2f}  (the ensemble does the same multiplies)"),
    ]
    return rows


def main(quick: bool = False) -> int:
    """Print both tables: one thread (the ratios of the step and the Tracker), then the main
    run at its own settings (the projection)."""
    demo = make_config("demo")
    with warnings.catch_warnings():
        # the estimators' checks (e.g. kl_knn's shuffled null on untrained features) are
        # about the values, which the bench discards; it times them
        warnings.simplefilter("ignore", RuntimeWarning)
        return _main(demo, quick)


def _main(demo: Config, quick: bool) -> int:
    with training_runtime(1, demo.train.flush_denormal):
        rows = one_thread_rows(quick)
    _print_rows("latephase bench: paper MLP on the embedded MNIST subset, one thread", rows)
    main_cfg = make_config(MAIN_PRESET)
    _print_rows(f"the main run ({MAIN_PRESET}) at its own train.threads and "
                "train.flush_denormal", main_run_rows(measure_main_run(main_cfg, quick)))
    return 0
