"""The grokking forecaster (latephase.forecast): synthetic trajectories with a known answer,
a recorded run (a fixture cut from the calib sweep), guards and options."""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from latephase import forecast as fc
from latephase.config import TimescaleConfig
from latephase.keys import record_key
from latephase.timescales import compute_timescales

FIXTURE = Path(__file__).parent / "data" / "forecast" / "calib_records.json.gz"
RNC1 = record_key("train", "rnc1_mean")
FIT, GROK = record_key("train", "acc"), record_key("test", "acc")

# synthetic run: fit at T_FIT, then log RNC1 = log R0 - K (s - T_FIT) + N(0, SIGMA^2)
T_FIT, DS, R0, K, SIGMA = 2000.0, 100.0, 0.3, 1e-4, 0.02
LEVEL = 0.3  # absolute target level as a fraction of R0: truth t* = T_FIT + log(1/LEVEL) / K
T_STAR = T_FIT + math.log(1 / LEVEL) / K


def synthetic(seed: int, k: float = K, sigma: float = SIGMA, steps: float = 20000.0,
              ) -> list[dict[str, Any]]:
    """Records of a run that fits at T_FIT and never crosses the held-out threshold (so
    every post-fit step gets a forecast; the truth is the analytic crossing T_STAR)."""
    rng = np.random.default_rng(seed)
    recs = []
    for s in np.arange(0.0, steps + DS / 2, DS):
        log_r = math.log(R0) - k * max(s - T_FIT, 0.0) + sigma * rng.standard_normal()
        recs.append({"step": int(s), FIT: 0.5 if s < T_FIT else 1.0, GROK: 0.2,
                     RNC1: math.exp(log_r)})
    return recs


def options(**kw: Any) -> fc.ForecastOptions:
    """Absolute level at LEVEL * R0, no level spread: the interval is the fit's only."""
    base = dict(signal="train_rnc1", model="exp", level_mode="absolute", window=16,
                handoff="none",
                level=LEVEL * R0, level_lo=LEVEL * R0, level_hi=LEVEL * R0, confidence=0.9)
    return fc.ForecastOptions(**{**base, **kw})


def forecast_at(recs: list[dict[str, Any]], t: float, opt: fc.ForecastOptions) -> fc.Forecast:
    return fc.forecast([r for r in recs if r["step"] <= t], opt)


# ---------------------------------------------------------------- synthetic, known answer
LEADS = (0.75, 0.5, 0.25)  # (T_STAR - t) / T_STAR; all after T_FIT + window * DS


def test_error_shrinks_with_lead_time_and_interval_covers_at_nominal_rate() -> None:
    """400 noise seeds: the median relative error falls with the lead time, and the 90 %
    Fieller interval covers T_STAR in 90 % of seeds at each lead.  The Fieller set is exact
    for a straight line with Gaussian noise, so the only slack is binomial: sd =
    sqrt(0.9 * 0.1 / 400) = 0.015; tolerance 0.05 (3.3 sd)."""
    opt = options()
    n = 400
    errs = {lead: [] for lead in LEADS}
    cover = {lead: 0 for lead in LEADS}
    for seed in range(n):
        recs = synthetic(seed)
        for lead in LEADS:
            t = DS * math.floor(T_STAR * (1 - lead) / DS)
            f = forecast_at(recs, t, opt)
            assert f.status == "ok", f.reason
            errs[lead].append(abs(f.t_grok - T_STAR) / T_STAR)
            cover[lead] += f.t_grok_lo <= T_STAR <= f.t_grok_hi
    med = [float(np.median(errs[lead])) for lead in LEADS]
    assert med[0] > med[1] > med[2], med
    for lead in LEADS:
        assert abs(cover[lead] / n - 0.9) < 0.05, (lead, cover[lead] / n)


def test_interval_matches_brute_force_fieller_set() -> None:
    """The interval is the set of x where |a + b u - y| <= q sqrt(var_a + u^2 var_b), found
    here by scanning a fine grid with an independent OLS (np.polyfit) and scipy's t
    quantile; the ends agree to the grid spacing (1 step)."""
    from scipy.stats import t as student_t

    recs = synthetic(7)
    now = 6000.0
    opt = options()
    f = forecast_at(recs, now, opt)
    post = [r for r in recs if T_FIT <= r["step"] <= now][-opt.window:]
    x = np.array([r["step"] for r in post], float)
    y = np.log([r[RNC1] for r in post])
    b, a0 = np.polyfit(x, y, 1)
    resid = y - (a0 + b * x)
    s2 = resid @ resid / (len(x) - 2)
    xbar = x.mean()
    q = student_t.ppf(0.95, len(x) - 2)
    grid = np.arange(now, 40000.0, 1.0)
    u = grid - xbar
    pred = a0 + b * grid
    inside = np.abs(pred - math.log(LEVEL * R0)) <= q * np.sqrt(
        s2 / len(x) + u**2 * s2 / ((x - xbar) @ (x - xbar)))
    assert abs(f.t_grok_lo - grid[inside].min()) <= 1.0
    assert abs(f.t_grok_hi - grid[inside].max()) <= 1.0
    assert f.t_grok == pytest.approx((math.log(LEVEL * R0) - a0) / b, rel=1e-9)


def test_level_spread_widens_the_interval_to_both_levels() -> None:
    """level_lo / level_hi: the interval runs from the lower Fieller end at the higher level
    (reached first) to the upper end at the lower level, each computed on its own."""
    recs = synthetic(3)
    narrow = forecast_at(recs, 6000, options())
    wide = forecast_at(recs, 6000, options(level_lo=0.2 * R0, level_hi=0.4 * R0))
    at_hi = forecast_at(recs, 6000, options(level=0.4 * R0, level_lo=0.4 * R0,
                                            level_hi=0.4 * R0))
    at_lo = forecast_at(recs, 6000, options(level=0.2 * R0, level_lo=0.2 * R0,
                                            level_hi=0.2 * R0))
    assert wide.t_grok == pytest.approx(narrow.t_grok, rel=1e-12)
    assert wide.t_grok_lo == pytest.approx(at_hi.t_grok_lo, rel=1e-12)
    assert wide.t_grok_hi == pytest.approx(at_lo.t_grok_hi, rel=1e-12)
    assert wide.t_grok_lo < narrow.t_grok_lo < narrow.t_grok_hi < wide.t_grok_hi


def test_curve_that_never_crosses_gives_no_forecast_inside_the_horizon() -> None:
    """A constant signal: never a forecast (not_yet at every step).  A flat noisy signal: a
    falling slope is significant only by chance, in (1 - confidence) / 2 = 5 % of the
    forecasts (one side of the t test), so at most that fraction may forecast a crossing
    inside the horizon (20k steps); 40 seeds x 150 steps, the forecasts of one run are
    correlated (overlapping windows), so the tolerance is 3 points: < 8 %."""
    flat = [{**r, RNC1: R0} for r in synthetic(0)]
    assert {f.status for f in fc.forecast_history(flat, options())} == {"not_yet"}
    inside = n = 0
    for seed in range(40):
        hist = fc.forecast_history(synthetic(seed, k=0.0, steps=17000), options())
        post = [f for f in hist if f.step is not None and f.step >= T_FIT]
        n += len(post)
        inside += sum(f.status == "ok" and f.t_grok is not None and f.t_grok <= 20000
                      for f in post)
    assert inside / n < 0.08


def test_before_t_fit_is_not_yet_and_after_the_crossing_is_grokked() -> None:
    recs = synthetic(0)
    early = fc.forecast([r for r in recs if r["step"] < T_FIT], options())
    assert (early.status, early.t_grok) == ("not_yet", None)
    assert "not fit" in early.reason
    few = fc.forecast([r for r in recs if r["step"] <= T_FIT + 2 * DS], options())
    assert few.status == "not_yet" and "min_points" in few.reason
    grokked = [{**r, GROK: 0.9 if r["step"] >= 7050 else 0.2} for r in recs]
    grokked[71][GROK] = 0.7  # step 7100: the crossing is interpolated in (7100, 7200)
    f = fc.forecast(grokked, options())
    truth = compute_timescales(grokked, TimescaleConfig())["t_grok"]
    assert f.status == "grokked" and f.t_grok == f.t_grok_lo == f.t_grok_hi == truth
    assert fc.forecast([], options()).status == "not_yet"


def test_nan_none_and_missing_values_are_skipped() -> None:
    """Records with NaN, None, a string or a missing key give the forecast of the records
    without those values (to float rounding)."""
    recs = synthetic(1)[:61]
    clean = fc.forecast(recs, options())
    dirty = [dict(r) for r in recs]
    for i, bad in zip((40, 45, 50, 55), (math.nan, None, "x", ...), strict=True):
        if bad is ...:
            del dirty[i][RNC1]
        else:
            dirty[i][RNC1] = bad
    dropped = [r for i, r in enumerate(recs) if i not in (40, 45, 50, 55)]
    dirty.insert(10, {"step": None, RNC1: 1.0})
    assert fc.forecast(dirty, options()) == fc.forecast(dropped, options())
    assert clean.status == "ok"


def test_t_collapse_forecast_is_the_relative_crossing() -> None:
    """t_collapse: train RNC1 at collapse_fraction x its value at t_fit; noise-free truth
    T_FIT + log(2) / K; observed once crossed."""
    recs = synthetic(0, sigma=1e-6)
    f = forecast_at(recs, 5000, options())
    assert f.t_collapse == pytest.approx(T_FIT + math.log(2) / K, rel=1e-4)
    assert f.t_collapse_lo <= f.t_collapse <= f.t_collapse_hi
    late = forecast_at(recs, 12000, options())
    truth = compute_timescales(recs[:121], TimescaleConfig())["t_collapse"]
    assert late.t_collapse == late.t_collapse_lo == truth


# ---------------------------------------------------------------- baselines
def test_accuracy_extrapolation_recovers_a_logistic_curve() -> None:
    """logit(acc) exactly linear in log step: the baseline's crossing is exact."""
    a, b = -30.0, 3.0  # logit(acc) = a + b log s
    recs = [{"step": s, FIT: 1.0, GROK: 1 / (1 + math.exp(-(a + b * math.log(s))))}
            for s in range(1000, 20000, 200)]
    truth = math.exp((math.log(0.8 / 0.2) - a) / b)
    f = fc.accuracy_extrapolation([r for r in recs if r["step"] < 0.6 * truth], options())
    assert f.status == "ok"
    assert f.t_grok == pytest.approx(truth, rel=1e-9)


def test_handoff_reports_the_accuracy_forecast_once_it_has_one(tmp_path: Path) -> None:
    """handoff="accuracy": at each step of a recorded run the forecast is the accuracy
    baseline's when that is ok and held-out accuracy >= handoff_fraction x grok_threshold
    (reason says so), else the collapse fit's; collapse_fit is the forecast with
    handoff="none"; t_collapse always the collapse fit's."""
    run = fc.load_run([d for d in calib_runs(tmp_path) if d.name == "wd0.01-seed1"][0])
    opt = fc.ForecastOptions()
    gate = opt.handoff_fraction * run.grok_threshold
    both = zip(run.records, fc.forecast_history(run.records, opt),
               fc.forecast_history(run.records, opt, method="accuracy"),
               fc.forecast_history(run.records, opt, method="collapse_fit"), strict=True)
    kinds = set()
    for rec, f, acc, fit in both:
        assert f.t_collapse == fit.t_collapse
        if f.status == "grokked":
            continue
        if acc.status == "ok" and rec[GROK] >= gate:
            assert (f.t_grok, f.t_grok_lo, f.t_grok_hi) == (acc.t_grok, acc.t_grok_lo,
                                                            acc.t_grok_hi)
            assert f.reason == "handoff to accuracy"
            kinds.add("handoff")
        else:
            assert (f.status, f.t_grok, f.t_grok_hi) == (fit.status, fit.t_grok, fit.t_grok_hi)
            kinds.add(fit.status + (" while accuracy ok" if acc.status == "ok" else ""))
    assert kinds == {"handoff", "ok", "not_yet", "ok while accuracy ok"}


def test_inverse_wd_is_c_over_lambda() -> None:
    recs = synthetic(0)[:50]
    opt = options(inverse_wd_c=1234.0)
    assert fc.inverse_wd(recs, opt, weight_decay=0.1).t_grok == pytest.approx(12340.0)
    assert fc.inverse_wd(recs, opt, weight_decay=0.0).status == "never"
    with pytest.raises(ValueError, match="weight_decay=None"):
        fc.inverse_wd(recs, opt)


# ---------------------------------------------------------------- options
@pytest.mark.parametrize(("kw", "match"), [
    ({"signal": "loss"}, r"signal.*'loss'.*heldout_nc1"),
    ({"model": "cubic"}, r"model.*'cubic'.*exp, power"),
    ({"level_mode": "both"}, r"level_mode.*'both'"),
    ({"handoff": "oracle"}, r"handoff.*'oracle'.*accuracy, none"),
    ({"handoff_fraction": 1.0}, r"handoff_fraction=1.0: expected a number in \[0, 1\)"),
    ({"window": 2}, r"window=2: expected an integer >= 3"),
    ({"window": 4, "min_points": 5}, r"window=4: expected >= min_points \(5\)"),
    ({"level": -1.0}, r"level=-1.0: expected a finite number > 0"),
    ({"level": 0.95}, r"level=0.95: expected level_lo"),
    ({"confidence": 1.0}, r"confidence=1.0: expected a number in \(0, 1\)"),
    ({"max_ratio": 1}, r"max_ratio=1: expected a number > 1"),
    ({"acc_window": 3.5}, r"acc_window=3.5"),
])
def test_bad_options_give_one_line_value_error(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        fc.forecast(synthetic(0)[:30], dataclasses.replace(fc.ForecastOptions(), **kw))
    assert "\n" not in str(info.value)


def test_bad_threshold_and_method() -> None:
    with pytest.raises(ValueError, match=r"grok_threshold=1.5: expected a number in \(0, 1\]"):
        fc.forecast(synthetic(0)[:30], grok_threshold=1.5)
    with pytest.raises(ValueError, match=r"unknown forecast method 'oracle'.*accuracy"):
        fc.forecast_history(synthetic(0)[:30], method="oracle")


def test_options_are_plain_scalars_with_docs() -> None:
    """Mirrored as config keys forecast.<name>: every field a str/int/float with a doc."""
    for f in dataclasses.fields(fc.ForecastOptions):
        assert isinstance(f.default, str | int | float), f.name
        assert f.metadata.get("doc"), f.name


# ---------------------------------------------------------------- recorded runs
def calib_runs(tmp: Path) -> list[Path]:
    """The calib fixture written back as run directories (config.json + metrics.jsonl)."""
    data = json.loads(gzip.decompress(FIXTURE.read_bytes()))
    out = []
    for name, run in data.items():
        d = tmp / "calib" / name
        d.mkdir(parents=True)
        (d / "config.json").write_text(json.dumps(run["info"]))
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in run["records"]))
        out.append(d)
    return out


def test_recorded_run_forecast_equals_an_independent_fit(tmp_path: Path) -> None:
    """wd 0.1 seed 0 of calib at the step nearest lead 0.25: the point forecast is the
    crossing of an independent np.polyfit line through the last `window` post-fit points
    of log train RNC1 at level * RNC1(t_fit) (rel 1e-9: float64 arithmetic on ~16 points);
    the observed t_grok after the crossing equals compute_timescales'."""
    run = fc.load_run([d for d in calib_runs(tmp_path) if d.name == "wd0.1-seed0"][0])
    opt = dataclasses.replace(fc.ForecastOptions(), handoff="none")
    ts = compute_timescales(run.records, TimescaleConfig())
    assert (run.t_fit, run.t_grok) == (ts["t_fit"], ts["t_grok"])
    t = max(r["step"] for r in run.records if r["step"] <= 0.75 * run.t_grok)
    recs = [r for r in run.records if r["step"] <= t]
    f = fc.forecast(recs, opt)
    assert f.status == "ok"
    post = [r for r in recs if r["step"] >= run.t_fit][-opt.window:]
    b, a = np.polyfit([r["step"] for r in post], np.log([r[RNC1] for r in post]), 1)
    target = math.log(opt.level * ts["rnc1_at_fit"])
    assert f.t_grok == pytest.approx((target - a) / b, rel=1e-9)
    assert f.t_grok_lo <= f.t_grok <= f.t_grok_hi
    assert fc.forecast(run.records, opt).t_grok == ts["t_grok"]


@pytest.mark.slow
def test_defaults_are_calibrate_on_calib(tmp_path: Path) -> None:
    """ForecastOptions' defaults are exactly what calibrate returns on the calib sweep (the
    fixture holds its records at full precision and its whole config.json)."""
    assert fc.calibrate([tmp_path / "calib"] if calib_runs(tmp_path) else []) == \
        fc.ForecastOptions()


def test_t_quantile_equals_scipy_stats_and_imports_no_scipy_stats() -> None:
    """The interval's Student-t quantile (scipy.special.stdtrit) is scipy.stats.t.ppf exactly,
    and computing it loads no scipy.stats (whose import costs a run ~34 MB resident)."""
    import subprocess
    import sys

    from scipy.stats import t as student_t

    for dof in (1, 2, 3, 7, 30, 199, 1000):
        for conf in (0.5, 0.8, 0.9, 0.95, 0.99):
            fc._t_quantile.cache_clear()
            assert fc._t_quantile(dof, conf) == float(student_t.ppf(0.5 + conf / 2.0, dof))
    code = ("import sys\nfrom latephase import forecast as fc\n"
            "q = fc._t_quantile(5, 0.95)\nprint('scipy.stats' in sys.modules, round(q, 4))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "2.5706"]
