"""Sweeps: a grid over config keys x seeds, run by an executor, summarised across runs.

A sweep spec (TOML, or a preset in ``latephase/presets/sweeps``)::

    name = "fig3-small"
    preset = "demo"                          # base experiment
    seeds = [0, 1]
    [overrides]                              # applied to every run
    "train.steps" = 60000
    [grid]                                   # the cartesian product of these values
    "optim.weight_decay" = [0.1, 0.03, 0.01]
    [when."optim.weight_decay=0.01"]         # extra overrides for matching runs
    "train.steps" = 100000

Every run writes the usual run directory ``<out>/<sweep name>/<run name>``; the sweep writes
``sweep.json`` (the spec) and ``sweep_summary.json`` (every run's status and time scales).
Re-running a sweep skips finished and diverged runs (both final) and resumes unfinished
ones from their checkpoints; a run that diverges or crashes is recorded as such and the
others go on.  What a sweep never does:

- run code from a checkpoint: checkpoints are read with ``weights_only=True``; one that
  does not load so fails its run with one line and is never unpickled otherwise;
- leave workers behind: pool workers die with the sweep process (even on ``kill -9``);
- write a run directory that another process holds (its writer lock): that run is reported
  ``busy (another process writes it)``, neither retried nor counted finished;
- let two grid points share a run directory, or a sweep or run name escape ``--out``;
- call a run finished over missing records: ``incomplete (N of M records)`` instead.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from latephase.build import make_config
from latephase.config import Config, load_toml, tomllib
from latephase.errors import (
    ConfigError,
    LatephaseError,
    ResumeError,
    RunDirBusy,
    RunDirError,
    unknown_choice,
)
from latephase.keys import record_key
from latephase.runs import (
    RunDir,
    RunRecorder,
    Status,
    atomic_write_text,
    child_path,
    mark_failed,
)
from latephase.train.runtime import share_of_cores

SPEC_KEYS = {"name", "preset", "config", "seeds", "overrides", "grid", "when"}


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: its directory name, grid point, seed and overrides."""

    name: str
    point: dict[str, Any]
    seed: int
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SweepSpec:
    name: str
    preset: str | None
    config: str | None
    seeds: tuple[int, ...]
    overrides: dict[str, Any]
    grid: dict[str, list[Any]]
    when: dict[str, dict[str, Any]]

    def runs(self) -> list[RunSpec]:
        """Every (grid point, seed), with the overrides that apply to it."""
        keys = list(self.grid)
        out = []
        for values in itertools.product(*(self.grid[k] for k in keys)):
            point = dict(zip(keys, values, strict=True))
            for seed in self.seeds:
                ov = {**self.overrides, **point, "seed": seed}
                for cond, extra in self.when.items():
                    k, _, v = cond.partition("=")
                    if k in point and _same(point[k], v):
                        ov.update(extra)
                out.append(RunSpec(_run_name(point, seed), point, seed, ov))
        return out

    def run_config(self, run: RunSpec) -> Config:
        return make_config(self.preset, self.config, _nest(run.overrides))


def _same(value: Any, text: str) -> bool:
    try:
        return bool(value == tomllib.loads(f"v = {text}")["v"])
    except tomllib.TOMLDecodeError:
        return str(value) == text


SHORT = {"optim.weight_decay": "wd", "optim.lr": "lr", "train.steps": "steps"}


def _name_part(key: str, value: Any) -> str:
    """A grid value's part of a run name: short key + value (floats as ``%g``, i.e. six
    significant digits: 0.1 and 0.1000001 both give ``wd0.1``)."""
    short = SHORT.get(key, key.rsplit(".", 1)[-1])
    return f"{short}{value:g}" if isinstance(value, float) else f"{short}{value}"


def _run_name(point: Mapping[str, Any], seed: int) -> str:
    return "-".join([*(_name_part(k, v) for k, v in point.items()), f"seed{seed}"])


def check_dir_name(what: str, name: str) -> str:
    """``name`` must be one plain path component, so ``<out>/<name>`` stays inside ``out``
    (the rule of :func:`latephase.runs.child_path`: not empty, not ``.`` or ``..``, no path
    separator, not absolute, no NUL); a ConfigError naming ``what`` otherwise."""
    try:
        child_path(".", name)
    except RunDirError as exc:
        raise ConfigError(f"{what}: {exc}") from None
    return name


def _check_distinct(grid: Mapping[str, list[Any]], seeds: Sequence[int]) -> None:
    """Every grid point and seed must have its own run directory: refuse values of one key
    (or seeds) that are equal or equal in a run name's six significant digits."""
    for key, values in [*grid.items(), ("seeds", list(seeds))]:
        seen: dict[str, Any] = {}
        for v in values:
            part = _name_part(key, v)
            if part in seen:
                same = ("lists it twice" if repr(seen[part]) == repr(v) else
                        f"gives the same run name part {part!r} (six significant digits)")
                raise ConfigError(f"{'seeds' if key == 'seeds' else 'grid: ' + repr(key)}: "
                                  f"values {seen[part]!r} and {v!r} would share one run "
                                  f"directory ({same}); remove one or make them differ")
            seen[part] = v


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        node = tree
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return tree


def sweep_preset_names() -> list[str]:
    files = resources.files("latephase.presets").joinpath("sweeps").iterdir()
    return sorted(f.name[:-5] for f in files if f.name.endswith(".toml"))


def load_spec(path: str | Path | None = None, preset: str | None = None) -> SweepSpec:
    """Read and validate a sweep spec; every run's config is checked before anything runs."""
    if preset is not None:
        if preset not in sweep_preset_names():
            raise ConfigError(unknown_choice("sweep preset", preset, sweep_preset_names()))
        text = resources.files("latephase.presets").joinpath(f"sweeps/{preset}.toml").read_text()
        raw = {"name": preset, **tomllib.loads(text)}
    elif path is not None:
        raw = load_toml(path)
        raw.setdefault("name", Path(path).stem)
    else:
        raise ConfigError("give a sweep spec file or --preset")
    unknown = set(raw) - SPEC_KEYS
    if unknown:
        raise ConfigError(unknown_choice("sweep key", sorted(unknown)[0], SPEC_KEYS))
    grid = raw.get("grid", {})
    if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
        raise ConfigError("grid: expected a table of non-empty lists, e.g. "
                          "\"optim.weight_decay\" = [0.1, 0.03]")
    seeds = raw.get("seeds", [0])
    if not (isinstance(seeds, list) and seeds and all(isinstance(s, int) for s in seeds)):
        raise ConfigError(f"seeds: expected a non-empty list of ints, got {seeds!r}")
    _check_distinct(grid, seeds)
    spec = SweepSpec(name=check_dir_name("sweep name", str(raw["name"])),
                     preset=raw.get("preset"), config=raw.get("config"),
                     seeds=tuple(seeds), overrides=dict(raw.get("overrides", {})), grid=grid,
                     when={str(k): dict(v) for k, v in raw.get("when", {}).items()})
    names: dict[str, RunSpec] = {}
    for run in spec.runs():  # every run its own directory inside the sweep's
        check_dir_name("run name", run.name)
        first = names.setdefault(run.name, run)
        if first is not run:  # distinct values per key, yet two points print alike
            raise ConfigError(f"grid: points {first.point} and {run.point} give the same run "
                              f"name {run.name!r}; change a value")
    for run in spec.runs():
        spec.run_config(run)  # raises ConfigError naming the bad key/value
    return spec


def with_overrides(spec: SweepSpec, items: Sequence[str], name: str | None = None) -> SweepSpec:
    """``spec`` with ``key=value`` overrides applied to every run (``latephase sweep --preset
    fig3-small train.steps=20000``).  The sweep gets its own directory name, ``name`` or the
    spec's plus the overrides (``fig3-small-steps20000``), so its runs never resume runs of
    another config.  A grid key or ``seed`` is refused (the grid and ``seeds`` set those)."""
    import dataclasses

    from latephase.config import parse_overrides

    flat: dict[str, Any] = {}

    def walk(tree: Mapping[str, Any], prefix: str = "") -> None:
        for k, v in tree.items():
            if isinstance(v, Mapping):
                walk(v, f"{prefix}{k}.")
            else:
                flat[prefix + k] = v

    walk(parse_overrides(list(items)))
    for key in flat:
        if key in spec.grid:
            raise ConfigError(f"override {key}: the sweep's grid sets it "
                              f"({spec.grid[key]}); change the grid in a spec file")
        if key == "seed":
            raise ConfigError("override seed: the sweep's seeds set it "
                              f"({list(spec.seeds)}); set seeds in a spec file")
    import re

    tag = "-".join(re.sub(r"[^A-Za-z0-9.+]+", "_", _name_part(k, v)).strip("_")
                   for k, v in flat.items())
    new = dataclasses.replace(spec, overrides={**spec.overrides, **flat},
                              name=check_dir_name("sweep name", name or (
                                  f"{spec.name}-{tag}" if tag else spec.name)))
    for run in new.runs():
        new.run_config(run)  # raises ConfigError naming the bad key/value
    return new


# ----------------------------------------------------------------------------- executing


BUSY = "another process writes it"
FINAL = (Status.FINISHED.value, Status.DIVERGED.value)  # a re-run never retries these


def _busy(path: str | Path) -> dict[str, Any]:
    """The result of a run whose directory another process holds: not retried, not counted
    finished, nothing written into it."""
    return {"run": Path(path).name, "status": "busy", "error": BUSY, "skipped": True}


def run_one(run_path: str, cfg_dict: dict[str, Any],
            threads: int | None = None) -> dict[str, Any]:
    """Run (or resume, or skip) one run directory; never raises: failures are recorded.
    ``threads``: what ``train.threads = "auto"`` means in this (worker) process from now on:
    its share of the cores; None leaves it as it is (all of them unless set).
    A finished or diverged run is final and skipped; a run directory that another process
    writes is reported busy and left alone.  (Resume reads the checkpoint with
    ``weights_only=True`` and refuses anything else: :func:`latephase.runs.read_checkpoint`.)"""
    from latephase import api
    from latephase.config import config_from_dict
    from latephase.train.runtime import set_auto_threads

    if threads is not None:  # a pool worker's share; None leaves this process's as is
        set_auto_threads(threads)
    path = Path(run_path)
    try:
        run = RunDir(path)
        if run.config_path.exists():
            status = run.summary().get("status")
            if status in FINAL:
                return {"run": path.name, "status": status, "skipped": True}
            _, summary = api.resume(path, progress=False)
        else:
            cfg = config_from_dict(cfg_dict)
            _, summary = api.run(cfg, path.parent, path.name, progress=False)
        return {"run": path.name, "status": summary["status"], "skipped": False}
    except KeyboardInterrupt:
        raise
    except RunDirBusy:
        return _busy(path)
    except Exception as exc:  # fault isolation: record and go on
        return _record_failure(run_path, f"{type(exc).__name__}: {exc}")


def _local(jobs: list[tuple[str, dict[str, Any]]], workers: int,
           report: Callable[[dict[str, Any]], None]) -> None:

    if workers <= 1:
        for path, cfg in jobs:
            report(run_one(path, cfg))
        return
    share = share_of_cores(min(workers, len(jobs)))  # train.threads = "auto" in each worker
    run_in_pool([(run_one, (path, cfg, share), [path]) for path, cfg in jobs], workers, report)


PoolCall = tuple[Callable[..., Any], tuple[Any, ...], list[str]]
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent(parent: int, poll_s: float = 0.5, prctl: bool = True) -> None:
    """Pool initializer: a worker exits when the sweep process that started it dies, even by
    SIGKILL, so a re-run never races orphaned workers on the same run directories.  On
    Linux the kernel sends SIGKILL on the parent's death (``prctl(PR_SET_PDEATHSIG)``);
    everywhere a daemon thread polls ``os.getppid()`` every ``poll_s`` seconds (an orphan
    is re-parented, so its parent id changes)."""
    if prctl and sys.platform.startswith("linux"):
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # no prctl here: the thread below still works
            pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent, poll_s), daemon=True,
                     name="latephase-parent-watch").start()


def _watch_parent(parent: int, poll_s: float) -> None:
    while True:
        time.sleep(poll_s)
        if os.getppid() != parent:
            os._exit(1)  # no cleanup: the run resumes from its last checkpoint


def _pool(workers: int) -> ProcessPoolExecutor:
    import multiprocessing as mp

    return ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                               initializer=_die_with_parent, initargs=(os.getpid(),))


def run_in_pool(calls: list[PoolCall], workers: int,
                report: Callable[[dict[str, Any]], None]) -> None:
    """Run ``fn(*args)`` for each ``(fn, args, run paths)`` in spawned worker processes; each
    returns one result dict or a list of them.  Workers die with this process.  A worker
    that dies (killed, out of memory) breaks the pool: the calls that had not returned are
    retried one at a time, each in its own process (their runs resume from their
    checkpoints), and a call whose process dies again has its runs recorded as failed while
    the others go on."""
    from concurrent.futures.process import BrokenProcessPool

    def deliver(result: dict[str, Any] | list[dict[str, Any]]) -> None:
        for res in result if isinstance(result, list) else [result]:
            report(res)

    left: list[PoolCall] = []
    with _pool(workers) as pool:
        futures = {pool.submit(fn, *args): (fn, args, paths) for fn, args, paths in calls}
        for fut in as_completed(futures):
            try:
                deliver(fut.result())
            except BrokenProcessPool:
                left.append(futures[fut])
    for fn, args, paths in left:
        with _pool(1) as pool:
            try:
                deliver(pool.submit(fn, *args).result())
            except BrokenProcessPool:
                for path in paths:
                    report(_record_failure(path, "the worker process died (killed or out "
                                                 "of memory); re-run the sweep to resume"))


def _record_failure(path: str, error: str) -> dict[str, Any]:
    """The result of a run that failed with ``error``; recorded in its summary when that
    still says running (under the writer lock: :func:`latephase.runs.mark_failed`).  A run
    that ended (finished, diverged) keeps its status; one another process writes is busy."""
    name = Path(path).name
    try:
        summary = mark_failed(path, error)
    except RunDirBusy:
        return _busy(path)
    except (LatephaseError, OSError):  # unreadable summary, read-only directory: report only
        summary = {}
    if summary.get("status") in FINAL:
        return {"run": name, "status": summary["status"], "error": summary.get("error", error),
                "skipped": False}
    return {"run": name, "status": Status.FAILED.value, "error": error, "skipped": False}


def _ray(jobs: list[tuple[str, dict[str, Any]]], workers: int,
         report: Callable[[dict[str, Any]], None], address: str | None = None) -> None:
    try:
        import ray
    except ImportError:
        raise LatephaseError("the ray executor needs Ray: pip install 'latephase[ray]' "
                             "(or pip install 'ray[default]')") from None
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no phoning home from clusters
    if address is None:  # a local instance: no dashboard (it waits on network timeouts)
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
                 ignore_reinit_error=True)
    else:
        ray.init(address=address, log_to_driver=False, ignore_reinit_error=True)
    remote = ray.remote(num_cpus=1)(run_one)
    refs = [remote.remote(path, cfg, 1) for path, cfg in jobs]  # one CPU per task
    while refs:
        done, refs = ray.wait(refs, num_returns=1)
        report(ray.get(done[0]))


def run_ensemble(paths: list[str], cfg_dicts: list[dict[str, Any]],
                 threads: int | None = None) -> list[dict[str, Any]]:
    """Train runs (new or resumable, at one step and evaluation point) as one vectorized
    ensemble; ``cfg_dicts`` are the configs of existing run directories as stored there.
    Never raises: a crash is recorded in every unfinished member's summary.  If another
    process writes one member's directory, the members run one by one instead (that one
    is reported busy).  ``threads``: as for :func:`run_one`."""
    from latephase import api
    from latephase.config import config_from_dict
    from latephase.train.ensemble import train_ensemble
    from latephase.train.runtime import set_auto_threads

    if threads is not None:  # a pool worker's share; None leaves this process's as is
        set_auto_threads(threads)
    runs: list[RunDir] = []

    def release() -> None:  # the writer locks of the runs created here
        for r in runs:
            if isinstance(r, RunRecorder):
                r.close()

    try:
        cfgs = [config_from_dict(c) for c in cfg_dicts]
        for p, c in zip(paths, cfgs, strict=True):
            runs.append(RunDir.open(p) if RunDir(p).config_path.exists()
                        else RunDir.create(p, c))
        summaries = train_ensemble(cfgs, runs, resume=True, progress=False)
        release()
        for p in paths:
            api.report(p)
        return [{"run": Path(p).name, "status": s["status"], "skipped": False}
                for p, s in zip(paths, summaries, strict=True)]
    except KeyboardInterrupt:
        raise
    except RunDirBusy:  # which member is not known here: each alone finds out for itself
        release()
        return [run_one(p, c, threads) for p, c in zip(paths, cfg_dicts, strict=True)]
    except Exception as exc:  # fault isolation: record and go on
        release()
        return [_record_failure(p, f"{type(exc).__name__}: {exc}") for p in paths]


def _resume_point(path: str) -> tuple[int, int]:
    """(step, evaluations done) of a run's checkpoint; (0, 0) without one.  The checkpoint
    is read with ``weights_only=True`` (tensors and primitives only: unpickling never runs
    code) and its digest checked by :func:`latephase.runs.read_checkpoint`; one that does
    not load so is refused with its one-line ResumeError."""
    from latephase.runs import read_checkpoint

    ck = RunDir(path).checkpoint_path
    if not ck.exists():
        return 0, 0
    state = read_checkpoint(ck, map_location="cpu")  # cuda-saved too
    try:
        return int(state["step"]), int(state["evals_done"])
    except (KeyError, TypeError, ValueError):
        raise ResumeError(f"{ck}: not a latephase checkpoint (no integer 'step' and "
                          "'evals_done')") from None


def _ensemble(jobs: list[tuple[str, dict[str, Any]]], workers: int,
              report: Callable[[dict[str, Any]], None]) -> None:
    """Group runs that differ only in seed, lr and weight decay (and stand at the same step
    and evaluation point) into vectorized ensembles, split so every worker has one; runs the
    ensemble cannot vectorize, or whose run directory cannot be read, go to the local
    executor (which records why they fail).  A run whose checkpoint is refused (it does not
    load with ``weights_only=True``) is recorded failed with the reason and not run.  An
    existing run keeps its stored config, as with the local executor."""

    from latephase.config import config_from_dict
    from latephase.train.ensemble import ensemble_key, ensemble_supported

    groups: dict[tuple[str, int, int], list[tuple[str, dict[str, Any]]]] = {}
    solo, reasons = [], []
    for path, cfg_dict in jobs:
        run = RunDir(path)
        try:
            status = run.summary().get("status")
        except LatephaseError:  # unreadable summary: resume rewrites it
            status = None
        if status in FINAL:
            report({"run": Path(path).name, "status": status, "skipped": True})
            continue
        try:
            point = _resume_point(path)
        except ResumeError as exc:  # e.g. a checkpoint that would run code: never loaded
            report(_record_failure(path, f"{type(exc).__name__}: {exc}"))
            continue
        try:
            cfg = run.config() if run.config_path.exists() else config_from_dict(cfg_dict)
        except Exception as exc:  # unreadable run directory: run_one records the failure
            solo.append((path, cfg_dict))
            reasons.append(f"{type(exc).__name__}: {exc}")
            continue
        reason = ensemble_supported(cfg)
        if reason is not None:
            solo.append((path, cfg_dict))
            reasons.append(reason)
            continue
        groups.setdefault((ensemble_key(cfg), *point), []).append((path, cfg.to_dict()))
    chunks = []
    per_group = max(1, workers // max(1, len(groups)))
    for members in groups.values():
        n = min(per_group, len(members))
        chunks += [members[i::n] for i in range(n)]
    if solo:
        print(f"latephase: note: {len(solo)} run(s) cannot be vectorized ({reasons[0]}); "
              "they run with the local executor", file=sys.stderr)
        _local(solo, workers, report)
    if workers <= 1 or len(chunks) <= 1:
        for chunk in chunks:
            for res in run_ensemble([p for p, _ in chunk], [c for _, c in chunk]):
                report(res)
        return
    share = share_of_cores(min(workers, len(chunks)))  # train.threads = "auto" per worker
    run_in_pool([(run_ensemble, ([p for p, _ in chunk], [c for _, c in chunk], share),
                  [p for p, _ in chunk]) for chunk in chunks], workers, report)


EXECUTORS = {"local": _local, "ensemble": _ensemble, "ray": _ray}


def run_sweep(spec: SweepSpec, out: str | Path = "runs", *, executor: str = "local",
              workers: int | None = None, address: str | None = None,
              progress: bool = True) -> dict[str, Any]:
    """Run every run of ``spec`` (skipping finished and diverged ones) and write the sweep
    summary."""
    if executor not in EXECUTORS:
        raise ConfigError(unknown_choice("executor", executor, EXECUTORS))
    root = Path(out) / check_dir_name("sweep name", spec.name)
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / "sweep.json", json.dumps({
        "name": spec.name, "preset": spec.preset, "config": spec.config,
        "seeds": list(spec.seeds), "overrides": spec.overrides, "grid": spec.grid,
        "when": spec.when}, indent=2) + "\n")
    runs = spec.runs()
    jobs = [(str(root / r.name), spec.run_config(r).to_dict()) for r in runs]
    workers = workers or os.cpu_count() or 1
    ended: dict[str, str] = {}
    results: dict[str, dict[str, Any]] = {}

    def report(res: dict[str, Any]) -> None:
        ended[res["run"]] = res["status"]
        results[res["run"]] = res

    with _StepProgress(jobs, ended, enabled=progress):
        if executor == "ray":
            _ray(jobs, workers, report, address)
        else:
            EXECUTORS[executor](jobs, workers, report)
    return write_summary(root, spec, results)


class _StepProgress:
    """A progress bar over the training steps of every run of a sweep, whatever executes
    them: a thread polls the tail of each run's metrics.jsonl every ``every`` seconds.
    Work done before the sweep started (finished, skipped or resumed runs) is the bar's
    ``initial``, so the rate counts this session's steps only: n = sum_i max(start_i,
    last_i), rate = (n - sum_i start_i) / elapsed."""

    def __init__(self, jobs: list[tuple[str, dict[str, Any]]], ended: dict[str, str], *,
                 enabled: bool, every: float = 2.0) -> None:
        from latephase.runs import last_step

        self.paths = [Path(p) / "metrics.jsonl" for p, _ in jobs]
        self.total = sum(int(c["train"]["steps"]) for _, c in jobs)
        self.start = [last_step(p) for p in self.paths] if enabled else [0] * len(self.paths)
        self.ended, self.enabled, self.every = ended, enabled, every
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _poll(self, bar: Any) -> None:
        from latephase.runs import last_step

        # a resumed run first drops the records past its checkpoint: never below the start
        bar.n = sum(max(s, last_step(p)) for s, p in zip(self.start, self.paths, strict=True))
        ended = list(self.ended.values())  # one snapshot: the main thread adds to it
        counts = {s: ended.count(s) for s in sorted(set(ended))}
        done = ", ".join(f"{n} {s}" for s, n in counts.items()) or "none ended yet"
        bar.set_postfix_str(f"runs: {done} of {len(self.paths)}", refresh=False)
        bar.refresh()

    def _loop(self) -> None:
        from tqdm.auto import tqdm

        # the rate is (n - initial) / elapsed: bar.n is set, never update()d, so tqdm's
        # smoothed rate has no samples and this average is what it shows
        with tqdm(total=self.total, initial=sum(self.start), unit="step", file=sys.stderr,
                  dynamic_ncols=True, smoothing=0.1) as bar:
            while not self.stop.wait(self.every):
                self._poll(bar)
            self._poll(bar)

    def __enter__(self) -> _StepProgress:
        if self.enabled:
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.enabled:
            self.thread.join()


# ----------------------------------------------------------------------------- analysis


def check_records(run: RunDir, summary: Mapping[str, Any]) -> tuple[str, str | None]:
    """A finished run's status as its records bear it out.

    The schedule is ``eval_steps(train.steps, train.eval_schedule, train.eval_points)`` of
    the run's stored config.  A run extended by ``--resume DIR train.steps=N`` (config.json
    lists ``extended: [{from_steps, to_steps}]``) keeps its records up to b = the largest
    ``from_steps``, taken on the shorter run's schedule; only the scheduled steps after b
    are required of it.  With R the distinct record steps and E the summary's
    ``evaluations``::

        M = max(E, |R <= b| + |schedule > b|),   N = |R <= b| + |R & schedule > b|

    ``("finished", None)`` needs N = M, no step twice and none off the schedule; else
    ``("incomplete", "N of M records")`` or ``("corrupt", ...)``."""
    from latephase.train.loop import eval_steps

    try:
        t = run.config().train
        planned = set(eval_steps(t.steps, t.eval_schedule, t.eval_points))
        b = max((int(e["from_steps"]) for e in run.info().get("extended") or []), default=-1)
        steps = [int(r["step"]) for r in run.records()]
    except (LatephaseError, KeyError, TypeError, ValueError, OSError) as exc:
        return "incomplete", f"records unreadable: {exc}"
    have = set(steps)
    prefix = sum(1 for s in have if s <= b)
    wanted = {s for s in planned if s > b}
    evals = summary.get("evaluations")
    m = max(prefix + len(wanted), evals if isinstance(evals, int) else 0)
    n = prefix + len(have & wanted)
    off = {s for s in have if s > b} - planned
    if n < m:
        return "incomplete", f"{n} of {m} records"
    if len(steps) > len(have):
        return "corrupt", f"{len(steps) - len(have)} duplicated records"
    if off:
        return "corrupt", f"{len(off)} records off the evaluation schedule, e.g. step {min(off)}"
    return Status.FINISHED.value, None


def collect(root: Path, spec: SweepSpec,
            results: Mapping[str, Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One row per run: grid point, seed, status (with ``detail`` when it needs one) and
    time scales.  ``results`` are this sweep's executor results: a run found busy, or
    failed before its summary could say so, is reported as such.  "finished" needs the
    summary to say so and every scheduled record present (:func:`check_records`)."""
    rows = []
    for r in spec.runs():
        run = RunDir(root / r.name)
        try:
            s = run.summary()
            status, error = s.get("status", "missing"), s.get("error")
        except LatephaseError as exc:
            s, status, error = {}, "unreadable", str(exc)
        sc = s.get("timescales") or {}
        fin = s.get("final") or {}
        detail = error
        res = (results or {}).get(r.name, {})
        if res.get("status") == "busy" or (res.get("status") == Status.FAILED
                                           and status not in FINAL):
            status, error = res["status"], res.get("error") or error
            detail = error
        elif status == Status.FINISHED:
            status, detail = check_records(run, s)
        rows.append({"run": r.name, **r.point, "seed": r.seed,
                     "status": status, "error": error, "detail": detail,
                     "t_fit": sc.get("t_fit"), "t_grok": sc.get("t_grok"),
                     "t_collapse": sc.get("t_collapse"),
                     "final_test_acc": fin.get(record_key("test", "acc")),
                     "final_train_acc": fin.get(record_key("train", "acc"))})
    return rows


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean and a Student-t confidence interval (NaN half-width for fewer than 2 values)."""
    from scipy import stats

    v = [x for x in values if x is not None and math.isfinite(x)]
    if not v:
        return math.nan, math.nan, math.nan
    m = sum(v) / len(v)
    if len(v) < 2:
        return m, math.nan, math.nan
    sd = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))
    h = float(stats.t.ppf(0.5 + level / 2, len(v) - 1)) * sd / math.sqrt(len(v))
    return m, m - h, m + h


def loglog_fit(xs: Sequence[float], ys: Sequence[float],
               level: float = 0.95) -> dict[str, float] | None:
    """OLS fit log y = a + b log x over all runs; slope b with a Student-t interval."""
    from scipy import stats

    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True)
           if x and y and x > 0 and y > 0]
    if len({p[0] for p in pts}) < 2:
        return None
    res = stats.linregress([p[0] for p in pts], [p[1] for p in pts])
    n = len(pts)
    h = float(stats.t.ppf(0.5 + level / 2, n - 2)) * res.stderr if n > 2 else math.nan
    return {"slope": float(res.slope), "lo": float(res.slope - h), "hi": float(res.slope + h),
            "intercept": float(res.intercept), "n": n}


def predictions(rows: list[dict[str, Any]], key: str = "optim.weight_decay") -> list[dict]:
    """The predictions of Theorem 4.3 (science.md section 4), each with what the data say."""
    ok = [r for r in rows if r["status"] == Status.FINISHED and key in r]
    fits = {t: loglog_fit([r[key] for r in ok if r[t]], [r[t] for r in ok if r[t]])
            for t in ("t_fit", "t_grok", "t_collapse")}
    out = []

    def verdict(fit: dict[str, float] | None, target: float) -> str:
        if fit is None:
            return "no data"
        if math.isnan(fit["lo"]):
            return "too few runs for an interval"
        if fit["lo"] <= target <= fit["hi"]:
            return f"consistent (interval contains {target:g})"
        return f"not supported (interval excludes {target:g})"

    out.append({"key": "t_fit", "prediction": f"t_fit does not depend on {key} (slope 0)",
                "fit": fits["t_fit"], "verdict": verdict(fits["t_fit"], 0.0)})
    for t in ("t_collapse", "t_grok"):
        out.append({"key": t, "prediction": f"{t} ~ 1/{key} (log-log slope -1)",
                    "fit": fits[t], "verdict": verdict(fits[t], -1.0)})
    gaps = [(r[key], r["t_grok"] - r["t_fit"]) for r in ok if r["t_grok"] and r["t_fit"]]
    if len({g[0] for g in gaps}) >= 2:
        from scipy import stats

        rho = float(stats.spearmanr([g[0] for g in gaps], [g[1] for g in gaps]).statistic)
        out.append({"key": "gap", "prediction": f"t_grok - t_fit shrinks as {key} grows",
                    "fit": {"spearman": rho},
                    "verdict": "consistent (rho < 0)" if rho < 0 else "not supported (rho >= 0)"})
    return out


def aggregate(rows: list[dict[str, Any]], keys: list[str]) -> list[dict[str, Any]]:
    """Per grid point: seed mean and 95 % Student-t interval of each time scale, over the
    finished runs that reached it (``reached`` counts them)."""
    out = []
    points = sorted({tuple(r[k] for k in keys) for r in rows}, key=str)
    for point in points:
        group = [r for r in rows if tuple(r[k] for k in keys) == point
                 and r["status"] == Status.FINISHED]
        entry: dict[str, Any] = {**dict(zip(keys, point, strict=True)), "runs": len(group)}
        for t in ("t_fit", "t_grok", "t_collapse"):
            vals = [r[t] for r in group if r[t]]
            m, lo, hi = mean_ci(vals)
            entry[t] = {"mean": m, "lo": lo, "hi": hi, "reached": len(vals)}
        out.append(entry)
    return out


def write_summary(root: Path, spec: SweepSpec,
                  results: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    rows = collect(root, spec, results)
    summary: dict[str, Any] = {"name": spec.name, "runs": rows,
                               "counts": {s: sum(r["status"] == s for r in rows)
                                          for s in sorted({r["status"] for r in rows})}}
    if spec.grid:
        summary["aggregates"] = aggregate(rows, list(spec.grid))
    if "optim.weight_decay" in spec.grid:
        summary["predictions"] = predictions(rows)
    atomic_write_text(root / "sweep_summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def _fmt_ci(d: dict[str, Any], runs: int) -> str:
    if not d["reached"]:
        return "not reached"
    ci = "" if math.isnan(d["lo"]) else f" [{d['lo']:,.0f}, {d['hi']:,.0f}]"
    return f"{d['mean']:,.0f}{ci} ({d['reached']}/{runs})"


def summary_text(summary: dict[str, Any]) -> str:
    lines = [f"sweep {summary['name']}: " + ", ".join(f"{n} {s}" for s, n in
                                                       summary["counts"].items())]
    for r in summary["runs"]:
        ts = "  ".join(f"{k}={r[k]:,.0f}" if r[k] else f"{k}=-"
                       for k in ("t_fit", "t_grok", "t_collapse"))
        acc = r["final_test_acc"]
        lines.append(f"  {r['run']:28s} {r['status']:9s} {ts}  held-out acc "
                     f"{acc if acc is None else round(acc, 3)}")
        if r.get("detail"):
            lines.append(f"  {'':28s} {r['status']} ({r['detail']})")
    for a in summary.get("aggregates", []):
        point = ", ".join(f"{k}={v}" for k, v in a.items() if k not in ("runs", "t_fit",
                                                                         "t_grok", "t_collapse"))

        lines.append(f"  {point}: t_fit {_fmt_ci(a['t_fit'], a['runs'])}; "
                     f"t_grok {_fmt_ci(a['t_grok'], a['runs'])}; "
                     f"t_collapse {_fmt_ci(a['t_collapse'], a['runs'])}")
    for p in summary.get("predictions", []):
        fit = p["fit"] or {}
        if "slope" in fit:
            how = f"slope {fit['slope']:+.2f} [{fit['lo']:+.2f}, {fit['hi']:+.2f}] (n={fit['n']})"
        elif "spearman" in fit:
            how = f"Spearman rho {fit['spearman']:+.2f}"
        else:
            how = "no fit"
        lines.append(f"  {p['prediction']:52s} {how:38s} {p['verdict']}")
    return "\n".join(lines)
