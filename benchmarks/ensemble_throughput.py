"""Training throughput of the vectorized ensemble on one device, and the projected time of a
sweep's training steps (default: the paper's Figure 3 grid, ``paper-fig3``).

Builds ``--members`` runs of the sweep (its first runs: seeds and weight decays differ, as in
the grid), stacks them (:class:`latephase.train.ensemble.StackedMLP`) with the data resident
on ``--device`` and times ``--steps`` calls of
:func:`latephase.train.ensemble.ensemble_step` (one optimizer step of every member),
synchronising the device only before and after.  Prints member-steps per second and

    projected training time = (sum over the sweep's runs of train.steps) / member-steps per s

with every run of the sweep in ensembles of ``--members`` (evaluation points not counted).

    python benchmarks/ensemble_throughput.py --device cuda --members 30 --steps 500
    python benchmarks/ensemble_throughput.py --device cpu --members 6 --steps 50   # CPU check
"""

from __future__ import annotations

import argparse
import time

import torch

from latephase.data import build_dataset
from latephase.models import build_model
from latephase.sweep import load_spec
from latephase.train.ensemble import StackedMLP, ensemble_step
from latephase.train.loop import (
    LOSSES,
    OPTIMIZERS,
    EpochSampler,
    move_dataset,
    resolve_device,
)
from latephase.train.runtime import training_runtime


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sweep", default="paper-fig3", help="sweep preset to project")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    p.add_argument("--members", type=int, default=30, help="members in one ensemble")
    p.add_argument("--steps", type=int, default=200, help="timed ensemble steps")
    p.add_argument("--warmup", type=int, default=20, help="untimed steps first")
    args = p.parse_args(argv)
    if args.members < 1 or args.steps < 1 or args.warmup < 0:
        p.error("--members and --steps must be >= 1, --warmup >= 0")

    spec = load_spec(preset=args.sweep)
    cfgs = [spec.run_config(r) for r in spec.runs()]
    members = [cfgs[i % len(cfgs)] for i in range(args.members)]
    device = resolve_device(args.device)
    with training_runtime(members[0].train.threads, members[0].train.flush_denormal) as threads:
        data = move_dataset(build_dataset(members[0].data), device)
        models, opts, samplers = [], [], []
        for i, c in enumerate(members):
            torch.manual_seed(c.seed)
            model = build_model(c.model, data.input_shape, data.num_classes, data.meta).to(device)
            models.append(model)
            opts.append(OPTIMIZERS[c.optim.name](model.parameters(), c.optim))
            samplers.append(EpochSampler(len(data.y_train), c.train.batch_size, i, device=device))
        LOSSES[members[0].train.loss](data.num_classes)  # a registered loss, or KeyError here
        stack = StackedMLP(models)  # type: ignore[arg-type]
        eye = torch.eye(data.num_classes, device=device)
        xs, ys = data.x_train.flatten(1), data.y_train
        sse, active = members[0].train.loss == "sse", [True] * len(members)
        for _ in range(args.warmup):
            ensemble_step(stack, opts, samplers, xs, ys, eye, sse, active)
        _sync(device)
        t = time.perf_counter()
        for _ in range(args.steps):
            ensemble_step(stack, opts, samplers, xs, ys, eye, sse, active)
        _sync(device)
        elapsed = time.perf_counter() - t
    rate = len(members) * args.steps / elapsed
    total = sum(c.train.steps for c in cfgs)
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"{threads} threads")
    print(f"device {device} ({where})")
    print(f"{len(members)} members x {args.steps} steps in {elapsed:.2f} s: "
          f"{rate:,.0f} member-steps/s ({elapsed / args.steps * 1e3:.2f} ms per ensemble step)")
    print(f"{args.sweep}: {len(cfgs)} runs, {total:,} member-steps -> projected training time "
          f"{total / rate:,.0f} s ({total / rate / 60:.1f} min; evaluations not counted)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
