"""Record keys: built and parsed here, and nowhere else.

A record (one line of metrics.jsonl) maps keys to values:

- ``step``;
- ``{split}/{measure}`` for a measure of the penultimate representation (or of the split,
  such as ``acc``); ``{split}/{layer}/{measure}`` for another measured layer;
- ``{split}/{estimator}/{quantity}`` (and ``{split}/{layer}/{estimator}/{quantity}``) for an
  information estimator of :data:`latephase.measures.information.ESTIMATORS`; a quantity
  ending in ``_se`` is the standard error of the quantity before it, one ending in
  ``_null`` its shuffled-pairs null;
- un-prefixed parameter norms (``weight_norm``, ``head_norm``, ...);
- ``forecast/{quantity}`` for the online grokking forecast (:mod:`latephase.forecast`):
  ``t_grok``, ``t_grok_lo``, ``t_grok_hi`` (NaN while there is none); ``forecast`` is not a
  split name.

Estimator names are passed in (``estimators=``) rather than imported, so this module needs
nothing else of the package.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

STEP = "step"
SEP = "/"
FORECAST = "forecast"


@dataclass(frozen=True)
class Key:
    """A parsed record key (``layer`` "" is the penultimate representation)."""

    split: str
    measure: str
    layer: str = ""
    estimator: str | None = None

    def __str__(self) -> str:
        return record_key(self.split, self.measure, self.layer, self.estimator)


def record_key(split: str, measure: str, layer: str = "", estimator: str | None = None) -> str:
    """``split[/layer][/estimator]/measure``."""
    parts = [split, *([layer] if layer else []), *([estimator] if estimator else []), measure]
    return SEP.join(parts)


def parse_key(key: str, estimators: Collection[str] = ()) -> Key | None:
    """The parts of ``key``; None for keys without a split (``step``, parameter norms).

    Layer names may themselves contain dots but not ``/``."""
    parts = key.split(SEP)
    if len(parts) < 2 or parts[0] == FORECAST:
        return None
    split, *middle, measure = parts
    estimator = None
    if middle and middle[-1] in estimators:
        estimator = middle.pop()
    return Key(split, measure, SEP.join(middle), estimator)


def forecast_key(quantity: str) -> str:
    """``forecast/{quantity}``."""
    return f"{FORECAST}{SEP}{quantity}"


def splits_of(keys: Iterable[str]) -> list[str]:
    """Split names found in record keys, in order of first appearance."""
    seen: dict[str, None] = {}
    for k in keys:
        p = parse_key(k)
        if p is not None:
            seen.setdefault(p.split)
    return list(seen)


def layers_of(keys: Iterable[str], split: str, estimators: Collection[str] = ()) -> list[str]:
    """Non-penultimate layers measured on ``split``."""
    seen: dict[str, None] = {}
    for k in keys:
        p = parse_key(k, estimators)
        if p is not None and p.split == split and p.layer:
            seen.setdefault(p.layer)
    return list(seen)
