"""Command line: ``latephase run | sweep | report | compare | export | config | presets |
datasets | bench | forecast-eval``.

Exit codes: 0 done; 1 a run that did not finish (diverged, failed) or an internal error;
2 bad input; 130 interrupted.  Bad input (config, data, run directory, an output path that
cannot be written) prints one line ``latephase: error: ...`` and exits with code 2, before
anything is written.  Anything else unexpected is a bug: one line naming the exception and
exit 1; ``LATEPHASE_DEBUG=1`` shows its traceback instead.

Only the standard library is imported at module level (``latephase --help`` stays fast and
loads no torch); each command imports what it needs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from latephase._version import __version__
from latephase.errors import LatephaseError

if TYPE_CHECKING:
    from latephase.config import Config

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
#: environment variable: set to 1 to get the traceback of an internal error
DEBUG_ENV = "LATEPHASE_DEBUG"
DESCRIPTION = ("Reproduce and measure late-phase training dynamics: grokking, "
               "information-bottleneck compression and neural collapse "
               "(Sakamoto & Sato, ICLR 2026).")
SHELLS = ("bash", "zsh", "tcsh")
EPILOG = ("Start with 'latephase run --preset demo' (30k steps, about 75 s on one CPU core); "
          "'latephase COMMAND --help' lists a command's options.")


def _print_outcome(run_path: str, summary: dict, records: list) -> None:
    from latephase.report import summary_table

    print(f"\nrun directory: {run_path}")
    print(summary_table(summary, records))
    figs = summary.get("figures") or []
    if figs:
        print("figures:")
        for f in figs:
            print(f"  {f}")


def cmd_run(args: argparse.Namespace) -> int:
    from latephase import api
    from latephase.build import make_config

    if args.resume:
        from latephase.config import parse_overrides

        extra = parse_overrides(args.overrides or [])
        only_steps = not extra or (set(extra) == {"train"} and isinstance(extra["train"], dict)
                                   and set(extra["train"]) == {"steps"})
        steps = extra["train"]["steps"] if extra and only_steps else None
        if args.preset or args.config or not only_steps:
            raise LatephaseError("--resume continues a run with its saved config; the only "
                                 "override it accepts is train.steps=N (to extend the run)")
        if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool)):
            raise LatephaseError(f"train.steps={steps!r}: expected an integer number of steps")
        run_dir, summary = api.resume(args.resume, progress=not args.no_progress,
                                      figures=not args.no_figures, steps=steps)
    else:
        preset = args.preset if (args.preset or args.config) else DEFAULT_PRESET
        cfg = make_config(preset, args.config, args.overrides)
        if not (args.preset or args.config):
            print(f"latephase: no --preset or --config given: running {_describe(cfg)}; "
                  "'latephase presets' lists the others",
                  file=sys.stderr)
        run_dir, summary = api.run(cfg, args.out, args.name, progress=not args.no_progress,
                                   figures=not args.no_figures)
    _print_outcome(str(run_dir.path), summary, run_dir.records())
    from latephase.runs import Status

    return 0 if summary["status"] == Status.FINISHED else 1


#: what ``latephase run`` trains without --preset or --config: the paper's main setting
DEFAULT_PRESET = "paper-mnist"


def _describe(cfg: Config) -> str:
    """``preset paper-mnist (mnist, mlp 200-200-200, adamw weight_decay 0.01, 100,000 steps)``."""
    model = cfg.model.name + (f" {'-'.join(map(str, cfg.model.widths))}"
                              if cfg.model.name == "mlp" else "")
    return (f"preset {cfg.name} ({cfg.data.name}, {model}, {cfg.optim.name} weight_decay "
            f"{cfg.optim.weight_decay:g}, {cfg.train.steps:,} steps)")


def _figure_options(args: argparse.Namespace) -> tuple[tuple[str, ...], float]:
    """``--format png,pdf`` and ``--dpi`` checked: (formats, dpi)."""
    from latephase.analysis import check_dpi, parse_formats

    return parse_formats(args.format), check_dpi(args.dpi)


def cmd_report(args: argparse.Namespace) -> int:
    from latephase.report import write_figures
    from latephase.runs import RunDir

    formats, dpi = _figure_options(args)
    run = RunDir.open(args.run_dir)
    figs = write_figures(run.path, formats, dpi=dpi)
    summary = {**run.summary(), "figures": [str(f) for f in figs]}
    _print_outcome(str(run.path), summary, run.records())
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from latephase.report.sweep import write_sweep_figures
    from latephase.sweep import load_spec, run_sweep, summary_text, with_overrides

    files = [i for i in args.items if "=" not in i]
    overrides = [i for i in args.items if "=" in i]
    if len(files) > 1 or bool(files) == bool(args.preset):
        raise LatephaseError("give exactly one of SPEC.toml or --preset NAME (then optional "
                             f"key=value overrides); got {' '.join(args.items) or 'neither'}"
                             + (f" and --preset {args.preset}" if args.preset else ""))
    formats, dpi = _figure_options(args)
    spec = load_spec(files[0] if files else None, args.preset)
    if overrides or args.name:
        spec = with_overrides(spec, overrides, args.name)
    summary = run_sweep(spec, args.out, executor=args.executor, workers=args.workers,
                        address=args.address, progress=not args.no_progress)
    print(summary_text(summary))
    figs = write_sweep_figures(Path(args.out) / spec.name, formats, dpi)
    if figs:
        print("figures:")
        for f in figs:
            print(f"  {f}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from latephase.analysis import compare

    formats, dpi = _figure_options(args)
    measures = [m.strip() for m in args.measures.split(",") if m.strip()]
    for f in compare(args.runs, measures, args.out, formats, dpi):
        print(f)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from latephase.analysis import export_csv

    out, df = export_csv(args.path, args.csv, args.config)
    runs = df["run"].nunique() if len(df) else 0
    print(f"{out}: {len(df)} rows ({runs} run{'s' if runs != 1 else ''}), "
          f"{len(df.columns)} columns")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from latephase.build import make_config

    cfg = make_config(args.preset, args.config)
    rows = describe_keys(cfg)
    width = max(len(r[0]) for r in rows)
    twidth = max(len(r[1]) for r in rows)
    vwidth = min(24, max(len(r[2]) for r in rows))
    what = f"preset {args.preset}" if args.preset else "defaults"
    if args.config:
        what += f" + {args.config}"
    print(f"# every config key ({what}): key  type  value  doc; set one with key=value")
    for key, tp, value, doc in rows:
        print(f"{key:{width}s}  {tp:{twidth}s}  {value:{vwidth}s}" + (f"  # {doc}" if doc
                                                                       else ""))
    return 0


def describe_keys(cfg: Any, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """``(dotted key, type, value in cfg, doc and valid range)`` for every leaf of a config
    dataclass tree, in declaration order."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(type(cfg))
    rows: list[tuple[str, str, str, str]] = []
    for f in dataclasses.fields(cfg):
        value, key = getattr(cfg, f.name), prefix + f.name
        if dataclasses.is_dataclass(value):
            rows += describe_keys(value, key + ".")
            continue
        meta = f.metadata
        notes = [meta.get("doc") or ""]
        if meta.get("choices"):
            notes.append("one of " + "|".join(meta["choices"]))
        lo, hi = meta.get("lo"), meta.get("hi")
        if lo is not None or hi is not None:
            left = "(" if meta.get("lo_open") or lo is None else "["
            right = ")" if meta.get("hi_open") or hi is None else "]"
            notes.append(f"range {left}{'-inf' if lo is None else lo}, "
                         f"{'inf' if hi is None else hi}{right}")
        tp = str(hints[f.name]).replace("typing.", "")
        tp = getattr(hints[f.name], "__name__", tp) if "[" not in tp and "|" not in tp else tp
        shown = list(value) if isinstance(value, tuple) else value
        rows.append((key, tp, repr(shown), "; ".join(n for n in notes if n)))
    return rows


def cmd_datasets(args: argparse.Namespace) -> int:
    from latephase.data import DATASET_INFO, DATASETS

    width = max(len(n) for n in DATASETS)
    for name in DATASETS:
        check, where = DATASET_INFO[name]
        print(f"{name:{width}s}  {check()}\n{'':{width}s}  {where}")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from latephase.config import load_preset, preset_names
    from latephase.sweep import load_spec, sweep_preset_names

    for name in sweep_preset_names():
        spec = load_spec(preset=name)
        grid = ", ".join(f"{k}={v}" for k, v in spec.grid.items())
        print(f"{name:20s} sweep of {spec.preset}: {grid}, seeds {list(spec.seeds)} "
              f"({len(spec.runs())} runs)")
    for name in preset_names():
        p = load_preset(name)
        o, t = p.get("optim", {}), p.get("train", {})
        print(f"{name:20s} data={p.get('data', {}).get('name', 'mnist')} "
              f"model={p.get('model', {}).get('name', 'mlp')} "
              f"weight_decay={o.get('weight_decay', '-')} steps={t.get('steps', '-')}")
    return 0


def cmd_completion(args: argparse.Namespace) -> int:
    """Print a shell completion script generated from the parser (optional package shtab)."""
    try:
        import shtab
    except ImportError:
        raise LatephaseError("shell completion needs the shtab package: "
                             "pip install 'latephase[completion]'") from None
    print(shtab.complete(build_parser(), shell=args.shell))
    return 0


def cmd_forecast_eval(args: argparse.Namespace) -> int:
    from latephase.forecast import evaluate, write_evaluation

    formats, dpi = _figure_options(args)
    ev = evaluate(args.sweeps, allow_calibration_runs=args.allow_calibration_runs)
    print(ev.markdown())
    for f in write_evaluation(ev, args.out, formats, dpi):
        print(f)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from latephase.bench import main as bench_main

    return bench_main(quick=args.quick)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run, "report": cmd_report, "presets": cmd_presets, "bench": cmd_bench,
    "sweep": cmd_sweep, "datasets": cmd_datasets, "compare": cmd_compare,
    "export": cmd_export, "config": cmd_config, "completion": cmd_completion,
    "forecast-eval": cmd_forecast_eval,
}


def _add_figure_options(p: argparse.ArgumentParser) -> None:
    from latephase.report.common import DPI

    p.add_argument("--format", default="png",
                   help="figure formats, comma-separated: png, pdf, svg, ... (default png)")
    p.add_argument("--dpi", type=float, default=DPI,
                   help=f"resolution of raster figures (default {DPI:g})")


class _CommandsHelp(argparse.HelpFormatter):
    """Help with room for the longest command name (argparse sizes the column without
    the sub-commands, so ``forecast-eval`` would be put on a line of its own)."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog)
        self._action_max_length = 4 + max(map(len, COMMANDS)) + 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="latephase", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=_CommandsHelp)
    p.add_argument("--version", action="version", version=f"latephase {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           title="commands")
    r = sub.add_parser("run", help="train one configuration into a run directory")
    r.add_argument("overrides", nargs="*", metavar="key=value",
                   help="dotted overrides, e.g. seed=3 optim.weight_decay=0.03")
    r.add_argument("--preset", help="named preset (see 'latephase presets'); "
                                    f"default {DEFAULT_PRESET}")
    r.add_argument("--config", help="TOML file (may set preset = NAME to start from)")
    r.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run")
    r.add_argument("--out", default="runs", help="parent directory of run directories")
    r.add_argument("--name", help="run directory name (default: preset-wd-seed-timestamp)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument("--no-figures", action="store_true", help="skip drawing figures")
    rep = sub.add_parser("report", help="redraw a run's figures and print its summary")
    rep.add_argument("run_dir")
    _add_figure_options(rep)
    cmp = sub.add_parser("compare", help="chosen measures of several runs in one figure")
    cmp.add_argument("runs", nargs="+", metavar="RUN", help="run directories")
    cmp.add_argument("--measures", default="test/acc,train/rnc1_mean",
                     help="metrics columns, comma-separated, one panel each "
                          "(default test/acc,train/rnc1_mean)")
    cmp.add_argument("--out", default="compare",
                     help="output file stem (the format's suffix is added; default compare)")
    _add_figure_options(cmp)
    ex = sub.add_parser("export", help="a run's or a sweep's metrics and config as CSV")
    ex.add_argument("path", metavar="RUN_OR_SWEEP")
    ex.add_argument("--csv", required=True, metavar="FILE", help="CSV file to write")
    ex.add_argument("--config", default="varying", choices=("varying", "all", "none"),
                    help="config columns of a sweep: the keys that vary (default), all, none")
    cf = sub.add_parser("config", help="every config key with its type, value and doc")
    cf.add_argument("--preset", help="show this preset's values (default: the defaults)")
    cf.add_argument("--config", help="TOML file on top of the preset")
    sw = sub.add_parser("sweep", help="run a grid of configs x seeds and summarise it")
    sw.add_argument("items", nargs="*", metavar="[SPEC.toml] [key=value]",
                    help="sweep spec TOML file (or --preset), then overrides for every run, "
                         "e.g. train.steps=20000 (the sweep directory is named after them)")
    sw.add_argument("--name", help="sweep directory name (default: the spec's name, plus "
                                   "the overrides)")
    sw.add_argument("--preset", help="named sweep preset (fig3-small, paper-fig3)")
    sw.add_argument("--executor", default="local",
                    help="local (process pool, default), ensemble (vectorized MLP ensembles, "
                         "one per worker) or ray")
    sw.add_argument("--workers", type=int, help="parallel runs (default: CPU count)")
    sw.add_argument("--address", help="Ray cluster address (auto or HOST:PORT)")
    sw.add_argument("--out", default="runs", help="parent directory of the sweep directory")
    sw.add_argument("--no-progress", action="store_true")
    _add_figure_options(sw)
    fe = sub.add_parser("forecast-eval", help="evaluate the grokking forecaster and its "
                                              "baselines on runs it was not calibrated on")
    fe.add_argument("sweeps", nargs="+", metavar="SWEEP_DIR", help="sweep or run directories")
    fe.add_argument("--out", default="forecast-eval", help="output directory (tables, figure)")
    fe.add_argument("--allow-calibration-runs", action="store_true",
                    help="evaluate calibration runs too (with a warning) instead of refusing")
    _add_figure_options(fe)
    sub.add_parser("presets", help="list the named presets")
    sub.add_parser("datasets", help="list the datasets, whether they are available, and "
                                    "where they are read from")
    b = sub.add_parser("bench", help="training and evaluation throughput benchmark")
    b.add_argument("--quick", action="store_true", help="fewer repetitions")
    comp = sub.add_parser("completion", help="print a shell completion script (needs shtab), "
                                             "e.g. latephase completion bash > ~/.latephase.bash")
    comp.add_argument("shell", choices=SHELLS)
    return p


def _one_line(text: str) -> str:
    """A message on one line: its non-empty lines joined with '; '."""
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def _os_error(exc: OSError) -> str:
    """``'runs/x': Permission denied`` -- the path(s) and the system's reason."""
    paths = [repr(str(f)) for f in (exc.filename, exc.filename2) if f is not None]
    reason = exc.strerror or str(exc) or type(exc).__name__
    return f"{' -> '.join(paths)}: {reason}" if paths else reason


def _error(message: str, code: int = EXIT_USAGE) -> int:
    print(f"latephase: error: {_one_line(message)}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command.  Exit 2 with one line for bad input (every LatephaseError, and an
    OSError: a path that cannot be read or written); 1 with one line for anything else (a
    bug; LATEPHASE_DEBUG=1 re-raises it with its traceback); 130 on Ctrl-C."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except LatephaseError as exc:
        return _error(str(exc))
    except BrokenPipeError:  # the reader went away (latephase config | head): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILED
    except OSError as exc:
        if os.environ.get(DEBUG_ENV) == "1":
            raise
        return _error(_os_error(exc))
    except KeyboardInterrupt:
        print("latephase: interrupted; the last checkpoint is kept: continue with "
              "'latephase run --resume RUN_DIR'", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug, not the user's input: one line, exit 1
        if os.environ.get(DEBUG_ENV) == "1":
            raise
        return _error(f"internal error: {type(exc).__name__}: {exc} "
                      f"(run with {DEBUG_ENV}=1 for the traceback)", EXIT_FAILED)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
