"""Analysis: load_run / load_sweep into pandas, ``latephase export`` / ``compare`` / ``config``,
``--format`` / ``--dpi``.

Ground truth: run directories written through the RunRecorder with known records (values
drawn from a seeded generator, so every cell is distinct); the independent reference is the
metrics.jsonl lines parsed with ``json`` and the config.json tree walked by hand.  Values
travel JSON -> pandas -> CSV as float64 with repr round-trip, so they must compare exactly.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from latephase.analysis import compare_figure, load_run, load_sweep
from latephase.cli import describe_keys, main
from latephase.config import Config, make_config
from latephase.runs import RunRecorder, Status

MEASURES = ("train/acc", "test/acc", "train/rnc1_mean")


def _write_run(path: Path, cfg: Config, steps: list[int], rng: np.random.Generator,
               status: Status = Status.FINISHED) -> list[dict]:
    """A run directory with one record of random values per step; returns the records."""
    records = [{"step": s, **{m: float(rng.uniform(0.01, 1)) for m in MEASURES}}
               for s in steps]
    rec = RunRecorder.create(path, cfg)
    for r in records:
        rec.append(r)
    rec.write_summary({"status": status, "step": steps[-1]})
    rec.close()
    return records


def _reference(path: Path) -> list[dict]:
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def sweep_dir(tmp_path: Path) -> tuple[Path, dict[str, list[dict]]]:
    """Four runs: weight decay {0.1, 0.03} x seed {0, 1}, with 3 or 5 records."""
    rng = np.random.default_rng(0)
    root = tmp_path / "sw"
    runs = {}
    for wd in (0.1, 0.03):
        for seed in (0, 1):
            cfg = make_config("demo", overrides=[f"optim.weight_decay={wd}", f"seed={seed}"])
            steps = [0, 10, 100] if seed == 0 else [0, 1, 10, 100, 1000]
            runs[f"wd{wd:g}-seed{seed}"] = _write_run(root / f"wd{wd:g}-seed{seed}", cfg,
                                                      steps, rng)
    return root, runs


def test_load_sweep_rows_and_config_columns(sweep_dir) -> None:
    root, runs = sweep_dir
    df = load_sweep(root)
    assert len(df) == sum(len(r) for r in runs.values())  # one row per (run, step)
    assert list(df.columns[:3]) == ["run", "status", "seed"]
    # only the keys that vary between runs (and the seed): weight decay, not lr or steps
    config_cols = [c for c in df.columns if "." in c]
    assert config_cols == ["optim.weight_decay"]
    for name, records in runs.items():
        part = df[df["run"] == name].reset_index(drop=True)
        ref = _reference(root / name)
        assert ref == records
        for m in ("step", *MEASURES):
            assert part[m].tolist() == [r[m] for r in ref]  # exact: JSON floats round-trip
        info = json.loads((root / name / "config.json").read_text())
        assert set(part["optim.weight_decay"]) == {info["config"]["optim"]["weight_decay"]}
        assert set(part["seed"]) == {info["seed"]}
        assert set(part["status"]) == {"finished"}
    every = load_sweep(root, config="all")
    assert "optim.lr" in every.columns and "model.widths" in every.columns
    assert json.loads(every["model.widths"].iloc[0]) == [200, 200, 200]
    assert [c for c in load_sweep(root, config="none").columns if "." in c] == []


def test_load_sweep_uses_the_sweep_summary(tmp_path: Path) -> None:
    """With a sweep_summary.json the runs, their order, statuses and grid keys are its own
    (the sweep checks each run's records against its schedule: these have too few)."""
    from latephase.sweep import load_spec, write_summary

    spec_file = tmp_path / "s.toml"
    spec_file.write_text('preset = "demo"\nseeds = [0, 1]\n[overrides]\n"train.steps" = 100\n'
                         '[grid]\n"optim.weight_decay" = [0.1, 0.03]\n')
    spec = load_spec(spec_file)
    root = tmp_path / "out" / spec.name
    rng = np.random.default_rng(1)
    for run in spec.runs():
        _write_run(root / run.name, spec.run_config(run), [0, 10, 100], rng)
    summary = write_summary(root, spec)
    df = load_sweep(root)
    assert df["run"].drop_duplicates().tolist() == [r["run"] for r in summary["runs"]]
    statuses = {r["run"]: r["status"] for r in summary["runs"]}
    assert statuses and all(s != "finished" for s in statuses.values())
    assert {n: set(g["status"]) for n, g in df.groupby("run")} == {
        n: {s} for n, s in statuses.items()}
    assert sorted(df["optim.weight_decay"].unique()) == [0.03, 0.1]
    from latephase.report.sweep import write_sweep_figures

    made = write_sweep_figures(root, ("pdf", "svg"), dpi=50)
    assert sorted(p.name for p in made) == ["figure3.pdf", "figure3.svg", "timescales.pdf",
                                            "timescales.svg"]


def test_load_run_has_every_config_key(tmp_path: Path) -> None:
    cfg = make_config("demo", overrides=["seed=3"])
    records = _write_run(tmp_path / "r", cfg, [0, 5, 50], np.random.default_rng(2))
    df = load_run(tmp_path / "r")
    leaves = [k for k, *_ in describe_keys(cfg)]
    assert set(leaves) <= set(df.columns)
    assert df["seed"].tolist() == [3, 3, 3] and df["run"].tolist() == ["r"] * 3
    assert df["train.steps"].iloc[0] == cfg.train.steps
    assert df["test/acc"].tolist() == [r["test/acc"] for r in records]


def test_export_csv_round_trip(sweep_dir, tmp_path: Path, capsys) -> None:
    root, runs = sweep_dir
    out = tmp_path / "sw.csv"
    assert main(["export", str(root), "--csv", str(out)]) == 0
    assert f"{sum(len(r) for r in runs.values())} rows (4 runs)" in capsys.readouterr().out
    back = pd.read_csv(out)
    df = load_sweep(root)
    assert list(back.columns) == list(df.columns)
    for m in MEASURES:
        np.testing.assert_array_equal(back[m].to_numpy(), df[m].to_numpy())  # repr round-trip
    one = tmp_path / "one.csv"
    assert main(["export", str(root / "wd0.1-seed1"), "--csv", str(one)]) == 0
    assert pd.read_csv(one)["step"].tolist() == [r["step"] for r in runs["wd0.1-seed1"]]


def test_compare_figure_one_line_per_run_per_measure(sweep_dir) -> None:
    import matplotlib

    matplotlib.use("Agg")
    root, runs = sweep_dir
    names = sorted(runs)
    fig = compare_figure([root / n for n in names], ["test/acc", "train/rnc1_mean"])
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["test/acc", "train/rnc1_mean"]
    for ax, m in zip(axes, ["test/acc", "train/rnc1_mean"], strict=True):
        assert ax.get_xscale() == "log"
        lines = ax.get_lines()
        assert [ln.get_label() for ln in lines] == names
        for ln, n in zip(lines, names, strict=True):
            ref = [r for r in runs[n] if r["step"] > 0]  # step 0 has no place on a log axis
            assert list(ln.get_xdata()) == [r["step"] for r in ref]
            assert list(ln.get_ydata()) == [r[m] for r in ref]


def test_compare_cli_formats_and_dpi(sweep_dir, tmp_path: Path, capsys) -> None:
    from PIL import Image

    root, runs = sweep_dir
    stem = tmp_path / "cmp"
    args = ["compare", *(str(root / n) for n in runs), "--out", str(stem)]
    assert main([*args, "--format", "png,pdf,svg", "--dpi", "50"]) == 0
    files = sorted(Path(p).name for p in capsys.readouterr().out.split())
    assert files == ["cmp.pdf", "cmp.png", "cmp.svg"]
    assert (tmp_path / "cmp.pdf").read_bytes()[:4] == b"%PDF"
    assert b"<svg" in (tmp_path / "cmp.svg").read_bytes()[:500]
    w50 = Image.open(tmp_path / "cmp.png").size
    assert main([*args, "--dpi", "100"]) == 0
    w100 = Image.open(tmp_path / "cmp.png").size
    # the pixel size scales with the dpi (layout rounding: one pixel)
    assert all(abs(b - 2 * a) <= 2 for a, b in zip(w50, w100, strict=True))


@pytest.mark.parametrize(("extra", "pattern"), [
    (["--format", "gif"], "--format 'gif': not a figure format"),
    (["--dpi", "0"], "--dpi 0.0: expected a number of dots per inch"),
    (["--dpi", "nan"], "--dpi nan"),
    (["--measures", "test/accc"], "no run recorded 'test/accc'; recorded columns: step|train"),
])
def test_compare_bad_input_exit_2(sweep_dir, tmp_path, capsys, extra, pattern) -> None:
    import re

    root, runs = sweep_dir
    code = main(["compare", str(root / next(iter(runs))), "--out", str(tmp_path / "c"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and re.search(pattern, err), err
    assert len(err.strip().splitlines()) == 1
    assert not list(tmp_path.glob("c.*"))


def test_export_bad_input_exit_2(tmp_path, capsys) -> None:
    code = main(["export", str(tmp_path / "nothing"), "--csv", str(tmp_path / "x.csv")])
    assert code == 2 and "is not a directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    code = main(["export", str(tmp_path / "empty"), "--csv", str(tmp_path / "x.csv")])
    assert code == 2 and "holds no runs" in capsys.readouterr().err


def _leaves(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key of a config dataclass, walked independently of describe_keys."""
    out = []
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default):
            out += _leaves(type(default), f"{prefix}{f.name}.")
        else:
            out.append(prefix + f.name)
    return out


def test_config_command_lists_every_key(capsys) -> None:
    assert main(["config", "--preset", "demo"]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    keys = [line.split()[0] for line in lines]
    assert keys == _leaves(Config)
    demo = make_config("demo")
    row = next(line for line in lines if line.startswith("train.steps "))
    assert row.split()[1:3] == ["int", str(demo.train.steps)]
    assert demo.train.steps != Config().train.steps  # the preset's value, not the default
    wd = next(line for line in lines if line.startswith("optim.weight_decay "))
    assert "range [0.0, inf)" in wd
    doc = next(line for line in lines if line.startswith("data.train_size "))
    assert "class-balanced training set size" in doc
    assert main(["config"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines()
               if line.startswith("train.steps "))
    assert row.split()[2] == str(Config().train.steps)


def test_report_formats(sweep_dir, capsys) -> None:
    root, runs = sweep_dir
    run = root / next(iter(runs))
    assert main(["report", str(run), "--format", "pdf,svg", "--dpi", "72"]) == 0
    made = {p.suffix for p in (run / "figures").iterdir()}
    assert made == {".pdf", ".svg"}
