"""The process settings a training call runs under: thread count and subnormal floats.

:func:`training_runtime` applies ``train.threads`` and ``train.flush_denormal`` for the
duration of one :func:`latephase.train.loop.train` / ``train_ensemble`` call and restores the
caller's settings afterwards, so library users (a :class:`latephase.Tracker` in their own
loop) never find global state changed behind their back.

Threads.  ``train.threads = "auto"`` means, for a single run, ``OMP_NUM_THREADS`` where
the user set it, else the cores this process may run on (``os.sched_getaffinity``, else
``os.cpu_count``) that other work does not keep busy (minus the busy share of those CPUs
over a quarter second of ``/proc/stat``, at least 1: a thread contending for a busy core is
far slower than none, see :func:`idle_budget`); a sweep worker process is told its
share, ``budget // concurrent runs`` (at least 1), with :func:`set_auto_threads`.  An int
is used as given.  NumPy/SciPy BLAS pools (the information estimators) get the same count
through ``threadpoolctl``.  (On an oversubscribed machine more threads can be much slower:
BLAS and OpenMP workers spin while they wait for a core.)

Subnormal floats.  Late in a run, after the training set is fit, most of AdamW's ``exp_avg``
and part of ``exp_avg_sq`` are subnormal float32 numbers (|x| < 2**-126): the moments of
parameters whose gradient is exactly zero stall there under IEEE rounding (0.9 x 4 ulps
rounds back to 4).  Many x86 CPUs compute on subnormals through slow microcode assists (the
main run took 240 s instead of 131 s on the machine issue 12 was measured on); on an AMD
EPYC the fused AdamW step on such a state is only 1.1-1.3x slower.  Flushing them (FTZ:
subnormal results are written as 0; DAZ: subnormal inputs read as 0) changes nothing the
float32 weights can resolve: a short run's metrics.jsonl is byte-identical either way
(tests/train/test_runtime.py).  The x86 MXCSR
register that holds FTZ/DAZ is per thread and ``torch.set_flush_denormal`` sets only the
calling thread's; OpenMP workers inherit it only when they are created.  So the calling
thread's floating-point environment (``fegetenv``) is copied into every thread of its
OpenMP teams (``GOMP_parallel(fesetenv, env)`` in every loaded libgomp: torch's, and the
copy scikit-learn bundles), on entry and again on exit.  Where no libgomp is found (not
Linux, another OpenMP runtime) only the calling thread flushes: exact with one thread.
OpenBLAS's own worker threads (NumPy/SciPy, float64 estimators) are not reached.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from latephase.config import Config

#: the one word ``train.threads`` accepts besides an int
AUTO = "auto"
#: bytes reserved for a C ``fenv_t`` (32 on x86-64 glibc, 8 on aarch64): generous
_FENV_BYTES = 256

_auto_threads: int | None = None

P = ParamSpec("P")
R = TypeVar("R")


def available_cores() -> int:
    """Cores this process may run on: ``len(os.sched_getaffinity(0))``, else ``os.cpu_count()``."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def thread_budget() -> int:
    """Threads this process may use: ``OMP_NUM_THREADS`` when set to a positive int (the
    user's explicit budget, as torch reads it), else :func:`available_cores`."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(env) if env.isdigit() and int(env) > 0 else available_cores()


#: seconds :func:`busy_cores` watches the CPU counters for
BUSY_SAMPLE_S = 0.25


def _cpu_times(cpus: set[int] | None) -> tuple[float, float] | None:
    """(busy, total) jiffies summed over the ``cpuN`` lines of ``/proc/stat`` whose N is in
    ``cpus`` (all when None); idle and iowait count as idle, everything else (steal
    included) as busy.  None where ``/proc/stat`` is not readable (not Linux)."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    busy = total = 0.0
    for line in lines:
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu" or (cpus is not None
                                                            and int(name[3:]) not in cpus):
            continue
        ticks = [float(f) for f in fields[:8]]  # user nice system idle iowait irq softirq steal
        total += sum(ticks)
        busy += sum(ticks) - ticks[3] - ticks[4]
    return (busy, total) if total else None


def busy_cores(sample_s: float = BUSY_SAMPLE_S) -> int:
    """Cores other work keeps busy now: the busy share of this process's CPUs over
    ``sample_s`` seconds of ``/proc/stat`` (this process sleeps meanwhile), times their
    number, rounded.  Not the load average: on a virtual machine it can sit near 1 while
    every core is idle (measured here: 0.9 with /proc/stat 100 % idle), which made "auto"
    train on one of two idle cores.  Falls back to the rounded 1-minute load average where
    there is no ``/proc/stat``, and 0 where neither is known."""
    try:
        cpus: set[int] | None = set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = None
    before = _cpu_times(cpus)
    if before is not None:
        time.sleep(sample_s)
        after = _cpu_times(cpus)
        if after is not None and after[1] > before[1]:
            share = (after[0] - before[0]) / (after[1] - before[1])
            return max(0, int(share * (len(cpus) if cpus else available_cores()) + 0.5))
    try:
        return max(0, int(os.getloadavg()[0] + 0.5))
    except (AttributeError, OSError):  # no load average on this platform
        return 0


def idle_budget() -> int:
    """Threads for a single run: ``OMP_NUM_THREADS`` when set, else the cores not kept busy
    by other work, :func:`available_cores` - :func:`busy_cores` (at least 1).  Measured here:
    with one of two cores busy, 2 threads trained the demo 2.7x slower than 1 thread; on
    an idle machine 1.3x faster."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, available_cores() - busy_cores())


def share_of_cores(concurrent: int) -> int:
    """Threads per run when ``concurrent`` runs share this process's budget:
    :func:`thread_budget` // concurrent, at least 1."""
    if isinstance(concurrent, bool) or not isinstance(concurrent, int) or concurrent < 1:
        raise ValueError(f"concurrent: expected an int >= 1, got {concurrent!r}")
    return max(1, thread_budget() // concurrent)


def set_auto_threads(threads: int | None) -> int | None:
    """What ``train.threads = "auto"`` means in this process from now on: ``threads``
    (a sweep worker's share of the cores), or ``None`` for :func:`thread_budget`; returns
    the previous setting."""
    global _auto_threads
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                or threads < 1):
        raise ValueError(f"threads: expected an int >= 1 or None, got {threads!r}")
    previous, _auto_threads = _auto_threads, threads
    return previous


def resolve_threads(threads: int | str) -> int:
    """The thread count of ``train.threads``: an int as given, ``"auto"`` as set by
    :func:`set_auto_threads` (a sweep worker's share), else :func:`idle_budget`."""
    if threads == AUTO:
        return _auto_threads if _auto_threads is not None else idle_budget()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads: expected {AUTO!r} or an int >= 1, got {threads!r}")
    return threads


# ------------------------------------------------------------------ floating-point environment

class _FloatEnv:
    """``fegetenv`` / ``fesetenv`` of the C library, and libgomp's ``GOMP_parallel`` to run
    ``fesetenv`` on every thread of the calling thread's OpenMP teams."""

    def __init__(self) -> None:
        name = ctypes.util.find_library("m") or "libm.so.6"
        libm = ctypes.CDLL(name)
        self._get = libm.fegetenv
        self._get.argtypes = [ctypes.c_void_p]
        self._set = libm.fesetenv
        self._set.argtypes = [ctypes.c_void_p]
        self._set_addr = ctypes.cast(libm.fesetenv, ctypes.c_void_p)
        self._parallel: dict[str, Any] = {}

    def save(self) -> ctypes.Array[ctypes.c_char]:
        """The calling thread's floating-point environment."""
        buf = ctypes.create_string_buffer(_FENV_BYTES)
        if self._get(buf) != 0:
            raise OSError("fegetenv failed")
        return buf

    def restore(self, env: ctypes.Array[ctypes.c_char], threads: int) -> int:
        """Set ``env`` on the calling thread and on the first ``threads`` threads of its team
        in every loaded libgomp (torch's, and e.g. scikit-learn's own copy); returns how many
        libgomps were reached."""
        if self._set(env) != 0:
            raise OSError("fesetenv failed")
        teams = self._teams()
        if threads > 1:
            for parallel in teams:
                parallel(self._set_addr, ctypes.addressof(env), threads, 0)
        return len(teams)

    def _teams(self) -> list[Any]:
        """``GOMP_parallel`` of every libgomp this process has loaded (listed afresh: a
        library imported later brings its own)."""
        for path in _loaded_libgomps():
            if path not in self._parallel:
                parallel = ctypes.CDLL(path).GOMP_parallel
                parallel.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint,
                                     ctypes.c_uint]
                parallel.restype = None
                self._parallel[path] = parallel
        return list(self._parallel.values())


def _loaded_libgomps() -> list[str]:
    """Paths of the libgomp copies this process has loaded (torch's OpenMP runtime, often
    another one bundled by scikit-learn), from /proc/self/maps; none without /proc."""
    found: dict[str, None] = {}
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                path = line.rsplit(None, 1)[-1]
                if "/libgomp" in path and ".so" in path:
                    found[path] = None
    except OSError:
        pass
    return list(found)


@functools.lru_cache(maxsize=1)
def _float_env() -> _FloatEnv | None:
    try:
        return _FloatEnv()
    except (OSError, AttributeError):  # no C math library with fegetenv here
        return None


def flushes_denormals() -> bool:
    """Whether the calling thread now flushes subnormal float32 (probed: the smallest
    subnormal, built from its bit pattern, times 1 reads as 0)."""
    import torch

    tiny = torch.ones(1, dtype=torch.int32).view(torch.float32)  # 2**-149
    return bool((tiny * 1.0).item() == 0.0)


def set_flush_denormal(flush: bool, threads: int) -> bool:
    """Flush subnormals (``flush``) or keep IEEE subnormals, on the calling thread and the
    first ``threads`` threads of its OpenMP team; False where the CPU cannot flush."""
    import torch

    supported = torch.set_flush_denormal(flush)
    env = _float_env()
    if env is not None:
        env.restore(env.save(), threads)
    return bool(supported)


@contextlib.contextmanager
def training_runtime(threads: int | str, flush_denormal: bool) -> Iterator[int]:
    """Run the body with ``threads`` torch/BLAS threads (:func:`resolve_threads`) and with
    subnormal floats flushed or not; yields the thread count.  On exit the caller's torch
    thread count, BLAS limits and floating-point environment (FTZ/DAZ bits, on its thread
    and its OpenMP team) are restored."""
    import torch
    from threadpoolctl import threadpool_limits

    n = resolve_threads(threads)
    before = torch.get_num_threads()
    env = _float_env()
    saved = env.save() if env is not None else None
    was_flushing = flushes_denormals()
    try:
        torch.set_num_threads(n)
        with threadpool_limits(limits=n):  # NumPy/SciPy BLAS (estimators): same budget
            set_flush_denormal(flush_denormal, n)
            yield n
    finally:
        torch.set_num_threads(before)
        if env is not None and saved is not None:
            env.restore(saved, max(before, n))
        else:
            torch.set_flush_denormal(was_flushing)


def in_training_runtime(
        fn: Callable[Concatenate[Any, P], R]) -> Callable[Concatenate[Any, P], R]:
    """Decorator: ``fn(cfg, ...)`` (or ``fn(cfgs, ...)``, the first config's settings) runs
    inside :func:`training_runtime` of ``cfg.train.threads`` and ``cfg.train.flush_denormal``."""

    @functools.wraps(fn)
    def wrapper(cfgs: Config | Sequence[Config], /, *args: P.args, **kwargs: P.kwargs) -> R:
        first = cfgs[0] if isinstance(cfgs, Sequence) and len(cfgs) else cfgs
        if not isinstance(first, Config):  # fn validates its own input
            return fn(cfgs, *args, **kwargs)
        with training_runtime(first.train.threads, first.train.flush_denormal):
            return fn(cfgs, *args, **kwargs)

    return wrapper


def release_memory() -> None:
    """Collect garbage and hand freed heap memory back to the OS (glibc ``malloc_trim``;
    nothing elsewhere).  Called between training and drawing figures: without it the freed
    buffers of the training process stay resident and matplotlib's allocations come on top
    (measured, paper-mnist at 3000 steps: peak RSS 472 MB with figures, 425 MB without,
    421 MB with figures after this)."""
    import gc

    gc.collect()
    try:
        libc = ctypes.CDLL(None)
        trim = getattr(libc, "malloc_trim", None)
    except OSError:  # pragma: no cover - no C library to ask
        return
    if trim is not None:
        trim(0)
