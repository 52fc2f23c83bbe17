"""Forecast grokking while a run is still memorising (issue 14), and measure how good it is.

Theory (science.md sections 1 and 4): the training set is fit on a ~1/eta time scale; after
the fit, the within-class variance contracts on a ~1/(eta*lambda) time scale and held-out
accuracy rises with that contraction.  The forecaster therefore fits, at evaluation step t and
from the records up to t only, the post-fit relaxation of a collapse signal y(s) (a record
key, :data:`SIGNALS`) as a straight line on transformed axes (:data:`MODELS`)

    log y(s) = a + b x(s),   x(s) = s ("exp": exponential relaxation to a zero floor)
                             x(s) = log s ("power": power-law relaxation),

on the last ``window`` evaluation points at or after t_fit, and extrapolates it to the level
``L`` at which held-out accuracy crossed ``grok_threshold`` in the calibration runs
(``level_mode`` "relative": L = level * y(t_fit); "absolute": L = level).  The point forecast
solves a + b x = log L.  The interval is the union of two Fieller intervals (the exact
confidence set of an inverse regression with Student-t errors, ``confidence``): the one at
``level_hi`` and the one at ``level_lo`` (the extreme levels seen in the calibration runs), so
it carries both the fit's uncertainty and the spread of the level across calibration runs.
A fit whose slope is not significantly of the right sign (the Fieller set is unbounded) says
"not_yet".

What the calibration data showed (and the ``handoff`` option): train RNC1 has contracted only
to 0.67-0.92 of its t_fit value when held-out accuracy crosses 0.8, so the collapse fit gives
the only forecast early (lead > 0.5) but a coarse one; once held-out accuracy itself rises, its
extrapolation is better.  ``handoff="accuracy"`` reports the accuracy extrapolation once that
has a forecast and held-out accuracy has reached ``handoff_fraction`` x grok_threshold (the
collapse fit before); ``"none"`` keeps the collapse fit throughout (method ``collapse_fit`` in
:data:`METHODS`).  t_collapse always comes from the collapse fit of train RNC1.

Calibration evidence (:func:`_score`, mean capped relative error with "not yet" as 1, on the
calib sweep; lower is better): train RNC1 relative, exp, window 8, handoff at 0.375 x
threshold 0.360; the same with handoff at any accuracy 0.413; the collapse fit alone 0.54
(window 16: 0.538, 8: 0.541); the power form instead of exp 0.45 (with handoff) and 0.67
(alone) at every window; held-out RNC1 / NC1 as the signal 0.44-0.45 with handoff and 0.60-1.0
alone (they rise after t_fit, so they forecast late); the accuracy baseline 0.454
(acc_window 8; 16: 0.51), inverse_wd 0.51.  The margins between the best few candidates are
small (0.360 / 0.374 / 0.374).

Known limits: the exp form relaxes to a zero floor, so a signal that levels off above the
level is still forecast to cross it (a false alarm); in relative mode the reference y(t_fit)
is one noisy point, which the Fieller interval does not carry.

Statuses (:data:`STATUSES`): ``not_yet`` (no forecast: before t_fit, too few post-fit points,
no contraction yet, a forecast farther than ``max_ratio`` x t), ``ok``, ``grokked`` (held-out
accuracy has crossed: the observed t_grok is reported), ``never`` (the method forecasts that
the run never groks, e.g. :func:`inverse_wd` at weight decay 0).

Two baselines share the interface (:data:`METHODS`): :func:`accuracy_extrapolation`
(logit of held-out accuracy, linear in log step over the last ``acc_window`` points, to the
threshold) and :func:`inverse_wd` (t_grok = ``inverse_wd_c`` / lambda, with the constant
taken from one calibration run, ``inverse_wd_run``).

Every default of :class:`ForecastOptions` is what :func:`calibrate` returns on the ``calib``
sweep (fig3-small at 60k steps: demo preset, weight decay 0.1/0.03/0.01 x seeds 0, 1); the
test ``test_defaults_are_calibrate_on_calib`` recomputes them from a fixture of those records.
:func:`evaluate` refuses runs whose config digest is in ``calibrated_on``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sys
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from latephase.config import ForecastConfig
from latephase.errors import LatephaseError, RunDirError, unknown_choice
from latephase.keys import STEP, record_key
from latephase.timescales import first_crossing, value_at

STATUSES = ("ok", "not_yet", "grokked", "never")


class ForecastError(LatephaseError, ValueError):
    """Bad forecaster options or evaluation input (one line naming what and what is valid)."""


# ---------------------------------------------------------------------------- registries
@dataclass(frozen=True)
class Signal:
    """A record curve: ``{role's split}/{measure}``; role "train" or "heldout"."""

    role: str
    measure: str
    doc: str


#: collapse signals the forecaster can fit (all expected to fall after the fit)
SIGNALS: dict[str, Signal] = {
    "train_rnc1": Signal("train", "rnc1_mean", "train RNC1 (mean-norm proxy), the theory's"),
    "heldout_rnc1": Signal("heldout", "rnc1_mean", "held-out RNC1 (mean-norm proxy)"),
    "heldout_nc1": Signal("heldout", "nc1", "held-out NC1 = Tr(Sigma_W)/Tr(Sigma_B)"),
}

#: model forms: the x axis on which log(signal) is a straight line (step > 0 required for log)
MODELS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "exp": lambda s: s,  # log y = a + b s: exponential relaxation toward 0
    "power": np.log,  # log y = a + b log s: power-law relaxation toward 0
}
#: inverse of each model's x axis
_MODEL_INV: dict[str, Callable[[float], float]] = {"exp": lambda x: x, "power": math.exp}

LEVEL_MODES = ("relative", "absolute")
#: handoff choices: the baseline whose forecast replaces the collapse fit once it has one
#: (filled in below, after the baselines are defined)
HANDOFFS: dict[str, Callable[..., Forecast] | None] = {"none": None}


# ---------------------------------------------------------------------------- options
@dataclass(frozen=True)
class ForecastOptions(ForecastConfig):
    """Every choice of the forecaster, as plain scalars: the fields of
    :class:`latephase.config.ForecastConfig` (config keys ``forecast.<name>``, documented
    there and by ``latephase config``), plus their validation.

    The defaults are exactly what :func:`calibrate` returns on the calib sweep (see the
    module docstring); ``calibrated_on`` lists those runs' config digests.  ``enabled`` is
    read by the training loop only.
    """

    def validate(self) -> ForecastOptions:
        """Raise :class:`ForecastError` naming the first bad option; return self."""
        _check_choice("signal", self.signal, SIGNALS)
        _check_choice("model", self.model, MODELS)
        _check_choice("level_mode", self.level_mode, LEVEL_MODES)
        _check_choice("handoff", self.handoff, HANDOFFS)
        for name in ("window", "min_points", "acc_window"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 3:
                raise ForecastError(f"forecast option {name}={v!r}: expected an integer >= 3")
        if self.window < self.min_points:
            raise ForecastError(f"forecast option window={self.window!r}: expected >= "
                                f"min_points ({self.min_points})")
        for name in ("level", "level_lo", "level_hi", "inverse_wd_c"):
            v = getattr(self, name)
            if not _is_real(v) or not (math.isfinite(v) and v > 0):
                raise ForecastError(f"forecast option {name}={v!r}: expected a finite "
                                    "number > 0")
        if not self.level_lo <= self.level <= self.level_hi:
            raise ForecastError(f"forecast option level={self.level!r}: expected level_lo "
                                f"({self.level_lo}) <= level <= level_hi ({self.level_hi})")
        if not _is_real(self.confidence) or not 0.0 < self.confidence < 1.0:
            raise ForecastError(f"forecast option confidence={self.confidence!r}: expected a "
                                "number in (0, 1)")
        if not _is_real(self.handoff_fraction) or not 0.0 <= self.handoff_fraction < 1.0:
            raise ForecastError(f"forecast option handoff_fraction={self.handoff_fraction!r}: "
                                "expected a number in [0, 1)")
        if not _is_real(self.max_ratio) or not self.max_ratio > 1.0:
            raise ForecastError(f"forecast option max_ratio={self.max_ratio!r}: expected a "
                                "number > 1")
        return self


def from_config(cfg: ForecastConfig) -> ForecastOptions:
    """The options of the ``forecast.*`` config keys, validated."""
    return ForecastOptions(**dataclasses.asdict(cfg)).validate()


def _is_real(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _check_choice(name: str, value: object, choices: Collection[str]) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ForecastError(f"forecast option {name}: " + unknown_choice(name, value, choices))


# ---------------------------------------------------------------------------- result
@dataclass(frozen=True)
class Forecast:
    """A forecast made at ``step`` (the last record's step) by ``method``.

    ``status`` is one of :data:`STATUSES`; ``reason`` says why when it is not ``ok``.
    Times are steps (None when not forecast)."""

    step: float | None
    status: str
    reason: str = ""
    method: str = "collapse"
    t_grok: float | None = None
    t_grok_lo: float | None = None
    t_grok_hi: float | None = None
    t_collapse: float | None = None
    t_collapse_lo: float | None = None
    t_collapse_hi: float | None = None

    def as_record(self) -> dict[str, Any]:
        """The forecast as plain fields (for a record or JSON)."""
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------- helpers
def _num(v: object) -> float:
    """A record value as a float; NaN for None, strings, bools and anything non-numeric."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return math.nan
    return float(v)


def _columns(records: Sequence[Mapping[str, Any]], keys: Sequence[str]
             ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Steps (sorted, finite only) and each key's values as float arrays (NaN if missing)."""
    rows = [r for r in records if math.isfinite(_num(r.get(STEP)))]
    steps = np.array([_num(r[STEP]) for r in rows], dtype=float)
    order = np.argsort(steps, kind="stable")
    cols = {k: np.array([_num(r.get(k)) for r in rows], dtype=float)[order] for k in keys}
    return steps[order], cols


@lru_cache(maxsize=512)
def _t_quantile(dof: int, confidence: float) -> float:
    """Two-sided Student-t quantile t_{dof}^{-1}(1/2 + confidence/2), via scipy.special (what
    scipy.stats.t.ppf calls; the same floats): importing scipy.stats costs a run ~34 MB."""
    from scipy.special import stdtrit

    return float(stdtrit(dof, 0.5 + confidence / 2.0))


@dataclass(frozen=True)
class LineFit:
    """OLS fit y = a + b (x - xbar) with Student-t quantile ``q`` for the interval."""

    a: float
    b: float
    xbar: float
    var_a: float
    var_b: float
    q: float

    def crossing(self, y: float) -> float:
        """x at which the fitted line reaches y."""
        return self.xbar + (y - self.a) / self.b

    def fieller(self, y: float) -> tuple[float, float] | None:
        """Fieller confidence set for the x at which the true line reaches y:
        {u : (a + b u - y)^2 <= q^2 (var_a + u^2 var_b)}, u = x - xbar; None when unbounded
        (b^2 <= q^2 var_b: slope not significantly non-zero)."""
        d = y - self.a
        qa = self.b * self.b - self.q * self.q * self.var_b
        if qa <= 0.0:
            return None
        qb = -2.0 * self.b * d
        qc = d * d - self.q * self.q * self.var_a
        disc = qb * qb - 4.0 * qa * qc
        root = math.sqrt(max(disc, 0.0))
        u1, u2 = (-qb - root) / (2 * qa), (-qb + root) / (2 * qa)
        return self.xbar + min(u1, u2), self.xbar + max(u1, u2)


def fit_line(x: np.ndarray, y: np.ndarray, confidence: float) -> LineFit | None:
    """Least-squares line through (x, y) (n >= 3 points, distinct x); None if degenerate.

    var_a = s^2 / n, var_b = s^2 / Sxx with s^2 = RSS / (n - 2); a and b are uncorrelated
    because x is centred."""
    n = len(x)
    if n < 3:
        return None
    xbar = float(x.mean())
    xc = x - xbar
    sxx = float(xc @ xc)
    if not sxx > 0.0:
        return None
    a = float(y.mean())
    b = float(xc @ (y - a)) / sxx
    resid = y - a - b * xc
    s2 = float(resid @ resid) / (n - 2)
    return LineFit(a, b, xbar, s2 / n, s2 / sxx, _t_quantile(n - 2, confidence))


def _extrapolate(steps: np.ndarray, y: np.ndarray, model: str, targets: Sequence[float],
                 direction: float, confidence: float, now: float, max_ratio: float
                 ) -> tuple[tuple[float, float, float] | None, str]:
    """(point, lo, hi) step at which the fitted line reaches ``targets[0]``, the interval the
    union of the Fieller intervals at every target; or None and the reason.  ``direction``
    is the sign the slope must have (-1 falling, +1 rising).  Point and lower end are clamped
    to ``now`` (the crossing has not been observed at ``now``)."""
    x = MODELS[model](steps)
    fit = fit_line(x, y, confidence)
    if fit is None:
        return None, "degenerate fit (repeated steps)"
    if not direction * fit.b > 0.0:
        return None, f"signal not {'falling' if direction < 0 else 'rising'} in the window"
    sets = [fit.fieller(t) for t in targets]
    if any(s is None for s in sets):
        return None, "slope not significant at the interval's confidence"
    inv = _MODEL_INV[model]
    try:
        point = inv(fit.crossing(targets[0]))
        lo = inv(min(s[0] for s in sets if s is not None))
        hi = inv(max(s[1] for s in sets if s is not None))
    except OverflowError:
        return None, "forecast beyond the float range"
    if not point <= max_ratio * now:
        return None, f"forecast beyond max_ratio ({max_ratio:g}) x the current step"
    return (max(point, now), max(lo, now), max(hi, now)), ""


def _log_positive(v: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(v > 0, np.log(np.where(v > 0, v, 1.0)), np.nan)


def _logit(v: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        ok = (v > 0) & (v < 1)
        w = np.where(ok, v, 0.5)
        return np.where(ok, np.log(w / (1 - w)), np.nan)


@dataclass(frozen=True)
class _Context:
    """What every method needs from the records: steps, columns, t_fit, observed t_grok."""

    steps: np.ndarray
    cols: dict[str, np.ndarray]
    now: float | None
    t_fit: float | None
    t_grok: float | None


def _context(records: Sequence[Mapping[str, Any]], keys: Sequence[str], train_split: str,
             heldout_split: str, grok_threshold: float, fit_threshold: float) -> _Context:
    fit_key, grok_key = record_key(train_split, "acc"), record_key(heldout_split, "acc")
    steps, cols = _columns(records, [fit_key, grok_key, *keys])
    if not len(steps):
        return _Context(steps, cols, None, None, None)
    t_fit = first_crossing(steps.tolist(), cols[fit_key].tolist(), fit_threshold)
    t_grok = first_crossing(steps.tolist(), cols[grok_key].tolist(), grok_threshold)
    return _Context(steps, cols, float(steps[-1]), t_fit, t_grok)


def _gate(ctx: _Context, method: str) -> Forecast | None:
    """The forecast when no fit is needed: no records, grokked, or before t_fit."""
    if ctx.now is None:
        return Forecast(None, "not_yet", "no records", method)
    if ctx.t_grok is not None:
        return Forecast(ctx.now, "grokked", "held-out accuracy crossed the threshold", method,
                        ctx.t_grok, ctx.t_grok, ctx.t_grok)
    if ctx.t_fit is None:
        return Forecast(ctx.now, "not_yet", "training set not fit yet", method)
    return None


def _window(ctx: _Context, values: np.ndarray, t_fit: float, n: int
            ) -> tuple[np.ndarray, np.ndarray]:
    ok = (ctx.steps >= t_fit) & (ctx.steps > 0) & np.isfinite(values)
    return ctx.steps[ok][-n:], values[ok][-n:]


def _check_thresholds(grok_threshold: float, fit_threshold: float, collapse_fraction: float
                      ) -> None:
    for name, v in (("grok_threshold", grok_threshold), ("fit_threshold", fit_threshold),
                    ("collapse_fraction", collapse_fraction)):
        if not _is_real(v) or not 0.0 < v <= 1.0:
            raise ForecastError(f"{name}={v!r}: expected a number in (0, 1]")


# ---------------------------------------------------------------------------- methods
def forecast(records: Sequence[Mapping[str, Any]], options: ForecastOptions | None = None, *,
             train_split: str = "train", heldout_split: str = "test",
             grok_threshold: float = 0.8, fit_threshold: float = 0.99,
             collapse_fraction: float = 0.5, weight_decay: float | None = None) -> Forecast:
    """Forecast t_grok (and t_collapse) from ``records`` (up to the last one only) by the
    collapse fit described in the module docstring.  ``weight_decay`` is unused (the
    methods of :data:`METHODS` share one signature)."""
    opt = (options or ForecastOptions()).validate()
    _check_thresholds(grok_threshold, fit_threshold, collapse_fraction)
    sig = SIGNALS[opt.signal]
    sig_key = record_key(train_split if sig.role == "train" else heldout_split, sig.measure)
    rnc1_key = record_key(train_split, "rnc1_mean")
    ctx = _context(records, [sig_key, rnc1_key], train_split, heldout_split, grok_threshold,
                   fit_threshold)
    gated = _gate(ctx, "collapse")
    if gated is not None:
        return gated
    assert ctx.now is not None and ctx.t_fit is not None  # noqa: S101 (narrowing for mypy)
    tc = _collapse(ctx, rnc1_key, opt, collapse_fraction)
    steps, vals = _window(ctx, ctx.cols[sig_key], ctx.t_fit, opt.window)
    base = dict(step=ctx.now, method="collapse", t_collapse=tc[0], t_collapse_lo=tc[1],
                t_collapse_hi=tc[2])
    if len(steps) < opt.min_points:
        return Forecast(status="not_yet", reason=f"{len(steps)} post-fit points of {sig_key} "
                        f"(min_points {opt.min_points})", **base)  # type: ignore[arg-type]
    ref = 1.0
    if opt.level_mode == "relative":
        ref = value_at(ctx.steps.tolist(), ctx.cols[sig_key].tolist(), ctx.t_fit)
        if not (math.isfinite(ref) and ref > 0):
            return Forecast(status="not_yet", reason=f"{sig_key} not positive at t_fit",
                            **base)  # type: ignore[arg-type]
    targets = [math.log(ref * lv) for lv in (opt.level, opt.level_hi, opt.level_lo)]
    res, why = _extrapolate(steps, _log_positive(vals), opt.model, targets, -1.0,
                            opt.confidence, ctx.now, opt.max_ratio)
    handoff = HANDOFFS[opt.handoff]
    acc_now = ctx.cols[record_key(heldout_split, "acc")]
    acc_now = acc_now[np.isfinite(acc_now)]
    if handoff is not None and len(acc_now) and \
            acc_now[-1] >= opt.handoff_fraction * grok_threshold:
        h = handoff(records, opt, train_split=train_split, heldout_split=heldout_split,
                    grok_threshold=grok_threshold, fit_threshold=fit_threshold,
                    collapse_fraction=collapse_fraction)
        if h.status == "ok":
            return Forecast(status="ok", reason=f"handoff to {h.method}", t_grok=h.t_grok,
                            t_grok_lo=h.t_grok_lo, t_grok_hi=h.t_grok_hi,
                            **base)  # type: ignore[arg-type]
    if res is None:
        return Forecast(status="not_yet", reason=why, **base)  # type: ignore[arg-type]
    return Forecast(status="ok", t_grok=res[0], t_grok_lo=res[1], t_grok_hi=res[2],
                    **base)  # type: ignore[arg-type]


def _collapse(ctx: _Context, rnc1_key: str, opt: ForecastOptions, fraction: float
              ) -> tuple[float | None, float | None, float | None]:
    """t_collapse: observed (train RNC1 below fraction x its value at t_fit) or the same
    model fitted to train RNC1 and extrapolated to that level (interval: the fit's only)."""
    assert ctx.t_fit is not None and ctx.now is not None  # noqa: S101
    s, v = ctx.steps.tolist(), ctx.cols[rnc1_key].tolist()
    ref = value_at(s, v, ctx.t_fit)
    if not (math.isfinite(ref) and ref > 0):
        return None, None, None
    seen = first_crossing(s, v, fraction * ref, rising=False, start=ctx.t_fit)
    if seen is not None:
        return seen, seen, seen
    steps, vals = _window(ctx, ctx.cols[rnc1_key], ctx.t_fit, opt.window)
    if len(steps) < opt.min_points:
        return None, None, None
    res, _ = _extrapolate(steps, _log_positive(vals), opt.model, [math.log(fraction * ref)],
                          -1.0, opt.confidence, ctx.now, opt.max_ratio)
    return (None, None, None) if res is None else res


def accuracy_extrapolation(records: Sequence[Mapping[str, Any]],
                           options: ForecastOptions | None = None, *,
                           train_split: str = "train", heldout_split: str = "test",
                           grok_threshold: float = 0.8, fit_threshold: float = 0.99,
                           collapse_fraction: float = 0.5,
                           weight_decay: float | None = None) -> Forecast:
    """Baseline: logit(held-out accuracy) = a + b log(step) on the last ``acc_window``
    post-fit points, solved for logit(grok_threshold); Fieller interval at ``confidence``."""
    opt = (options or ForecastOptions()).validate()
    _check_thresholds(grok_threshold, fit_threshold, collapse_fraction)
    key = record_key(heldout_split, "acc")
    ctx = _context(records, [], train_split, heldout_split, grok_threshold, fit_threshold)
    gated = _gate(ctx, "accuracy")
    if gated is not None:
        return gated
    assert ctx.now is not None and ctx.t_fit is not None  # noqa: S101
    y = _logit(ctx.cols[key])
    steps, vals = _window(ctx, y, ctx.t_fit, opt.acc_window)
    if len(steps) < opt.min_points:
        return Forecast(ctx.now, "not_yet", f"{len(steps)} post-fit points of {key} "
                        f"(min_points {opt.min_points})", "accuracy")
    g = grok_threshold if grok_threshold < 1.0 else 1.0 - 1e-6
    res, why = _extrapolate(steps, vals, "power", [math.log(g / (1.0 - g))], 1.0,
                            opt.confidence, ctx.now, opt.max_ratio)
    if res is None:
        return Forecast(ctx.now, "not_yet", why, "accuracy")
    return Forecast(ctx.now, "ok", "", "accuracy", *res)


def inverse_wd(records: Sequence[Mapping[str, Any]], options: ForecastOptions | None = None,
               *, train_split: str = "train", heldout_split: str = "test",
               grok_threshold: float = 0.8, fit_threshold: float = 0.99,
               collapse_fraction: float = 0.5, weight_decay: float | None = None) -> Forecast:
    """Baseline: t_grok = inverse_wd_c / weight_decay (Theorem 4.3's 1/lambda scaling, the
    constant from one calibration run); no interval (lo, hi None).  Weight decay 0:
    status ``never``.  Gated like the others (not_yet before t_fit)."""
    opt = (options or ForecastOptions()).validate()
    _check_thresholds(grok_threshold, fit_threshold, collapse_fraction)
    if weight_decay is None or not _is_real(weight_decay) or not weight_decay >= 0:
        raise ForecastError(f"weight_decay={weight_decay!r}: inverse_wd needs the run's "
                            "weight decay, a number >= 0")
    ctx = _context(records, [], train_split, heldout_split, grok_threshold, fit_threshold)
    gated = _gate(ctx, "inverse_wd")
    if gated is not None:
        return gated
    if weight_decay == 0:
        return Forecast(ctx.now, "never", "weight decay 0: c / lambda is infinite",
                        "inverse_wd")
    t = max(opt.inverse_wd_c / weight_decay, float(ctx.now or 0.0))
    return Forecast(ctx.now, "ok", "", "inverse_wd", t)


HANDOFFS["accuracy"] = accuracy_extrapolation


def collapse_fit(records: Sequence[Mapping[str, Any]], options: ForecastOptions | None = None,
                 **kwargs: Any) -> Forecast:
    """:func:`forecast` with ``handoff="none"``: the collapse fit alone, for comparison."""
    opt = dataclasses.replace(options or ForecastOptions(), handoff="none")
    return dataclasses.replace(forecast(records, opt, **kwargs), method="collapse_fit")


#: forecasting methods, one signature: (records, options, *, splits, thresholds, weight_decay)
METHODS: dict[str, Callable[..., Forecast]] = {
    "collapse": forecast, "collapse_fit": collapse_fit, "accuracy": accuracy_extrapolation,
    "inverse_wd": inverse_wd,
}


def forecast_history(records: Sequence[Mapping[str, Any]],
                     options: ForecastOptions | None = None, *, method: str = "collapse",
                     **kwargs: Any) -> list[Forecast]:
    """The forecast at each evaluation step, from the records up to that step only
    (``kwargs`` as for :func:`forecast`)."""
    if method not in METHODS:
        raise ForecastError(unknown_choice("forecast method", method, METHODS))
    fn = METHODS[method]
    recs = sorted((r for r in records if math.isfinite(_num(r.get(STEP)))),
                  key=lambda r: _num(r[STEP]))
    return [fn(recs[: i + 1], options, **kwargs) for i in range(len(recs))]


# ---------------------------------------------------------------------------- runs
def config_digest(info: Mapping[str, Any]) -> str:
    """12 hex digits of sha256 of the run's resolved training config (``config.json``'s
    ``config`` without its ``name`` and ``forecast`` sections), identifying the experiment
    whatever the directory and the forecaster's own options."""
    cfg = dict(info.get("config") or {})
    cfg.pop("name", None)
    cfg.pop("forecast", None)
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Run:
    """A run's records and what the forecast needs from its config."""

    name: str
    path: str
    records: list[dict[str, Any]]
    digest: str
    weight_decay: float
    lr: float
    grok_threshold: float
    fit_threshold: float
    collapse_fraction: float
    t_fit: float | None
    t_grok: float | None
    horizon: float
    status: str = "finished"

    @property
    def label(self) -> str:
        """``sweep/run``: unique across sweeps whose runs share names."""
        return f"{Path(self.path).parent.name}/{self.name}"

    def kwargs(self) -> dict[str, Any]:
        return dict(grok_threshold=self.grok_threshold, fit_threshold=self.fit_threshold,
                    collapse_fraction=self.collapse_fraction, weight_decay=self.weight_decay)


def load_run(path: str | Path) -> Run:
    """A run directory's records, config digest, weight decay and thresholds."""
    from latephase.runs import RunDir

    rd = RunDir.open(path)
    info = rd.info()
    cfg = info.get("config") or {}
    ts = cfg.get("timescales") or {}
    opt = cfg.get("optim") or {}
    records = rd.records()
    if not records:
        raise RunDirError(f"{str(rd.path)!r}: no records in metrics.jsonl")
    grok, fit = float(ts.get("grok_threshold", 0.8)), float(ts.get("fit_threshold", 0.99))
    ctx = _context(records, [], "train", "test", grok, fit)
    return Run(rd.path.name, str(rd.path), records, config_digest(info),
               float(opt.get("weight_decay", math.nan)), float(opt.get("lr", math.nan)),
               grok, fit, float(ts.get("collapse_fraction", 0.5)), ctx.t_fit, ctx.t_grok,
               float(ctx.now or 0.0), str(rd.summary().get("status", "unknown")))


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories among ``paths``: each a run (holds config.json) or a sweep (its
    sub-directories that are runs, sorted by name)."""
    from latephase.runs import CONFIG

    out: list[Path] = []
    for p in map(Path, paths):
        if (p / CONFIG).is_file():
            out.append(p)
        elif p.is_dir():
            subs = sorted(q for q in p.iterdir() if (q / CONFIG).is_file())
            if not subs:
                raise RunDirError(f"{str(p)!r} holds no runs (no sub-directory with "
                                  f"{CONFIG}); pass a run or sweep directory")
            out += subs
        else:
            raise RunDirError(f"{str(p)!r} is not a directory; pass a run or sweep directory")
    return out


# ---------------------------------------------------------------------------- calibration
#: candidates :func:`calibrate` chooses among (every combination)
CALIBRATION_GRID: dict[str, tuple[Any, ...]] = {
    "signal": tuple(SIGNALS), "model": tuple(MODELS), "level_mode": LEVEL_MODES,
    "window": (8, 16, 32), "handoff": tuple(HANDOFFS),
}
ACC_WINDOWS = (8, 16, 32)
HANDOFF_FRACTIONS = (0.0, 0.25, 0.375, 0.5, 0.625)


def _levels(runs: Sequence[Run], signal: str, mode: str) -> list[float]:
    """The signal's level at each run's t_grok (relative: divided by its value at t_fit)."""
    sig = SIGNALS[signal]
    out = []
    for r in runs:
        key = record_key("train" if sig.role == "train" else "test", sig.measure)
        steps, cols = _columns(r.records, [key])
        s, v = steps.tolist(), cols[key].tolist()
        assert r.t_grok is not None and r.t_fit is not None  # noqa: S101
        lv = value_at(s, v, r.t_grok)
        if mode == "relative":
            lv /= value_at(s, v, r.t_fit)
        out.append(lv)
    return out


def _score(runs: Sequence[Run], options: ForecastOptions, method: str) -> float:
    """Calibration score (lower is better): the mean over every evaluation point in
    [t_fit, t_grok) of every run of min(|t_hat - t_grok| / t_grok, 1), a point without a
    forecast counting as error 1 (as bad as forecasting 0 or 2 t_grok): it rewards forecasts
    that are both early and accurate; the cap keeps one wild extrapolation from deciding."""
    errs = []
    for r in runs:
        assert r.t_grok is not None  # noqa: S101
        for f in forecast_history(r.records, options, method=method, **r.kwargs()):
            if f.step is None or f.step >= r.t_grok or r.t_fit is None or f.step < r.t_fit:
                continue
            errs.append(min(abs(f.t_grok - r.t_grok) / r.t_grok, 1.0)
                        if f.status == "ok" and f.t_grok is not None else 1.0)
    return float(np.mean(errs)) if errs else math.inf


def calibrate(run_dirs: Iterable[str | Path], base: ForecastOptions | None = None
              ) -> ForecastOptions:
    """Options fitted on calibration runs (or sweeps) that all grok.

    For every combination of :data:`CALIBRATION_GRID`: the levels of the signal at each run's
    t_grok give ``level`` (median), ``level_lo`` / ``level_hi`` (min / max); the combination
    with the lowest :func:`_score` wins.  ``acc_window`` is chosen first, the same way, for
    the accuracy baseline (and the handoff); ``handoff_fraction`` last, among
    :data:`HANDOFF_FRACTIONS`, for the winner.  ``inverse_wd_c`` = t_grok x lambda of ONE run:
    the one whose weight decay is the median of the calibration weight decays (lowest seed
    name first).
    ``calibrated_on``: the runs' config digests."""
    start = base or ForecastOptions()
    runs = [load_run(p) for p in find_runs(run_dirs)]
    bad = [r.name for r in runs if r.t_grok is None or r.t_fit is None]
    if bad or len(runs) < 2:
        raise ForecastError(f"calibrate needs >= 2 runs that fit and grok; got {len(runs)}"
                            + (f", of which {', '.join(bad)} do not" if bad else ""))
    acc = min(ACC_WINDOWS, key=lambda w: _score(
        runs, dataclasses.replace(start, acc_window=w), "accuracy"))
    base = dataclasses.replace(start, acc_window=acc, handoff_fraction=0.0)
    best: tuple[float, ForecastOptions] | None = None
    grid = CALIBRATION_GRID
    for signal in grid["signal"]:
        for mode in grid["level_mode"]:
            lv = _levels(runs, signal, mode)
            if not all(math.isfinite(x) and x > 0 for x in lv):
                continue
            for model in grid["model"]:
                for window in grid["window"]:
                    for handoff in grid["handoff"]:
                        cand = dataclasses.replace(
                            base, signal=signal, model=model, level_mode=mode,
                            window=window, handoff=handoff, level=float(np.median(lv)),
                            level_lo=min(lv), level_hi=max(lv))
                        sc = _score(runs, cand, "collapse")
                        if best is None or sc < best[0]:
                            best = (sc, cand)
    assert best is not None  # noqa: S101
    chosen = best[1]
    if chosen.handoff != "none":
        frac = min(HANDOFF_FRACTIONS, key=lambda h: _score(
            runs, dataclasses.replace(chosen, handoff_fraction=h), "collapse"))
        chosen = dataclasses.replace(chosen, handoff_fraction=frac)
    wds = sorted(r.weight_decay for r in runs)
    mid = wds[(len(wds) - 1) // 2]
    one = sorted((r for r in runs if r.weight_decay == mid), key=lambda r: r.name)[0]
    assert one.t_grok is not None  # noqa: S101
    return dataclasses.replace(
        chosen, inverse_wd_c=one.t_grok * one.weight_decay,
        inverse_wd_run=one.name, calibrated_on=",".join(sorted(r.digest for r in runs)))


# ---------------------------------------------------------------------------- evaluation
LEAD_BINS: tuple[tuple[float, float], ...] = ((0.0, 0.25), (0.25, 0.5), (0.5, 0.75),
                                              (0.75, 1.0))


@dataclass
class Evaluation:
    """The evaluation: ``points`` (one row per method x run x evaluation step with a
    verdict), ``table`` (per method x lead bin), ``summary`` (per method), ``runs``."""

    points: list[dict[str, Any]]
    table: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    runs: list[dict[str, Any]]

    def markdown(self) -> str:
        """The three tables (by lead bin, per method, per run) as markdown."""
        cols = ("run", "status", "weight_decay", "lr", "grok_threshold", "t_fit", "t_grok",
                "horizon")
        runs = [{c: ("-" if r[c] is None else r[c]) for c in cols} for r in self.runs]
        return "\n\n".join(_markdown(t) for t in (self.table, self.summary, runs))


def _markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return "(no rows)"
    cols = list(rows[0])

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return "-" if not math.isfinite(v) else f"{v:.3g}"
        return str(v)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def evaluate(paths: Iterable[str | Path], options: ForecastOptions | None = None, *,
             methods: Sequence[str] = tuple(METHODS), truncate_fraction: float = 0.5,
             allow_calibration_runs: bool = False) -> Evaluation:
    """Forecast every evaluation step of every run (or sweep) in ``paths`` with each method.

    Definitions (lead = (t_grok - t) / t_grok; a forecast is a status "ok" one):
    - error |t_hat - t_grok| / t_grok and coverage (t_grok_lo <= t_grok <= t_grok_hi) over
      the forecasts at t_fit <= t < t_grok of runs that grok, binned by lead (:data:`LEAD_BINS`);
      not-yet fraction: evaluation points in the bin without a forecast;
    - false alarm on a finished run (summary status "finished") that never crosses
      grok_threshold within its horizon H (last step): a forecast at t >= t_fit with
      t_hat <= H; rates per forecast (over its evaluation points at or after t_fit) and per
      run (>= 1 false alarm);
    - "far too few steps": every grokking run cut at ``truncate_fraction`` x t_grok, so its
      horizon H = the cut holds no ground truth; it counts like a never-grok run within H
      (a forecast at t <= H of t_hat <= H is a false alarm).  Forecasts use only records up
      to t, so the cut run's forecasts are the full run's forecasts at t <= H.
    A run that has not grokked and is not finished (still running, failed) has no ground
    truth: its points are kept as kind "incomplete" and enter no rate.
    Raises :class:`ForecastError` on a run whose config digest is in
    ``options.calibrated_on`` unless ``allow_calibration_runs`` (then a warning on stderr).
    """
    opt = (options or ForecastOptions()).validate()
    for m in methods:
        if m not in METHODS:
            raise ForecastError(unknown_choice("forecast method", m, METHODS))
    if not 0.0 < truncate_fraction < 1.0:
        raise ForecastError(f"truncate_fraction={truncate_fraction!r}: expected a number in "
                            "(0, 1)")
    runs = [load_run(p) for p in find_runs(paths)]
    calib = set(filter(None, opt.calibrated_on.split(",")))
    used = [r.label for r in runs if r.digest in calib]
    if used:
        msg = (f"{len(used)} run(s) were used for calibration ({', '.join(used)}): "
               "evaluating on them measures the fit, not the forecast")
        if not allow_calibration_runs:
            raise ForecastError(msg + "; drop them or pass allow_calibration_runs=True")
        print(f"latephase: WARNING: {msg}", file=sys.stderr)
    points: list[dict[str, Any]] = []
    run_rows = []
    for r in runs:
        run_rows.append({"run": r.label, "path": r.path, "weight_decay": r.weight_decay,
                         "lr": r.lr, "grok_threshold": r.grok_threshold, "t_fit": r.t_fit,
                         "t_grok": r.t_grok, "horizon": r.horizon, "status": r.status,
                         "calibration_run": r.digest in calib})
        for m in methods:
            hist = forecast_history(r.records, opt, method=m, **r.kwargs())
            points += _verdicts(r, m, hist, truncate_fraction)
    return Evaluation(points, _bin_table(points, methods), _summary(points, methods), run_rows)


def _verdicts(r: Run, method: str, hist: Sequence[Forecast], cut: float
              ) -> list[dict[str, Any]]:
    out = []
    for f in hist:
        t = f.step
        if t is None or r.t_fit is None or t < r.t_fit:
            continue
        t_hat = f.t_grok if f.status == "ok" else None
        ok = t_hat is not None
        row: dict[str, Any] = {"method": method, "run": r.label, "step": t,
                               "status": f.status, "t_hat": f.t_grok, "lo": f.t_grok_lo,
                               "hi": f.t_grok_hi, "t_grok": r.t_grok}
        if r.t_grok is not None:
            if t < r.t_grok:
                row.update(kind="grok", lead=(r.t_grok - t) / r.t_grok,
                           error=abs(t_hat - r.t_grok) / r.t_grok if t_hat is not None else None,
                           covered=(bool(f.t_grok_lo <= r.t_grok <= f.t_grok_hi)
                                    if ok and f.t_grok_lo is not None
                                    and f.t_grok_hi is not None else None))
                out.append(row)
            horizon = cut * r.t_grok
            if t <= horizon:
                out.append({**row, "kind": "truncated", "horizon": horizon,
                            "false_alarm": t_hat is not None and t_hat <= horizon,
                            "lead": None, "error": None, "covered": None})
        elif r.status != "finished":  # may still grok: no ground truth, no false alarm
            out.append({**row, "kind": "incomplete"})
        else:
            row.update(kind="never", horizon=r.horizon,
                       false_alarm=t_hat is not None and t_hat <= r.horizon)
            out.append(row)
    return out


def _stats(xs: Sequence[float]) -> tuple[float, float, float]:
    if not xs:
        return math.nan, math.nan, math.nan
    q = np.percentile(np.asarray(xs, dtype=float), [50, 25, 75])
    return float(q[0]), float(q[1]), float(q[2])


def _bin_table(points: Sequence[Mapping[str, Any]], methods: Sequence[str]
               ) -> list[dict[str, Any]]:
    rows = []
    for m in methods:
        for lo, hi in LEAD_BINS:
            pts = [p for p in points if p["method"] == m and p["kind"] == "grok"
                   and lo < p["lead"] <= hi]
            fc = [p for p in pts if p["error"] is not None]
            cov = [p["covered"] for p in fc if p["covered"] is not None]
            med, q1, q3 = _stats([p["error"] for p in fc])
            rows.append({"method": m, "lead": f"({lo:g}, {hi:g}]", "median_error": med,
                         "q25": q1, "q75": q3, "n_forecasts": len(fc),
                         "n_runs": len({p["run"] for p in fc}),
                         "coverage": float(np.mean(cov)) if cov else math.nan,
                         "not_yet": (1 - len(fc) / len(pts)) if pts else math.nan,
                         "n_points": len(pts)})
    return rows


def _summary(points: Sequence[Mapping[str, Any]], methods: Sequence[str]
             ) -> list[dict[str, Any]]:
    rows = []
    for m in methods:
        g = [p for p in points if p["method"] == m and p["kind"] == "grok"]
        fc = [p for p in g if p["error"] is not None]
        cov = [p["covered"] for p in fc if p["covered"] is not None]
        row: dict[str, Any] = {"method": m, "median_error": _stats([p["error"] for p in fc])[0],
                               "coverage": float(np.mean(cov)) if cov else math.nan,
                               "not_yet": (1 - len(fc) / len(g)) if g else math.nan,
                               "grok_runs": len({p["run"] for p in g})}
        for kind in ("never", "truncated"):
            pk = [p for p in points if p["method"] == m and p["kind"] == kind]
            per_run: dict[str, bool] = {}
            for p in pk:
                per_run[p["run"]] = per_run.get(p["run"], False) or p["false_alarm"]
            row[f"{kind}_runs"] = len(per_run)
            row[f"{kind}_fa_per_forecast"] = (float(np.mean([p["false_alarm"] for p in pk]))
                                              if pk else math.nan)
            row[f"{kind}_fa_per_run"] = (float(np.mean(list(per_run.values())))
                                         if per_run else math.nan)
        rows.append(row)
    return rows


def write_evaluation(ev: Evaluation, out: str | Path, formats: Sequence[str] = ("png",),
                     dpi: float = 150.0) -> list[Path]:
    """forecast_eval.md / .json / .csv (bins) / _points.csv and the figure (error vs lead
    per method, median with IQR bars, n annotated, log y) under ``out``."""
    import csv

    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    files = [d / "forecast_eval.md", d / "forecast_eval.json", d / "forecast_eval.csv",
             d / "forecast_eval_points.csv"]
    files[0].write_text(ev.markdown() + "\n")
    files[1].write_text(json.dumps(_finite({"table": ev.table, "summary": ev.summary,
                                            "runs": ev.runs}), indent=1, allow_nan=False))
    for path, rows in ((files[2], ev.table), (files[3], ev.points)):
        cols = list(dict.fromkeys(k for r in rows for k in r))
        with path.open("w", newline="") as fh:
            w = csv.DictWriter(fh, cols)
            w.writeheader()
            w.writerows(rows)
    return files + _figure(ev, d / "forecast_eval", formats, dpi)


def _finite(obj: Any) -> Any:
    """NaN / inf -> None, recursively (strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def _figure(ev: Evaluation, stem: Path, formats: Sequence[str], dpi: float) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(r["method"] for r in ev.table))
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(7.0, 6.4), sharex=True,
                                  gridspec_kw={"height_ratios": [3, 1.3]})
    centers = np.array([(lo + hi) / 2 for lo, hi in LEAD_BINS])
    for i, m in enumerate(methods):
        rows = [r for r in ev.table if r["method"] == m]
        x = centers + (i - (len(methods) - 1) / 2) * 0.04
        y = np.array([r["median_error"] for r in rows], dtype=float)
        err = np.array([[r["median_error"] - r["q25"] for r in rows],
                        [r["q75"] - r["median_error"] for r in rows]], dtype=float)
        line = ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=m)
        for xi, yi, r in zip(x, y, rows, strict=True):
            if math.isfinite(yi):
                ax.annotate(f"{r['n_forecasts']}/{r['n_runs']}r", (xi, yi),
                            textcoords="offset points", xytext=(3, -10 if i % 2 else 4),
                            fontsize=6, color=line[0].get_color())
        ax2.plot(x, [1 - r["not_yet"] if math.isfinite(r["not_yet"]) else math.nan
                     for r in rows], marker="o", color=line[0].get_color())
    ax.set_yscale("log")
    ax.set_ylabel("|t_hat - t_grok| / t_grok\n(median, IQR bars)")
    ax2.set_xlabel("lead time (t_grok - t) / t_grok")
    ax2.set_ylabel("fraction of points\nwith a forecast")
    ax2.set_ylim(-0.05, 1.05)
    ax2.set_xticks(centers, [r["lead"] for r in ev.table[:len(LEAD_BINS)]])
    n_grok = len({p["run"] for p in ev.points if p["kind"] == "grok"})
    ax.set_title(f"grokking forecast error vs lead time ({n_grok} grokking runs of "
                 f"{len(ev.runs)}; labels: forecasts/runs)", fontsize=9)
    for a in (ax, ax2):
        a.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = []
    for fmt in formats:
        p = stem.with_suffix("." + fmt)
        fig.savefig(p, dpi=dpi)
        out.append(p)
    plt.close(fig)
    return out
