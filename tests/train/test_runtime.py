"""train.threads and train.flush_denormal: applied for a training call, restored after it.

Ground truth for subnormal handling is IEEE 754 itself: the float32 with bit pattern 4
(4 * 2**-149, a subnormal) times 1.0 is exactly that number, bit for bit, while a thread that
flushes (DAZ: subnormal inputs read as zero) gets +0.0.  The product is computed on a 10**6
element tensor, which torch splits over its OpenMP threads, so a worker thread that does not
flush shows up as a non-zero share of the result.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from tests.conftest import SMALL
from threadpoolctl import threadpool_info

from latephase.config import make_config
from latephase.runs import RunDir, read_checkpoint
from latephase.train import runtime
from latephase.train import train as train_run
from latephase.train.schedule import eval_steps

N = 10**6  # elements: 30x torch's grain size, so every OpenMP thread gets a share
SUB = 4  # bit pattern of the probe: 4 * 2**-149 (the value AdamW's exp_avg stalls at)

if not torch.set_flush_denormal(False):
    pytest.skip("this CPU cannot flush subnormals", allow_module_level=True)


def flushed_share(threads: int) -> float:
    """Share of the N products (subnormal * 1.0) that came out as zero, on ``threads``
    threads; 0 under IEEE, 1 when every thread flushes."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = torch.full((N,), SUB, dtype=torch.int32).view(torch.float32)
        out = (x * 1.0).view(torch.int32)
        ieee = int((out == SUB).sum())
        zero = int((out == 0).sum())
        assert ieee + zero == N  # nothing else is a valid result
        return zero / N
    finally:
        torch.set_num_threads(before)


def blas_threads() -> list[int]:
    return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]


@pytest.fixture
def ieee() -> Iterator[None]:
    """Start (and end) from IEEE subnormals on this thread and a warm 2-thread OpenMP team,
    the state a CLI process is in when ``train()`` starts."""
    torch.set_flush_denormal(False)
    flushed_share(2)  # creates the worker thread without flushing
    assert flushed_share(2) == 0.0
    yield
    with runtime.training_runtime(2, False):
        pass


def test_flush_reaches_every_openmp_thread_and_is_restored(ieee: None) -> None:
    # torch.set_flush_denormal alone sets only the calling thread: the worker's half stays
    # IEEE (this is why the runtime copies the environment into the OpenMP team)
    torch.set_flush_denormal(True)
    partial = flushed_share(2)
    torch.set_flush_denormal(False)
    runtime.set_flush_denormal(False, 2)
    assert 0.0 < partial < 1.0, partial
    with runtime.training_runtime(2, True) as n:
        assert n == 2
        assert flushed_share(2) == 1.0
        assert flushed_share(1) == 1.0
    assert flushed_share(2) == 0.0  # the caller's IEEE mode, on every thread


def test_ieee_run_inside_a_flushing_caller(ieee: None) -> None:
    runtime.set_flush_denormal(True, 2)
    try:
        with runtime.training_runtime(2, False):
            assert flushed_share(2) == 0.0
        assert flushed_share(2) == 1.0  # the caller flushed before: it flushes after
    finally:
        runtime.set_flush_denormal(False, 2)


def test_threads_applied_and_restored() -> None:
    torch.set_num_threads(1)
    outside = blas_threads()
    with runtime.training_runtime(2, True) as n:
        assert n == torch.get_num_threads() == 2
        assert all(t == 2 for t in blas_threads())
    assert torch.get_num_threads() == 1
    assert blas_threads() == outside
    with pytest.raises(RuntimeError), runtime.training_runtime(2, True):
        raise RuntimeError("a failing run restores too")
    assert torch.get_num_threads() == 1
    assert flushed_share(1) == 0.0


def test_resolve_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert runtime.available_cores() == cores
    previous = runtime.set_auto_threads(None)  # tests/conftest.py sets 1
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setattr(runtime, "busy_cores", lambda: 0)  # an idle machine
        assert runtime.resolve_threads("auto") == cores
        assert runtime.share_of_cores(1) == cores
        assert runtime.share_of_cores(cores + 1) == 1  # never 0
        for env, budget in (("3", 3), (" 7 ", 7), ("0", cores), ("two", cores), ("", cores)):
            monkeypatch.setenv("OMP_NUM_THREADS", env)
            assert runtime.resolve_threads("auto") == runtime.thread_budget() == budget
        monkeypatch.delenv("OMP_NUM_THREADS")
        monkeypatch.setenv("OMP_NUM_THREADS", "6")
        assert runtime.share_of_cores(4) == 1 and runtime.share_of_cores(3) == 2
        assert runtime.set_auto_threads(5) is None
        assert runtime.resolve_threads("auto") == 5  # a sweep worker's share wins
        assert runtime.resolve_threads(2) == 2  # an explicit count wins over everything
    finally:
        runtime.set_auto_threads(previous)
    assert runtime.resolve_threads(3) == 3
    for bad in (0, -1, True, "all", 2.0):
        with pytest.raises(ValueError, match=r"threads: expected 'auto' or an int >= 1, got"):
            runtime.resolve_threads(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"threads: expected an int >= 1 or None, got 0"):
        runtime.set_auto_threads(0)
    with pytest.raises(ValueError, match=r"concurrent: expected an int >= 1, got 0"):
        runtime.share_of_cores(0)


def test_train_restores_the_callers_settings(tmp_path: Path) -> None:
    cfg = make_config("demo", overrides=[*SMALL, "train.steps=5", "train.threads=2",
                                         "measures.information=[]"])
    torch.set_num_threads(1)
    torch.set_flush_denormal(False)
    summary = train_run(cfg, RunDir.create(tmp_path / "r", cfg), progress=False)
    assert torch.get_num_threads() == 1
    assert flushed_share(1) == 0.0
    # what the run trained with is recorded (results depend on the thread count)
    on_disk = json.loads((tmp_path / "r" / "summary.json").read_text())
    can_flush = torch.set_flush_denormal(True)  # the config asks to flush: done where the
    torch.set_flush_denormal(False)  # CPU can
    assert summary["runtime"] == on_disk["runtime"] == {"threads": 2,
                                                        "flush_denormal": can_flush}


# --------------------------------------------------------------------------- same metrics

#: past the fit of a small MLP on 100 digits: many AdamW moments have stalled at subnormal
#: values by step 1500 (about 6k of 30k at threads=1; 1 at step 800)
LATE = [*SMALL, "train.steps=1500", "data.train_size=100", "data.test_size=200",
        "train.eval_points=10"]


def _subnormal_moments(run: Path) -> int:
    state = read_checkpoint(run / "checkpoints" / "last.pt", map_location="cpu")["optim"]
    tiny = torch.finfo(torch.float32).tiny
    return sum(int(((v.abs() < tiny) & (v != 0)).sum())
               for s in state["state"].values() for v in s.values()
               if torch.is_tensor(v) and v.is_floating_point())


def test_flushing_leaves_metrics_identical() -> None:
    """Every value of every record is the same with and without flushing (byte-identical
    metrics.jsonl, information measures included), on a run where the IEEE run does hold
    subnormal AdamW moments at the end (so the setting is exercised) and the flushing run
    holds none (so it was applied).  One thread: this small model's tensors are below
    torch's grain size, so more threads would run the same code on one of them (the
    worker threads' flushing is checked above)."""
    out, subnormal = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for flush in (False, True):
            cfg = make_config("demo", overrides=[*LATE, "train.threads=1",
                                                 f"train.flush_denormal={str(flush).lower()}"])
            path = Path(tmp) / f"flush-{flush}"
            train_run(cfg, RunDir.create(path, cfg), progress=False)
            out[flush] = (path / "metrics.jsonl").read_bytes()
            subnormal[flush] = _subnormal_moments(path)
    assert subnormal[False] > 0, "the IEEE run never produced subnormals: test is vacuous"
    assert subnormal[True] == 0
    assert out[True] == out[False]
    assert len(out[True].splitlines()) == len(eval_steps(cfg.train.steps, "log", 10))


@pytest.mark.parametrize(("cores", "busy", "expected"), [
    (2, 0, 2), (2, 1, 1), (2, 2, 1), (2, 5, 1), (8, 3, 5), (8, 0, 8)])
def test_auto_leaves_busy_cores_alone(monkeypatch: pytest.MonkeyPatch, cores: int,
                                      busy: int, expected: int) -> None:
    """A single run's "auto": the cores not kept busy by other work, at least 1;
    OMP_NUM_THREADS, a sweep worker's share and an int still win."""
    previous = runtime.set_auto_threads(None)
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setattr(runtime, "available_cores", lambda: cores)
        monkeypatch.setattr(runtime, "busy_cores", lambda: busy)
        assert runtime.resolve_threads("auto") == expected
        monkeypatch.setenv("OMP_NUM_THREADS", "3")
        assert runtime.resolve_threads("auto") == 3
        runtime.set_auto_threads(2)
        assert runtime.resolve_threads("auto") == 2
    finally:
        runtime.set_auto_threads(previous)


def _fake_stat(monkeypatch: pytest.MonkeyPatch, samples: list[str]) -> None:
    """Serve ``samples`` as successive reads of /proc/stat (no sleeping)."""
    reads = iter(samples)
    real = runtime.Path.read_text

    def read_text(self: Path, *args: object, **kwargs: object) -> str:
        if str(self) == "/proc/stat":
            return next(reads)
        return real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(runtime.Path, "read_text", read_text)
    monkeypatch.setattr(runtime.time, "sleep", lambda s: None)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)


@pytest.mark.parametrize(("deltas", "expected"), [
    # per CPU: (user, idle, iowait, steal) jiffies elapsed over the sample
    (((0, 25, 0, 0), (0, 25, 0, 0)), 0),  # both idle
    (((25, 0, 0, 0), (0, 25, 0, 0)), 1),  # one busy
    (((25, 0, 0, 0), (1, 24, 0, 0)), 1),
    (((0, 20, 5, 0), (0, 25, 0, 0)), 0),  # waiting on disk is idle
    (((20, 0, 0, 5), (18, 7, 0, 0)), 2),  # steal is busy
])
def test_busy_cores_from_proc_stat(monkeypatch: pytest.MonkeyPatch,
                                   deltas: tuple[tuple[int, ...], ...], expected: int) -> None:
    """busy_cores: the busy share of this process's CPUs between two reads of /proc/stat
    (idle and iowait idle; user, system, steal busy) times their number, rounded; CPUs
    outside the affinity mask (cpu2 here, always busy) do not count."""
    def stat(scale: int) -> str:
        lines = ["cpu  1 2 3 4 5 6 7 8 9 10"]
        for n, (user, idle, iowait, steal) in enumerate(deltas):
            lines.append(f"cpu{n} {100 + scale * user} 0 10 {500 + scale * idle} "
                         f"{7 + scale * iowait} 0 0 {scale * steal} 0 0")
        lines.append(f"cpu2 {100 + scale * 25} 0 0 0 0 0 0 0 0 0")
        lines.append("intr 12345 0 0")
        return "\n".join(lines) + "\n"

    _fake_stat(monkeypatch, [stat(0), stat(1)])
    assert runtime.busy_cores() == expected


def test_busy_cores_sees_a_busy_process() -> None:
    """Really measured: a spinning child process keeps at least one core busy."""
    import subprocess
    import sys
    import time

    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        assert runtime.busy_cores() >= 1
    finally:
        child.kill()
        child.wait()


def test_auto_without_a_load_average(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither /proc/stat nor a load average: nothing counts as busy."""
    def missing(*args: object) -> tuple[float, float, float]:
        raise OSError("no load average")

    monkeypatch.setattr(os, "getloadavg", missing)
    monkeypatch.setattr(runtime, "_cpu_times", lambda cpus: None)
    assert runtime.busy_cores() == 0
    monkeypatch.setattr(os, "getloadavg", lambda: (1.6, 1.0, 1.0))
    assert runtime.busy_cores() == 2  # the rounded 1-minute load average where no /proc/stat


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux /proc")
def test_release_memory_returns_freed_heap_pages() -> None:
    """Freed heap blocks held between live ones stay resident until release_memory (glibc
    malloc_trim) hands their pages back: the drop is most of what was freed."""
    import ctypes

    try:
        has_trim = hasattr(ctypes.CDLL(None), "malloc_trim")
    except OSError:
        has_trim = False
    if not has_trim:
        pytest.skip("not glibc")

    def resident_mb() -> float:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf(
            "SC_PAGE_SIZE") / 2**20

    blocks = [bytearray(64 * 1024) for _ in range(3000)]  # ~190 MB of heap-sized blocks
    for b in blocks:  # touch every page
        b[::4096] = b"\x01" * len(b[::4096])
    keep = blocks[::10]  # live blocks between the freed ones: the heap cannot shrink
    del blocks
    before = resident_mb()
    runtime.release_memory()
    after = resident_mb()
    assert before - after > 100, (before, after)
    assert len(keep) == 300


def test_estimators_on_one_thread_leave_the_runtime_as_it_was() -> None:
    """The Tracker runs the information estimators on one thread inside a 2-thread training
    runtime; afterwards torch and BLAS are back at 2 threads and every OpenMP thread still
    flushes subnormals."""
    from torch import nn

    from latephase.tracker import Tracker

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(300, 12, generator=g), torch.arange(300) % 3
    model = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 3))
    with runtime.training_runtime(2, True):
        tracker = Tracker(model, {"test": (x, y)}, head="2", information=("nhsic",),
                          information_n=200)
        record = tracker.measure()
        assert torch.get_num_threads() == 2
        assert all(n == 2 for n in blas_threads())
        if torch.set_flush_denormal(True):  # the CPU can flush
            assert flushed_share(2) == 1.0
    assert 0.0 < record["test/nhsic/nhsic_zy"] < 3.0


@pytest.mark.parametrize("kind", ["tensors", "shuffled_loader", "generator"])
def test_tracker_runs_nhsic_beside_the_knn_estimators_at_two_threads(kind: str) -> None:
    """With a 2-thread budget the Tracker gives the probe workers=2 (nHSIC on a second
    thread, BLAS at one thread in both); with 1 thread, workers=1.  On the same features the
    two give the same floats (the features themselves differ at ~1e-7 between 1- and 2-thread
    forward passes, so records of the two runtimes are not compared), for every kind of
    split: tensors, a shuffled DataLoader (rows put back in order by their keys) and a
    generator factory."""
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from latephase.measures.probe import InfoProbe
    from latephase.tracker import Tracker

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(300, 12, generator=g), torch.arange(300) % 3
    model = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 3))
    asked: list[int] = []
    pairs: list[tuple[dict[str, float], dict[str, float]]] = []
    call = InfoProbe.__call__

    def spy(self: InfoProbe, z: object, *, workers: int = 1) -> dict[str, float]:
        asked.append(workers)
        out = call(self, z, workers=workers)
        pairs.append((out, call(self, z, workers=1)))
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(InfoProbe, "__call__", spy)
        for threads in (1, 2):
            with runtime.training_runtime(threads, True):
                split: object = (x, y)
                if kind == "shuffled_loader":
                    split = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True,
                                       generator=torch.Generator().manual_seed(threads))
                elif kind == "generator":
                    split = lambda: ((x[i:i + 70], y[i:i + 70]) for i in range(0, 300, 70))  # noqa: E731
                tracker = Tracker(model, {"test": split}, head="2", information_n=200,
                                  information=("nhsic", "kl_knn", "cmi_ksg"))
                tracker.measure()
    assert asked == [1, 2]
    par, seq = pairs[1]
    assert list(par) == list(seq) and len(par) > 10
    assert all((a != a and b != b) or a == b for a, b in zip(par.values(), seq.values(),
                                                             strict=True))


@pytest.mark.parametrize("flush", [True, False])
def test_probe_thread_computes_in_the_callers_floating_point_environment(flush: bool) -> None:
    """nHSIC on the probe's second thread flushes subnormals exactly when the caller does
    (pthread_create copies the creating thread's floating-point environment)."""
    import threading

    from latephase.measures.probe import InfoProbe

    if flush and not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush subnormals")
    torch.set_flush_denormal(False)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(200, 6, generator=g), torch.arange(200) % 2
    probe = InfoProbe(x, y, 2, ["nhsic", "kl_knn"], n=None)
    inner = probe.computers["nhsic"]
    seen: list[tuple[str, bool]] = []

    def spy(zs: object) -> object:
        seen.append((threading.current_thread().name, runtime.flushes_denormals()))
        return inner(zs)

    probe.computers["nhsic"] = spy
    with runtime.training_runtime(2, flush):
        probe(x, workers=2)
    assert seen == [("latephase-nhsic", flush)]
    assert threading.current_thread().name != "latephase-nhsic"
