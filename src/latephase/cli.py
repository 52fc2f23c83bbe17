"""Command line: ``latephase run | report | presets | bench``.

Bad input (config, data, run directory) prints one line ``latephase: error: ...`` and exits
with code 2, before anything is written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from latephase.errors import LatephaseError

EXIT_USAGE, EXIT_INTERRUPTED = 2, 130


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
    from latephase.config import make_config

    if args.resume:
        if args.preset or args.config or args.overrides:
            raise LatephaseError("--resume continues a run with its saved config; do not pass "
                                 "--preset, --config or key=value overrides with it")
        run_dir, summary = api.resume(args.resume, progress=not args.no_progress,
                                      figures=not args.no_figures)
    else:
        preset = args.preset if (args.preset or args.config) else "paper-mnist"
        cfg = make_config(preset, args.config, args.overrides)
        run_dir, summary = api.run(cfg, args.out, args.name, progress=not args.no_progress,
                                   figures=not args.no_figures)
    _print_outcome(str(run_dir.path), summary, run_dir.records())
    return 0 if summary["status"] == "finished" else 1


def cmd_report(args: argparse.Namespace) -> int:
    from latephase import api
    from latephase.runs import RunDir

    figs = api.report(args.run_dir)
    run = RunDir.open(args.run_dir)
    summary = {**run.summary(), "figures": [str(f) for f in figs]}
    _print_outcome(str(run.path), summary, run.records())
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from latephase.report.sweep import write_sweep_figures
    from latephase.sweep import load_spec, run_sweep, summary_text

    if bool(args.spec) == bool(args.preset):
        raise LatephaseError("give exactly one of SPEC.toml or --preset NAME")
    spec = load_spec(args.spec, args.preset)
    summary = run_sweep(spec, args.out, executor=args.executor, workers=args.workers,
                        address=args.address, progress=not args.no_progress)
    print(summary_text(summary))
    figs = write_sweep_figures(Path(args.out) / spec.name)
    if figs:
        print("figures:")
        for f in figs:
            print(f"  {f}")
    return 0


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


def cmd_bench(args: argparse.Namespace) -> int:
    from latephase.bench import main as bench_main

    return bench_main(quick=args.quick)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run, "report": cmd_report, "presets": cmd_presets, "bench": cmd_bench,
    "sweep": cmd_sweep, "datasets": cmd_datasets,
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="latephase", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="train one configuration into a run directory")
    r.add_argument("overrides", nargs="*", metavar="key=value",
                   help="dotted overrides, e.g. seed=3 optim.weight_decay=0.03")
    r.add_argument("--preset", help="named preset (see `latephase presets`); "
                                    "default paper-mnist")
    r.add_argument("--config", help="TOML file (may name a `preset` to start from)")
    r.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run")
    r.add_argument("--out", default="runs", help="parent directory of run directories")
    r.add_argument("--name", help="run directory name (default: preset-wd-seed-timestamp)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument("--no-figures", action="store_true", help="skip drawing figures")
    rep = sub.add_parser("report", help="redraw a run's figures and print its summary")
    rep.add_argument("run_dir")
    sw = sub.add_parser("sweep", help="run a grid of configs x seeds and summarise it")
    sw.add_argument("spec", nargs="?", help="sweep spec TOML file")
    sw.add_argument("--preset", help="named sweep preset (fig3-small, paper-fig3)")
    sw.add_argument("--executor", default="local",
                    help="local (process pool, default), ensemble (vectorized MLP ensembles, "
                         "one per worker) or ray")
    sw.add_argument("--workers", type=int, help="parallel runs (default: CPU count)")
    sw.add_argument("--address", help="Ray cluster address (auto or HOST:PORT)")
    sw.add_argument("--out", default="runs", help="parent directory of the sweep directory")
    sw.add_argument("--no-progress", action="store_true")
    sub.add_parser("presets", help="list the named presets")
    sub.add_parser("datasets", help="list the datasets, whether they are available, and "
                                    "where they are read from")
    b = sub.add_parser("bench", help="training and evaluation throughput benchmark")
    b.add_argument("--quick", action="store_true", help="fewer repetitions")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except LatephaseError as exc:
        print(f"latephase: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("latephase: interrupted; the last checkpoint is kept: continue with "
              "`latephase run --resume <run directory>`", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
