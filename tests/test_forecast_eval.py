"""Evaluation of the grokking forecaster (latephase.forecast.evaluate, `latephase
forecast-eval`) on fixture runs cut from the calib sweep."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from latephase import forecast as fc
from latephase.cli import main
from latephase.keys import record_key
from tests.test_forecast import calib_runs

GROK = record_key("test", "acc")
CAP = 0.7  # held-out accuracy capped below the 0.8 threshold: a run that never crosses


def held_out_copy(src: Path, dst: Path, *, seed: int, never: bool = False) -> Path:
    """A copy of a fixture run with another config seed (so its digest is not a calibration
    run's); ``never``: held-out accuracy capped at CAP, so it never groks."""
    dst.mkdir(parents=True)
    info = json.loads((src / "config.json").read_text())
    info["config"]["seed"] = seed
    (dst / "config.json").write_text(json.dumps(info))
    lines = []
    for line in (src / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if never:
            r[GROK] = min(r[GROK], CAP)
        lines.append(json.dumps(r) + "\n")
    (dst / "metrics.jsonl").write_text("".join(lines))
    (dst / "summary.json").write_text(json.dumps({"status": "finished"}))
    return dst


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    runs = {d.name: d for d in calib_runs(tmp_path)}
    root = tmp_path / "held"
    held_out_copy(runs["wd0.1-seed0"], root / "grok", seed=90)
    held_out_copy(runs["wd0.03-seed1"], root / "never", seed=91, never=True)
    return root


def test_table_shape_and_bin_counts(sweep: Path) -> None:
    """One row per method x lead bin; a bin's n_points is the number of evaluation steps
    with t_fit <= t < t_grok and lead in the bin, counted here from the records."""
    ev = fc.evaluate([sweep])
    assert [(r["method"], r["lead"]) for r in ev.table] == [
        (m, f"({lo:g}, {hi:g}]") for m in fc.METHODS for lo, hi in fc.LEAD_BINS]
    run = fc.load_run(sweep / "grok")
    assert run.t_fit is not None and run.t_grok is not None
    for row in ev.table:
        lo, hi = (float(x) for x in row["lead"].strip("(]").split(","))
        n = sum(run.t_fit <= r["step"] < run.t_grok
                and lo < (run.t_grok - r["step"]) / run.t_grok <= hi for r in run.records)
        assert row["n_points"] == n
        assert row["n_forecasts"] <= n
        if n:
            assert row["not_yet"] == pytest.approx(1 - row["n_forecasts"] / n)
    assert {r["run"] for r in ev.runs} == {"held/grok", "held/never"}


def test_errors_and_coverage_follow_their_definitions(sweep: Path) -> None:
    """Every grok point: error = |t_hat - t_grok| / t_grok and covered = lo <= t_grok <= hi,
    recomputed from forecast_history; the bin median is the median of those errors."""
    ev = fc.evaluate([sweep], methods=("collapse",))
    run = fc.load_run(sweep / "grok")
    assert run.t_grok is not None and run.t_fit is not None
    hist = {f.step: f for f in fc.forecast_history(run.records, **run.kwargs())}
    pts = [p for p in ev.points if p["kind"] == "grok"]
    assert pts
    for p in pts:
        f = hist[p["step"]]
        if f.status == "ok":
            assert p["error"] == abs(f.t_grok - run.t_grok) / run.t_grok
            assert p["covered"] == (f.t_grok_lo <= run.t_grok <= f.t_grok_hi)
        else:
            assert p["error"] is None
    errs = sorted(p["error"] for p in pts if p["error"] is not None and 0 < p["lead"] <= 0.25)
    row = ev.table[0]
    assert row["median_error"] == pytest.approx(
        (errs[(len(errs) - 1) // 2] + errs[len(errs) // 2]) / 2)


def expected_false_alarms(run: fc.Run, method: str, horizon: float, until: float
                          ) -> tuple[int, int]:
    """(false alarms, evaluation points) counted straight from forecast_history."""
    n = fa = 0
    for f in fc.forecast_history(run.records, method=method, **run.kwargs()):
        if f.step is None or run.t_fit is None or f.step < run.t_fit or f.step > until:
            continue
        n += 1
        fa += f.status == "ok" and f.t_grok is not None and f.t_grok <= horizon
    return fa, n


def test_false_alarm_accounting_on_a_never_crossing_run_and_a_truncated_one(sweep: Path
                                                                            ) -> None:
    ev = fc.evaluate([sweep])
    never, grok = fc.load_run(sweep / "never"), fc.load_run(sweep / "grok")
    assert never.t_grok is None and grok.t_grok is not None
    for row in ev.summary:
        m = row["method"]
        fa, n = expected_false_alarms(never, m, never.horizon, math.inf)
        assert n > 0
        assert row["never_runs"] == 1
        assert row["never_fa_per_forecast"] == pytest.approx(fa / n)
        assert row["never_fa_per_run"] == float(fa > 0)
        cut = 0.5 * grok.t_grok
        fa_t, n_t = expected_false_alarms(grok, m, cut, cut)
        assert row["truncated_runs"] == (1 if n_t else 0)
        if n_t:
            assert row["truncated_fa_per_forecast"] == pytest.approx(fa_t / n_t)
    inv = next(r for r in ev.summary if r["method"] == "inverse_wd")
    assert inv["never_fa_per_run"] == 1.0  # c / lambda = 26.6k falls inside the 60k horizon


def test_an_unfinished_run_that_has_not_grokked_enters_no_rate(sweep: Path) -> None:
    """Still running: it may grok later, so its points are "incomplete", not false alarms."""
    (sweep / "never" / "summary.json").write_text(json.dumps({"status": "running"}))
    ev = fc.evaluate([sweep])
    assert {p["kind"] for p in ev.points if p["run"] == "held/never"} == {"incomplete"}
    assert all(row["never_runs"] == 0 for row in ev.summary)


def test_calibration_runs_are_refused_or_warned_about(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    calib_runs(tmp_path)
    with pytest.raises(fc.ForecastError, match=r"6 run\(s\) were used for calibration "
                                                r"\(calib/wd0.01-seed0, .*allow_calibration_runs"):
        fc.evaluate([tmp_path / "calib"])
    ev = fc.evaluate([tmp_path / "calib" / "wd0.1-seed0"], allow_calibration_runs=True)
    err = capsys.readouterr().err
    assert "WARNING: 1 run(s) were used for calibration (calib/wd0.1-seed0)" in err
    assert ev.runs[0]["calibration_run"] is True


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown forecast method 'oracle'"):
        fc.evaluate([tmp_path], methods=("oracle",))
    with pytest.raises(ValueError, match=r"truncate_fraction=1.5: expected a number in"):
        fc.evaluate([tmp_path], truncate_fraction=1.5)
    with pytest.raises(ValueError, match=r"holds no runs"):
        fc.evaluate([tmp_path])


def test_cli_writes_table_json_csv_and_figure(sweep: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["forecast-eval", str(sweep), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| method | lead | median_error |" in printed
    for name in ("forecast_eval.md", "forecast_eval.json", "forecast_eval.csv",
                 "forecast_eval_points.csv", "forecast_eval.png"):
        assert (out / name).stat().st_size > 0, name
    data: dict[str, Any] = json.loads((out / "forecast_eval.json").read_text())
    assert len(data["table"]) == len(fc.METHODS) * len(fc.LEAD_BINS)
    assert (out / "forecast_eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_bad_directory_exits_2_with_one_line(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["forecast-eval", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("latephase: error: ")
    assert "missing" in err and "not a directory" in err
