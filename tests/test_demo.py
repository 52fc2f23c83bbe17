"""End to end: the `demo` preset reproduces the paper's grokking gap on the embedded MNIST.

This is the acceptance check of `make run`: it trains the full demo (30,000 steps, about
two minutes on one core), so it is marked slow; CI still runs it.
"""

from __future__ import annotations

import pytest

from latephase.api import run
from latephase.config import make_config
from latephase.timescales import value_at


@pytest.mark.slow
def test_demo_groks(tmp_path) -> None:
    cfg = make_config("demo")
    run_dir, summary = run(cfg, tmp_path, "demo", progress=False)
    assert summary["status"] == "finished"
    recs = run_dir.records()
    sc, fin = summary["timescales"], summary["final"]
    # the grokking gap: the training set is fit while held-out accuracy is below 0.5
    assert any(r["train/acc"] == 1.0 and r["test/acc"] < 0.5 for r in recs)
    assert fin["test/acc"] >= 0.9
    assert sc["t_fit"] is not None and sc["t_grok"] is not None
    assert sc["t_grok"] >= 1.5 * sc["t_fit"]
    assert fin["train/rnc1_mean"] < 0.2 * sc["rnc1_at_fit"]
    # the Theorem 3.2 bound falls through grokking and is never below the held-out error
    steps = [r["step"] for r in recs]
    bound_fit = value_at(steps, [r["test/bound"] for r in recs], sc["t_fit"])
    assert fin["test/bound"] < bound_fit
    assert all(r["test/bound"] >= r["test/error"] for r in recs)
    # the directional bound: never above the trace bound, never below the split's own
    # error (a valid bound on each split's empirical distribution), non-vacuous at the end
    for split in ("train", "test"):
        assert all(r[f"{split}/bound_dir"] <= r[f"{split}/bound"] * (1 + 1e-12) for r in recs)
        assert all(r[f"{split}/bound_dir"] >= r[f"{split}/error"] for r in recs)
    assert fin["test/bound_dir"] < 1.0
    # cmi_ksg respects the data-processing inequality within noise at every point
    for r in recs:
        se = r["test/cmi_ksg/izx_se"]
        assert r["test/cmi_ksg/izx"] >= r["test/cmi_ksg/izy"] - 2 * se, r["step"]
        assert r["test/cmi_ksg/izx"] >= -2 * se, r["step"]
    # information-bottleneck compression: the redundancy proxies end below their t_fit value
    for key in ("test/nhsic/redundancy", "test/kl_knn/redundancy", "test/cmi_ksg/redundancy"):
        at_fit = value_at(steps, [r[key] for r in recs], sc["t_fit"])
        assert fin[key] < at_fit, key
    names = {p.name for p in (run_dir.figures_dir).iterdir()}
    assert {"accuracy.png", "collapse.png", "nc2.png", "bound.png", "overview.png",
            "information_plane.png", "figure4.png", "figure2.png"} <= names


@pytest.mark.slow
def test_modular_addition_groks(tmp_path) -> None:
    """`latephase run --preset modular-addition` (the acceptance run of the classic task):
    train accuracy 1 early, held-out >= 0.95 at the end, t_grok >= 3 t_fit, and RNC1 falling
    with the held-out accuracy rise.  Information estimators are off to halve the time (they
    do not enter these criteria); about 3-5 minutes on one core."""
    cfg = make_config("modular-addition", overrides=["measures.information=[]"])
    run_dir, summary = run(cfg, tmp_path, "modular", progress=False, figures=False)
    assert summary["status"] == "finished"
    recs = run_dir.records()
    sc, fin = summary["timescales"], summary["final"]
    assert sc["t_fit"] is not None and sc["t_fit"] < 0.1 * cfg.train.steps  # fit early
    assert fin["test/acc"] >= 0.95 and fin["train/acc"] == 1.0
    assert sc["t_grok"] is not None and sc["t_grok"] >= 3 * sc["t_fit"]
    steps = [r["step"] for r in recs]
    # RNC1 (train and held-out) falls while the held-out accuracy rises: between the last
    # point with held-out accuracy <= 0.1 after t_fit and the end, both fall by >= 5x
    start = max(r["step"] for r in recs if r["test/acc"] <= 0.1)
    assert start > sc["t_fit"]
    for key in ("train/rnc1_mean", "test/rnc1_mean"):
        assert fin[key] < 0.2 * value_at(steps, [r[key] for r in recs], start), key
