"""train.threads = "auto" inside a sweep: each pool worker trains on cores // concurrent runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from latephase import sweep
from latephase.train import runtime


def test_local_pool_workers_get_their_share(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    monkeypatch.setattr(sweep, "run_in_pool", lambda c, workers, report: calls.extend(c))
    monkeypatch.setenv("OMP_NUM_THREADS", "8")  # a budget of 8 threads, whatever the machine
    jobs = [(f"/nowhere/r{i}", {}) for i in range(3)]
    sweep._local(jobs, 4, lambda res: None)  # 3 runs at once (not 4 workers): 8 // 3
    assert [args[2] for _, args, _ in calls] == [2, 2, 2]
    calls.clear()
    sweep._local(jobs * 4, 4, lambda res: None)  # 4 at once: 8 // 4
    assert {args[2] for _, args, _ in calls} == {2}
    calls.clear()
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    sweep._local(jobs * 4, 4, lambda res: None)  # never 0
    assert {args[2] for _, args, _ in calls} == {1}


def test_run_one_sets_what_auto_means(tmp_path: Path) -> None:
    previous = runtime.set_auto_threads(None)
    try:
        res = sweep.run_one(str(tmp_path / "bad"), {"train": {"steps": 0}}, 3)
        assert res["status"] == "failed" and "train.steps" in res["error"]
        assert runtime.resolve_threads("auto") == 3
        sweep.run_one(str(tmp_path / "bad"), {"train": {"steps": 0}})  # None: left as is
        assert runtime.resolve_threads("auto") == 3
    finally:
        runtime.set_auto_threads(previous)
