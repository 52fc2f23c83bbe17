"""Figures of a weight-decay sweep: the paper's Figure 3 and the time-scale plot."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from latephase.report.common import DPI, Splits, col, find_splits
from latephase.runs import Status, load_metrics

KEY = "optim.weight_decay"


def _runs(root: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    summary = json.loads((root / "sweep_summary.json").read_text())
    return summary, [r for r in summary["runs"] if KEY in r]


def _load(root: Path, r: dict[str, Any]) -> tuple[Any, Splits] | None:
    """A run's metrics and split names (None when it has no metrics)."""
    run = root / r["run"]
    if not (run / "metrics.jsonl").exists():
        return None
    df = load_metrics(run)
    if not len(df):
        return None
    try:
        info = json.loads((run / "config.json").read_text())
    except (OSError, ValueError):
        info = {}
    return df, find_splits(info if isinstance(info, dict) else {}, df.columns)


def figure3(root: Path, rows: list[dict[str, Any]]) -> Any:
    """Held-out accuracy (train dashed), RNC1 and NC2 against step, one colour per weight
    decay: the seed mean as a line, the seed range as a band.  Split names are read from
    each run (training split for RNC1/NC2, held-out split for accuracy)."""
    import matplotlib.pyplot as plt
    import pandas as pd

    wds = sorted({r[KEY] for r in rows}, reverse=True)
    cmap = plt.get_cmap("viridis")
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), layout="constrained")
    labels = ("held-out accuracy (train dashed)", "train RNC1 (mean-norm scale)", "train NC2")
    for i, wd in enumerate(wds):
        color = cmap(i / max(1, len(wds) - 1))
        frames = []
        for r in rows:
            loaded = _load(root, r) if r[KEY] == wd else None
            if loaded is None:
                continue
            df, sp = loaded
            tr, held = sp.train or "train", sp.heldout or sp.train or "train"
            keys = {"acc": col(held, "acc"), "rnc1": col(tr, "rnc1_mean"), "nc2": col(tr, "nc2"),
                    "train_acc": col(tr, "acc")}
            have = {k: v for k, v in keys.items() if v in df.columns}
            frames.append(df[["step", *have.values()]].rename(
                columns={v: k for k, v in have.items()}).assign(seed=r["seed"]))
        if not frames:
            continue
        d = pd.concat(frames)
        d = d[d["step"] > 0]
        for ax, key in zip(axes, ("acc", "rnc1", "nc2"), strict=True):
            if key not in d.columns:
                continue
            g = d.groupby("step")[key]
            mean, lo, hi = g.mean(), g.min(), g.max()
            ax.plot(mean.index, mean.values, color=color, label=f"wd {wd:g} (n={len(frames)})")
            ax.fill_between(mean.index, lo.values, hi.values, color=color, alpha=0.2, lw=0)
            if key == "acc" and "train_acc" in d.columns:
                tr_acc = d.groupby("step")["train_acc"].mean()
                ax.plot(tr_acc.index, tr_acc.values, color=color, ls="--", lw=1)
    for ax, label, logy in zip(axes, labels, (False, True, True), strict=True):
        ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=8, loc="upper left")
    fig.suptitle("weight-decay sweep (line: seed mean, band: seed range)")
    return fig


def timescale_plot(rows: list[dict[str, Any]], predictions: list[dict[str, Any]]) -> Any:
    """t_fit, t_grok, t_collapse against weight decay on log-log axes with fitted slopes."""
    import matplotlib.pyplot as plt
    import numpy as np

    fits = {p.get("key"): p.get("fit") for p in predictions}
    off_axis = [r for r in rows if not r[KEY] > 0]  # weight decay 0 has no place on a log axis
    rows = [r for r in rows if r[KEY] > 0]
    fig, ax = plt.subplots(figsize=(6.5, 4.6), layout="constrained")
    for key, color, marker in (("t_fit", "tab:gray", "s"), ("t_grok", "tab:green", "o"),
                               ("t_collapse", "tab:purple", "D")):
        pts = [(r[KEY], r[key]) for r in rows if r.get(key) and r["status"] == Status.FINISHED]
        if not pts:
            continue
        xs, ys = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
        fit = fits.get(key)
        label = key
        if fit and "slope" in fit:
            grid = np.geomspace(xs.min(), xs.max(), 20)
            ax.plot(grid, np.exp(fit["intercept"]) * grid ** fit["slope"], color=color, lw=1)
            ci = "" if math.isnan(fit["lo"]) else f" [{fit['lo']:+.2f}, {fit['hi']:+.2f}]"
            label = f"{key}: slope {fit['slope']:+.2f}{ci}"
        ax.scatter(xs, ys, color=color, marker=marker, label=label, zorder=3)
    if off_axis:
        grokked = sum(1 for r in off_axis if r.get("t_grok"))
        ax.text(0.01, 0.01, f"not drawn (log axis): {len(off_axis)} run(s) at weight decay "
                f"{', '.join(sorted({f'{r[KEY]:g}' for r in off_axis}))}, {grokked} grokked",
                transform=ax.transAxes, fontsize=7, color="0.3", va="bottom")
    if ax.has_data() and rows:
        xs_all = [r[KEY] for r in rows]
        ref = np.geomspace(min(xs_all), max(xs_all), 10)
        ys_ref = [r["t_collapse"] or r["t_grok"] for r in rows if r["t_collapse"] or r["t_grok"]]
        if ys_ref:
            anchor = float(np.median(ys_ref)) * float(np.median(xs_all))
            ax.plot(ref, anchor / ref, color="black", ls=":", lw=1, label="slope -1 (Thm 4.3)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("weight decay")
    ax.set_ylabel("step")
    ax.set_title("time scales against weight decay")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no run reached a time-scale threshold", ha="center",
                transform=ax.transAxes)
    ax.grid(True, which="both", alpha=0.3)
    return fig


def write_sweep_figures(root: str | Path, formats: Sequence[str] = ("png",),
                        dpi: float = DPI) -> list[Path]:
    """Draw ``figure3`` and ``timescales`` into ``<sweep>/figures``, once per format
    (``dpi``: resolution of the raster formats)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    root = Path(root)
    if not (root / "sweep_summary.json").exists():
        return []
    summary, rows = _runs(root)
    if not rows:
        return []
    out = root / "figures"
    out.mkdir(exist_ok=True)
    written = []
    for name, fig in (("figure3", figure3(root, rows)),
                      ("timescales", timescale_plot(rows, summary.get("predictions", [])))):
        for fmt in formats:
            path = out / f"{name}.{fmt}"
            fig.savefig(path, dpi=dpi)
            written.append(path)
        plt.close(fig)
    return written
