"""Measure grokking-related quantities on YOUR model in YOUR training loop.

A small CNN that latephase does not define, trained with a plain PyTorch loop on the 5000
embedded MNIST digits (1000 train, 4000 held out), tracked with ``latephase.Tracker``:
four lines added to the loop give RNC1, NC1-NC4, the Theorem 3.2 bound and the information
measures, per layer, in a run directory that ``latephase report`` can draw.

    python examples/track_custom_cnn.py                  # ~1-2 minutes on one CPU core
    python examples/track_custom_cnn.py --steps 300      # a quick look
    latephase report runs/example-cnn                    # redraw the figures
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import latephase
from latephase.api import report
from latephase.config import DataConfig
from latephase.data import build_mnist


class SmallCNN(nn.Module):
    """conv-pool-conv-pool -> FC-64 -> FC-10; the tracked representation is the FC-64 output."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # body.2: 4x14x14
            nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # body.5: 8x7x7
        )
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(8 * 7 * 7, 64), nn.ReLU())
        self.classifier = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.fc(self.body(x.view(-1, 1, 28, 28))))


def main(steps: int = 3000, eval_every: int = 100, out: str = "runs/example-cnn",
         information_n: int = 1000, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    data = build_mnist(DataConfig(train_size=1000))   # in-memory tensors, normalised
    model = SmallCNN()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)

    shutil.rmtree(out, ignore_errors=True)
    tracker = latephase.Tracker(                          # 1. create the tracker
        model,
        splits={"train": (data.x_train, data.y_train), "test": (data.x_test, data.y_test)},
        layers=["body.5"],                                 # also measure the conv features
        information_layers=["", "body.5"],                 # MI/nHSIC there too (default: "")
        information_n=information_n,
        run_dir=out,
    )
    gen = torch.Generator().manual_seed(seed)
    for step in range(steps + 1):
        if step % eval_every == 0:
            rec = tracker.evaluate(step)                   # 2. measure (eval mode, no_grad)
            print(f"step {step:5d}  train acc {rec['train/acc']:.3f}  "
                  f"held-out acc {rec['test/acc']:.3f}  RNC1 {rec['train/rnc1_mean']:.3f}")
        if step == steps:
            break
        idx = torch.randint(len(data.y_train), (100,), generator=gen)
        loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    tracker.close()                                        # 3. mark the run finished
    figures = report(out)                                  # 4. draw the figures
    print("figures:", *map(str, figures), sep="\n  ")
    return Path(out)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--out", default="runs/example-cnn")
    args = p.parse_args()
    main(args.steps, args.eval_every, args.out)
