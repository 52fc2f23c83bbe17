"""Evaluation schedules: a registry name -> the sorted steps in [0, total] to evaluate at.

Pure Python (no torch), so the CLI and config checks can use it cheaply.
"""

from __future__ import annotations

from collections.abc import Callable


def _paper_schedule(total: int, points: int) -> list[int]:
    """Every step below 30, every 10 below 150, then every ``total // 150`` steps (all <= total).

    Built from three ranges (about 200 steps whatever ``total``), not by scanning every step."""
    every = max(1, total // 150)
    end = total + 1
    return sorted({*range(min(30, end)), *range(0, min(150, end), 10), *range(0, end, every)})


def _log_schedule(total: int, points: int) -> list[int]:
    """Step 0 and ``points`` log-spaced steps from 1 to ``total`` (duplicates merged)."""
    if points < 2:
        return [0, total]
    ratio = total ** (1.0 / (points - 1))
    return sorted({0, total} | {min(total, round(ratio**i)) for i in range(points)})


SCHEDULES: dict[str, Callable[[int, int], list[int]]] = {
    "paper": _paper_schedule,
    "log": _log_schedule,
}


def eval_steps(total: int, schedule: str = "paper", points: int = 200) -> list[int]:
    """Sorted evaluation steps in [0, total]; always includes 0 and ``total``."""
    steps = set(SCHEDULES[schedule](total, points)) | {0, total}
    return sorted(steps)
