"""Python entry points behind ``latephase run`` and ``latephase report``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from latephase.build import build_dataset, check_model, check_registries
from latephase.config import Config
from latephase.errors import ResumeError, RunDirError
from latephase.runs import RunDir, RunRecorder, Status, child_path


def default_run_name(cfg: Config) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return f"{cfg.name}-wd{cfg.optim.weight_decay:g}-seed{cfg.seed}-{stamp}"


def run(cfg: Config, out: str | Path = "runs", name: str | None = None, *,
        progress: bool = True, figures: bool = True) -> tuple[RunDir, dict[str, Any]]:
    """Train ``cfg`` into a new run directory ``out/name``; returns it and its summary.

    Registry names, the device, the data and the model (its fit to the data and its memory,
    :func:`latephase.build.check_model`) are checked before the directory is created, so bad
    input leaves nothing on disk.
    """
    from latephase.train import train
    from latephase.train.loop import resolve_device
    from latephase.train.runtime import release_memory

    check_registries(cfg)
    device = resolve_device(cfg.device)  # an unavailable device fails before anything is written
    data = build_dataset(cfg)
    check_model(cfg, data, device)  # so do a model/data misfit and a model too large to train
    run_dir = RunDir.create(child_path(out, name or default_run_name(cfg)), cfg,
                            {"device": str(device)})  # provenance: auto resolved
    summary = train(cfg, run_dir, progress=progress, data=data)
    del data
    if figures:
        release_memory()  # training's freed buffers, before matplotlib allocates its own
        summary["figures"] = [str(p) for p in report(run_dir.path)]
    return run_dir, summary


def resume(path: str | Path, *, progress: bool = True, figures: bool = True,
           steps: int | None = None) -> tuple[RunDir, dict[str, Any]]:
    """Continue the run in ``path`` from its last checkpoint (same config, same seed).

    ``steps`` (``--resume DIR train.steps=N``, the only override resume accepts) extends a
    run, finished or not, to ``N`` > its current ``train.steps``: the records so far are kept
    and evaluation continues on the schedule of an ``N``-step run after the last record.
    A diverged run, or a finished one without more steps, is refused.
    """
    import dataclasses

    from latephase.train import train
    from latephase.train.runtime import release_memory

    recorder = RunRecorder.take(RunDir.open(path))  # the writer lock, for the whole resume
    try:
        cfg = recorder.config()
        status = recorder.status()
        if status is Status.DIVERGED:
            raise ResumeError(f"run {str(recorder.path)!r} diverged "
                              f"({recorder.summary().get('error', '')}); resuming would repeat "
                              "it: start a new run with other hyper-parameters")
        if steps is not None and steps != cfg.train.steps:
            if steps < cfg.train.steps:
                raise ResumeError(f"train.steps={steps} is below the run's {cfg.train.steps}; "
                                  "a resume can only extend a run")
            recorder.verify_resume()  # the records must be intact before config.json changes
            old = cfg.train.steps
            cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=steps))
            history = [*recorder.info().get("extended", []), {"from_steps": old,
                                                              "to_steps": steps}]
            recorder.update_info(config=cfg.to_dict(), extended=history)
        elif status is Status.FINISHED:
            raise RunDirError(f"run {str(recorder.path)!r} has already finished; nothing to "
                              "resume (extend it with train.steps=N)")
        summary = train(cfg, recorder, resume=True, progress=progress)
    finally:
        recorder.close()
    if figures:
        release_memory()
        summary["figures"] = [str(p) for p in report(recorder.path)]
    return recorder, summary


def report(path: str | Path) -> list[Path]:
    """(Re)draw a run's figures from its run directory."""
    from latephase.report import write_figures

    return write_figures(path)
