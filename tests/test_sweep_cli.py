"""``latephase sweep SPEC key=value``: overrides for every run, a sweep directory of its own,
figures in the chosen formats; then the sweep into pandas and CSV (issue 13 acceptance)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from latephase.analysis import load_sweep
from latephase.cli import main
from latephase.errors import ConfigError
from latephase.sweep import load_spec, with_overrides

from .conftest import SWEEP_BASE

SPEC = SWEEP_BASE.replace('name = "t"\n', "")  # named after its overrides


def test_with_overrides(tmp_path: Path) -> None:
    (tmp_path / "t.toml").write_text(SPEC)
    spec = load_spec(tmp_path / "t.toml")
    new = with_overrides(spec, ["train.steps=40", "model.widths=[8, 8]"])
    assert new.name == "t-steps40-widths_8_8"
    assert spec.overrides["train.steps"] == 60  # the original is unchanged
    for run in new.runs():
        cfg = new.run_config(run)
        assert cfg.train.steps == 40 and cfg.model.widths == (8, 8)
        assert cfg.data.train_size == 100  # the spec's other overrides stay
    assert with_overrides(spec, [], "mine").name == "mine"
    for bad, msg in ((["optim.weight_decay=0.1"], "the sweep's grid sets it"),
                     (["seed=3"], "the sweep's seeds set it"),
                     (["train.steps=0"], "train.steps: value 0 out of range"),
                     (["train.stesp=4"], "unknown config key 'train.stesp'")):
        with pytest.raises(ConfigError, match=msg):
            with_overrides(spec, bad)


def test_sweep_cli_overrides_formats_then_pandas_and_csv(tmp_path: Path, capsys) -> None:
    spec = tmp_path / "t.toml"
    spec.write_text(SPEC)
    out = tmp_path / "runs"
    code = main(["sweep", str(spec), "train.steps=40", "--out", str(out), "--workers", "1",
                 "--no-progress", "--format", "png,pdf", "--dpi", "60"])
    assert code == 0, capsys.readouterr().err
    root = out / "t-steps40"
    summary = json.loads((root / "sweep_summary.json").read_text())
    assert summary["counts"] == {"finished": 4}
    for r in summary["runs"]:
        info = json.loads((root / r["run"] / "config.json").read_text())
        assert info["config"]["train"]["steps"] == 40
    assert sorted(p.name for p in (root / "figures").iterdir()) == [
        "figure3.pdf", "figure3.png", "timescales.pdf", "timescales.png"]
    df = load_sweep(root)
    records = {r["run"]: [json.loads(line) for line in
                          (root / r["run"] / "metrics.jsonl").read_text().splitlines()]
               for r in summary["runs"]}
    assert len(df) == sum(map(len, records.values()))
    assert {"run", "status", "seed", "optim.weight_decay", "step", "test/acc"} <= set(df)
    for name, recs in records.items():
        part = df[df["run"] == name]
        assert part["test/acc"].tolist() == [r["test/acc"] for r in recs]
        point = next(r for r in summary["runs"] if r["run"] == name)
        assert set(part["optim.weight_decay"]) == {point["optim.weight_decay"]}
        assert set(part["seed"]) == {point["seed"]}
    csv = tmp_path / "sweep.csv"
    assert main(["export", str(root), "--csv", str(csv)]) == 0
    back = pd.read_csv(csv)
    assert len(back) == len(df) and list(back.columns) == list(df.columns)
    assert back["train/rnc1_mean"].tolist() == df["train/rnc1_mean"].tolist()


def test_sweep_cli_bad_combinations(tmp_path: Path, capsys) -> None:
    for args in ([], ["a.toml", "b.toml"], ["a.toml", "--preset", "fig3-small"]):
        assert main(["sweep", *args, "--out", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert "give exactly one of SPEC.toml or --preset NAME" in err
        assert len(err.strip().splitlines()) == 1
    assert main(["sweep", "--preset", "fig3-small", "optim.weight_decay=0.1",
                 "--out", str(tmp_path)]) == 2
    assert "grid sets it" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
