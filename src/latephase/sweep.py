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
Re-running a sweep skips finished runs and resumes unfinished ones from their checkpoints;
a run that diverges or crashes is recorded as such and the others go on.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from latephase.config import Config, load_toml, make_config, tomllib
from latephase.errors import ConfigError, LatephaseError, unknown_choice
from latephase.runs import RunDir, atomic_write_text

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


def _run_name(point: Mapping[str, Any], seed: int) -> str:
    parts = [f"{SHORT.get(k, k.rsplit('.', 1)[-1])}{v:g}" if isinstance(v, float)
             else f"{SHORT.get(k, k.rsplit('.', 1)[-1])}{v}" for k, v in point.items()]
    return "-".join([*parts, f"seed{seed}"])


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
    spec = SweepSpec(name=str(raw["name"]), preset=raw.get("preset"), config=raw.get("config"),
                     seeds=tuple(seeds), overrides=dict(raw.get("overrides", {})), grid=grid,
                     when={str(k): dict(v) for k, v in raw.get("when", {}).items()})
    for run in spec.runs():
        spec.run_config(run)  # raises ConfigError naming the bad key/value
    return spec


# ----------------------------------------------------------------------------- executing


def run_one(run_path: str, cfg_dict: dict[str, Any], threads: int = 1) -> dict[str, Any]:
    """Run (or resume, or skip) one run directory; never raises: failures are recorded."""
    import torch

    from latephase import api
    from latephase.config import config_from_dict

    torch.set_num_threads(threads)
    path = Path(run_path)
    try:
        run = RunDir(path)
        if run.config_path.exists():
            status = run.summary().get("status")
            if status in ("finished", "diverged"):
                return {"run": path.name, "status": status, "skipped": True}
            _, summary = api.resume(path, progress=False)
        else:
            cfg = config_from_dict(cfg_dict)
            _, summary = api.run(cfg, path.parent, path.name, progress=False)
        return {"run": path.name, "status": summary["status"], "skipped": False}
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # fault isolation: record and go on
        summary = RunDir(path).summary() if path.exists() else {}
        if summary.get("status") == "running":
            summary.update(status="failed", error=f"{type(exc).__name__}: {exc}")
            RunDir(path).write_summary(summary)
        return {"run": path.name, "status": "failed", "error": f"{type(exc).__name__}: {exc}"}


def _local(jobs: list[tuple[str, dict[str, Any]]], workers: int,
           report: Callable[[dict[str, Any]], None]) -> None:

    if workers <= 1:
        for path, cfg in jobs:
            report(run_one(path, cfg))
        return
    run_in_pool([(run_one, (path, cfg), [path]) for path, cfg in jobs], workers, report)


PoolCall = tuple[Callable[..., Any], tuple[Any, ...], list[str]]


def run_in_pool(calls: list[PoolCall], workers: int,
                report: Callable[[dict[str, Any]], None]) -> None:
    """Run ``fn(*args)`` for each ``(fn, args, run paths)`` in spawned worker processes; each
    returns one result dict or a list of them.  A worker that dies (killed, out of memory)
    breaks the pool: the calls that had not returned are retried one at a time, each in its
    own process (their runs resume from their checkpoints), and a call whose process dies
    again has its runs recorded as failed while the others go on."""
    import multiprocessing as mp
    from concurrent.futures.process import BrokenProcessPool

    def deliver(result: dict[str, Any] | list[dict[str, Any]]) -> None:
        for res in result if isinstance(result, list) else [result]:
            report(res)

    ctx = mp.get_context("spawn")
    left: list[PoolCall] = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = {pool.submit(fn, *args): (fn, args, paths) for fn, args, paths in calls}
        for fut in as_completed(futures):
            try:
                deliver(fut.result())
            except BrokenProcessPool:
                left.append(futures[fut])
    for fn, args, paths in left:
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            try:
                deliver(pool.submit(fn, *args).result())
            except BrokenProcessPool:
                for path in paths:
                    report(_record_failure(path, "the worker process died (killed or out "
                                                 "of memory); re-run the sweep to resume"))


def _record_failure(path: str, error: str) -> dict[str, Any]:
    """Mark a run that was still running as failed (when its directory exists)."""
    run = RunDir(path)
    if run.summary_path.exists():
        summary = run.summary()
        if summary.get("status") in (None, "running"):
            run.write_summary({**summary, "status": "failed", "error": error})
    return {"run": Path(path).name, "status": "failed", "error": error}


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
    refs = [remote.remote(path, cfg) for path, cfg in jobs]
    while refs:
        done, refs = ray.wait(refs, num_returns=1)
        report(ray.get(done[0]))


def run_ensemble(paths: list[str], cfg_dicts: list[dict[str, Any]],
                 threads: int = 1) -> list[dict[str, Any]]:
    """Train runs (new or resumable, at one step and evaluation point) as one vectorized
    ensemble; ``cfg_dicts`` are the configs of existing run directories as stored there.
    Never raises: a crash is recorded in every unfinished member's summary."""
    import torch

    from latephase import api
    from latephase.config import config_from_dict
    from latephase.train.ensemble import train_ensemble

    torch.set_num_threads(threads)
    try:
        cfgs = [config_from_dict(c) for c in cfg_dicts]
        runs = [RunDir.open(p) if RunDir(p).config_path.exists() else RunDir.create(p, c)
                for p, c in zip(paths, cfgs, strict=True)]
        summaries = train_ensemble(cfgs, runs, resume=True, progress=False)
        for p in paths:
            api.report(p)
        return [{"run": Path(p).name, "status": s["status"], "skipped": False}
                for p, s in zip(paths, summaries, strict=True)]
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # fault isolation: record and go on
        error = f"{type(exc).__name__}: {exc}"
        out = []
        for p in paths:
            run = RunDir(p)
            summary = run.summary() if run.summary_path.exists() else {}
            if summary.get("status") in (None, "running"):
                summary = {**summary, "status": "failed", "error": error}
                if run.path.is_dir():  # else nothing to record it in (e.g. not created)
                    run.write_summary(summary)
            out.append({"run": Path(p).name, "status": summary["status"],  # diverged stays
                        "error": summary.get("error", error), "skipped": False})
        return out


def _resume_point(path: str) -> tuple[int, int]:
    """(step, evaluations done) of a run's checkpoint; (0, 0) without one."""
    import torch

    ck = RunDir(path).checkpoint_path
    if not ck.exists():
        return 0, 0
    state = torch.load(ck, weights_only=False, map_location="cpu")  # cuda-saved too
    return int(state["step"]), int(state["evals_done"])


def _ensemble(jobs: list[tuple[str, dict[str, Any]]], workers: int,
              report: Callable[[dict[str, Any]], None]) -> None:
    """Group runs that differ only in seed, lr and weight decay (and stand at the same step
    and evaluation point) into vectorized ensembles, split so every worker has one; runs the
    ensemble cannot vectorize, or whose run directory cannot be read, go to the local
    executor (which records why they fail).  An existing run keeps its stored config, as
    with the local executor."""

    from latephase.config import config_from_dict
    from latephase.train.ensemble import ensemble_key, ensemble_supported

    groups: dict[tuple[str, int, int], list[tuple[str, dict[str, Any]]]] = {}
    solo, reasons = [], []
    for path, cfg_dict in jobs:
        status = RunDir(path).summary().get("status") if Path(path).exists() else None
        if status in ("finished", "diverged"):
            report({"run": Path(path).name, "status": status, "skipped": True})
            continue
        try:
            run = RunDir(path)
            cfg = run.config() if run.config_path.exists() else config_from_dict(cfg_dict)
            point = _resume_point(path)
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
    run_in_pool([(run_ensemble, ([p for p, _ in chunk], [c for _, c in chunk]),
                  [p for p, _ in chunk]) for chunk in chunks], workers, report)


EXECUTORS = {"local": _local, "ensemble": _ensemble, "ray": _ray}


def run_sweep(spec: SweepSpec, out: str | Path = "runs", *, executor: str = "local",
              workers: int | None = None, address: str | None = None,
              progress: bool = True) -> dict[str, Any]:
    """Run every run of ``spec`` (skipping finished ones) and write the sweep summary."""
    if executor not in EXECUTORS:
        raise ConfigError(unknown_choice("executor", executor, EXECUTORS))
    root = Path(out) / spec.name
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / "sweep.json", json.dumps({
        "name": spec.name, "preset": spec.preset, "config": spec.config,
        "seeds": list(spec.seeds), "overrides": spec.overrides, "grid": spec.grid,
        "when": spec.when}, indent=2) + "\n")
    runs = spec.runs()
    jobs = [(str(root / r.name), spec.run_config(r).to_dict()) for r in runs]
    workers = workers or os.cpu_count() or 1
    ended: dict[str, str] = {}

    def report(res: dict[str, Any]) -> None:
        ended[res["run"]] = res["status"]

    with _StepProgress(jobs, ended, enabled=progress):
        if executor == "ray":
            _ray(jobs, workers, report, address)
        else:
            EXECUTORS[executor](jobs, workers, report)
    return write_summary(root, spec)


class _StepProgress:
    """A progress bar over the training steps of every run of a sweep, whatever executes
    them: a thread polls the tail of each run's metrics.jsonl every ``every`` seconds."""

    def __init__(self, jobs: list[tuple[str, dict[str, Any]]], ended: dict[str, str], *,
                 enabled: bool, every: float = 2.0) -> None:
        import threading

        self.paths = [Path(p) / "metrics.jsonl" for p, _ in jobs]
        self.total = sum(int(c["train"]["steps"]) for _, c in jobs)
        self.ended, self.enabled, self.every = ended, enabled, every
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _poll(self, bar: Any) -> None:
        from latephase.runs import last_step

        bar.n = sum(last_step(p) for p in self.paths)
        ended = list(self.ended.values())  # one snapshot: the main thread adds to it
        counts = {s: ended.count(s) for s in sorted(set(ended))}
        done = ", ".join(f"{n} {s}" for s, n in counts.items()) or "none ended yet"
        bar.set_postfix_str(f"runs: {done} of {len(self.paths)}", refresh=False)
        bar.refresh()

    def _loop(self) -> None:
        from tqdm.auto import tqdm

        from latephase.runs import last_step

        with tqdm(total=self.total, unit="step", file=sys.stderr, dynamic_ncols=True,
                  smoothing=0.1) as bar:
            bar.n = bar.last_print_n = sum(last_step(p) for p in self.paths)  # resumed work
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


def collect(root: Path, spec: SweepSpec) -> list[dict[str, Any]]:
    """One row per run: grid point, seed, status and time scales."""
    rows = []
    for r in spec.runs():
        s = RunDir(root / r.name).summary()
        sc = s.get("timescales") or {}
        fin = s.get("final") or {}
        rows.append({"run": r.name, **r.point, "seed": r.seed,
                     "status": s.get("status", "missing"), "error": s.get("error"),
                     "t_fit": sc.get("t_fit"), "t_grok": sc.get("t_grok"),
                     "t_collapse": sc.get("t_collapse"),
                     "final_test_acc": fin.get("test/acc"),
                     "final_train_acc": fin.get("train/acc")})
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
    ok = [r for r in rows if r["status"] == "finished" and key in r]
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
                 and r["status"] == "finished"]
        entry: dict[str, Any] = {**dict(zip(keys, point, strict=True)), "runs": len(group)}
        for t in ("t_fit", "t_grok", "t_collapse"):
            vals = [r[t] for r in group if r[t]]
            m, lo, hi = mean_ci(vals)
            entry[t] = {"mean": m, "lo": lo, "hi": hi, "reached": len(vals)}
        out.append(entry)
    return out


def write_summary(root: Path, spec: SweepSpec) -> dict[str, Any]:
    rows = collect(root, spec)
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
