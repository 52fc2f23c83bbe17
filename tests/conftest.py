"""Shared fixtures: small, fast configurations of the paper's setting."""

from __future__ import annotations

import pytest
import torch

from latephase.config import Config, make_config
from latephase.train.runtime import set_auto_threads

torch.set_num_threads(1)
set_auto_threads(1)  # train.threads = "auto" trains on one thread here too

SMALL = [
    "train.steps=120",
    "model.widths=[32, 32]",
    "data.train_size=200",
    "data.test_size=300",
    "train.checkpoint_every_s=0",
    "optim.weight_decay=0.1",
    "train.eval_schedule=log",
    "train.eval_points=30",
]


@pytest.fixture
def small_cfg() -> Config:
    """The demo setting shrunk to run in about a second."""
    return make_config("demo", overrides=list(SMALL))


#: a two-run-per-point weight-decay sweep of tiny demo runs (the sweep tests share it)
SWEEP_BASE = """
name = "t"
preset = "demo"
seeds = [0, 1]
[overrides]
"train.steps" = 60
"model.widths" = [16]
"data.train_size" = 100
"data.test_size" = 100
"train.eval_schedule" = "log"
"train.eval_points" = 8
"train.checkpoint_every_s" = 0
"measures.information" = []
[grid]
"optim.weight_decay" = [0.3, 0.1]
"""
