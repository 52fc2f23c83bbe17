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
  subsample of ``measures.information_n``, X side cached), in training steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from threadpoolctl import threadpool_limits

from latephase.config import make_config
from latephase.data import build_dataset
from latephase.measures import PENULTIMATE, SplitAccumulator
from latephase.measures import information as info
from latephase.measures.probe import InfoProbe, estimator_params
from latephase.models import build_model, head_of
from latephase.tracker import Tracker
from latephase.train.grad import autograd_fn, make_grad_fn
from latephase.train.loop import LOSSES, OPTIMIZERS, EpochSampler, run_steps


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
                 inner: int) -> tuple[float, float]:
    """Best-of-``repeats`` time per call of ``a`` and of ``b``, measured in alternating bursts
    of ``inner`` calls so both see the same machine load (their ratio is what we report)."""
    a()
    b()
    best_a = best_b = float("inf")
    for _ in range(repeats):
        for fn, which in ((a, 0), (b, 1)):
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


def main(quick: bool = False) -> int:
    torch.set_num_threads(1)
    threadpool_limits(1)
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
    width = max(len(k) for k, _ in rows)
    print("latephase bench: paper MLP on the embedded MNIST subset, one process")
    for k, v in rows:
        print(f"  {k.ljust(width)}  {v}")
    return 0
