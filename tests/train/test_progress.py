"""Progress lines for logs: one plain line every N seconds when stderr is not a terminal.

Ground truth: a fake clock, so the lines printed and their rate and ETA are known exactly
(rate = steps done / seconds, ETA = steps left / rate); and a real tiny run through the CLI
whose stderr is a pipe."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys

import pytest

from latephase.errors import ConfigError
from latephase.train.progress import EVERY_ENV, LineProgress, duration, every_s, progress_bar

from ..conftest import SMALL


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_lines_every_interval_with_rate_and_eta() -> None:
    out, clock = io.StringIO(), Clock()
    bar = LineProgress(1000, 0, every=30, postfix=True, file=out, clock=clock)
    clock.t += 10
    bar.update(100)
    bar.set_postfix_str("train 0.500 | test 0.250 | RNC1 0.3")
    assert out.getvalue() == ""  # 10 s < 30 s: nothing yet
    clock.t += 30  # 40 s, 400 steps: 10 step/s, 600 left -> 60 s
    bar.update(300)
    assert out.getvalue() == ""  # printed with the new point's postfix, not the old one
    bar.set_postfix_str("train 0.900 | test 0.700 | RNC1 0.1")
    assert out.getvalue().splitlines() == [
        "latephase: step 400/1,000 (40.0%) | train 0.900 | test 0.700 | RNC1 0.1 "
        "| 10 step/s | ETA 1m 00s"]
    clock.t += 5
    bar.update(100)
    bar.set_postfix_str("x")
    assert len(out.getvalue().splitlines()) == 1  # 5 s after the last line
    bar.close()
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and lines[1].startswith("latephase: step 500/1,000 (50.0%) | x")
    assert "\r" not in out.getvalue()


def test_ensemble_counts_steps_not_member_steps() -> None:
    out, clock = io.StringIO(), Clock()
    bar = LineProgress(3 * 1000, 3 * 200, every=0, per=3, file=out, clock=clock)
    clock.t += 20
    bar.update(3 * 200)  # 200 steps of 3 members in 20 s: 10 step/s, 600 left
    assert out.getvalue().strip() == ("latephase: step 400/1,000 (40.0%) | 10 step/s | "
                                      "ETA 1m 00s")


def test_tty_gets_tqdm_others_lines(monkeypatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv(EVERY_ENV, raising=False)
    pipe = progress_bar(10, 0, True, file=io.StringIO())
    assert isinstance(pipe, LineProgress) and pipe.every == 30
    tty = progress_bar(10, 0, True, file=Tty())
    assert not isinstance(tty, LineProgress)
    tty.close()
    quiet = io.StringIO()
    off = progress_bar(10, 0, False, file=quiet)
    off.update(10)
    off.close()
    assert quiet.getvalue() == ""  # --no-progress: silent


@pytest.mark.parametrize(("text", "value"), [("", 30.0), ("5", 5.0), (" 0.5 ", 0.5), ("0", 0.0)])
def test_every_from_env(text: str, value: float) -> None:
    assert every_s({EVERY_ENV: text}) == value


@pytest.mark.parametrize("text", ["soon", "-1", "nan", "inf"])
def test_every_bad_env(text: str) -> None:
    with pytest.raises(ConfigError, match=f"{EVERY_ENV}={text!r}: expected seconds"):
        every_s({EVERY_ENV: text})


def test_duration() -> None:
    assert [duration(x) for x in (0, 59.4, 61, 3599, 3600 * 2 + 180, float("nan"), -1)] == [
        "0s", "59s", "1m 01s", "59m 59s", "2h 03m", "?", "?"]


def test_run_into_a_pipe_writes_lines(tmp_path) -> None:
    env = {**os.environ, EVERY_ENV: "0", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "latephase.cli", "run", "--preset", "demo", *SMALL,
         "measures.information=[]", "--out", str(tmp_path), "--name", "r", "--no-figures"],
        capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("latephase: step ")]
    steps = [int(re.match(r"latephase: step ([\d,]+)/", ln)[1].replace(",", ""))  # type: ignore[index]
             for ln in lines]
    import json

    recorded = [json.loads(x)["step"] for x in (tmp_path / "r" / "metrics.jsonl").open()]
    assert steps and set(steps) <= set(recorded) and steps[-1] == recorded[-1] == 120
    assert all(re.search(r"\| train [\d.]+ \| test [\d.]+ \| RNC1 [\d.e+-]+ \| ", ln)
               for ln in lines)
