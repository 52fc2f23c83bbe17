"""Python entry points behind ``latephase run`` and ``latephase report``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from latephase.config import Config
from latephase.data import build_dataset
from latephase.errors import RunDirError
from latephase.runs import RunDir


def default_run_name(cfg: Config) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return f"{cfg.name}-wd{cfg.optim.weight_decay:g}-seed{cfg.seed}-{stamp}"


def run(cfg: Config, out: str | Path = "runs", name: str | None = None, *,
        progress: bool = True, figures: bool = True) -> tuple[RunDir, dict[str, Any]]:
    """Train ``cfg`` into a new run directory ``out/name``; returns it and its summary.

    The data are built before the directory is created, so a bad data path leaves nothing
    on disk.
    """
    from latephase.models import build_model
    from latephase.train import train
    from latephase.train.loop import resolve_device

    resolve_device(cfg.device)  # an unavailable device fails before anything is written
    data = build_dataset(cfg.data)
    build_model(cfg.model, data.input_shape, data.num_classes, data.meta)  # so does a misfit
    run_dir = RunDir.create(Path(out) / (name or default_run_name(cfg)), cfg)
    summary = train(cfg, run_dir, progress=progress, data=data)
    if figures:
        summary["figures"] = [str(p) for p in report(run_dir.path)]
    return run_dir, summary


def resume(path: str | Path, *, progress: bool = True,
           figures: bool = True) -> tuple[RunDir, dict[str, Any]]:
    """Continue the run in ``path`` from its last checkpoint (same config, same seed)."""
    from latephase.train import train

    run_dir = RunDir.open(path)
    cfg = run_dir.config()
    status = run_dir.summary().get("status")
    if status == "finished":
        raise RunDirError(f"run {str(run_dir.path)!r} has already finished; nothing to resume")
    summary = train(cfg, run_dir, resume=True, progress=progress)
    if figures:
        summary["figures"] = [str(p) for p in report(run_dir.path)]
    return run_dir, summary


def report(path: str | Path) -> list[Path]:
    """(Re)draw a run's figures from its run directory."""
    from latephase.report import write_figures

    return write_figures(path)
