"""The paper's measures inside PyTorch Lightning: ``CollapseCallback`` on a small MLP trained
on scikit-learn's 8x8 digits (bundled with scikit-learn: no download).

One line added to the Trainer (``callbacks=[CollapseCallback(...)]``) records RNC1, NC1-NC4,
the Theorem 3.2 bound and the information measures at the paper's evaluation schedule into
a run directory (``latephase report runs/example-lightning`` draws it) and into the
trainer's logger.  Needs ``pip install 'latephase[lightning]'``.

    python examples/lightning_digits.py                  # 3000 steps, about a minute on CPU
    python examples/lightning_digits.py --steps 300      # a quick look
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from latephase.api import report
from latephase.integrations.lightning import CollapseCallback


def digits(seed: int = 0) -> tuple[torch.Tensor, ...]:
    """scikit-learn's digits (1797 images, 10 classes) split 1000 train / the rest held out,
    pixels scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(y), generator=g)
    x_t = torch.tensor(x, dtype=torch.float32)[order] / 16.0
    y_t = torch.tensor(y, dtype=torch.int64)[order]
    return x_t[:1000], y_t[:1000], x_t[1000:], y_t[1000:]


class MLP(pl.LightningModule):
    """64-128-128-10 with AdamW (weight decay drives the late-phase collapse)."""

    def __init__(self, weight_decay: float = 0.1) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU())
        self.head = nn.Linear(128, 10)
        self.weight_decay = weight_decay

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], idx: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=1e-3, weight_decay=self.weight_decay)


def main(steps: int = 3000, out: str = "runs/example-lightning", information_n: int = 500,
         seed: int = 0, figures: bool = True) -> Path:
    pl.seed_everything(seed, verbose=False)
    x_tr, y_tr, x_te, y_te = digits(seed)
    shutil.rmtree(out, ignore_errors=True)
    callback = CollapseCallback(
        {"train": (x_tr, y_tr), "test": (x_te, y_te)},   # eval_steps=None: paper's schedule
        run_dir=out, head="head", information_n=information_n)
    trainer = pl.Trainer(max_steps=steps, callbacks=[callback], accelerator="cpu",
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    loader = DataLoader(TensorDataset(x_tr, y_tr), batch_size=100, shuffle=True)
    trainer.fit(MLP(), loader)
    if figures:
        report(out)
    return Path(out)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--out", default="runs/example-lightning")
    args = p.parse_args()
    run = main(args.steps, args.out)
    print(f"run directory: {run}  (latephase report {run})")
