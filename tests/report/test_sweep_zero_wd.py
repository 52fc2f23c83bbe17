"""A sweep with weight decay 0 (grids often include it) draws its time-scale figure: those
runs cannot sit on the log weight-decay axis, so they are left out and the figure says so."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from latephase.report.sweep import KEY, timescale_plot  # noqa: E402
from latephase.runs import Status  # noqa: E402


def test_timescale_plot_with_weight_decay_zero() -> None:
    rows = [{KEY: wd, "seed": s, "status": Status.FINISHED, "t_fit": 5e3, "t_grok": t,
             "t_collapse": 1.4 * t} for wd, t in ((0.0, 5e4), (0.01, 3.5e4), (0.1, 1.3e4))
            for s in (0, 1)]
    fig = timescale_plot(rows, [])
    ax = fig.axes[0]
    xs = [x for coll in ax.collections for x, _ in coll.get_offsets()]
    assert xs and min(xs) == 0.01  # the wd-0 runs are not drawn ...
    notes = [t.get_text() for t in ax.texts]
    assert any("2 run(s) at weight decay 0, 2 grokked" in t for t in notes)  # ... but named
