"""The RunRecorder: one writer, checkpoints that never execute code, verified resume,
divergence, checkpoints on time, disk full, injected kills (issue 11)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from latephase import faults
from latephase.cli import main
from latephase.config import make_config
from latephase.errors import ResumeError, RunDirBusy, RunDirError
from latephase.runs import RunDir, RunRecorder, Status, read_checkpoint, write_checkpoint
from latephase.train import eval_steps, train

from .conftest import SMALL

SRC = Path(__file__).resolve().parents[1] / "src"


def _trained(tmp_path: Path, cfg, name: str = "r", **kw) -> Path:
    path = tmp_path / name
    train(cfg, RunDir.create(path, cfg), progress=False, **kw)
    return path


def _interrupted(tmp_path: Path, cfg, stop: int, name: str = "cut") -> Path:
    path = tmp_path / name
    with pytest.raises(KeyboardInterrupt):
        train(cfg, RunDir.create(path, cfg), progress=False, stop_after=stop)
    return path


def _snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file() and p.name != ".lock"}


# ----------------------------------------------------------------------------- security


class _Payload:
    """Unpickling this (weights_only=False) would create ``target``."""

    def __init__(self, target: Path) -> None:
        self.target = str(target)

    def __reduce__(self):  # noqa: ANN204
        return (open, (self.target, "w"))


@pytest.mark.parametrize("wrapped", [False, True], ids=["plain", "inside-digest"])
def test_malicious_checkpoint_runs_nothing(tmp_path, small_cfg, capsys, wrapped) -> None:
    path = _interrupted(tmp_path, small_cfg, 30)
    target = tmp_path / "pwned"
    ck = path / "checkpoints" / "last.pt"
    if wrapped:  # a valid outer file and digest around an evil inner pickle
        import hashlib
        import io

        buf = io.BytesIO()
        torch.save({"step": 1, "evil": _Payload(target)}, buf)
        payload = buf.getvalue()
        torch.save({"format": 2, "sha256": hashlib.sha256(payload).hexdigest(),
                    "blob": torch.frombuffer(bytearray(payload), dtype=torch.uint8)}, ck)
    else:
        torch.save({"step": 1, "evil": _Payload(target)}, ck)
    before = _snapshot(path)
    code = main(["run", "--resume", str(path), "--no-progress", "--no-figures"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and not target.exists()
    assert len(err.splitlines()) == 1 and "weights_only" in err, err
    assert _snapshot(path) == before  # nothing deleted or rewritten


def test_no_weights_only_false_in_the_package() -> None:
    hits = [str(p) for p in SRC.rglob("*.py") if "weights_only=False" in p.read_text()]
    assert hits == []


# ----------------------------------------------------------------------------- one writer


def test_second_writer_is_refused(tmp_path, small_cfg) -> None:
    path = _interrupted(tmp_path, small_cfg, 30)
    holder = RunRecorder.take(path)
    try:
        with pytest.raises(RunDirBusy, match="in use by another process"):
            train(small_cfg, RunDir.open(path), resume=True, progress=False)
        with pytest.raises(RunDirBusy):
            RunDir.create(path, small_cfg)
    finally:
        holder.close()
    assert train(small_cfg, RunDir.open(path), resume=True, progress=False)["status"] == "finished"


def test_second_resume_from_another_process_exits_2(tmp_path, small_cfg) -> None:
    path = _interrupted(tmp_path, small_cfg, 30)
    code = ("import sys, time; from latephase.runs import RunRecorder; "
            "r = RunRecorder.take(sys.argv[1]); print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        res = subprocess.run([sys.executable, "-m", "latephase.cli", "run", "--resume",
                              str(path), "--no-progress", "--no-figures"], capture_output=True,
                             text=True, timeout=120)
    finally:
        holder.kill()
        holder.wait()
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().count("\n") == 0 and "in use" in res.stderr


def test_simultaneous_creation_has_one_winner(tmp_path, small_cfg) -> None:
    """Many racing pairs: exactly one creator wins each directory, the other gets a
    RunDirError; no crash on a shared temporary file."""
    for i in range(40):
        path = tmp_path / f"r{i}"
        outcome: list[str] = []
        barrier = threading.Barrier(2)

        def create(path: Path = path, outcome: list[str] = outcome,
                   barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                rec = RunDir.create(path, small_cfg)
                outcome.append("created")
                time.sleep(0.01)
                rec.close()
            except RunDirError:
                outcome.append("refused")
            except Exception as exc:  # noqa: BLE001 - reported by the assertion
                outcome.append(repr(exc))

        threads = [threading.Thread(target=create) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcome) == ["created", "refused"], outcome
        assert not list(path.glob(".*.tmp"))


@pytest.mark.parametrize("name", ["../x", "/abs", "a/b", ".."])
def test_run_names_cannot_escape_out(tmp_path, small_cfg, name, capsys) -> None:
    code = main(["run", "--preset", "demo", *SMALL, "--out", str(tmp_path / "out"), "--name",
                 name, "--no-progress", "--no-figures"])
    assert code == 2 and "plain directory name" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not Path("/abs").exists()


# ----------------------------------------------------------------------------- verified resume


def _corrupt_torn_covered(path: Path) -> None:
    data = (path / "metrics.jsonl").read_bytes()
    (path / "metrics.jsonl").write_bytes(data[: len(data) - 40])  # tears the last covered line


def _corrupt_deleted_lines(path: Path) -> None:
    lines = (path / "metrics.jsonl").read_bytes().splitlines(keepends=True)
    (path / "metrics.jsonl").write_bytes(b"".join(lines[:5] + lines[10:]))


def _corrupt_edited_line(path: Path) -> None:
    lines = (path / "metrics.jsonl").read_bytes().splitlines(keepends=True)
    rec = json.loads(lines[3])
    rec["train/acc"] = 0.5
    lines[3] = (json.dumps(rec) + "\n").encode()
    (path / "metrics.jsonl").write_bytes(b"".join(lines))


def _corrupt_deleted_metrics(path: Path) -> None:
    (path / "metrics.jsonl").unlink()


def _corrupt_flipped_checkpoint(path: Path) -> None:
    ck = path / "checkpoints" / "last.pt"
    data = bytearray(ck.read_bytes())
    start = len(data) // 2
    for i in range(start, start + 64):
        data[i] ^= 0xFF
    ck.write_bytes(bytes(data))


def _corrupt_no_checkpoint(path: Path) -> None:
    (path / "checkpoints" / "last.pt").unlink()


@pytest.mark.parametrize("corrupt, match", [
    (_corrupt_torn_covered, "complete lines"),
    (_corrupt_deleted_lines, "complete lines|were changed"),
    (_corrupt_edited_line, "were changed"),
    (_corrupt_deleted_metrics, "is missing"),
    (_corrupt_flipped_checkpoint, "corrupted|not a loadable"),
    (_corrupt_no_checkpoint, "no checkpoint"),
], ids=["torn-covered-line", "deleted-lines", "edited-line", "deleted-metrics",
        "flipped-checkpoint-bytes", "no-checkpoint"])
def test_resume_refuses_and_changes_nothing(tmp_path, small_cfg, corrupt, match, capsys) -> None:
    path = _interrupted(tmp_path, small_cfg, 60)
    corrupt(path)
    before = _snapshot(path)
    with pytest.raises(ResumeError, match=match):
        train(small_cfg, RunDir.open(path), resume=True, progress=False)
    assert _snapshot(path) == before
    assert main(["run", "--resume", str(path), "--no-progress", "--no-figures"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert _snapshot(path) == before


def test_checkpoint_roundtrip_and_digest(tmp_path) -> None:
    state = {"step": 3, "t": torch.arange(5.0), "nested": {"a": [1, 2], "b": (3.5, "x")}}
    write_checkpoint(tmp_path / "c.pt", state)
    back = read_checkpoint(tmp_path / "c.pt")
    assert back["step"] == 3 and torch.equal(back["t"], state["t"])
    assert back["nested"] == {"a": [1, 2], "b": (3.5, "x")}
    assert not list(tmp_path.glob(".*.tmp"))


def test_extend_a_finished_run(tmp_path, small_cfg, capsys) -> None:
    """`--resume DIR train.steps=N` keeps the records and continues on the N-step schedule;
    every record it adds equals the same step of a run trained for N steps from the start
    (training does not depend on the evaluation points)."""
    path = _trained(tmp_path, small_cfg)
    old = [r["step"] for r in RunDir(path).records()]
    assert main(["run", "--resume", str(path), "--no-progress", "--no-figures"]) == 2
    assert "already finished" in capsys.readouterr().err
    assert main(["run", "--resume", str(path), "train.steps=200", "--no-progress",
                 "--no-figures"]) == 0
    recs = RunDir(path).records()
    new = [s for s in eval_steps(200, "log", 30) if s > old[-1]]
    assert [r["step"] for r in recs] == old + new
    assert RunDir(path).summary()["status"] == "finished"
    assert RunDir(path).config().train.steps == 200
    long_cfg = make_config("demo", overrides=[*SMALL, "train.steps=200"])
    ref = {r["step"]: r for r in RunDir(_trained(tmp_path, long_cfg, "long")).records()}
    for r in recs:
        if r["step"] in ref and r["step"] > old[-1]:
            assert r == ref[r["step"]]
    assert main(["run", "--resume", str(path), "optim.lr=1", "--no-progress"]) == 2


def test_finished_needs_every_record(tmp_path, small_cfg) -> None:
    rec = RunDir.create(tmp_path / "r", small_cfg)
    for s in (0, 1, 2):
        rec.append({"step": s, "train/acc": 1.0})
    summary = rec.finish(Status.FINISHED, expected_steps=[0, 1, 2, 3])
    rec.close()
    assert summary["status"] == "failed" and "3 of 4" in summary["error"]


# ----------------------------------------------------------------------------- divergence


def test_divergence_before_measures(tmp_path, capsys) -> None:
    """lr=1e12 with cross-entropy: parameters go non-finite; the run is `diverged` with the
    step and the reason (printed too), not `failed` with an SVD traceback."""
    cfg = make_config("demo", overrides=[*SMALL, "train.steps=100", "optim.lr=1e12",
                                         "train.loss=cross_entropy", "measures.information=[]"])
    path = tmp_path / "div"
    summary = train(cfg, RunDir.create(path, cfg), progress=False)
    err = capsys.readouterr().err
    assert summary["status"] == "diverged", summary
    assert "at step" in summary["error"] and "diverged" in err
    with pytest.raises(ResumeError, match="diverged"):
        train(cfg, RunDir.open(path), resume=True, progress=False)
    assert main(["run", "--resume", str(path), "--no-progress", "--no-figures"]) == 2
    assert RunDir(path).summary()["status"] == "diverged"


# ----------------------------------------------------------------------------- checkpoints on time


def test_checkpoints_between_evaluation_points(tmp_path, monkeypatch) -> None:
    """With evaluation points far apart, `checkpoint_every_s` still holds: a (fake) clock
    that advances one second per call makes checkpoints due inside the long interval."""
    import types

    import latephase.train.loop as loop_mod

    clock = types.SimpleNamespace(t=0.0)

    def tick() -> float:
        clock.t += 1.0
        return clock.t

    monkeypatch.setattr(loop_mod, "time", types.SimpleNamespace(perf_counter=tick))
    taken: list[int] = []
    save = loop_mod.Member.checkpoint

    def logged(self) -> None:  # noqa: ANN001
        taken.append(self.step)
        save(self)

    monkeypatch.setattr(loop_mod.Member, "checkpoint", logged)
    cfg = make_config("demo", overrides=[*SMALL, "train.eval_points=3",
                                         "train.checkpoint_every_s=25"])
    _trained(tmp_path, cfg)
    schedule = eval_steps(120, "log", 3)
    between = [s for s in taken if s not in schedule]
    assert len(between) >= 3, (taken, schedule)


# ----------------------------------------------------------------------------- disk full


def test_disk_full_marks_failed_and_leaves_no_temp_files(tmp_path, small_cfg, monkeypatch) -> None:
    monkeypatch.setattr(faults, "_counts", {})
    monkeypatch.setenv("LATEPHASE_FAULT", "checkpoint_write:5:enospc")
    path = tmp_path / "full"
    with pytest.raises(OSError, match="No space"):
        train(small_cfg, RunDir.create(path, small_cfg), progress=False)
    summary = RunDir(path).summary()
    assert summary["status"] == "failed" and "No space" in summary["error"]
    assert not [p for p in path.rglob("*") if p.name.endswith(".tmp")]
    steps = [r["step"] for r in RunDir(path).records()]
    assert steps == eval_steps(120, "log", 30)[: len(steps)]  # whole lines only
    monkeypatch.delenv("LATEPHASE_FAULT")
    assert train(small_cfg, RunDir.open(path), resume=True, progress=False)["status"] \
        == "finished"


def test_disk_full_in_metrics_append_keeps_whole_lines(tmp_path, small_cfg, monkeypatch) -> None:
    monkeypatch.setattr(faults, "_counts", {})
    monkeypatch.setenv("LATEPHASE_FAULT", "metrics_append:7:enospc")
    path = tmp_path / "full"
    with pytest.raises(OSError):
        train(small_cfg, RunDir.create(path, small_cfg), progress=False)
    data = (path / "metrics.jsonl").read_bytes()
    assert data.endswith(b"\n") and len(data.splitlines()) == 6
    assert RunDir(path).summary()["status"] == "failed"


# ----------------------------------------------------------------------------- injected kills


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["metrics_append:20:torn", "checkpoint_write:3:torn",
                                   "margins_append:20:torn", "summary_write:3",
                                   "figure_draw:1"])
def test_injected_kill_then_resume_is_exact(tmp_path, fault) -> None:
    """SIGKILL inside a metrics append (torn line), a checkpoint write (half a temp file),
    a margins append, a summary write or figure drawing; `--resume` then completes the run
    with a metrics.jsonl byte-identical to an uninterrupted run."""
    args = [*SMALL, "train.checkpoint_every_s=0"]
    base = [sys.executable, "-m", "latephase.cli", "run", "--preset", "demo", "--no-progress",
            "--out", str(tmp_path)]
    env = {k: v for k, v in os.environ.items() if k != "LATEPHASE_FAULT"}
    ref = subprocess.run([*base, "--name", "ref", "--no-figures", *args], capture_output=True,
                         timeout=300, env=env)
    assert ref.returncode == 0, ref.stderr
    killed = subprocess.run([*base, "--name", "k", *args], capture_output=True, timeout=300,
                            env={**env, "LATEPHASE_FAULT": fault})
    assert killed.returncode == -9, killed.stderr
    res = subprocess.run([*base[:4], "--resume", str(tmp_path / "k"), "--no-progress",
                          "--no-figures"], capture_output=True, timeout=300, env=env)
    if fault.startswith("figure_draw"):  # killed after training: already finished
        assert res.returncode == 2 and b"already finished" in res.stderr
    else:
        assert res.returncode == 0, res.stderr
    assert ((tmp_path / "k" / "metrics.jsonl").read_bytes()
            == (tmp_path / "ref" / "metrics.jsonl").read_bytes())
    assert RunDir(tmp_path / "k").summary()["status"] == "finished"


# ----------------------------------------------------------------------------- the Tracker


def test_tracker_writes_through_the_recorder(tmp_path) -> None:
    """A Tracker's run directory is locked while it is open, its steps must increase, and
    its final summary (time scales computed once) is written by the recorder."""
    import latephase
    from latephase.errors import TrackerError

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    x, y = torch.randn(60, 4), torch.arange(60) % 3
    splits = {"train": (x[:30], y[:30]), "test": (x[30:], y[30:])}
    tracker = latephase.Tracker(model, splits, information=[], run_dir=tmp_path / "t")
    tracker.evaluate(0)
    tracker.evaluate(5)
    with pytest.raises(TrackerError, match="steps must increase"):
        tracker.evaluate(5)
    with pytest.raises(RunDirBusy):
        RunRecorder.take(tmp_path / "t")
    assert RunDir(tmp_path / "t").summary()["status"] == "running"
    tracker.close()
    tracker.close()  # idempotent
    summary = RunDir(tmp_path / "t").summary()
    assert summary["status"] == "finished" and summary["evaluations"] == 2
    assert "t_fit" in summary["timescales"]
    assert [r["step"] for r in RunDir(tmp_path / "t").records()] == [0, 5]
    with pytest.raises(TrackerError, match="already holds a run"):
        latephase.Tracker(model, splits, information=[], run_dir=tmp_path / "t")
