"""Run directory: metrics loader tolerates a torn last line; files are replaced atomically."""

from __future__ import annotations

import json

import pytest

from latephase.config import make_config
from latephase.errors import RunDirError
from latephase.runs import RunDir, load_metrics


def test_loader_tolerates_torn_last_line(tmp_path) -> None:
    run = RunDir.create(tmp_path / "r", make_config("demo"))
    for s in range(3):
        run.append({"step": s, "train/acc": 0.1 * s, "test/nc2": float("inf")})
    run.close()
    with run.metrics_path.open("a") as fh:
        fh.write('{"step": 3, "train/a')  # killed mid-write
    df = load_metrics(tmp_path / "r")
    assert list(df["step"]) == [0, 1, 2]
    assert df["train/acc"].tolist() == pytest.approx([0.0, 0.1, 0.2])
    assert df["test/nc2"].iloc[0] == float("inf")


def test_malformed_middle_line_warns(tmp_path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 0}\nnot json\n{"step": 2}\n')
    with pytest.warns(RuntimeWarning, match="malformed"):
        df = load_metrics(path)
    assert list(df["step"]) == [0, 2]


def test_run_dir_contents(tmp_path) -> None:
    cfg = make_config("demo", overrides=["seed=4"])
    run = RunDir.create(tmp_path / "r", cfg)
    info = json.loads(run.config_path.read_text())
    assert info["seed"] == 4 and info["config"]["optim"]["weight_decay"] == 0.1
    assert run.summary()["status"] == "running"
    assert run.config() == cfg
    with pytest.raises(RunDirError, match="already holds a run"):
        RunDir.create(tmp_path / "r", cfg)
    with pytest.raises(RunDirError, match="no metrics file"):
        load_metrics(tmp_path / "elsewhere")
