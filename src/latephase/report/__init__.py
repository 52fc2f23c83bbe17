"""Figures and the text summary of a run, drawn from its run directory alone.

Each panel is a function ``(ax, ctx) -> None`` registered in :data:`PANELS`; every panel is
saved on its own (``figures/<name>.png``, no panel letter) and together, lettered, in
``figures/overview.png``.  Then, when the run recorded them: ``figure2`` (margin violins,
:mod:`latephase.report.margins`), ``information_plane`` and ``figure4``
(:mod:`latephase.report.information`), and the per-layer figures of a Tracker run.

Split names come from config.json or the metrics columns (:mod:`latephase.report.common`):
a run whose splits are ``train``/``val``, or three splits, is reported the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from latephase.report.common import (
    DPI,
    Context,
    Splits,
    col,
    find_splits,
    legend,
    mark_times,
    no_data,
    setup,
    splits_in,
)
from latephase.report.forecast import forecast_figure
from latephase.report.information import (
    figure4,
    info_split,
    information_plane,
    layers_information_plane,
    tracked_layers,
)
from latephase.report.margins import figure2, margin_records
from latephase.runs import RunDir

__all__ = ["PANELS", "Context", "Splits", "figure2", "figure4", "find_splits",
           "information_plane", "layers_information_plane", "layers_rnc1", "margin_records",
           "splits_in", "summary_table", "tracked_layers", "write_figures"]

Panel = Callable[[Any, Context], None]


def _lines(ax: Any, ctx: Context, measure: str, *, ls: str = "-", prefix: str = "") -> None:
    """One line of ``{split}/{measure}`` per split that has it."""
    d = ctx.d
    for split in ctx.splits.all:
        key = col(split, measure)
        if key in d.columns:
            ax.plot(d["step"], d[key], color=ctx.splits.color(split), ls=ls,
                    label=f"{prefix}{ctx.splits.label(split)}")


def panel_accuracy(ax: Any, ctx: Context) -> None:
    _lines(ax, ctx, "acc")
    mark_times(ax, ctx.scales)
    setup(ax, "accuracy", "accuracy")
    ax.set_ylim(-0.02, 1.02)
    legend(ax, loc="lower right")


def panel_collapse(ax: Any, ctx: Context) -> None:
    proxy = ctx.rnc1_proxy
    _lines(ax, ctx, f"rnc1_{proxy}", prefix="RNC1 ")
    _lines(ax, ctx, "nc1", ls="--", prefix="NC1 ")
    mark_times(ax, ctx.scales)
    setup(ax, f"within-class variability (RNC1: {proxy}-norm scale)", "RNC1, NC1")
    ax.set_yscale("log")
    legend(ax, loc="lower left")


def panel_nc2(ax: Any, ctx: Context) -> None:
    _lines(ax, ctx, "nc2")
    ax.axhline(1.0, color="black", lw=0.8, ls=":")
    mark_times(ax, ctx.scales)
    setup(ax, "NC2: condition number of class means", "NC2 (1 = orthogonal, equinorm)")
    ax.set_yscale("log")
    legend(ax, loc="upper right")


BOUND_YLABEL = "bound on P(error) (values > 1 vacuous)"


def panel_bound(ax: Any, ctx: Context) -> None:
    """Theorem 3.2 (trace form, dashed) and its directional form (solid) per split, the
    held-out error (black), and the line at 1 above which a bound says nothing."""
    d = ctx.d
    drawn = False
    for split in ctx.splits.all:
        for measure, ls, what in (("bound_dir", "-", "directional bound"),
                                  ("bound", "--", "trace bound")):
            key = col(split, measure)
            if ctx.has(key):
                ax.plot(d["step"], d[key], color=ctx.splits.color(split), ls=ls,
                        label=f"{what} ({ctx.splits.label(split)})")
                drawn = True
    held = ctx.splits.heldout
    if held and ctx.has(col(held, "error")):
        ax.plot(d["step"], d[col(held, "error")], color="black", lw=1.6,
                label=f"{ctx.splits.label(held)} error (measured)")
    if not drawn:
        no_data(ax, "no Theorem 3.2 bound recorded")
    mark_times(ax, ctx.scales)
    setup(ax, "Theorem 3.2 bounds vs held-out error", BOUND_YLABEL)
    ax.set_yscale("log")
    ax.axhline(1.0, color="black", lw=1.0, ls=":")
    lo, hi = ax.get_ylim()
    ax.axhspan(1.0, max(hi, 2.0), color="0.5", alpha=0.12, lw=0)
    ax.set_ylim(lo, max(hi, 2.0))
    ax.text(0.99, 1.0, "above 1: vacuous (says nothing about P(error)) ", fontsize=7,
            va="bottom", ha="right", transform=ax.get_yaxis_transform(), color="0.25")
    legend(ax, loc="best", fontsize=7)


PANELS: dict[str, Panel] = {
    "accuracy": panel_accuracy,
    "collapse": panel_collapse,
    "nc2": panel_nc2,
    "bound": panel_bound,
}


def layers_rnc1(ctx: Context) -> Any:
    """RNC1 of every tracked layer (and the penultimate one) against step."""
    import matplotlib.pyplot as plt

    layers = tracked_layers(ctx)
    if not layers:
        return None
    d = ctx.d
    fig, ax = plt.subplots(figsize=(7, 4.4), layout="constrained")
    colors = plt.get_cmap("tab10")
    styles = ("-", "--", ":", "-.")
    for i, layer in enumerate(["", *layers]):
        label = layer or "penultimate (head input)"
        for j, split in enumerate(ctx.splits.all):
            key = col(split, "rnc1_mean", layer)
            if key in d.columns:
                ax.plot(d["step"], d[key], color=colors(i),
                        ls=styles[j % len(styles)], label=f"{label} {ctx.splits.label(split)}")
    mark_times(ax, ctx.scales)
    setup(ax, "RNC1 per layer (mean-norm scale)", "RNC1")
    ax.set_yscale("log")
    legend(ax, fontsize=7)
    return fig


def context(run_dir: str | Path) -> Context | None:
    """The run's :class:`Context` (None when it has no metrics yet)."""
    run = RunDir.open(run_dir)
    df = run.metrics()
    if len(df) == 0:
        return None
    info = run.info()
    scales = run.summary().get("timescales", {}) or {}
    return Context(df, scales if isinstance(scales, dict) else {},
                   find_splits(info, df.columns), info)


def write_figures(run_dir: str | Path, formats: Sequence[str] = ("png",),
                  figure2_steps: Sequence[int] | None = None, dpi: float = DPI) -> list[Path]:
    """Draw every figure of a run into ``<run>/figures``; returns the files written.

    ``formats``: any of matplotlib's (png, pdf, svg, ...), each figure once per format;
    ``dpi``: resolution of the raster formats.  ``figure2_steps``: the steps of Figure 2
    (nearest recorded ones); default: the first evaluation after t_fit and the last.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ctx = context(run_dir)
    if ctx is None:
        return []
    formats = tuple(formats)
    run = RunDir.open(run_dir)
    out_dir = run.figures_dir
    out_dir.mkdir(exist_ok=True)
    written: list[Path] = []
    for name, panel in PANELS.items():
        fig, ax = plt.subplots(figsize=(6, 4.2), layout="constrained")
        panel(ax, ctx)
        written += _save(fig, out_dir / name, formats, dpi)
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.4), layout="constrained")
    for letter, ax, panel in zip("abcd", axes.flat, PANELS.values(), strict=True):
        panel(ax, ctx)
        ax.set_title(f"({letter}) {ax.get_title()}")
    fig.suptitle(f"{run.path.name}")
    written += _save(fig, out_dir / "overview", formats, dpi)
    fig = figure2(margin_records(run.path), ctx, figure2_steps)
    if fig is not None:
        written += _save(fig, out_dir / "figure2", formats, dpi)
    split = info_split(ctx)
    if split is not None:
        for stem, draw in (("information_plane", information_plane), ("figure4", figure4),
                           ("layers_information_plane", layers_information_plane)):
            fig = draw(ctx, split)
            if fig is not None:
                written += _save(fig, out_dir / stem, formats, dpi)
    fig = layers_rnc1(ctx)
    if fig is not None:
        written += _save(fig, out_dir / "layers_rnc1", formats, dpi)
    fig = forecast_figure(ctx)
    if fig is not None:
        written += _save(fig, out_dir / "forecast", formats, dpi)
    from latephase.integrations.sinks import log_figures

    # logging.tensorboard / wandb: the PNGs as images, at the last recorded step
    log_figures(run.path, ctx.info, written, int(ctx.d["step"].max()))
    return written


def _save(fig: Any, stem: Path, formats: tuple[str, ...], dpi: float = DPI) -> list[Path]:
    import matplotlib.pyplot as plt

    from latephase.faults import fault

    paths = []
    for fmt in formats:
        path = stem.with_suffix(f".{fmt}")
        fault("figure_draw")
        fig.savefig(path, dpi=dpi)
        paths.append(path)
    plt.close(fig)
    return paths


# ----------------------------------------------------------------------------- text summary


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "not reached"
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, float) and abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}" if isinstance(x, float) else str(x)


def summary_splits(summary: Mapping[str, Any], splits: Splits | None = None) -> Splits:
    """The splits of a summary: given, else from its time-scale keys and final record."""
    if splits is not None:
        return splits
    th = (summary.get("timescales") or {}).get("thresholds", {}) or {}
    fin = summary.get("final") or {}
    named = {"tracker": {
        "train_split": str((th.get("fit") or {}).get("key") or "").rsplit("/", 1)[0] or None,
        "heldout_split": str((th.get("grok") or {}).get("key") or "").rsplit("/", 1)[0] or None,
    }}
    return find_splits(named, fin if isinstance(fin, Mapping) else {})


def summary_table(summary: dict[str, Any], records: list[dict[str, Any]] | None = None,
                  splits: Splits | None = None) -> str:
    """A short plain-text table of a run's outcome (error and both Theorem 3.2 bounds per
    split: a bound above 1 is vacuous)."""
    sc = summary.get("timescales", {}) or {}
    fin = summary.get("final", {}) or {}
    th = sc.get("thresholds", {}) or {}
    sp = summary_splits(summary, splits)
    tr, held = sp.train or "train", sp.heldout
    key = (th.get("collapse") or {}).get("key", col(tr, "rnc1_mean"))
    held_name = sp.label(held) if held else "held-out"
    rows = [
        ("status", str(summary.get("status", "?"))),
        ("steps", _fmt(summary.get("step"))),
        (f"t_fit   ({tr} acc >= {(th.get('fit') or {}).get('threshold', '?')})",
         _fmt(sc.get("t_fit"))),
        (f"t_grok  ({held_name} acc >= {(th.get('grok') or {}).get('threshold', '?')})",
         _fmt(sc.get("t_grok"))),
        (f"t_collapse ({key} <= "
         f"{(th.get('collapse') or {}).get('fraction_of_value_at_t_fit', '?')} x value at t_fit)",
         _fmt(sc.get("t_collapse"))),
        ("final accuracy (" + " / ".join(sp.label(s) for s in sp.all) + ")",
         " / ".join(_fmt(fin.get(col(s, "acc"))) for s in sp.all) or "?"),
        (f"{key} at t_fit -> final", f"{_fmt(sc.get('rnc1_at_fit'))} -> {_fmt(fin.get(key))}"),
    ]
    for s in sp.all:
        if col(s, "bound") in fin or col(s, "bound_dir") in fin:
            rows.append((f"{sp.label(s)} error / Thm 3.2 bound / directional bound",
                         " / ".join(_fmt(fin.get(col(s, m))) for m in ("error", "bound",
                                                                      "bound_dir"))))
    wall = summary.get("wall_time_s")
    rows.append(("wall time", f"{wall:.1f} s" if isinstance(wall, int | float) else "?"))
    if records and held:
        gap = [r for r in records if r.get(col(tr, "acc"), 0) >= 1.0 and col(held, "acc") in r]
        if gap:
            worst = min(r[col(held, "acc")] for r in gap)
            rows.insert(5, (f"lowest {held_name} acc while {tr} acc = 1", _fmt(worst)))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows) + (
        "\n  (a bound above 1 is vacuous)" if any("bound" in k for k, _ in rows) else "")
