"""Tests of latephase.report on synthetic run directories written here in the run-directory
format (config.json, metrics.jsonl, margins.jsonl, summary.json): split names that are not
train/test (two and three splits), the margin reader (sidecar first, metrics list values
second), Figure 2's step choice, the bound figure's honesty (line at 1, axis label), the
information figures (trusted estimator by default, null bands, negative estimates marked),
no panel letters on standalone figures, and the summary table's bound_dir row.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import latephase.report as report
from latephase.report.common import Context, find_splits
from latephase.report.margins import choose_steps, margin_records

STEPS = [0, 1, 3, 10, 30, 100, 300, 1000, 3000, 8000, 12000, 16000, 20000, 25000, 30000]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def make_run(path: Path, splits: tuple[str, ...] = ("train", "test"), *,
             named: bool = True, sidecar: bool = True, info: bool = True,
             kl_negative: bool = True) -> Path:
    """A grokking-shaped synthetic run: the first split fits at ~5k, the others at ~15k."""
    path.mkdir(parents=True)
    rng = np.random.default_rng(0)
    s = np.asarray(STEPS, dtype=float)
    ls = np.log10(np.maximum(s, 1.0))
    cfg: dict[str, Any] = {"config": None, "environment": {}}
    if named:
        cfg["tracker"] = {"splits": list(splits), "train_split": splits[0],
                          "heldout_split": splits[1], "margin_pair": [0, 1]}
    (path / "config.json").write_text(json.dumps(cfg))
    recs, margins = [], []
    for i, step in enumerate(STEPS):
        rec: dict[str, Any] = {"step": step}
        mrec: dict[str, Any] = {"step": step}
        for j, split in enumerate(splits):
            centre = 3.7 if j == 0 else 4.2
            acc = 0.1 + 0.9 * float(_sigmoid(6 * (ls[i] - centre)))
            err = 1 - acc
            rnc1 = 0.3 * float(_sigmoid(-4 * (ls[i] - 4.2))) + 0.01 * (j + 1)
            rec.update({f"{split}/acc": acc, f"{split}/error": err,
                        f"{split}/rnc1_mean": rnc1, f"{split}/rnc1_max": rnc1 / 3,
                        f"{split}/nc1": 3 * rnc1, f"{split}/nc2": 1 + 10 * rnc1,
                        f"{split}/bound": 9.0 * rnc1 / 0.3 + err,
                        f"{split}/bound_dir": 2.0 * rnc1 / 0.3 + err})
            spread = 0.2 + 3 * rnc1 / (1 if j == 0 else 0.5)
            if step > 0:
                ma = list(2.0 + spread * rng.normal(size=30))
                mb = list(-2.0 + spread * rng.normal(size=30))
                (mrec if sidecar else rec).update({f"{split}/margins_a": ma,
                                                   f"{split}/margins_b": mb})
        if info:
            held = splits[1]
            izy = 2.0 * (1 - math.exp(-step / 3000))
            red = 0.8 * float(_sigmoid(-3 * (ls[i] - 4.1)))
            for name in ("cmi_ksg", "kl_knn"):
                pre = f"{held}/{name}/"
                r = red if name == "cmi_ksg" else red - (2.5 if kl_negative and step > 1e4 else 0)
                rec.update({pre + "izy": izy, pre + "izy_se": 0.03, pre + "redundancy": r,
                            pre + "redundancy_se": 0.04, pre + "izx": izy + r,
                            pre + "izx_se": 0.05, pre + "izx_null": 0.01 * rng.normal(),
                            pre + "izy_null": 0.01 * rng.normal()})
                if name == "cmi_ksg":
                    rec[pre + "redundancy_null"] = 0.005 * rng.normal()
            rec.update({f"{held}/nhsic/nhsic_zx": 5 + red, f"{held}/nhsic/nhsic_zy": 5.0,
                        f"{held}/nhsic/redundancy": red, f"{held}/nhsic/nhsic_zx_null": 0.5,
                        f"{held}/nhsic/nhsic_zy_null": 0.4})
        recs.append(rec)
        margins.append(mrec)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    if sidecar:
        (path / "margins.jsonl").write_text("".join(json.dumps(r) + "\n" for r in margins
                                                   if len(r) > 1))
    tr, held = splits[0], splits[1]
    summary = {"status": "finished", "step": STEPS[-1], "wall_time_s": 1.5, "final": recs[-1],
               "timescales": {"t_fit": 9000.0, "t_grok": 17000.0, "t_collapse": 20000.0,
                              "rnc1_at_fit": 0.2, "thresholds": {
                                  "fit": {"key": f"{tr}/acc", "threshold": 0.99},
                                  "grok": {"key": f"{held}/acc", "threshold": 0.8},
                                  "collapse": {"key": f"{tr}/rnc1_mean",
                                               "fraction_of_value_at_t_fit": 0.5}}}}
    (path / "summary.json").write_text(json.dumps(summary))
    return path


def _figures(written: list[Path]) -> set[str]:
    return {p.name for p in written}


EXPECTED = {"accuracy.png", "collapse.png", "nc2.png", "bound.png", "overview.png",
            "figure2.png", "information_plane.png", "figure4.png"}


# --------------------------------------------------------------------------------------------
# split names


@pytest.mark.parametrize(("splits", "named"), [
    (("train", "val"), True), (("train", "val", "test"), True), (("fit", "holdout"), False),
])
def test_report_works_with_any_split_names(tmp_path, splits, named):
    run = make_run(tmp_path / "run", splits, named=named)
    written = report.write_figures(run)
    assert EXPECTED <= _figures(written)
    assert all(p.stat().st_size > 5000 for p in written)  # drawn, not empty canvases


def test_find_splits_rules():
    cols = ["step", "train/acc", "val/acc", "test/acc", "train/nc1"]
    assert find_splits({}, cols) == report.Splits("train", "test", ("val",))
    named = {"tracker": {"train_split": "train", "heldout_split": "val"}}
    assert find_splits(named, cols) == report.Splits("train", "val", ("test",))
    # named splits missing from the metrics are ignored, the columns decide
    assert find_splits({"tracker": {"heldout_split": "dev"}}, ["a/acc", "b/acc"]) == \
        report.Splits("a", "b", ())
    assert find_splits({}, ["x/acc", "holdout/acc"]) == report.Splits("x", "holdout", ())
    assert find_splits({}, ["step"]) == report.Splits(None, None, ())
    assert find_splits({"tracker": "junk"}, ["train/acc"]) == report.Splits("train", None, ())


def test_labels_name_the_held_out_split():
    sp = report.Splits("train", "val", ("test",))
    assert sp.label("val") == "held-out (val)" and sp.label("test") == "test"
    assert report.Splits("train", "test").label("test") == "held-out"


# --------------------------------------------------------------------------------------------
# margins and Figure 2


@pytest.mark.parametrize("sidecar", [True, False])
def test_margin_records_reads_sidecar_then_metrics(tmp_path, sidecar):
    run = make_run(tmp_path / "run", sidecar=sidecar)
    recs = margin_records(run)
    assert [r["step"] for r in recs] == [s for s in STEPS if s > 0]
    assert set(recs[0]) == {"step", "train/margins_a", "train/margins_b", "test/margins_a",
                            "test/margins_b"}
    assert len(recs[0]["train/margins_a"]) == 30


def test_margin_records_prefers_sidecar_and_skips_torn_line(tmp_path):
    run = make_run(tmp_path / "run", sidecar=True)
    with (run / "margins.jsonl").open("a") as fh:
        fh.write('{"step": 99999, "train/margins_a": [1.0, ')  # torn last line
    recs = margin_records(run)
    assert recs[-1]["step"] == STEPS[-1]
    assert margin_records(tmp_path / "nowhere") == []


def test_choose_steps():
    avail = [10, 100, 9000, 12000, 30000]
    # default: first evaluation at or after t_fit, and the last
    assert choose_steps(avail, {"t_fit": 8500.0}) == [(9000, "first evaluation after t_fit"),
                                                      (30000, "last evaluation")]
    first, last = choose_steps(avail, {"t_fit": None})
    assert first[0] == 10 and "not reached" in first[1] and last[0] == 30000
    # requested steps map to the nearest recorded, and say so
    assert choose_steps(avail, {}, steps=[12000, 20000]) == [
        (12000, ""), (12000, "nearest recorded to 20,000")]
    assert choose_steps(avail, {"t_fit": 1e9}) == [(30000, "")]
    assert choose_steps([], {}) == []


def test_figure2_panels_and_steps(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    run = make_run(tmp_path / "run", ("train", "val", "test"))
    ctx = report.context(run)
    assert ctx is not None
    fig = report.figure2(margin_records(run), ctx, steps=[100, 16000, 30000])
    axes = fig.axes
    assert len(axes) == 3
    assert [ax.get_title().split("\n")[0] for ax in axes] == ["step 100", "step 16,000",
                                                             "step 30,000"]
    labels = [t.get_text() for t in axes[0].get_xticklabels()]
    assert labels == ["train\n(n = 30, 30)", "held-out (val)\n(n = 30, 30)",
                      "test\n(n = 30, 30)"]
    assert [t.get_text() for t in axes[0].get_legend().get_texts()] == ["class 0", "class 1"]
    assert len(axes[0].collections) >= 6  # one violin body per (split, class) at least
    # defaults: first evaluation after t_fit = 9000 -> 12000, and the last
    fig = report.figure2(margin_records(run), ctx)
    assert [ax.get_title().split(" (")[0] for ax in fig.axes] == ["step 12,000", "step 30,000"]


def test_figure2_survives_constant_and_empty_margins(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    run = make_run(tmp_path / "run")
    recs = [{"step": 5, "train/margins_a": [1.0, 1.0], "train/margins_b": [],
             "test/margins_a": [float("nan"), 2.0], "test/margins_b": [0.5]}]
    assert report.figure2(recs, report.context(run)) is not None
    assert report.figure2([], report.context(run)) is None


# --------------------------------------------------------------------------------------------
# the bound figure, panel letters


def _panel(ctx: Context, name: str) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    report.PANELS[name](ax, ctx)
    return fig, ax


def test_bound_panel_is_honest(tmp_path):
    run = make_run(tmp_path / "run", ("train", "val"))
    ctx = report.context(run)
    fig, ax = _panel(ctx, "bound")
    assert ax.get_ylabel() == "bound on P(error) (values > 1 vacuous)"
    assert ax.get_yscale() == "log"
    labels = [line.get_label() for line in ax.get_lines()]
    for want in ("directional bound (train)", "trace bound (train)",
                 "directional bound (held-out (val))", "trace bound (held-out (val))",
                 "held-out (val) error (measured)"):
        assert want in labels, labels
    assert any(list(line.get_ydata()) == [1.0, 1.0] for line in ax.get_lines())  # the line at 1
    assert any("vacuous" in t.get_text() for t in ax.texts)
    assert ax.get_ylim()[1] >= 2.0  # the vacuous region is visible


def test_no_panel_letters_on_standalone_figures(tmp_path):
    run = make_run(tmp_path / "run")
    ctx = report.context(run)
    for name in report.PANELS:
        _, ax = _panel(ctx, name)
        assert not ax.get_title().startswith("("), (name, ax.get_title())


# --------------------------------------------------------------------------------------------
# information figures


def test_information_plane_defaults_to_trusted_estimator(tmp_path):
    run = make_run(tmp_path / "run")
    ctx = report.context(run)
    fig = report.information_plane(ctx, "test")
    titles = [ax.get_title() for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert any("cmi_ksg" in t for t in titles) and not any("kl_knn" in t for t in titles)
    ax = fig.axes[0]
    # zero lines on both axes and a null band
    assert any(list(line.get_ydata()) == [0.0, 0.0] for line in ax.get_lines())
    assert any(list(line.get_xdata()) == [0.0, 0.0] for line in ax.get_lines())
    assert any("shuffled null" in str(p.get_label()) for p in ax.patches)
    # the paper's estimator can be asked for, and its negative estimates are marked
    fig = report.information_plane(ctx, "test", estimators=["kl_knn"])
    labels = [str(c.get_label()) for c in fig.axes[0].collections]
    assert any("< 0: not information" in lab for lab in labels), labels


def test_figure4_labels_the_papers_estimator_and_marks_negatives(tmp_path):
    run = make_run(tmp_path / "run")
    ctx = report.context(run)
    fig = report.figure4(ctx, "test")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0].startswith("cmi_ksg")  # trusted first
    kl = fig.axes[[i for i, t in enumerate(titles) if t.startswith("kl_knn")][0]]
    assert "the paper's estimator" in kl.get_title()
    labels = [str(c.get_label()) for c in kl.collections]
    assert any("< 0: not information" in lab for lab in labels), labels
    assert any("shuffled null" in lab for lab in labels), labels  # the null band
    cmi = fig.axes[0]
    assert not any("< 0" in str(c.get_label()) for c in cmi.collections)  # none negative
    assert any(list(line.get_ydata()) == [0.0, 0.0] for line in cmi.get_lines())


def test_no_information_figures_without_information(tmp_path):
    run = make_run(tmp_path / "run", info=False)
    names = _figures(report.write_figures(run))
    assert "figure2.png" in names and "information_plane.png" not in names


# --------------------------------------------------------------------------------------------
# summary table


def test_summary_table_prints_both_bounds_per_split(tmp_path):
    run = make_run(tmp_path / "run", ("train", "val"))
    summary = json.loads((run / "summary.json").read_text())
    text = report.summary_table(summary)
    fin = summary["final"]
    row = [line for line in text.splitlines() if line.strip().startswith("held-out (val) error")]
    assert len(row) == 1
    assert row[0].split()[-5:] == [f"{fin['val/error']:.3g}", "/", f"{fin['val/bound']:.3g}",
                                   "/", f"{fin['val/bound_dir']:.3g}"]
    assert "train error / Thm 3.2 bound / directional bound" in text
    assert "t_grok  (held-out (val) acc" in text and "vacuous" in text


def test_summary_table_of_an_empty_summary_does_not_raise():
    text = report.summary_table({})
    assert "status" in text and "?" in text


# --------------------------------------------------------------------------------------------
# sweep figures with other split names


def test_sweep_figures_read_each_runs_split_names(tmp_path):
    from latephase.report.sweep import figure3, write_sweep_figures

    root = tmp_path / "sweep"
    rows = []
    for i, (wd, seed) in enumerate([(0.1, 0), (0.1, 1), (0.03, 0)]):
        make_run(root / f"r{i}", ("train", "val"))
        rows.append({"run": f"r{i}", "optim.weight_decay": wd, "seed": seed,
                     "status": "finished", "t_fit": 9000.0, "t_grok": 17000.0,
                     "t_collapse": 20000.0})
    (root / "sweep_summary.json").write_text(json.dumps({"runs": rows, "predictions": []}))
    assert {p.name for p in write_sweep_figures(root)} == {"figure3.png", "timescales.png"}
    fig = figure3(root, rows)
    acc, rnc1, nc2 = fig.axes[:3]
    # two weight decays: a mean line each, plus the dashed train accuracy on the first panel
    assert len(acc.get_lines()) == 4 and len(rnc1.get_lines()) == 2 == len(nc2.get_lines())
    val_final = json.loads((root / "r0" / "summary.json").read_text())["final"]["val/acc"]
    assert acc.get_lines()[0].get_ydata()[-1] == pytest.approx(val_final)


# --------------------------------------------------------------------------------------------
# end to end: a Tracker run whose held-out split is called "val", through `latephase report`


@pytest.mark.parametrize("splits", [("train", "val"), ("train", "val", "holdout")])
def test_tracker_run_with_val_split_reported_by_cli(tmp_path, capsys, splits):
    import torch
    from torch import nn

    import latephase
    from latephase.cli import main

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 3))
    x = torch.randn(100 * len(splits), 5)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    data = {s: (x[100 * i:100 * (i + 1)], y[100 * i:100 * (i + 1)]) for i, s in enumerate(splits)}
    run = tmp_path / "trk"
    tracker = latephase.Tracker(model, data, run_dir=run, information=[], heldout_split="val")
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for step in range(30):
        loss = nn.functional.cross_entropy(model(data["train"][0]), data["train"][1])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 5 == 0:
            tracker.evaluate(step)
    tracker.close()
    assert main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    assert "held-out (val) error / Thm 3.2 bound / directional bound" in out
    names = {p.name for p in (run / "figures").iterdir()}
    assert {"accuracy.png", "bound.png", "overview.png", "figure2.png"} <= names
