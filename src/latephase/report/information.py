"""Information-plane and Figure 4 figures, trusted estimator first.

Each estimator the run recorded is drawn from a :class:`Spec` in :data:`SPECS` (a registry,
in order of trust).  By default the information plane shows ``cmi_ksg`` (KSG, redundancy
I(Z;X'|Y) by construction >= 0 up to noise) when recorded; ``kl_knn`` (the paper's 3H k-NN
estimator, Figure 4 left) is drawn only in Figure 4 and labelled as the paper's.

Honesty rules every panel follows:
- a zero line, and each curve's shuffled-pairs null as a band (null +/- 2 SE);
- an estimate below zero is not information: nats-valued points < 0 are drawn as red
  crosses and counted in a note, never as ordinary points of an information curve.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from latephase.report.common import (
    Context,
    col,
    legend,
    mark_times,
    measured_layers,
    no_data,
    setup,
)


@dataclass(frozen=True)
class Spec:
    """How to draw one estimator's record keys ``{split}/{name}/{key}``."""

    x: str  # information plane x key (I(Z;X)-like)
    y: str  # information plane y key (I(Z;Y)-like)
    xlabel: str
    ylabel: str
    redundancy: str | None  # Figure 4 key
    redundancy_label: str
    title: str
    nats: bool = True  # an information in nats (< 0 impossible) rather than a score
    x_null: str | None = None
    y_null: str | None = None
    redundancy_null: str | None = None  # else x_null - y_null
    plane: bool = True  # shown in the default information plane


SPECS: dict[str, Spec] = {
    "cmi_ksg": Spec("izx", "izy", "I(Z;(X',Y)) = I(Z;Y) + I(Z;X'|Y)  [nats]", "I(Z;Y)  [nats]",
                    "redundancy", "I(Z;X'|Y)  [cmi_ksg, nats]",
                    "cmi_ksg: conditional KSG (trusted)", True, "izx_null", "izy_null",
                    "redundancy_null"),
    "nhsic": Spec("nhsic_zx", "nhsic_zy", "nHSIC(Z;X)", "nHSIC(Z;Y)", "redundancy",
                  "nHSIC(Z;X) - nHSIC(Z;Y)  (a score, not nats)", "normalised HSIC", False,
                  "nhsic_zx_null", "nhsic_zy_null"),
    "kl_knn": Spec("izx", "izy", "I(Z;X') [nats]", "I(Z;Y) [nats]", "redundancy",
                   "I(Z;X') - I(Z;Y)  [3H k-NN, nats]",
                   "kl_knn: the paper's estimator (3H k-NN; biased once Z clusters)", True,
                   "izx_null", "izy_null", plane=False),
    "binning": Spec("izx", "izy", "I(Z;X) [binning, nats]", "I(Z;Y) [binning, nats]",
                    "redundancy", "I(Z;X) - I(Z;Y)  [binning, nats]",
                    "binning (Shwartz-Ziv & Tishby baseline)", True, plane=False),
    "noise_channel": Spec("", "", "", "", "logdet_bound", "Thm 3.4 log-det bound on I(Z;X|Y)",
                          "noise channel (Theorem 3.4)", True, plane=False),
}


def ikey(split: str, name: str, quantity: str, layer: str = "") -> str:
    """Record key of an estimator's quantity (``_se`` / ``_null`` suffixes included)."""
    return col(split, quantity, layer, name)


def recorded(ctx: Context, split: str, layer: str = "") -> list[str]:
    """Estimators with keys in the metrics for ``split`` (and ``layer``), in SPECS order."""
    out = []
    for name, spec in SPECS.items():
        key = spec.x or spec.redundancy or ""
        if key and ikey(split, name, key, layer) in ctx.df.columns:
            out.append(name)
    return out


def info_split(ctx: Context) -> str | None:
    """The split whose information measures are drawn: held-out first, then any."""
    for split in [s for s in (ctx.splits.heldout, *ctx.splits.all) if s]:
        if recorded(ctx, split):
            return split
    return None


def plane_estimators(ctx: Context, split: str,
                     estimators: Sequence[str] | None = None) -> list[str]:
    """``estimators`` if given (those recorded), else the trusted ones; else what exists."""
    have = [n for n in recorded(ctx, split) if SPECS[n].x]
    if estimators is not None:
        return [n for n in estimators if n in have]
    trusted = [n for n in have if SPECS[n].plane]
    return trusted or have


def _column(d: Any, key: str | None) -> Any:
    import numpy as np

    if key is None or key not in d.columns:
        return None
    return d[key].to_numpy(dtype=float, na_value=np.nan)


def _null(d: Any, k: Callable[[str], str], spec: Spec, which: str) -> tuple[Any, Any, str]:
    """(null values, their SE or the estimate's, label) for ``which`` in x / y / redundancy;
    ``k`` builds the estimator's record keys."""
    key = {"x": spec.x, "y": spec.y, "redundancy": spec.redundancy}[which] or ""
    nkey = {"x": spec.x_null, "y": spec.y_null, "redundancy": spec.redundancy_null}[which]
    null = _column(d, k(nkey)) if nkey else None
    label = "shuffled null"
    if null is None and which == "redundancy" and spec.x_null and spec.y_null:
        nx, ny = _column(d, k(spec.x_null)), _column(d, k(spec.y_null))
        if nx is not None and ny is not None:
            null, label = nx - ny, f"shuffled null ({spec.x_null} - {spec.y_null})"
    if null is None:
        return None, None, label
    se = _column(d, k(nkey + "_se")) if nkey else None
    if se is None:
        se = _column(d, k(key + "_se"))
    return null, se, label


def _mark_negative(ax: Any, x: Any, y: Any, neg: Any) -> int:
    """Red crosses at the points ``neg``; returns how many."""
    import numpy as np

    n = int(np.sum(neg))
    if n:
        ax.scatter(x[neg], y[neg], marker="x", color="red", s=40, zorder=4,
                   label=f"{n} estimate(s) < 0: not information")
    return n


def information_plane(ctx: Context, split: str,
                      estimators: Sequence[str] | None = None) -> Any:
    """I(Z;X) against I(Z;Y), one trajectory coloured by log10(step), per estimator; each
    axis with its zero line and its shuffled-null band, error bars of 2 SE."""
    import matplotlib.pyplot as plt
    import numpy as np

    names = plane_estimators(ctx, split, estimators)
    if not names:
        return None
    d = ctx.d
    fig, axes = plt.subplots(1, len(names), figsize=(5.6 * len(names), 4.8),
                             layout="constrained", squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        spec = SPECS[name]

        def k(q: str, name: str = name) -> str:
            return ikey(split, name, q)

        xv, yv = _column(d, k(spec.x)), _column(d, k(spec.y))
        ok = np.isfinite(xv) & np.isfinite(yv)
        if not ok.any():
            no_data(ax, "no finite values (see the run's warnings)")
            continue
        steps = d["step"].to_numpy(dtype=float)
        for axis, span in (("x", ax.axvspan), ("y", ax.axhspan)):
            null, se, label = _null(d, k, spec, axis)
            if null is not None and np.isfinite(null).any():
                if se is None:  # no SE: the null's range over the run (a line if constant)
                    line = ax.axvline if axis == "x" else ax.axhline
                    ends = sorted({float(np.nanmin(null)), float(np.nanmax(null))})
                    for i, v in enumerate(ends):
                        line(v, color="0.5", ls="--", lw=0.9, label=f"{label} (range; no SE)"
                             if axis == "x" and i == 0 else None)
                    continue
                s = np.nan_to_num(se)
                span(np.nanmin(null - 2 * s), np.nanmax(null + 2 * s), color="0.6", alpha=0.25,
                     lw=0, label=f"{label} +/- 2 SE (range)" if axis == "x" else None)
        ax.axhline(0.0, color="black", lw=0.8)
        ax.axvline(0.0, color="black", lw=0.8)
        xse, yse = _column(d, k(spec.x + "_se")), _column(d, k(spec.y + "_se"))
        if xse is not None or yse is not None:
            ax.errorbar(xv[ok], yv[ok], xerr=None if xse is None else 2 * xse[ok],
                        yerr=None if yse is None else 2 * yse[ok], fmt="none", ecolor="0.75",
                        lw=0.6, zorder=1)
        ax.plot(xv[ok], yv[ok], color="0.7", lw=0.8, zorder=1)
        neg = ok & ((xv < 0) | (yv < 0)) if spec.nats else np.zeros_like(ok)
        good = ok & ~neg
        sc = ax.scatter(xv[good], yv[good], c=np.log10(steps[good]), cmap="viridis", s=14,
                        zorder=2, vmin=np.log10(steps[ok]).min(), vmax=np.log10(steps[ok]).max())
        _mark_negative(ax, xv, yv, neg)
        if spec.nats:
            lo, hi = np.nanmin(np.r_[xv[ok], yv[ok], 0.0]), np.nanmax(np.r_[xv[ok], yv[ok]])
            ax.plot([max(lo, 0), hi], [max(lo, 0), hi], color="0.4", ls="--", lw=0.8,
                    label="x = y (no redundancy)")
        for key, marker in (("t_fit", "s"), ("t_grok", "*"), ("t_collapse", "D")):
            t = ctx.scales.get(key)
            if isinstance(t, int | float) and t > 0:
                i = int(np.nanargmin(np.where(ok, np.abs(steps - t), np.inf)))
                ax.scatter(xv[i], yv[i], marker=marker, s=110, facecolor="none",
                           edgecolor="red", label=f"{key} ~ {t:,.0f}", zorder=3)
        ax.set_xlabel(spec.xlabel)
        ax.set_ylabel(spec.ylabel)
        ax.set_title(f"{spec.title}\n{ctx.splits.label(split)} split", fontsize=9)
        ax.grid(True, alpha=0.3)
        legend(ax, fontsize=7, loc="best")
        fig.colorbar(sc, ax=ax, label="log10(step)")
    fig.suptitle("information plane (grey: shuffled-pairs null; 0 lines in black)", fontsize=10)
    return fig


def figure4(ctx: Context, split: str) -> Any:
    """The paper's Figure 4 layout: each redundancy proxy against step (trusted first, the
    paper's kl_knn labelled as such), each with +/- 2 SE, its null band and a zero line; then
    RNC1 of the training and held-out splits."""
    import matplotlib.pyplot as plt
    import numpy as np

    names = [n for n in recorded(ctx, split) if SPECS[n].redundancy
             and ikey(split, n, SPECS[n].redundancy or "") in ctx.df.columns]
    if not names:
        return None
    d = ctx.d
    steps = d["step"].to_numpy(dtype=float)
    fig, axes = plt.subplots(1, len(names) + 1, figsize=(4.8 * (len(names) + 1), 4.0),
                             layout="constrained", squeeze=False)
    for ax, name in zip(axes[0], names, strict=False):
        spec = SPECS[name]

        def k(q: str, name: str = name) -> str:
            return ikey(split, name, q)

        key = spec.redundancy or ""
        v = _column(d, k(key))
        ok = np.isfinite(v)
        ax.axhline(0.0, color="black", lw=0.8)
        if not ok.any():
            no_data(ax, "no finite values (see the run's warnings)")
        null, nse, label = _null(d, k, spec, "redundancy")
        if null is not None and np.isfinite(null).any():
            if nse is None:
                ax.plot(steps, null, color="0.5", ls="--", lw=1.0, label=f"{label} (no SE)")
            else:
                s = np.nan_to_num(nse)
                ax.fill_between(steps, null - 2 * s, null + 2 * s, color="0.6", alpha=0.35,
                                lw=0, label=f"{label} +/- 2 SE")
        se = _column(d, k(key + "_se"))
        if se is not None and np.isfinite(se).any():
            ax.fill_between(steps, v - 2 * se, v + 2 * se, color="tab:red", alpha=0.2, lw=0,
                            label="estimate +/- 2 SE (variance only)")
        ax.plot(steps, v, color="tab:red", lw=1.2, label="estimate")
        if spec.nats:
            _mark_negative(ax, steps, v, ok & (v < 0))
        mark_times(ax, ctx.scales)
        setup(ax, spec.title, spec.redundancy_label)
        ax.title.set_fontsize(9)
        legend(ax, fontsize=7)
    ax = axes[0][-1]
    proxy = ctx.rnc1_proxy
    for split_name in ctx.splits.all:
        rnc1 = col(split_name, f"rnc1_{proxy}")
        if rnc1 in d.columns:
            ax.plot(steps, d[rnc1], color=ctx.splits.color(split_name),
                    label=ctx.splits.label(split_name))
    mark_times(ax, ctx.scales)
    setup(ax, "RNC1", f"RNC1 ({proxy}-norm scale)")
    ax.set_yscale("log")
    legend(ax)
    fig.suptitle(f"redundancy ({ctx.splits.label(split)} split) and RNC1 against step",
                 fontsize=10)
    return fig


def tracked_layers(ctx: Context) -> list[str]:
    """Names of the extra layers of a Tracker run (columns ``{train}/{layer}/rnc1_mean``)."""
    split = ctx.splits.train or (ctx.splits.all or [""])[0]
    return measured_layers(ctx.df.columns, split, SPECS)


def layers_information_plane(ctx: Context, split: str) -> Any:
    """One information-plane trajectory per layer, per (trusted) estimator; o start, x end;
    zero lines; negative nats estimates as red crosses."""
    import matplotlib.pyplot as plt
    import numpy as np

    layers = ["", *tracked_layers(ctx)]
    if len(layers) == 1:
        return None
    have = [n for n in SPECS if SPECS[n].x and any(
        ikey(split, n, SPECS[n].x, layer) in ctx.df.columns for layer in layers[1:])]
    names = [n for n in have if SPECS[n].plane] or have
    if not names:
        return None
    d = ctx.d
    fig, axes = plt.subplots(1, len(names), figsize=(5.4 * len(names), 4.6),
                             layout="constrained", squeeze=False)
    colors = plt.get_cmap("tab10")
    for ax, name in zip(axes[0], names, strict=True):
        spec = SPECS[name]
        ax.axhline(0.0, color="black", lw=0.8)
        ax.axvline(0.0, color="black", lw=0.8)
        for i, layer in enumerate(layers):
            xv = _column(d, ikey(split, name, spec.x, layer))
            yv = _column(d, ikey(split, name, spec.y, layer))
            if xv is None or yv is None:
                continue
            ok = np.isfinite(xv) & np.isfinite(yv)
            if not ok.any():
                continue
            xv, yv = xv[ok], yv[ok]
            ax.plot(xv, yv, color=colors(i), lw=1.2, label=layer or "penultimate")
            ax.scatter(xv[:1], yv[:1], color=colors(i), marker="o", s=30)
            ax.scatter(xv[-1:], yv[-1:], color=colors(i), marker="x", s=50)
            if spec.nats:
                neg = (xv < 0) | (yv < 0)
                if neg.any():
                    ax.scatter(xv[neg], yv[neg], marker="x", color="red", s=25, zorder=4)
        ax.set_xlabel(spec.xlabel)
        ax.set_ylabel(spec.ylabel)
        ax.set_title(f"layer-wise information plane: {spec.title}\n(o start, x end; red x: "
                     "estimate < 0, not information)", fontsize=9)
        legend(ax)
    return fig
