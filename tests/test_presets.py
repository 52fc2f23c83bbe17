"""Every preset runs a smoke version (a few steps, tiny data) and every measure is finite."""

from __future__ import annotations

import math

import pytest

from latephase.config import make_config, preset_names
from latephase.runs import RunDir
from latephase.train import train

SMOKE = {
    "mnist": ["data.train_size=200", "data.test_size=300"],
    "modular": ["data.modulus=23"],
}


@pytest.mark.parametrize("preset", preset_names())
def test_preset_smoke(tmp_path, preset: str) -> None:
    base = make_config(preset)
    cfg = make_config(preset, overrides=[*SMOKE[base.data.name], "train.steps=20",
                                         "model.widths=[32, 32]", "train.eval_schedule=log",
                                         "train.eval_points=4"])
    summary = train(cfg, RunDir.create(tmp_path / preset, cfg), progress=False)
    assert summary["status"] == "finished"
    rec = summary["final"]
    assert rec["step"] == 20
    bad = {k: v for k, v in rec.items() if isinstance(v, float) and not math.isfinite(v)
           and k != "train/nc2"}  # nc2 is +inf when a class mean matrix is rank deficient
    assert not bad, bad
    assert {"train/rnc1_mean", "test/bound", "test/nhsic/redundancy",
            "test/kl_knn/redundancy"} <= set(rec)
