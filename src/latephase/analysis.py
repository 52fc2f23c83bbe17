"""Runs and sweeps as pandas tables, CSV export, and several runs side by side in one figure.

``load_run(run)`` is a run's metrics (one row per evaluation step) with its config as extra
columns; ``load_sweep(sweep)`` stacks the runs of a sweep directory into one long table
(one row per (run, evaluation step)) with the run's name and status, its seed, the keys the
sweep varies (e.g. ``optim.weight_decay``) and every metric column.  Config columns use the
dotted keys of ``latephase config``; list values (``model.widths``) are JSON text, so a CSV
holds them as one cell.  metrics.jsonl is the source: nothing here writes to a run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from latephase.errors import LatephaseError, RunDirError
from latephase.runs import CONFIG, METRICS, RunDir, load_metrics

#: the figure formats matplotlib writes that ``--format`` accepts
FORMATS = ("png", "pdf", "svg", "eps", "jpg", "tif")
#: columns every table has first (config keys follow, then the metrics)
RUN_COLUMNS = ("run", "status", "seed")
#: ``config=`` choices of :func:`load_sweep`
CONFIG_COLUMNS = ("varying", "all", "none")
#: the measures ``latephase compare`` draws by default
DEFAULT_MEASURES = ("test/acc", "train/rnc1_mean")
SWEEP_SUMMARY = "sweep_summary.json"


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 1e-3}}`` -> ``{"optim.lr": 1e-3}``; lists become JSON text."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        elif isinstance(value, list | tuple):
            out[name] = json.dumps(list(value))
        else:
            out[name] = value
    return out


def run_config(run: RunDir) -> dict[str, Any]:
    """A run's flat config: ``seed`` and every dotted key of config.json's ``config``."""
    info = run.info()
    cfg = info.get("config")
    flat = flatten(cfg) if isinstance(cfg, Mapping) else {}
    if "seed" in info:
        flat.setdefault("seed", info["seed"])
    return flat


def _status(run: RunDir) -> str:
    try:
        return str(run.summary().get("status", "missing"))
    except LatephaseError:
        return "unreadable"


def _frame(run: RunDir, config: Mapping[str, Any], status: str) -> Any:
    """The run's metrics with ``run``, ``status`` and the ``config`` columns in front."""
    import pandas as pd

    df = load_metrics(run.path) if run.metrics_path.exists() else pd.DataFrame()
    front = {"run": run.path.name, "status": status, **config}
    head = pd.DataFrame({k: [v] * len(df) for k, v in front.items()}, index=df.index)
    return pd.concat([head, df.drop(columns=[c for c in front if c in df.columns])], axis=1)


def load_run(path: str | Path) -> Any:
    """One run as a DataFrame: ``run``, ``status``, ``seed``, every config key (dotted), then
    its metrics, one row per evaluation step."""
    run = RunDir.open(path)
    return _frame(run, run_config(run), _status(run))


def _sweep_runs(root: Path) -> tuple[list[RunDir], dict[str, str], list[str]]:
    """The runs of a sweep directory, their statuses as the sweep summary gives them, and
    the keys it varies.  Without a sweep_summary.json: every sub-directory that is a run."""
    statuses: dict[str, str] = {}
    swept: list[str] = []
    summary_file = root / SWEEP_SUMMARY
    if summary_file.is_file():
        try:
            summary = json.loads(summary_file.read_text())
        except ValueError as exc:
            raise RunDirError(f"{summary_file}: not valid JSON ({exc})") from None
        rows = summary.get("runs", []) if isinstance(summary, dict) else []
        fixed = {"run", "seed", "status", "error", "detail", "t_fit", "t_grok", "t_collapse",
                 "final_test_acc", "final_train_acc"}
        for row in rows:
            statuses[str(row["run"])] = str(row.get("status", "missing"))
            swept += [k for k in row if k not in fixed and k not in swept]
        names = [str(r["run"]) for r in rows if (root / str(r["run"]) / CONFIG).is_file()]
    else:
        names = sorted(p.name for p in root.iterdir() if (p / CONFIG).is_file())
    return [RunDir(root / n) for n in names], statuses, swept


def load_sweep(path: str | Path, config: str = "varying") -> Any:
    """A sweep directory as one long DataFrame: one row per (run, evaluation step).

    Columns: ``run``, ``status`` (the sweep summary's, which checks every record is there;
    else the run's own), ``seed``, the config keys (``config="varying"``: the sweep's grid
    keys and every key whose value differs between runs; ``"all"``: every key; ``"none"``:
    seed only), then every metric column (a metric a run lacks is NaN in its rows).  A
    directory without a sweep summary: every sub-directory holding a config.json.
    """
    import pandas as pd

    if config not in CONFIG_COLUMNS:
        raise LatephaseError(f"config={config!r}: expected one of {', '.join(CONFIG_COLUMNS)}")
    root = Path(path)
    if not root.is_dir():
        raise RunDirError(f"{str(root)!r} is not a directory; pass a sweep directory "
                          "(written by `latephase sweep`)")
    runs, statuses, swept = _sweep_runs(root)
    if not runs:
        raise RunDirError(f"{str(root)!r} holds no runs (no sub-directory with {CONFIG})")
    configs = [run_config(r) for r in runs]
    keys = list(dict.fromkeys(k for c in configs for k in c))
    if config == "all":
        chosen = keys
    else:
        varying = [k for k in keys if len({json.dumps(c.get(k)) for c in configs}) > 1]
        chosen = ["seed", *(swept if config == "varying" else []),
                  *(varying if config == "varying" else [])]
    chosen = list(dict.fromkeys(k for k in chosen if k != "name" or config == "all"))
    frames = [_frame(r, {k: c.get(k) for k in chosen}, statuses.get(r.path.name, _status(r)))
              for r, c in zip(runs, configs, strict=True)]
    return pd.concat(frames, ignore_index=True)


def load_table(path: str | Path, config: str = "varying") -> Any:
    """:func:`load_run` for a run directory, :func:`load_sweep` for anything else."""
    p = Path(path)
    if (p / CONFIG).is_file() or (p / METRICS).is_file():
        return load_run(p)
    return load_sweep(p, config)


def export_csv(path: str | Path, csv: str | Path, config: str = "varying") -> tuple[Path, Any]:
    """Write :func:`load_table` of a run or sweep to ``csv``; returns the file and the table."""
    df = load_table(path, config)
    out = Path(csv)
    df.to_csv(out, index=False)
    return out, df


# ----------------------------------------------------------------------------- comparing runs


def parse_formats(text: str | Iterable[str]) -> tuple[str, ...]:
    """``"png,pdf"`` -> ``("png", "pdf")``; a ValueError naming the format that is not one."""
    items = [t.strip().lower().lstrip(".") for t in
             (text.split(",") if isinstance(text, str) else text)]
    items = [t for t in items if t]
    if not items:
        raise LatephaseError(f"--format {text!r}: give one or more of {', '.join(FORMATS)}")
    for fmt in items:
        if fmt not in FORMATS:
            raise LatephaseError(f"--format {fmt!r}: not a figure format; valid: "
                                 f"{', '.join(FORMATS)} (comma-separated)")
    return tuple(dict.fromkeys(items))


def check_dpi(dpi: float) -> float:
    """The figure resolution: a finite number in [10, 2400] dots per inch."""
    if not (isinstance(dpi, int | float) and math.isfinite(dpi) and 10 <= dpi <= 2400):
        raise LatephaseError(f"--dpi {dpi!r}: expected a number of dots per inch in [10, 2400]")
    return float(dpi)


def compare_figure(runs: Sequence[str | Path], measures: Sequence[str] = DEFAULT_MEASURES,
                   labels: Sequence[str] | None = None) -> Any:
    """One panel per measure (a metrics column, e.g. ``test/acc``), one line per run, against
    step on a log axis (step 0 is left out there).  A measure no run recorded is an error
    naming the columns that exist; a run without it has no line in that panel."""
    import matplotlib.pyplot as plt

    if not runs:
        raise LatephaseError("compare: give at least one run directory")
    if not measures:
        raise LatephaseError("--measures: give at least one metrics column, e.g. test/acc")
    frames = [load_metrics(RunDir.open(r).path) for r in runs]
    names = list(labels) if labels is not None else [Path(r).name for r in runs]
    if len(names) != len(frames):
        raise LatephaseError(f"labels: {len(names)} labels for {len(frames)} runs")
    columns = list(dict.fromkeys(c for df in frames for c in df.columns if c != "step"))
    for m in measures:
        if m not in columns:
            raise LatephaseError(f"--measures: no run recorded {m!r}; recorded columns: "
                                 f"{', '.join(columns)}")
    n = len(measures)
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.9 * nrows),
                             layout="constrained", squeeze=False)
    colors = plt.get_cmap("tab10")
    for ax, m in zip(axes.flat, measures, strict=False):
        for i, (df, name) in enumerate(zip(frames, names, strict=True)):
            if m not in df.columns:
                continue
            d = df[(df["step"] > 0) & df[m].notna()]
            ax.plot(d["step"], d[m], color=colors(i % 10), label=name)
        ax.set_xscale("log")
        values = [v for df in frames if m in df.columns for v in df.loc[df["step"] > 0, m]]
        positive = [v for v in values if isinstance(v, int | float) and v > 0]
        if positive and len(positive) == len(values) and max(positive) / min(positive) > 100:
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel(m)
        ax.set_title(m)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    return fig


def save_figure(fig: Any, out: str | Path, formats: Sequence[str] = ("png",),
                dpi: float = 150.0) -> list[Path]:
    """Save ``fig`` as ``out`` in each format (``out``'s own suffix is replaced)."""
    import matplotlib.pyplot as plt

    stem = Path(out)
    if stem.suffix.lstrip(".").lower() in FORMATS:
        stem = stem.with_suffix("")
    paths = []
    try:
        for fmt in formats:
            path = stem.with_name(f"{stem.name}.{fmt}")
            fig.savefig(path, dpi=dpi)
            paths.append(path)
    finally:
        plt.close(fig)
    return paths


def compare(runs: Sequence[str | Path], measures: Sequence[str] = DEFAULT_MEASURES,
            out: str | Path = "compare", formats: Sequence[str] = ("png",),
            dpi: float = 150.0) -> list[Path]:
    """Draw :func:`compare_figure` and save it; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    return save_figure(compare_figure(runs, measures), out, formats, check_dpi(dpi))
