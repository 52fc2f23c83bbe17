"""Every information estimator in the registry runs through every path a user has: a run
(``latephase.api.run``), the Tracker and a sweep (issue 10 point 2).  One test per registry
entry and path, parametrised over ``ESTIMATORS``, so an estimator added to the registry is
covered automatically and cannot be callable but unusable again (as ``ksg`` was).
Select them with ``pytest -k "estimator and run_path"``.

What is asserted: the estimator's keys (those of the pure function's result, plus ``_se``
where it reports a standard error) appear under ``{held-out split}/{name}/`` in the
records, with finite values at every evaluation point."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from latephase.api import run
from latephase.config import make_config
from latephase.measures.information import ESTIMATORS
from latephase.runs import RunDir
from latephase.sweep import load_spec, run_sweep
from latephase.tracker import Tracker

NAMES = sorted(ESTIMATORS)

TINY = [
    "train.steps=20",
    "model.widths=[16]",
    "data.train_size=100",
    "data.test_size=200",
    "train.eval_schedule=log",
    "train.eval_points=3",
    "train.checkpoint_every_s=0",
    "measures.information_n=200",
]


def expected_keys(name: str) -> set[str]:
    """The record keys (without the split prefix) an estimator must produce: its result's
    values, and ``_se`` for those with a standard error (from the pure function itself)."""
    rng = np.random.default_rng(0)
    y = np.arange(120) % 4
    x = rng.standard_normal((120, 8)) + y[:, None]
    z = np.maximum(x @ rng.standard_normal((8, 6)), 0.0)
    return set(ESTIMATORS[name](x, z, y, num_classes=4, seed=0).flat(f"{name}/"))


def check_records(records: list[dict], split: str, name: str) -> None:
    want = {f"{split}/{key}" for key in expected_keys(name)}
    assert records, "no evaluation points"
    for rec in records:
        missing = want - set(rec)
        assert not missing, (name, sorted(missing))
        bad = {k: rec[k] for k in want if not math.isfinite(rec[k])}
        assert not bad, (name, rec["step"], bad)


@pytest.mark.parametrize("name", NAMES)
def test_estimator_run_path_run(name: str, tmp_path: Path) -> None:
    cfg = make_config("demo", overrides=[*TINY, f'measures.information=["{name}"]'])
    run_dir, summary = run(cfg, tmp_path, "r", progress=False, figures=False)
    assert summary["status"] == "finished", summary
    check_records(RunDir(run_dir.path).records(), "test", name)


@pytest.mark.parametrize("name", NAMES)
def test_estimator_run_path_tracker(name: str) -> None:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    y = torch.arange(240) % 4
    x = torch.randn(240, 10, generator=gen) + y[:, None].float()
    model = nn.Sequential(nn.Linear(10, 12), nn.ReLU(), nn.Linear(12, 4))
    splits = {"train": (x[:120], y[:120]), "val": (x[120:], y[120:])}
    tracker = Tracker(model, splits, heldout_split="val", information=[name],
                      information_n=None)
    records = [tracker.evaluate(step) for step in (0, 1)]
    check_records(records, "val", name)


@pytest.mark.parametrize("name", NAMES)
def test_estimator_run_path_sweep(name: str, tmp_path: Path, monkeypatch) -> None:
    # A sweep draws every run's figures (seconds each); figures are not what this test is
    # about (report/ has its own tests), so the run's report step is skipped here.
    import latephase.api

    monkeypatch.setattr(latephase.api, "report", lambda path: [])
    bare = {"log"}  # bare words on the command line are TOML strings in a spec file
    overrides = "\n".join(f'"{k}" = ' + (f'"{v}"' if v in bare else v)
                          for k, v in (o.split("=", 1) for o in TINY))
    spec = tmp_path / "spec.toml"
    spec.write_text(f'name = "s"\npreset = "demo"\nseeds = [0]\n[overrides]\n{overrides}\n'
                    f'"measures.information" = ["{name}"]\n'
                    '[grid]\n"optim.weight_decay" = [0.1]\n')
    summary = run_sweep(load_spec(spec), tmp_path, workers=1, progress=False)
    assert [r["status"] for r in summary["runs"]] == ["finished"], summary["runs"]
    run_path = tmp_path / "s" / summary["runs"][0]["run"]
    check_records(RunDir(run_path).records(), "test", name)
