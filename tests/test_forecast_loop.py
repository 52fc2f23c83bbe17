"""The grokking forecast inside ``latephase run``, a resume, a sweep and the Tracker.

The forecaster itself is tested in tests/test_forecast.py; here: every record's
``forecast/*`` values equal :func:`latephase.forecast.forecast` recomputed independently on
the records before it (read back from metrics.jsonl), the summary's history matches them,
a resumed run writes the same records, and ``forecast.enabled=false`` / ``forecast=False``
leave no trace.  Values are compared exactly: the same function on the same JSON values.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from latephase.config import make_config
from latephase.errors import TrackerError
from latephase.forecast import ForecastOptions, forecast
from latephase.keys import forecast_key, parse_key, splits_of
from latephase.runs import RunDir
from latephase.tracker import Tracker
from latephase.train import train
from latephase.train.loop import forecast_eta

#: fits in ~40 steps, held-out accuracy stays below 0.85: "not_yet", then forecasts (5 s)
FITS = ["train.steps=3000", "model.widths=[32, 32]", "data.train_size=200",
        "data.test_size=300", "optim.weight_decay=0.3", "train.eval_schedule=log",
        "train.eval_points=60", "measures.information=[]", "model.init_scale=1.0",
        "optim.lr=0.003", "timescales.grok_threshold=0.85", "train.checkpoint_every_s=0"]
KEYS = [forecast_key(q) for q in ("t_grok", "t_grok_lo", "t_grok_hi")]


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def _same(a: float, b: float | None) -> bool:
    return (b is None and math.isnan(a)) or a == b


def _check_against_recomputed(path: Path, grok_threshold: float) -> list[str]:
    """Each record's forecast/* == forecast() on the records up to it; returns statuses."""
    records = _records(path)
    summary = json.loads((path / "summary.json").read_text())
    hist = summary["forecast"]["history"]
    assert hist["step"] == [r["step"] for r in records]
    for i, rec in enumerate(records):
        fc = forecast(records[:i + 1], ForecastOptions(), grok_threshold=grok_threshold)
        for key, q in zip(KEYS, ("t_grok", "t_grok_lo", "t_grok_hi"), strict=True):
            assert _same(rec[key], getattr(fc, q)), (rec["step"], key, rec[key], fc)
            assert hist[q][i] == getattr(fc, q)
        assert hist["status"][i] == fc.status
    return list(hist["status"])


def test_run_records_carry_the_forecast(tmp_path: Path) -> None:
    cfg = make_config("demo", overrides=FITS)
    train(cfg, RunDir.create(tmp_path / "r", cfg), progress=False)
    statuses = _check_against_recomputed(tmp_path / "r", 0.85)
    assert statuses[0] == "not_yet" and "ok" in statuses  # before t_fit, and a forecast after
    assert splits_of(_records(tmp_path / "r")[0]) == ["train", "test"]  # not a split


def test_resumed_run_writes_the_same_forecasts(tmp_path: Path) -> None:
    cfg = make_config("demo", overrides=FITS)
    train(cfg, RunDir.create(tmp_path / "full", cfg), progress=False)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, RunDir.create(tmp_path / "cut", cfg), progress=False, stop_after=1500)
    train(cfg, RunDir.open(tmp_path / "cut"), resume=True, progress=False)
    assert ((tmp_path / "cut" / "metrics.jsonl").read_bytes()
            == (tmp_path / "full" / "metrics.jsonl").read_bytes())
    _check_against_recomputed(tmp_path / "cut", 0.85)  # the history spans the resume


def test_forecast_disabled_leaves_no_trace(tmp_path: Path) -> None:
    cfg = make_config("demo", overrides=[*FITS, "train.steps=200", "forecast.enabled=false"])
    train(cfg, RunDir.create(tmp_path / "r", cfg), progress=False)
    assert not any(k.startswith("forecast/") for r in _records(tmp_path / "r") for k in r)
    assert "forecast" not in json.loads((tmp_path / "r" / "summary.json").read_text())


def test_non_mlp_presets_turn_it_off() -> None:
    assert make_config("demo").forecast.enabled and make_config("paper-mnist").forecast.enabled
    for name in ("paper-cnn", "paper-vit", "paper-text-trec", "paper-resnet-cifar10"):
        assert not make_config(name).forecast.enabled, name


def _tracker_setup() -> tuple[nn.Module, dict[str, Any]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    x = torch.randn(90, 6)
    y = torch.arange(90) % 3
    return model, {"train": (x[:60], y[:60]), "test": (x[60:], y[60:])}


def test_tracker_forecast(tmp_path: Path) -> None:
    model, splits = _tracker_setup()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Tracker(model, splits, information=(), forecast=True, run_dir=tmp_path / "t") as tr:
        for step in range(40):
            tr.evaluate(step)
            loss = nn.functional.cross_entropy(model(splits["train"][0]), splits["train"][1])
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert all(k in r for r in tr.records for k in KEYS)
    _check_against_recomputed(tmp_path / "t", 0.8)


def test_tracker_forecast_off_by_default_and_bad_values() -> None:
    model, splits = _tracker_setup()
    tr = Tracker(model, splits, information=())
    assert not any(k.startswith("forecast/") for k in tr.evaluate(0))
    with pytest.raises(TrackerError, match="forecast="):
        Tracker(model, splits, information=(), forecast="yes")
    with pytest.raises(TrackerError, match="'forecast'"):
        Tracker(model, {"forecast": splits["test"], "train": splits["train"]}, information=())


def test_forecast_keys_are_not_splits() -> None:
    assert parse_key(forecast_key("t_grok")) is None
    assert parse_key("test/acc") is not None


@pytest.mark.parametrize(("rec", "text"), [
    ({"step": 10_000, "forecast/t_grok": 35_210.0, "forecast/t_grok_lo": 28_000.0,
      "forecast/t_grok_hi": 41_300.0}, " | grok ~35.2k [28.0k-41.3k]"),
    ({"step": 10_000, "forecast/t_grok": 35_210.0, "forecast/t_grok_lo": math.nan,
      "forecast/t_grok_hi": math.nan}, " | grok ~35.2k"),
    ({"step": 40_000, "forecast/t_grok": 35_210.0}, " | grokked 35.2k"),
    ({"step": 10, "forecast/t_grok": math.nan}, ""),
    ({"step": 10}, ""),
])
def test_progress_eta(rec: dict[str, Any], text: str) -> None:
    assert forecast_eta(rec) == text


def test_ensemble_members_carry_the_forecast(tmp_path: Path) -> None:
    """The stacked-ensemble executor: each member's records equal the solo run's."""
    from latephase.train.ensemble import train_ensemble

    cfgs = [make_config("demo", overrides=[*FITS, "train.steps=1200", f"seed={s}"])
            for s in (0, 1)]
    train_ensemble(cfgs, [RunDir.create(tmp_path / f"m{i}", c) for i, c in enumerate(cfgs)],
                   progress=False)
    train(cfgs[1], RunDir.create(tmp_path / "solo", cfgs[1]), progress=False)
    for i in range(2):
        assert "ok" in _check_against_recomputed(tmp_path / f"m{i}", 0.85)
    solo, member = _records(tmp_path / "solo"), _records(tmp_path / "m1")
    assert [r[k] for r in solo for k in KEYS] == pytest.approx(
        [r[k] for r in member for k in KEYS], rel=1e-6, nan_ok=True)  # float32 GEMM blocking


def test_a_failing_forecaster_does_not_end_the_run(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import latephase.forecast

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ZeroDivisionError("injected")

    monkeypatch.setattr(latephase.forecast, "forecast", broken)
    cfg = make_config("demo", overrides=[*FITS, "train.steps=100"])
    with pytest.warns(RuntimeWarning, match="forecast failed.*injected"):
        summary = train(cfg, RunDir.create(tmp_path / "r", cfg), progress=False)
    assert summary["status"] == "finished"
    assert all(math.isnan(r[KEYS[0]]) for r in _records(tmp_path / "r"))
    assert set(summary["forecast"]["history"]["status"]) == {"error"}


def test_forecast_figure_draws_future_forecasts_only() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd

    from latephase.report.common import Context, Splits
    from latephase.report.forecast import forecast_figure

    nan = math.nan
    steps = [0.0, 100.0, 200.0, 300.0, 400.0]
    t = [nan, nan, 900.0, 800.0, 350.0]  # the last one is in the past (already grokked)
    df = pd.DataFrame({"step": steps, KEYS[0]: t, KEYS[1]: [nan, nan, 700.0, 700.0, 350.0],
                       KEYS[2]: [nan, nan, 1200.0, 900.0, 350.0]})
    splits = Splits("train", "test", ())
    fig = forecast_figure(Context(df, {"t_grok": 350.0, "t_fit": 150.0}, splits))
    assert fig is not None
    lines = {ln.get_label(): ln for ln in fig.axes[0].get_lines()}
    drawn = lines["forecast of t_grok"]
    assert list(drawn.get_xdata()) == [200.0, 300.0] and list(drawn.get_ydata()) == [900.0, 800.0]
    assert "t_grok reached = 350" in lines
    past = df.assign(**{KEYS[0]: [nan, nan, 150.0, 250.0, 350.0]})
    assert forecast_figure(Context(past, {}, splits)) is None
    assert forecast_figure(Context(df.drop(columns=KEYS), {}, splits)) is None


def test_config_keys_are_the_forecaster_options(tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    import dataclasses

    from latephase.cli import main
    from latephase.config import ForecastConfig
    from latephase.forecast import MODELS, SIGNALS, from_config

    cfg = make_config("demo", overrides=["forecast.window=12", "forecast.model=power"])
    opt = from_config(cfg.forecast)
    assert isinstance(opt, ForecastOptions) and (opt.window, opt.model) == (12, "power")
    assert from_config(ForecastConfig()) == ForecastOptions()  # same defaults, one definition
    docs = {f.name: f.metadata["doc"] for f in dataclasses.fields(ForecastConfig)}
    assert all(name in docs["signal"] for name in SIGNALS)
    assert all(name in docs["model"] for name in MODELS)
    for bad, said in (("forecast.window=2", "window=2"), ("forecast.signal=foo", "'foo'")):
        assert main(["run", "--preset", "demo", bad, "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and said in err
    assert not (tmp_path / "o").exists()  # refused before anything was written
