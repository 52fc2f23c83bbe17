"""Figures and the text summary of a run, drawn from its run directory alone.

Each panel is a function ``(ax, df, scales) -> None`` registered in :data:`PANELS`; every
panel is saved on its own (``figures/<name>.png``) and together in ``figures/overview.png``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from latephase.runs import RunDir

Panel = Callable[[Any, Any, dict[str, Any]], None]

_MARKS = (("t_fit", "t_fit", ":", "tab:gray"), ("t_grok", "t_grok", "--", "tab:green"),
          ("t_collapse", "t_collapse", "-.", "tab:purple"))


def _positive_steps(df: Any) -> Any:
    return df[df["step"] > 0]


def _mark_times(ax: Any, scales: dict[str, Any]) -> None:
    """Vertical lines at t_fit, t_grok and t_collapse (when reached)."""
    for key, label, style, color in _MARKS:
        t = scales.get(key)
        if t is not None and t > 0:
            ax.axvline(t, ls=style, color=color, lw=1.2, label=f"{label} = {t:,.0f}")


def _setup(ax: Any, title: str, ylabel: str) -> None:
    ax.set_xscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)


def panel_accuracy(ax: Any, df: Any, scales: dict[str, Any]) -> None:
    d = _positive_steps(df)
    ax.plot(d["step"], d["train/acc"], label="train", color="tab:blue")
    ax.plot(d["step"], d["test/acc"], label="held-out", color="tab:orange")
    _mark_times(ax, scales)
    _setup(ax, "(a) accuracy", "accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(loc="lower right", fontsize=8)


def panel_collapse(ax: Any, df: Any, scales: dict[str, Any]) -> None:
    d = _positive_steps(df)
    key = str(scales.get("thresholds", {}).get("collapse", {}).get("key", "train/rnc1_mean"))
    proxy = key.rsplit("_", 1)[-1]
    for split, color in (("train", "tab:blue"), ("test", "tab:orange")):
        name = "held-out" if split == "test" else split
        ax.plot(d["step"], d[f"{split}/rnc1_{proxy}"], color=color, label=f"RNC1 {name}")
        ax.plot(d["step"], d[f"{split}/nc1"], color=color, ls="--", label=f"NC1 {name}")
    _mark_times(ax, scales)
    _setup(ax, f"(b) within-class variability (RNC1: {proxy}-norm scale)", "RNC1, NC1")
    ax.set_yscale("log")
    ax.legend(loc="lower left", fontsize=8)


def panel_nc2(ax: Any, df: Any, scales: dict[str, Any]) -> None:
    d = _positive_steps(df)
    ax.plot(d["step"], d["train/nc2"], color="tab:blue", label="train")
    ax.plot(d["step"], d["test/nc2"], color="tab:orange", label="held-out")
    ax.axhline(1.0, color="black", lw=0.8, ls=":")
    _mark_times(ax, scales)
    _setup(ax, "(c) NC2: condition number of class means", "NC2 (1 = orthogonal, equinorm)")
    ax.set_yscale("log")
    ax.legend(loc="upper right", fontsize=8)


def panel_bound(ax: Any, df: Any, scales: dict[str, Any]) -> None:
    d = _positive_steps(df)
    ax.plot(d["step"], d["test/bound"], color="tab:red", label="Theorem 3.2 bound (held-out)")
    ax.plot(d["step"], d["test/error"], color="tab:orange", label="held-out error")
    ax.axhline(1.0, color="black", lw=0.8, ls=":")
    _mark_times(ax, scales)
    _setup(ax, "(d) generalization bound vs held-out error", "error probability")
    ax.set_yscale("log")
    ax.legend(loc="lower left", fontsize=8)


PANELS: dict[str, Panel] = {
    "accuracy": panel_accuracy,
    "collapse": panel_collapse,
    "nc2": panel_nc2,
    "bound": panel_bound,
}


def write_figures(run_dir: str | Path, formats: tuple[str, ...] = ("png",)) -> list[Path]:
    """Draw every panel of a run into ``<run>/figures``; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = RunDir.open(run_dir)
    df = run.metrics()
    if len(df) == 0:
        return []
    scales = run.summary().get("timescales", {}) or {}
    out_dir = run.figures_dir
    out_dir.mkdir(exist_ok=True)
    written: list[Path] = []
    for name, panel in PANELS.items():
        fig, ax = plt.subplots(figsize=(6, 4.2), layout="constrained")
        panel(ax, df, scales)
        written += _save(fig, out_dir / name, formats)
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.4), layout="constrained")
    for ax, panel in zip(axes.flat, PANELS.values(), strict=True):
        panel(ax, df, scales)
    fig.suptitle(f"{run.path.name}")
    written += _save(fig, out_dir / "overview", formats)
    split = _info_split(df)
    if split is not None:
        for stem, draw in (("information_plane", information_plane), ("figure4", figure4)):
            fig = draw(df, scales, split)
            if fig is not None:
                written += _save(fig, out_dir / stem, formats)
        fig = layers_information_plane(df, scales, split)
        if fig is not None:
            written += _save(fig, out_dir / "layers_information_plane", formats)
    fig = layers_rnc1(df, scales)
    if fig is not None:
        written += _save(fig, out_dir / "layers_rnc1", formats)
    return written


# ----------------------------------------------------------------------------- information

#: estimator -> (x-axis key, y-axis key, axis labels) of its information plane
PLANES: dict[str, tuple[str, str, str, str]] = {
    "kl_knn": ("izx", "izy", "I(Z;X) [nats]", "I(Z;Y) [nats]"),
    "binning": ("izx", "izy", "I(Z;X) [nats]", "I(Z;Y) [nats]"),
    "nhsic": ("nhsic_zx", "nhsic_zy", "nHSIC(Z;X)", "nHSIC(Z;Y)"),
}
#: estimator -> (key of its redundancy proxy, label)
REDUNDANCY: dict[str, tuple[str, str]] = {
    "kl_knn": ("redundancy", "I(Z;X) - I(Z;Y)  [k-NN, nats]"),
    "nhsic": ("redundancy", "nHSIC(Z;X) - nHSIC(Z;Y)"),
    "binning": ("redundancy", "I(Z;X) - I(Z;Y)  [binning, nats]"),
    "noise_channel": ("logdet_bound", "Thm 3.4 log-det bound on I(Z;X|Y)"),
}


def _info_split(df: Any) -> str | None:
    for split in ("test", "train"):
        if any(c.startswith(f"{split}/") and c.count("/") == 2 for c in df.columns):
            return split
    return None


def information_plane(df: Any, scales: dict[str, Any], split: str) -> Any:
    """I(Z;X) against I(Z;Y), one trajectory coloured by log10(step), per estimator."""
    import matplotlib.pyplot as plt
    import numpy as np

    names = [e for e in PLANES if f"{split}/{e}/{PLANES[e][0]}" in df.columns]
    if not names:
        return None
    d = _positive_steps(df)
    fig, axes = plt.subplots(1, len(names), figsize=(5.2 * len(names), 4.4),
                             layout="constrained", squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        kx, ky, lx, ly = PLANES[name]
        xv, yv = d[f"{split}/{name}/{kx}"], d[f"{split}/{name}/{ky}"]
        if not (xv.notna() & yv.notna()).any():
            ax.text(0.5, 0.5, "no finite values (see the run's warnings)", ha="center",
                    transform=ax.transAxes)
        ax.plot(xv, yv, color="0.7", lw=0.8, zorder=1)
        sc = ax.scatter(xv, yv, c=np.log10(d["step"]), cmap="viridis", s=14, zorder=2)
        for key, marker in (("t_fit", "s"), ("t_grok", "*"), ("t_collapse", "D")):
            t = scales.get(key)
            if t:
                i = int((d["step"] - t).abs().idxmin())
                ax.scatter(df.loc[i, f"{split}/{name}/{kx}"], df.loc[i, f"{split}/{name}/{ky}"],
                           marker=marker, s=110, facecolor="none", edgecolor="red",
                           label=f"{key} ~ {t:,.0f}", zorder=3)
        ax.set_xlabel(lx)
        ax.set_ylabel(ly)
        ax.set_title(f"information plane: {name} ({'held-out' if split == 'test' else split})")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="best")
        fig.colorbar(sc, ax=ax, label="log10(step)")
    return fig


def figure4(df: Any, scales: dict[str, Any], split: str) -> Any:
    """The paper's Figure 4 layout: each redundancy proxy, and RNC1, against step."""
    import matplotlib.pyplot as plt

    names = [e for e in REDUNDANCY if f"{split}/{e}/{REDUNDANCY[e][0]}" in df.columns]
    if not names:
        return None
    d = _positive_steps(df)
    fig, axes = plt.subplots(1, len(names) + 1, figsize=(4.6 * (len(names) + 1), 3.8),
                             layout="constrained", squeeze=False)
    for ax, name in zip(axes[0], names, strict=False):
        key, label = REDUNDANCY[name]
        col = f"{split}/{name}/{key}"
        if not d[col].notna().any():
            ax.text(0.5, 0.5, "no finite values (see the run's warnings)", ha="center",
                    transform=ax.transAxes)
        ax.plot(d["step"], d[col], color="tab:red")
        se = f"{col}_se"
        if se in d.columns and d[se].notna().any():
            ax.fill_between(d["step"], d[col] - d[se], d[col] + d[se], color="tab:red",
                            alpha=0.2, lw=0, label="+/- 1 s.e. (jackknife)")
            ax.legend(fontsize=8)
        _mark_times(ax, scales)
        _setup(ax, name, label)
    ax = axes[0][-1]
    key = str(scales.get("thresholds", {}).get("collapse", {}).get("key", "train/rnc1_mean"))
    proxy = key.rsplit("_", 1)[-1]
    ax.plot(d["step"], d[f"train/rnc1_{proxy}"], color="tab:blue", label="train")
    ax.plot(d["step"], d[f"test/rnc1_{proxy}"], color="tab:orange", label="held-out")
    _mark_times(ax, scales)
    _setup(ax, "RNC1", f"RNC1 ({proxy}-norm scale)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    where = "held-out" if split == "test" else split
    fig.suptitle(f"redundancy proxies ({where} split) and RNC1 against step")
    return fig


def tracked_layers(df: Any, split: str = "train") -> list[str]:
    """Names of the extra layers of a Tracker run (columns ``{split}/{layer}/rnc1_mean``)."""
    head, tail = f"{split}/", "/rnc1_mean"
    return [c[len(head):-len(tail)] for c in df.columns
            if c.startswith(head) and c.endswith(tail) and c.count("/") == 2]


def layers_rnc1(df: Any, scales: dict[str, Any]) -> Any:
    """RNC1 of every tracked layer (and the penultimate one) against step."""
    import matplotlib.pyplot as plt

    layers = tracked_layers(df)
    if not layers:
        return None
    d = _positive_steps(df)
    fig, ax = plt.subplots(figsize=(7, 4.4), layout="constrained")
    colors = plt.get_cmap("tab10")
    for i, layer in enumerate(["", *layers]):
        label = layer or "penultimate (head input)"
        key = f"{layer}/rnc1_mean" if layer else "rnc1_mean"
        ax.plot(d["step"], d[f"train/{key}"], color=colors(i), label=f"{label} train")
        if f"test/{key}" in d.columns:
            ax.plot(d["step"], d[f"test/{key}"], color=colors(i), ls="--",
                    label=f"{label} held-out")
    _mark_times(ax, scales)
    _setup(ax, "RNC1 per layer (mean-norm scale)", "RNC1")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    return fig


def layers_information_plane(df: Any, scales: dict[str, Any], split: str) -> Any:
    """One information-plane trajectory per layer, for each estimator (start o, end x)."""
    import matplotlib.pyplot as plt

    layers = ["", *tracked_layers(df, split)]
    names = [e for e in PLANES if any(
        f"{split}/{layer + '/' if layer else ''}{e}/{PLANES[e][0]}" in df.columns
        for layer in layers[1:])]
    if not names:
        return None
    d = _positive_steps(df)
    fig, axes = plt.subplots(1, len(names), figsize=(5.4 * len(names), 4.4),
                             layout="constrained", squeeze=False)
    colors = plt.get_cmap("tab10")
    for ax, name in zip(axes[0], names, strict=True):
        kx, ky, lx, ly = PLANES[name]
        for i, layer in enumerate(layers):
            pre = f"{split}/{layer + '/' if layer else ''}{name}/"
            if pre + kx not in d.columns:
                continue
            xv, yv = d[pre + kx].to_numpy(), d[pre + ky].to_numpy()
            ax.plot(xv, yv, color=colors(i), lw=1.2, label=layer or "penultimate")
            ax.scatter(xv[:1], yv[:1], color=colors(i), marker="o", s=30)
            ax.scatter(xv[-1:], yv[-1:], color=colors(i), marker="x", s=50)
        ax.set_xlabel(lx)
        ax.set_ylabel(ly)
        ax.set_title(f"layer-wise information plane: {name} (o start, x end)")
        ax.legend(fontsize=8)
    return fig


def _save(fig: Any, stem: Path, formats: tuple[str, ...]) -> list[Path]:
    import matplotlib.pyplot as plt

    paths = []
    for fmt in formats:
        path = stem.with_suffix(f".{fmt}")
        fig.savefig(path, dpi=110)
        paths.append(path)
    plt.close(fig)
    return paths


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "not reached" if x is None else str(x)
    if isinstance(x, float) and abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}" if isinstance(x, float) else str(x)


def summary_table(summary: dict[str, Any], records: list[dict[str, Any]] | None = None) -> str:
    """A short plain-text table of a run's outcome."""
    sc = summary.get("timescales", {}) or {}
    fin = summary.get("final", {}) or {}
    th = sc.get("thresholds", {})
    key = th.get("collapse", {}).get("key", "train/rnc1_mean")
    rows = [
        ("status", summary.get("status", "?")),
        ("steps", _fmt(summary.get("step"))),
        (f"t_fit   (train acc >= {th.get('fit', {}).get('threshold', '?')})",
         _fmt(sc.get("t_fit"))),
        (f"t_grok  (held-out acc >= {th.get('grok', {}).get('threshold', '?')})",
         _fmt(sc.get("t_grok"))),
        (f"t_collapse ({key} <= "
         f"{th.get('collapse', {}).get('fraction_of_value_at_t_fit', '?')} x value at t_fit)",
         _fmt(sc.get("t_collapse"))),
        ("final train / held-out accuracy",
         f"{_fmt(fin.get('train/acc'))} / {_fmt(fin.get('test/acc'))}"),
        (f"{key} at t_fit -> final", f"{_fmt(sc.get('rnc1_at_fit'))} -> {_fmt(fin.get(key))}"),
        ("held-out error / Theorem 3.2 bound",
         f"{_fmt(fin.get('test/error'))} / {_fmt(fin.get('test/bound'))}"),
        ("wall time", f"{summary.get('wall_time_s', math.nan):.1f} s"),
    ]
    if records:
        gap = [r for r in records if r.get("train/acc", 0) >= 1.0]
        if gap:
            worst = min(r["test/acc"] for r in gap)
            rows.insert(5, ("lowest held-out acc while train acc = 1", _fmt(worst)))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)
