"""Training loop: schedule, determinism, bit-identical resume, divergence."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from latephase.config import Config, make_config
from latephase.runs import RunDir
from latephase.train import eval_steps, train
from latephase.train.loop import EpochSampler

from ..conftest import SMALL


def test_paper_schedule() -> None:
    s = eval_steps(30_000, "paper")
    assert s[:30] == list(range(30))
    assert s[30:42] == list(range(30, 150, 10))
    assert s[42:45] == [200, 400, 600] and s[-1] == 30_000
    assert all(b % 200 == 0 for b in s[42:])
    assert len(s) == 30 + 12 + 150


def test_log_schedule() -> None:
    s = eval_steps(10_000, "log", 50)
    assert s[0] == 0 and s[-1] == 10_000 and s == sorted(set(s))
    assert 30 <= len(s) <= 51
    assert 1 in s


def test_sampler_is_without_replacement_per_epoch() -> None:
    sampler = EpochSampler(1000, 100, seed=0)
    epoch = [sampler.next() for _ in range(10)]
    flat = sorted(int(i) for b in epoch for i in b)
    assert flat == list(range(1000))
    other = EpochSampler(1000, 100, seed=0)
    assert all((other.next() == b).all() for b in epoch)


def _run(cfg: Config, path: Path, **kw) -> dict:
    run = RunDir.create(path, cfg)
    return train(cfg, run, progress=False, **kw)


def test_deterministic(tmp_path, small_cfg) -> None:
    _run(small_cfg, tmp_path / "a")
    _run(small_cfg, tmp_path / "b")
    a = (tmp_path / "a" / "metrics.jsonl").read_bytes()
    assert a == (tmp_path / "b" / "metrics.jsonl").read_bytes()
    assert len(a.splitlines()) == len(eval_steps(small_cfg.train.steps, "log", 30))


@pytest.mark.parametrize("stop", [1, 57, 119])
def test_resume_is_bit_identical(tmp_path, small_cfg, stop) -> None:
    full = _run(small_cfg, tmp_path / "full")
    assert full["status"] == "finished"
    run = RunDir.create(tmp_path / "cut", small_cfg)
    with pytest.raises(KeyboardInterrupt):
        train(small_cfg, run, progress=False, stop_after=stop)
    assert RunDir.open(tmp_path / "cut").summary()["status"] == "interrupted"
    resumed = train(small_cfg, RunDir.open(tmp_path / "cut"), resume=True, progress=False)
    assert resumed["status"] == "finished"
    assert ((tmp_path / "cut" / "metrics.jsonl").read_bytes()
            == (tmp_path / "full" / "metrics.jsonl").read_bytes())


def test_resume_from_older_checkpoint_drops_later_lines(tmp_path, small_cfg) -> None:
    """A crash after records were written but before the next checkpoint: on resume those
    records are dropped and recomputed, never duplicated."""
    _run(small_cfg, tmp_path / "full")
    path = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        train(small_cfg, RunDir.create(path, small_cfg), progress=False, stop_after=30)
    old = (path / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(KeyboardInterrupt):
        train(small_cfg, RunDir.open(path), resume=True, progress=False, stop_after=90)
    n_lines = len((path / "metrics.jsonl").read_bytes().splitlines())
    (path / "checkpoints" / "last.pt").write_bytes(old)  # the step-90 checkpoint is "lost"
    with (path / "metrics.jsonl").open("a") as fh:
        fh.write('{"step": 91, "train/ac')  # and a torn line
    train(small_cfg, RunDir.open(path), resume=True, progress=False)
    assert n_lines == len([s for s in eval_steps(120, "log", 30) if s <= 90])
    full = (tmp_path / "full" / "metrics.jsonl").read_bytes()
    assert (path / "metrics.jsonl").read_bytes() == full


def test_sigkill_then_resume(tmp_path) -> None:
    """Kill the CLI with SIGKILL mid-run; `--resume` completes it with the same metrics."""
    args = [*SMALL, "train.steps=1500", "model.widths=[64, 64]", "train.eval_schedule=paper"]
    base = [sys.executable, "-m", "latephase.cli", "run", "--preset", "demo", "--no-progress",
            "--no-figures", "--out", str(tmp_path)]
    ref = subprocess.run([*base, "--name", "ref", *args], capture_output=True, timeout=300)
    assert ref.returncode == 0, ref.stderr
    proc = subprocess.Popen([*base, "--name", "killed", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    metrics = tmp_path / "killed" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:
        if metrics.exists() and len(metrics.read_bytes().splitlines()) > 80:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert json.loads((tmp_path / "killed" / "summary.json").read_text())["status"] == "running"
    res = subprocess.run([*base[:4], "--resume", str(tmp_path / "killed"), "--no-progress",
                          "--no-figures"], capture_output=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert metrics.read_bytes() == (tmp_path / "ref" / "metrics.jsonl").read_bytes()


def test_divergence_is_recorded(tmp_path, small_cfg) -> None:
    cfg = make_config("demo", overrides=[*SMALL, "optim.name=sgd", "optim.lr=1e6"])
    summary = _run(cfg, tmp_path / "div")
    assert summary["status"] == "diverged"
    assert "train loss" in summary["error"]
    saved = json.loads((tmp_path / "div" / "summary.json").read_text())
    assert saved["status"] == "diverged"
