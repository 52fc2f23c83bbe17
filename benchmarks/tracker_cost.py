"""What one ``Tracker.evaluate`` costs, measure by measure (one thread).

The paper's MLP (784-200-200-200-10, ReLU, init x8) on the embedded MNIST digits: 1000
training and 4000 held-out rows; information measures on the held-out split with
``information_n=1000`` (the defaults).  Prints the best-of-repeats ms per evaluate of

- the collapse measures alone (``information=()``): forward passes, NC1-NC4, bounds, margins;
- each estimator alone, as the extra time over that (the first evaluate, which also builds
  the estimator's fixed X side, is reported separately);
- the content keys of the held-out rows (the alignment's overhead, inside the above).

    python benchmarks/tracker_cost.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable

import torch
from torch import nn

import latephase
from latephase.config import DataConfig
from latephase.data import build_mnist
from latephase.measures.information import ESTIMATORS
from latephase.tracker import RowKeys


def paper_mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(784, 200), nn.ReLU(), nn.Linear(200, 200), nn.ReLU(),
                          nn.Linear(200, 200), nn.ReLU(), nn.Linear(200, 10))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(8.0)
    return model


def best_ms(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * min(times)  # the least disturbed run (timeit's advice on a busy machine)


def main(repeats: int = 5) -> dict[str, float]:
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    data = build_mnist(DataConfig(train_size=1000))
    x_tr, y_tr = data.x_train.flatten(1), data.y_train
    x_te, y_te = data.x_test.flatten(1), data.y_test
    splits = {"train": (x_tr, y_tr), "test": (x_te, y_te)}
    model = paper_mlp()
    out: dict[str, float] = {}

    base = latephase.Tracker(model, splits, information=())
    base.evaluate(0)
    out["collapse measures (both splits, no information)"] = best_ms(
        lambda: base.evaluate(1), repeats)
    for name in sorted(ESTIMATORS):
        tracker = latephase.Tracker(model, splits, information=[name])
        t = time.perf_counter()
        tracker.evaluate(0)
        first = 1e3 * (time.perf_counter() - t)
        steady = best_ms(lambda tracker=tracker: tracker.evaluate(1), repeats)
        out[f"{name}: extra per evaluate"] = steady - out[
            "collapse measures (both splits, no information)"]
        out[f"{name}: first evaluate (builds the X side)"] = first
    default = latephase.Tracker(model, splits)
    default.evaluate(0)
    out["default Tracker (nhsic + kl_knn): whole evaluate"] = best_ms(
        lambda: default.evaluate(1), repeats)
    keys = RowKeys()
    out["content keys of the 4000 held-out rows"] = best_ms(lambda: keys(x_te), repeats)
    width = max(len(k) for k in out)
    n = data.x_test.shape[0]
    print(f"ms per Tracker.evaluate, one thread, {len(y_tr)} + {n} rows, information_n=1000:")
    for k, v in out.items():
        print(f"  {k:<{width}}  {v:9.1f}")
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    main(p.parse_args().repeats)
