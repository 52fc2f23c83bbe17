"""The paper's Figure 2: violins of the signed margin of a class pair (a, b),

    margin(x) = (<w_a - w_b, g(x)> + b_a - b_b) / ||w_a - w_b|| = (l_a - l_b) / ||w_a - w_b||,

of the class-a and class-b samples, training and held-out, at two evaluation steps (default:
the first evaluation at or after t_fit, and the last).  A class-a point is on the correct side
of the a-vs-b boundary when its margin is > 0, a class-b point when it is < 0.

The margins are read from the run directory (``margins.jsonl``: one
``{"step": s, "<split>/margins_a": [...], "<split>/margins_b": [...]}`` per evaluation, or
list values inside metrics.jsonl records), so nothing is retrained.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from latephase.keys import parse_key
from latephase.report.common import Context, Splits, col
from latephase.runs import MARGINS, METRICS, iter_records

SIDES = ("margins_a", "margins_b")


def margin_records(run_dir: str | Path) -> list[dict[str, Any]]:
    """``[{"step": s, "<split>/margins_a": [...], ...}]`` sorted by step.

    Tries ``margins.jsonl`` first, then the list values of metrics.jsonl records; records
    without any margins are dropped.
    """
    path = Path(run_dir)
    for name in (MARGINS, METRICS):
        recs = []
        for rec in iter_records(path / name):
            lists = {k: v for k, v in rec.items() if _side(k) and isinstance(v, list)}
            if lists and isinstance(rec.get("step"), int | float):
                recs.append({"step": int(rec["step"]), **lists})
        if recs:
            return sorted(recs, key=lambda r: r["step"])
    return []


def _side(key: str) -> bool:
    """A penultimate-layer margins key ``{split}/margins_a`` or ``{split}/margins_b``."""
    k = parse_key(key)
    return k is not None and k.measure in SIDES and not k.layer


def margin_pair(info: Mapping[str, Any]) -> tuple[int, int]:
    """The class pair (a, b) the run recorded: config.json ``tracker.margin_pair`` or
    ``config.measures.margin_pair``; default (0, 1)."""
    for where in ((info.get("tracker") or {}), ((info.get("config") or {}).get("measures") or {})):
        pair = where.get("margin_pair") if isinstance(where, Mapping) else None
        if isinstance(pair, list | tuple) and len(pair) == 2:
            return int(pair[0]), int(pair[1])
    return 0, 1


def choose_steps(available: Sequence[int], scales: Mapping[str, Any],
                 steps: Sequence[int] | None = None) -> list[tuple[int, str]]:
    """The steps to draw, each with a note: ``steps`` mapped to the nearest recorded step, or
    the defaults (the first recorded step >= t_fit, and the last)."""
    avail = sorted(set(available))
    if not avail:
        return []
    if steps is not None:
        out = []
        for s in steps:
            near = min(avail, key=lambda a: (abs(a - s), a))
            out.append((near, "" if near == s else f"nearest recorded to {s:,}"))
        return list(dict.fromkeys(out))
    t_fit = scales.get("t_fit")
    if isinstance(t_fit, int | float) and math.isfinite(t_fit):
        after = [a for a in avail if a >= t_fit]
        first = (after[0], "first evaluation after t_fit") if after else (avail[-1], "")
    else:
        positive = [a for a in avail if a > 0] or avail
        first = (positive[0], "t_fit not reached: first evaluation")
    last = (avail[-1], "last evaluation")
    return [first] if first[0] == last[0] else [first, last]


def _violin(ax: Any, values: Sequence[float], pos: float, color: str) -> None:
    import numpy as np

    v = np.asarray([x for x in values if isinstance(x, int | float) and math.isfinite(x)])
    if len(v) == 0:
        return
    if len(v) < 2 or float(np.ptp(v)) == 0.0:  # no spread: a KDE is undefined, draw a bar
        ax.hlines(v[0], pos - 0.3, pos + 0.3, color=color, lw=2)
        return
    parts = ax.violinplot([v], positions=[pos], widths=0.8, showmedians=True,
                          showextrema=True)
    for body in parts["bodies"]:
        body.set_facecolor(color)
        body.set_edgecolor("black")
        body.set_alpha(0.55)
    for key in ("cmedians", "cmins", "cmaxes", "cbars"):
        if key in parts:
            parts[key].set_color("black")
            parts[key].set_linewidth(0.8)


def figure2(records: Sequence[Mapping[str, Any]], ctx: Context,
            steps: Sequence[int] | None = None, pair: tuple[int, int] | None = None) -> Any:
    """Margin violins (class a, class b) per split, one panel per chosen step; None when the
    run recorded no margins."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    splits = _margin_splits(records, ctx.splits)
    if not records or not splits:
        return None
    chosen = choose_steps([int(r["step"]) for r in records], ctx.scales, steps)
    by_step = {int(r["step"]): r for r in records}
    a, b = pair if pair is not None else margin_pair(ctx.info)
    colors = {"margins_a": "tab:blue", "margins_b": "tab:red"}
    fig, axes = plt.subplots(1, len(chosen), figsize=(4.2 + 1.4 * len(splits) * len(chosen),
                                                      4.4), layout="constrained", squeeze=False)
    for ax, (step, note) in zip(axes[0], chosen, strict=True):
        rec = by_step[step]
        ticks, labels = [], []
        for i, split in enumerate(splits):
            counts = []
            for j, side in enumerate(SIDES):
                values = rec.get(col(split, side)) or []
                _violin(ax, values, 3 * i + j + 1, colors[side])
                counts.append(len(values))
            ticks.append(3 * i + 1.5)
            labels.append(f"{ctx.splits.label(split)}\n(n = {counts[0]}, {counts[1]})")
        ax.axhline(0.0, color="black", lw=0.8, ls=":")
        ax.set_xticks(ticks, labels, fontsize=8)
        ax.legend(handles=[Patch(facecolor=colors[side], alpha=0.55, edgecolor="black",
                                 label=f"class {c}") for side, c in zip(SIDES, (a, b),
                                                                       strict=True)],
                  fontsize=8, loc="best")
        ax.set_ylabel(f"signed margin (l_{a} - l_{b}) / ||w_{a} - w_{b}||")
        accs = [f"{ctx.splits.label(s)} acc {_acc_at(ctx, s, step)}" for s in splits]
        title = f"step {step:,}" + (f" ({note})" if note else "")
        ax.set_title(title + "\n" + ", ".join(accs), fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle(f"signed margins of classes {a} and {b} (> 0: class {a} side; dotted: the "
                 f"{a}-vs-{b} boundary)", fontsize=10)
    return fig


def _margin_splits(records: Sequence[Mapping[str, Any]], splits: Splits) -> list[str]:
    """Splits with margins, training first, held-out second."""
    have = list(dict.fromkeys(k.split("/", 1)[0] for r in records for k in r if _side(k)))
    ordered = [s for s in splits.all if s in have]
    return ordered + [s for s in have if s not in ordered]


def _acc_at(ctx: Context, split: str, step: int) -> str:
    key = col(split, "acc")
    if key not in ctx.df.columns:
        return "?"
    rows = ctx.df[ctx.df["step"] == step]
    if len(rows) == 0 or rows[key].isna().all():
        return "?"
    return f"{float(rows[key].iloc[-1]):.2f}"
