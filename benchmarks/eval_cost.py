"""Where one evaluation point's information estimators spend their time (issue 12, target 3).

Trains the ``paper-mnist`` MLP for a few thousand steps (features at several points of the
run: random-looking at init, clustering later), builds the run's information probe on the
held-out split (``measures.information_n`` rows, X side cached) and prints, per estimator,
the CPU time of one call (minimum over the features and repeats; CPU time, not wall time,
because the machine is shared) and the functions that take most of it (cProfile).

    .venv/bin/python benchmarks/eval_cost.py [--steps 3000] [--top 8]
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import io
import pstats
import tempfile
import time
import warnings
from pathlib import Path

import torch


def features(steps: int) -> tuple[object, list[torch.Tensor]]:
    """(data, [held-out features at a few steps up to ``steps``])."""
    from latephase.config import make_config
    from latephase.data import build_dataset
    from latephase.runs import RunDir
    from latephase.train.grad import make_grad_fn
    from latephase.train.loop import Member, run_steps

    cfg = make_config("paper-mnist")
    cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, weight_decay=0.1))
    data = build_dataset(cfg.data)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        member = Member(cfg, RunDir.create(Path(tmp) / "r", cfg), data)
        grad = make_grad_fn(member.model, member.loss_fn, fast=cfg.train.fast_mlp)
        done = 0
        for target in sorted({0, steps // 4, steps // 2, steps}):
            run_steps(grad, member.opt, member.sampler, data.x_train, data.y_train,
                      target - done)
            done = target
            with torch.no_grad():
                _, z = member.model.forward_with_features(data.x_test)  # type: ignore
            out.append(z)
        member.run.close()
    return data, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--top", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    from latephase.config import make_config
    from latephase.measures.probe import InfoProbe, estimator_params

    cfg = make_config("paper-mnist")
    data, zs = features(args.steps)
    params = estimator_params(cfg.measures)
    t = time.process_time()
    probe = InfoProbe(data.x_test, data.y_test, data.num_classes, params,  # type: ignore
                      n=cfg.measures.information_n, seed=cfg.measures.information_seed)
    print(f"probe build (X side of every estimator): {1e3 * (time.process_time() - t):.0f} ms"
          " CPU")
    probe(zs[0])
    total = 0.0
    for name, compute in probe.computers.items():
        times = []
        prof = cProfile.Profile()
        for _ in range(2):
            for z in zs:
                rows = z[probe.idx]
                t = time.process_time()
                prof.enable()
                compute(rows)
                prof.disable()
                times.append(time.process_time() - t)
        total += min(times)
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(args.top)
        lines = [ln for ln in buf.getvalue().splitlines() if ln.strip()][-args.top:]
        print(f"\n{name}: {1e3 * min(times):.1f} ms CPU per call (min of {len(times)}), "
              "top functions (tottime over all calls):")
        print("\n".join("  " + ln for ln in lines))
    times = []
    for z in zs:
        t = time.process_time()
        probe(z)
        times.append(time.process_time() - t)
    print(f"\nsum of the estimators {1e3 * total:.1f} ms; one probe call (kl_knn and cmi_ksg "
          f"share Z's PCA) {1e3 * min(times):.1f} ms CPU")


if __name__ == "__main__":
    main()
