"""Time scales: first crossings interpolated on the log-step axis."""

from __future__ import annotations

import math

import pytest

from latephase.config import TimescaleConfig
from latephase.timescales import compute_timescales, first_crossing, value_at


def test_crossing_is_interpolated_in_log_step() -> None:
    # 0.5 at step 100, 1.0 at step 10000: 0.75 is crossed halfway in log10 -> step 1000
    t = first_crossing([1, 100, 10_000], [0.0, 0.5, 1.0], 0.75)
    assert t == pytest.approx(1000.0)
    # exactly on a point -> that step
    assert first_crossing([1, 10, 100], [0.1, 0.8, 0.9], 0.8) == 10
    # never reached -> None; first point already above -> the first step
    assert first_crossing([1, 10], [0.1, 0.2], 0.8) is None
    assert first_crossing([5, 10], [0.9, 0.95], 0.8) == 5


def test_crossing_from_step_zero_is_linear() -> None:
    assert first_crossing([0, 10], [0.0, 1.0], 0.5) == pytest.approx(5.0)


def test_falling_crossing_after_start() -> None:
    steps = [1, 10, 100, 1000]
    vals = [0.1, 1.0, 1.0, 0.25]  # dips below 0.5 before the start: ignored
    # from start=10 the value falls from 1.0 (step 100) to 0.25 (1000): 0.5 at 2/3 of a decade
    t = first_crossing(steps, vals, 0.5, rising=False, start=10)
    assert t == pytest.approx(10 ** (2 + 2 / 3))


def test_value_at() -> None:
    assert value_at([10, 1000], [0.0, 2.0], 100) == pytest.approx(1.0)
    assert math.isnan(value_at([10, 1000], [0.0, 2.0], 5000))


def test_compute_timescales_on_synthetic_run() -> None:
    steps = [0, 10, 100, 1000, 10_000, 100_000]
    train = [0.1, 0.5, 0.99, 1.0, 1.0, 1.0]
    test = [0.1, 0.2, 0.3, 0.4, 0.8, 0.95]
    rnc1 = [0.3, 0.3, 0.4, 0.4, 0.2, 0.1]
    recs = [{"step": s, "train/acc": a, "test/acc": b, "train/rnc1_mean": r}
            for s, a, b, r in zip(steps, train, test, rnc1, strict=True)]
    out = compute_timescales(recs, TimescaleConfig())
    assert out["t_fit"] == 100 and out["t_grok"] == 10_000
    assert out["rnc1_at_fit"] == pytest.approx(0.4)
    assert out["t_collapse"] == 10_000  # 0.2 = 0.5 x 0.4 is reached exactly at 10k
    assert out["thresholds"]["grok"] == {"key": "test/acc", "threshold": 0.8}
    # a threshold that is never reached gives None, and t_collapse needs t_fit
    out = compute_timescales(recs, TimescaleConfig(fit_threshold=1.0, grok_threshold=0.99))
    assert out["t_grok"] is None and out["t_fit"] == 1000


def test_compute_timescales_with_other_split_names() -> None:
    """Renaming the splits (train -> fit, test -> val) renames the curves and nothing else."""
    steps = [0, 10, 100, 1000, 10_000]
    vals = {"acc_tr": [0.1, 0.5, 0.99, 1.0, 1.0], "acc_te": [0.1, 0.2, 0.3, 0.6, 0.9],
            "rnc1": [0.3, 0.3, 0.4, 0.3, 0.1]}

    def records(train: str, held: str) -> list[dict[str, float]]:
        return [{"step": s, f"{train}/acc": a, f"{held}/acc": b, f"{train}/rnc1_mean": r}
                for s, a, b, r in zip(steps, vals["acc_tr"], vals["acc_te"], vals["rnc1"],
                                      strict=True)]

    cfg = TimescaleConfig()
    want = compute_timescales(records("train", "test"), cfg)
    got = compute_timescales(records("fit", "val"), cfg, train_split="fit", heldout_split="val")
    assert want["t_fit"] == 100 and want["t_grok"] is not None and want["t_collapse"] is not None
    for key in ("t_fit", "t_grok", "t_collapse", "rnc1_at_fit"):
        assert got[key] == want[key], key
    assert got["thresholds"]["fit"]["key"] == "fit/acc"
    assert got["thresholds"]["grok"]["key"] == "val/acc"
    assert got["thresholds"]["collapse"]["key"] == "fit/rnc1_mean"  # follows train_split
    # the default names read nothing of a renamed run (no silent mix-up)
    blind = compute_timescales(records("fit", "val"), cfg)
    assert blind["t_fit"] is None and blind["t_grok"] is None
    # no held-out split: t_grok is None, the others stand
    alone = compute_timescales(records("fit", "val"), cfg, train_split="fit", heldout_split=None)
    assert alone["t_grok"] is None and alone["thresholds"]["grok"]["key"] is None
    assert alone["t_fit"] == want["t_fit"] and alone["t_collapse"] == want["t_collapse"]
    # an explicit rnc1_key (a full key, as latephase run passes it) is used as given
    maxed = compute_timescales([{**r, "fit/rnc1_max": r["fit/rnc1_mean"]}
                                for r in records("fit", "val")], cfg, "fit/rnc1_max",
                               train_split="fit", heldout_split="val")
    assert maxed["t_collapse"] == want["t_collapse"]
    assert maxed["thresholds"]["collapse"]["key"] == "fit/rnc1_max"
