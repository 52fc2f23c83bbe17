"""What every figure of a run needs: which split is which, the time scales, shared styling.

Split names are never assumed.  The run directory's ``config.json`` may name them
(``["tracker"]["train_split"]`` / ``["heldout_split"]``); otherwise the training split is
``train`` when present and the held-out one ``test`` when present, else the splits found in
the metrics columns (``{split}/acc``) decide: the first one is the training split, the first
other one (preferring the usual held-out names) the held-out split.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from latephase.keys import layers_of, parse_key, record_key

#: resolution of figures saved as raster images (``--dpi`` changes it)
DPI = 110.0

#: names tried, in order, for the held-out split when config.json does not say
HELDOUT_NAMES = ("test", "val", "valid", "validation", "holdout", "heldout", "dev", "eval")

#: one colour per split role / extra split, in order
SPLIT_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink")

#: (summary key, label, line style, colour) of the time-scale markers
MARKS = (("t_fit", "t_fit", ":", "tab:gray"), ("t_grok", "t_grok", "--", "tab:green"),
         ("t_collapse", "t_collapse", "-.", "tab:purple"))


@dataclass(frozen=True)
class Splits:
    """The run's split names: ``train`` (fit), ``heldout`` (population estimate) and the rest."""

    train: str | None
    heldout: str | None
    others: tuple[str, ...] = ()

    @property
    def all(self) -> list[str]:
        """Training, held-out, then the other splits (each once)."""
        return list(dict.fromkeys(s for s in (self.train, self.heldout, *self.others) if s))

    def label(self, split: str) -> str:
        """``train``, ``held-out`` (or ``held-out (val)``) or the split's own name."""
        if split == self.heldout:
            return "held-out" if split == "test" else f"held-out ({split})"
        return split

    def color(self, split: str) -> str:
        names = self.all
        return SPLIT_COLORS[names.index(split) % len(SPLIT_COLORS)] if split in names else "0.4"


def col(split: str, measure: str, layer: str = "", estimator: str | None = None) -> str:
    """The record key of a measure (built by :mod:`latephase.keys`)."""
    return record_key(split, measure, layer, estimator)


def splits_in(columns: Iterable[str]) -> list[str]:
    """Split names with an accuracy column ``{split}/acc``, in column order."""
    keys = [parse_key(c) for c in columns]
    return list(dict.fromkeys(k.split for k in keys
                              if k is not None and k.measure == "acc" and not k.layer))


def measured_layers(columns: Iterable[str], split: str,
                    estimators: Iterable[str] = ()) -> list[str]:
    """The extra layers of a Tracker run measured on ``split`` (those with an RNC1 column)."""
    cols = list(columns)
    have = set(cols)
    return [layer for layer in layers_of(cols, split, tuple(estimators))
            if col(split, "rnc1_mean", layer) in have]


def find_splits(info: Mapping[str, Any] | None, columns: Iterable[str]) -> Splits:
    """The run's :class:`Splits` from config.json (``info``) and the metrics columns.

    A split named in config.json but absent from the metrics is ignored (the columns
    decide), so a report never fails on a missing column.
    """
    found = splits_in(columns)
    tracker = (info or {}).get("tracker") or {}
    tracker = tracker if isinstance(tracker, Mapping) else {}
    train = tracker.get("train_split")
    train = train if train in found else ("train" if "train" in found else
                                          (found[0] if found else None))
    held = tracker.get("heldout_split")
    rest = [s for s in found if s != train]
    if held not in rest:
        named = [s for s in HELDOUT_NAMES if s in rest]
        held = named[0] if named else (rest[0] if rest else None)
    return Splits(train, held, tuple(s for s in rest if s != held))


@dataclass
class Context:
    """One run's metrics (pandas DataFrame), time scales, splits and config.json."""

    df: Any
    scales: dict[str, Any]
    splits: Splits
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def d(self) -> Any:
        """The rows at step > 0 (log-step axes)."""
        return self.df[self.df["step"] > 0]

    def has(self, column: str) -> bool:
        return column in self.df.columns and bool(self.df[column].notna().any())

    @property
    def rnc1_proxy(self) -> str:
        """``mean`` or ``max``: the scale proxy of RNC1 the time scales used."""
        key = str(self.scales.get("thresholds", {}).get("collapse", {}).get("key", "_mean"))
        return key.rsplit("_", 1)[-1] if key.rsplit("_", 1)[-1] in ("mean", "max") else "mean"


def mark_times(ax: Any, scales: Mapping[str, Any]) -> None:
    """Vertical lines at t_fit, t_grok and t_collapse (when reached)."""
    for key, label, style, color in MARKS:
        t = scales.get(key)
        if isinstance(t, int | float) and math.isfinite(t) and t > 0:
            ax.axvline(t, ls=style, color=color, lw=1.2, label=f"{label} = {t:,.0f}")


def setup(ax: Any, title: str, ylabel: str, *, logx: bool = True) -> None:
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)


def no_data(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=9,
            color="0.3", wrap=True)


def legend(ax: Any, **kw: Any) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=kw.pop("fontsize", 8), **kw)
