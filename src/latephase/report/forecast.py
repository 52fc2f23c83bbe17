"""The run's grokking forecast against the step it was made at (``figures/forecast.png``).

x: the evaluation step t; y: the forecast of t_grok made from the records up to t
(``forecast/t_grok``) with its interval.  The diagonal y = t separates forecasts of the
future (above) from the past; the horizontal line is the t_grok the run reached.
"""

from __future__ import annotations

import math
from typing import Any

from latephase.keys import forecast_key
from latephase.report.common import Context, legend, mark_times, setup


def forecast_figure(ctx: Context) -> Any:
    """The figure, or None when the run has no forecast values."""
    import matplotlib.pyplot as plt
    import numpy as np

    d = ctx.d
    key, lo_key, hi_key = (forecast_key(q) for q in ("t_grok", "t_grok_lo", "t_grok_hi"))
    if key not in d.columns:
        return None
    step = d["step"].to_numpy(float)
    t = d[key].to_numpy(float)
    ahead = np.isfinite(t) & (t > step)  # forecasts of the future (not the observed t_grok)
    if not ahead.any():
        return None
    fig, ax = plt.subplots(figsize=(6, 4.2), layout="constrained")
    if lo_key in d.columns and hi_key in d.columns:
        lo, hi = d[lo_key].to_numpy(float), d[hi_key].to_numpy(float)
        band = ahead & np.isfinite(lo) & np.isfinite(hi)
        ax.fill_between(step, np.where(band, lo, np.nan), np.where(band, hi, np.nan),
                        color="tab:purple", alpha=0.2, lw=0, label="interval")
    ax.plot(step[ahead], t[ahead], "o-", ms=2.5, color="tab:purple", lw=1,
            label="forecast of t_grok")
    grok = ctx.scales.get("t_grok")
    if isinstance(grok, int | float) and math.isfinite(grok):
        ax.axhline(grok, color="tab:green", ls="--", lw=1.2, label=f"t_grok reached = {grok:,.0f}")
    ax.plot([0, step.max()], [max(step[ahead].min() / 2, 1.0), step.max()], alpha=0)  # range
    xs = np.linspace(step[ahead].min() / 2, step.max(), 50)
    ax.plot(xs, xs, color="0.4", lw=0.8, ls=":", label="forecast = now (below: the past)")
    mark_times(ax, {k: v for k, v in ctx.scales.items() if k == "t_fit"})
    setup(ax, "online forecast of t_grok (records up to each step only)", "forecast of t_grok",
          logx=False)
    ax.set_xlim(0, step.max() * 1.02)
    ax.set_yscale("log")
    ax.set_ylim(top=min(ax.get_ylim()[1], 20 * step.max()))
    legend(ax, loc="best", fontsize=7)
    return fig
