"""Time scales of a run (science.md section 4), defined so they can be measured:

- t_fit: first step at which train accuracy reaches ``fit_threshold`` (default 0.99);
- t_grok: first step at which held-out accuracy reaches ``grok_threshold`` (default 0.8);
  the training and held-out splits are named by the caller (default ``train`` / ``test``);
- t_collapse: first step after t_fit at which train RNC1 falls below
  ``collapse_fraction`` (default 0.5) times its value at t_fit.

A crossing between evaluation steps s0 < s1 (values v0, v1) is interpolated linearly on the
log-step axis: log t = log s0 + (thr - v0)/(v1 - v0) (log s1 - log s0); when s0 = 0 the
interpolation is linear in the step.  A curve that never crosses gives None.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from latephase.config import TimescaleConfig
from latephase.keys import record_key


def _interp_step(s0: float, s1: float, frac: float) -> float:
    if frac <= 0.0 or frac >= 1.0:  # exactly on a point: no rounding through exp(log)
        return s0 if frac <= 0.0 else s1
    if s0 <= 0:
        return s0 + frac * (s1 - s0)
    return math.exp(math.log(s0) + frac * (math.log(s1) - math.log(s0)))


def first_crossing(steps: Sequence[float], values: Sequence[float], threshold: float, *,
                   rising: bool = True, start: float = -math.inf) -> float | None:
    """First (log-interpolated) step >= ``start`` at which values cross ``threshold``.

    ``rising``: crossing upward (value >= threshold); else downward (value <= threshold).
    Non-finite values are skipped.
    """
    sign = 1.0 if rising else -1.0
    pts = [(float(s), float(v)) for s, v in zip(steps, values, strict=True)
           if math.isfinite(float(v))]
    if math.isfinite(start):
        v_start = value_at([p[0] for p in pts], [p[1] for p in pts], start)
        pts = [p for p in pts if p[0] > start]
        if math.isfinite(v_start):
            pts.insert(0, (start, v_start))
    for i, (s, v) in enumerate(pts):
        if sign * (v - threshold) >= 0:
            if i == 0:
                return s
            s0, v0 = pts[i - 1]
            return _interp_step(s0, s, (threshold - v0) / (v - v0))
    return None


def value_at(steps: Sequence[float], values: Sequence[float], t: float) -> float:
    """A curve's value at step ``t``, interpolated linearly on the log-step axis."""
    pts = [(float(s), float(v)) for s, v in zip(steps, values, strict=True)]
    for (s0, v0), (s1, v1) in zip(pts, pts[1:], strict=False):
        if s0 <= t <= s1:
            if s1 == s0:
                return v1
            if s0 <= 0:
                frac = (t - s0) / (s1 - s0)
            else:
                frac = (math.log(t) - math.log(s0)) / (math.log(s1) - math.log(s0))
            return v0 + frac * (v1 - v0)
    return math.nan


def compute_timescales(records: Sequence[dict[str, Any]], cfg: TimescaleConfig,
                       rnc1_key: str | None = None, *, train_split: str = "train",
                       heldout_split: str | None = "test") -> dict[str, Any]:
    """t_fit, t_grok, t_collapse (None when not reached) and the thresholds used.

    The curves are ``{train_split}/acc`` (t_fit), ``{heldout_split}/acc`` (t_grok; None
    without a held-out split) and ``rnc1_key`` (t_collapse; default
    ``{train_split}/rnc1_mean``).
    """
    rnc1_key = record_key(train_split, "rnc1_mean") if rnc1_key is None else rnc1_key
    fit_key = record_key(train_split, "acc")
    grok_key = None if heldout_split is None else record_key(heldout_split, "acc")
    recs = sorted(records, key=lambda r: r["step"])
    steps = [r["step"] for r in recs]
    col = {k: [float(r.get(k, math.nan)) for r in recs]
           for k in (fit_key, grok_key, rnc1_key) if k is not None}
    t_fit = first_crossing(steps, col[fit_key], cfg.fit_threshold) if recs else None
    t_grok = (first_crossing(steps, col[grok_key], cfg.grok_threshold)
              if recs and grok_key is not None else None)
    rnc1_fit = value_at(steps, col[rnc1_key], t_fit) if t_fit is not None else math.nan
    t_collapse = None
    if t_fit is not None and math.isfinite(rnc1_fit):
        t_collapse = first_crossing(steps, col[rnc1_key], cfg.collapse_fraction * rnc1_fit,
                                    rising=False, start=t_fit)
    return {
        "t_fit": t_fit,
        "t_grok": t_grok,
        "t_collapse": t_collapse,
        "rnc1_at_fit": rnc1_fit if math.isfinite(rnc1_fit) else None,
        "thresholds": {
            "fit": {"key": fit_key, "threshold": cfg.fit_threshold},
            "grok": {"key": grok_key, "threshold": cfg.grok_threshold},
            "collapse": {"key": rnc1_key, "fraction_of_value_at_t_fit": cfg.collapse_fraction},
        },
    }
