"""Sweeps that cannot corrupt runs: crafted checkpoints, orphaned workers, busy run
directories, duplicate grid points and escaping names, final divergence, incomplete
records, the progress bar's rate (issue 11 points 2 and 3, issue 13)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from latephase.cli import main
from latephase.errors import ConfigError
from latephase.sweep import SweepSpec, load_spec, run_sweep, summary_text

from .conftest import SWEEP_BASE

BASE = SWEEP_BASE.replace("[0.3, 0.1]", "[0.3]")  # one grid point
EXECUTORS = ["local", "ensemble"]


def _spec(tmp_path: Path, text: str = BASE) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(text)
    return path


def _rows(summary: dict) -> dict[str, dict]:
    return {r["run"]: r for r in summary["runs"]}


def _snapshot(run: Path) -> dict[str, tuple[int, bytes]]:
    """(mtime_ns, bytes) of every file of a run directory but its lock file."""
    return {str(p.relative_to(run)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(run.rglob("*")) if p.is_file() and p.name != ".lock"}


# ----------------------------------------------------------------------------- 1. checkpoints


class _Payload:
    """Unpickling this creates the file ``path`` (what a malicious checkpoint would do)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (open, (self.path, "w"))


def _craft_checkpoint(ck: Path, flag: Path) -> None:
    import torch

    ck.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"step": 20, "evals_done": 3, "model": _Payload(str(flag))}, ck)


def test_crafted_payload_is_live(tmp_path) -> None:
    """The control: the crafted checkpoint really runs its payload when unpickled with
    ``weights_only=False`` (so the tests below, where the flag stays absent, can fail)."""
    import torch

    flag = tmp_path / "pwned"
    _craft_checkpoint(tmp_path / "last.pt", flag)
    torch.load(tmp_path / "last.pt", weights_only=False)
    assert flag.exists()


@pytest.mark.parametrize("executor", EXECUTORS)
def test_crafted_checkpoint_is_refused_never_run(tmp_path, executor) -> None:
    """A run whose checkpoint would create a file when unpickled: nothing is created, the
    run is failed with one line naming weights_only, the other run finishes."""
    from latephase.runs import RunDir

    spec = load_spec(_spec(tmp_path))
    victim = next(r for r in spec.runs() if r.seed == 0)
    path = tmp_path / "t" / victim.name
    RunDir.create(path, spec.run_config(victim)).close()  # a started run, no records yet
    flag = tmp_path / "pwned"
    _craft_checkpoint(path / "checkpoints" / "last.pt", flag)
    summary = run_sweep(spec, tmp_path, executor=executor, workers=1, progress=False)
    assert not flag.exists()
    rows = _rows(summary)
    assert rows[victim.name]["status"] == "failed"
    error = rows[victim.name]["error"]
    assert "weights_only=True" in error and "\n" not in error, error
    assert rows["wd0.3-seed1"]["status"] == "finished"
    assert json.loads((path / "summary.json").read_text())["status"] == "failed"


# ----------------------------------------------------------------------------- 2. orphans


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int(d.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(d.name))
            except (OSError, IndexError, ValueError):
                continue
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _wait(cond, timeout: float, every: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(every)
    return cond()


def _reap(pids: list[int]) -> None:
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")


@needs_proc
def test_watchdog_kills_orphan_both_ways(tmp_path) -> None:
    """_die_with_parent's two mechanisms, each alone: prctl(PR_SET_PDEATHSIG) (polling
    switched off by a one-hour interval) and the polling thread (prctl off).  A control
    process without the watchdog survives its parent's SIGKILL, so the check can fail."""
    kids = {
        "prctl": "_die_with_parent(os.getppid(), poll_s=3600.0)",
        "poll": "_die_with_parent(os.getppid(), poll_s=0.05, prctl=False)",
        "control": "pass",
    }
    if not sys.platform.startswith("linux"):
        del kids["prctl"]
    child = textwrap.dedent("""
        import os, sys, time
        from latephase.sweep import _die_with_parent
        {call}
        open(sys.argv[1], "w").close()
        time.sleep(120)
    """)
    middle = textwrap.dedent("""
        import subprocess, sys, time
        for code, flag in zip(sys.argv[1::2], sys.argv[2::2]):
            subprocess.Popen([sys.executable, "-c", code, flag])
        time.sleep(120)
    """)
    args = []
    for name, call in kids.items():
        args += [child.format(call=call), str(tmp_path / name)]
    mid = subprocess.Popen([sys.executable, "-c", middle, *args])
    pids: list[int] = []
    try:
        assert _wait(lambda: all((tmp_path / n).exists() for n in kids), 120)
        pids = _children(mid.pid)
        by_name = {n: next(p for p in pids if str(tmp_path / n) in _cmdline(p)) for n in kids}
        os.kill(mid.pid, signal.SIGKILL)
        mid.wait()
        for name in kids.keys() - {"control"}:
            assert _wait(lambda n=name: not _alive(by_name[n]), 5), name
        time.sleep(0.3)  # several polling periods: the control is still there
        assert _alive(by_name["control"])
    finally:
        _reap(pids)
        if mid.poll() is None:
            mid.kill()


@needs_proc
@pytest.mark.slow
def test_sweep_workers_die_with_their_parent(tmp_path) -> None:
    """kill -9 of `latephase sweep --workers 2` while both workers train: the workers are
    gone within 5 s (before the fix they kept training, and a re-run raced them)."""
    spec = _spec(tmp_path, BASE.replace('"train.steps" = 60', '"train.steps" = 1000000')
                 .replace('"train.eval_points" = 8', '"train.eval_points" = 100000')
                 .replace('"train.checkpoint_every_s" = 0', '"train.checkpoint_every_s" = 600'))
    proc = subprocess.Popen([sys.executable, "-m", "latephase.cli", "sweep", str(spec),
                             "--out", str(tmp_path), "--workers", "2", "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    metrics = [tmp_path / "t" / f"wd0.3-seed{s}" / "metrics.jsonl" for s in (0, 1)]
    try:
        assert _wait(lambda: all(m.exists() and m.read_bytes().count(b"\n") >= 2
                                 for m in metrics), 180, every=0.2), "the workers never trained"
        workers = [p for p in _children(proc.pid) if "spawn_main" in _cmdline(p)]
        assert len(workers) == 2, [_cmdline(p) for p in _children(proc.pid)]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert _wait(lambda: not any(_alive(p) for p in workers), 5), \
            [p for p in workers if _alive(p)]
    finally:
        _reap(workers)
        if proc.poll() is None:
            proc.kill()


# ----------------------------------------------------------------------------- 3. busy


@pytest.mark.parametrize("executor", EXECUTORS)
def test_busy_run_directory_is_reported_not_touched(tmp_path, executor, capsys) -> None:
    """A run whose directory another writer holds (its lock, here taken by this process
    through a recorder) is reported busy, not counted finished, and left as it was; the
    other run goes on; once the lock is released a re-run finishes it."""
    from latephase.runs import RunDir

    spec = load_spec(_spec(tmp_path))
    held = next(r for r in spec.runs() if r.seed == 1)
    path = tmp_path / "t" / held.name
    recorder = RunDir.create(path, spec.run_config(held))
    before = _snapshot(path)
    try:
        summary = run_sweep(spec, tmp_path, executor=executor, workers=1, progress=False)
        row = _rows(summary)[held.name]
        assert (row["status"], row["detail"]) == ("busy", "another process writes it")
        assert summary["counts"] == {"busy": 1, "finished": 1}
        assert "busy (another process writes it)" in summary_text(summary)
        assert _snapshot(path) == before
    finally:
        recorder.close()
    again = run_sweep(spec, tmp_path, executor=executor, workers=1, progress=False)
    assert again["counts"] == {"finished": 2}


# ----------------------------------------------------------------------------- 4. the grid


@pytest.mark.parametrize(("grid", "pattern"), [
    ('"optim.weight_decay" = [0.1, 0.1]',
     r"grid: 'optim.weight_decay': values 0.1 and 0.1 would share one run directory "
     r"\(lists it twice\)"),
    ('"optim.weight_decay" = [0.1, 0.1000001]',
     r"values 0.1 and 0.1000001 would share one run directory \(gives the same run name part "
     r"'wd0.1' \(six significant digits\)\)"),
    ('"optim.weight_decay" = [0.3]\n"train.steps" = [100, 100.0]',
     r"grid: 'train.steps': values 100 and 100.0 would share one run directory"),
    ('"data.name" = ["mnist", "mnist-nameadamw"]\n"optim.name" = ["adamw-namesgd", "sgd"]',
     r"give the same run name 'namemnist-nameadamw-namesgd-seed0'"),
])
def test_grid_points_sharing_a_run_directory_are_refused(tmp_path, grid, pattern) -> None:
    text = BASE.replace('"optim.weight_decay" = [0.3]', grid)
    with pytest.raises(ConfigError, match=pattern):
        load_spec(_spec(tmp_path, text))


def test_duplicate_seeds_are_refused(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"seeds: values 0 and 0 would share one run dir"):
        load_spec(_spec(tmp_path, BASE.replace("seeds = [0, 1]", "seeds = [0, 1, 0]")))


@pytest.mark.parametrize("name", ["../../x", "../x", "/tmp/abs", "a/b", "..", ".", "", "a\\b"])
def test_sweep_names_escaping_out_are_refused(tmp_path, name) -> None:
    text = BASE.replace('name = "t"', f"name = {json.dumps(name)}")
    with pytest.raises(ConfigError, match=r"sweep name: name .* is not a plain directory "
                                          r"name .* it must stay inside --out"):
        load_spec(_spec(tmp_path, text))


def test_run_names_escaping_out_are_refused(tmp_path) -> None:
    text = BASE.replace('"optim.weight_decay" = [0.3]', '"data.name" = ["../../../evil"]')
    with pytest.raises(ConfigError, match=r"run name: name 'name\.\./\.\./\.\./evil-seed0' is "
                                          r"not a plain directory name"):
        load_spec(_spec(tmp_path, text))


def test_escaping_names_refused_by_run_sweep_and_cli(tmp_path, capsys) -> None:
    """A SweepSpec built in Python is checked by run_sweep too; the CLI prints one line,
    exit 2; nothing is written outside --out."""
    out = tmp_path / "a" / "b"
    spec = SweepSpec(name="../../x", preset="demo", config=None, seeds=(0,), overrides={},
                     grid={}, when={})
    with pytest.raises(ConfigError, match="sweep name: name '../../x'"):
        run_sweep(spec, out, progress=False)
    spec_path = _spec(tmp_path, BASE.replace('name = "t"', 'name = "../../x"'))
    assert main(["sweep", str(spec_path), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "not a plain directory name" in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists() and not out.exists()


# ----------------------------------------------------------------------------- 5. diverged


@pytest.mark.parametrize("executor", EXECUTORS)
def test_diverged_runs_are_final(tmp_path, executor) -> None:
    """The issue's diverging run (lr 1e12, cross-entropy) ends diverged, and a re-run of the
    sweep leaves its directory untouched (not retried) and still reports it diverged."""
    text = BASE.replace('"optim.weight_decay" = [0.3]',
                        '"optim.weight_decay" = [0.3]\n"optim.lr" = [1e12]').replace(
        "seeds = [0, 1]", "seeds = [0]").replace(
        '"measures.information" = []', '"measures.information" = []\n'
                                       '"train.loss" = "cross_entropy"')
    spec = load_spec(_spec(tmp_path, text))
    first = run_sweep(spec, tmp_path, executor=executor, workers=1, progress=False)
    run = tmp_path / "t" / "wd0.3-lr1e+12-seed0"
    assert first["counts"] == {"diverged": 1}
    before = _snapshot(run)
    again = run_sweep(spec, tmp_path, executor=executor, workers=1, progress=False)
    assert again["counts"] == {"diverged": 1}
    assert _snapshot(run) == before
    row = _rows(again)["wd0.3-lr1e+12-seed0"]
    assert row["detail"] and "diverged (" in summary_text(again)


# ----------------------------------------------------------------------------- 6. records


def test_finished_over_missing_records_is_incomplete(tmp_path) -> None:
    """Lines deleted from a finished run's metrics.jsonl: the sweep says "incomplete (N of
    M records)", M being the record count of the intact twin run; a duplicated line says
    corrupt; neither counts as finished nor enters the aggregates."""
    spec = load_spec(_spec(tmp_path))
    run_sweep(spec, tmp_path, workers=1, progress=False)
    cut, dup = (tmp_path / "t" / f"wd0.3-seed{s}" / "metrics.jsonl" for s in (0, 1))
    m = len(cut.read_text().splitlines())
    lines = cut.read_text().splitlines(keepends=True)
    cut.write_text("".join(lines[:2] + lines[5:]))  # 3 records lost
    dup.write_text(dup.read_text() + dup.read_text().splitlines(keepends=True)[-1])
    summary = run_sweep(spec, tmp_path, workers=1, progress=False)
    rows = _rows(summary)
    assert (rows["wd0.3-seed0"]["status"], rows["wd0.3-seed0"]["detail"]) == (
        "incomplete", f"{m - 3} of {m} records")
    assert (rows["wd0.3-seed1"]["status"], rows["wd0.3-seed1"]["detail"]) == (
        "corrupt", "1 duplicated records")
    assert summary["counts"] == {"corrupt": 1, "incomplete": 1}
    assert summary["aggregates"][0]["runs"] == 0
    assert f"incomplete ({m - 3} of {m} records)" in summary_text(summary)


def _fake_run(path: Path, steps: list[int], total: int, *, extended: list | None = None,
              evaluations: int | None = None) -> None:
    from latephase.config import make_config

    cfg = make_config("demo", overrides=[f"train.steps={total}", "train.eval_schedule=log",
                                         "train.eval_points=8"])
    path.mkdir(parents=True)
    info = {"config": cfg.to_dict(), "seed": 0, **({"extended": extended} if extended else {})}
    (path / "config.json").write_text(json.dumps(info))
    (path / "metrics.jsonl").write_text("".join(json.dumps({"step": s}) + "\n" for s in steps))
    summary = {"status": "finished", "evaluations": len(steps) if evaluations is None
               else evaluations}
    (path / "summary.json").write_text(json.dumps(summary))


def test_check_records_schedule_extension_and_count(tmp_path) -> None:
    """Ground truth by construction: the log schedule of a 60-step run; the same run
    extended to 200 steps (its records up to 60 on the old schedule, then the 200-step
    schedule after 60, as resume writes them)."""
    from latephase.runs import RunDir
    from latephase.sweep import check_records
    from latephase.train.loop import eval_steps

    short = eval_steps(60, "log", 8)
    long = eval_steps(200, "log", 8)
    assert not set(short) <= set(long)  # the extension test needs the schedules to differ
    cases = {
        "exact": (short, 60, None, None, ("finished", None)),
        "one lost": (short[:3] + short[4:], 60, None, None,
                     ("incomplete", f"{len(short) - 1} of {len(short)} records")),
        "extended": (short + [s for s in long if s > 60], 200,
                     [{"from_steps": 60, "to_steps": 200}], None, ("finished", None)),
        "extended, one lost": (short + [s for s in long if s > 60][1:], 200,
                               [{"from_steps": 60, "to_steps": 200}], None,
                               ("incomplete", f"{len(short) + len([s for s in long if s > 60]) - 1}"
                                              f" of {len(short) + len([s for s in long if s > 60])}"
                                              " records")),
        "not extended, old schedule": (short + [s for s in long if s > 60], 200, None, None,
                                       "incomplete"),
        "summary counted more": (short, 60, None, len(short) + 2,
                                 ("incomplete", f"{len(short)} of {len(short) + 2} records")),
    }
    for name, (steps, total, ext, evals, want) in cases.items():
        path = tmp_path / name.replace(" ", "_").replace(",", "")
        _fake_run(path, steps, total, extended=ext, evaluations=evals)
        run = RunDir(path)
        got = check_records(run, run.summary())
        assert (got[0] if isinstance(want, str) else got) == want, name


# ----------------------------------------------------------------------------- 7. the bar


def test_progress_rate_counts_only_work_done(tmp_path, capsys) -> None:
    """1000 of 2000 steps already on disk, then 50 more after 0.2 s: the rate shown is at
    most 50 / 0.15 (the bar has run about 0.2 s when it first sees them; 0.05 s allowed for
    its thread to start), where counting the old steps would show at least 1000 / (time it
    ran), several times more."""
    import tqdm.auto  # noqa: F401  (imported here, the bar starts at once in its thread)

    from latephase.sweep import _StepProgress

    (tmp_path / "a").mkdir()
    metrics = tmp_path / "a" / "metrics.jsonl"
    metrics.write_text(json.dumps({"step": 1000}) + "\n")
    jobs = [(str(tmp_path / "a"), {"train": {"steps": 2000}})]
    t0 = time.monotonic()
    with _StepProgress(jobs, {}, enabled=True, every=0.02):
        time.sleep(0.2)
        metrics.write_text(metrics.read_text() + json.dumps({"step": 1050}) + "\n")
        time.sleep(0.2)
    ran = time.monotonic() - t0
    err = capsys.readouterr().err
    assert "1050/2000" in err
    rates = [float(x) for x in re.findall(r"([\d.]+)step/s", err)]
    rates += [1 / float(x) for x in re.findall(r"([\d.]+)s/step", err)]
    assert rates and max(rates) <= 50 / 0.15, err
    assert 1000 / ran > 50 / 0.15  # the old count would have broken the bound
