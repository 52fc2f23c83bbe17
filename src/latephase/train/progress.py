"""Progress output a log file can hold.

On a terminal the training loop shows a tqdm bar.  When stderr is not a terminal (a log
file, a pipe, a batch job) a bar's carriage-return updates pile up in the file, so
:class:`LineProgress` prints one plain line every ``LATEPHASE_PROGRESS_EVERY_S`` seconds
(default 30) and a last one at the end::

    latephase: step 1,200/30,000 (4.0%) | train 0.98 | test 0.61 | RNC1 0.31 | 85 step/s | ETA 5m

ETA = remaining steps / the step rate of this session (steps done since it started over
the time since then).
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from typing import IO, Any

from latephase.errors import ConfigError

#: environment variable: seconds between progress lines when stderr is not a terminal
EVERY_ENV = "LATEPHASE_PROGRESS_EVERY_S"
#: default seconds between progress lines
EVERY_S = 30.0


def every_s(environ: dict[str, str] | None = None) -> float:
    """The interval between progress lines: ``$LATEPHASE_PROGRESS_EVERY_S`` or 30 s."""
    text = (os.environ if environ is None else environ).get(EVERY_ENV, "").strip()
    if not text:
        return EVERY_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise ConfigError(f"{EVERY_ENV}={text!r}: expected seconds between progress lines, "
                          "a finite number >= 0")
    return value


def duration(seconds: float) -> str:
    """``5m 39s``, ``2h 03m``, ``12s``; ``?`` when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


class LineProgress:
    """The part of tqdm's interface the loop uses (``n``, ``update``, ``set_postfix_str``,
    ``close``), printing a line at most every ``every`` seconds instead of redrawing.

    ``per``: counted units per training step (an ensemble of M members counts M per step).
    With ``postfix`` (the caller sets one at every point) a line is printed when the postfix
    (accuracies, RNC1) of the current point is set, so it never shows the previous point's
    values; else on ``update``.
    """

    def __init__(self, total: int, initial: int = 0, *, every: float = EVERY_S, per: int = 1,
                 postfix: bool = False, file: IO[str] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.n, self.initial = total, initial, initial
        self.every, self.per = every, max(1, per)
        self.file = file if file is not None else sys.stderr
        self.clock = clock
        self.t0 = self.last = clock()
        self.postfix: str | None = None
        self.wait_postfix = postfix
        self.printed_n: int | None = None
        self.closed = False

    def update(self, k: int = 1) -> None:
        self.n += k
        if not self.wait_postfix:
            self._maybe()

    def set_postfix_str(self, s: str, refresh: bool = False) -> None:
        self.postfix = s
        self._maybe()

    def _maybe(self) -> None:
        if self.clock() - self.last >= self.every:
            self._print()

    def line(self) -> str:
        """The progress line for the current state."""
        elapsed = self.clock() - self.t0
        rate = (self.n - self.initial) / self.per / elapsed if elapsed > 0 else math.nan
        left = (self.total - self.n) / self.per
        eta = left / rate if rate > 0 else math.nan
        step, total = self.n // self.per, self.total // self.per
        pct = 100.0 * self.n / self.total if self.total else 100.0
        parts = [f"latephase: step {step:,}/{total:,} ({pct:.1f}%)"]
        if self.postfix:
            parts.append(self.postfix)
        parts += [f"{rate:,.0f} step/s" if math.isfinite(rate) else "? step/s",
                  f"ETA {duration(eta) if left > 0 else '0s'}"]
        return " | ".join(parts)

    def _print(self) -> None:
        print(self.line(), file=self.file, flush=True)
        self.last, self.printed_n = self.clock(), self.n

    def close(self) -> None:
        """Print the final state once (unless it was just printed)."""
        if not self.closed and self.printed_n != self.n and self.n > self.initial:
            self._print()
        self.closed = True


def progress_bar(total: int, initial: int, enabled: bool, *, per: int = 1,
                 postfix: bool = False, file: IO[str] | None = None) -> Any:
    """A tqdm bar on a terminal, a :class:`LineProgress` elsewhere, a silent bar when
    ``enabled`` is false (``per``, ``postfix``: as for LineProgress)."""
    from tqdm.auto import tqdm

    stream = file if file is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    if enabled and not (callable(isatty) and isatty()):
        return LineProgress(total, initial, every=every_s(), per=per, postfix=postfix,
                            file=stream)
    return tqdm(total=total, initial=initial, unit="step", disable=not enabled,
                dynamic_ncols=True, file=stream, smoothing=0.05)
