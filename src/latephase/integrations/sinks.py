"""Logging sinks: every record the RunRecorder appends to metrics.jsonl is also handed to the
sinks the run's config turns on (``logging.tensorboard=true``, ``logging.wandb=true``), and
the figures are logged as images when they are drawn.  metrics.jsonl stays the source of
truth: a sink only copies it (a run whose sink failed still has all its records, and
``latephase export`` reads them).

A sink is registered in :data:`SINKS` by its ``logging`` key: a class taking
``(run_dir, info)`` (info: config.json) with ``record(scalars)``, ``figures(paths, step)``
and ``close()``.  Its package is checked with the config, before a run directory exists
(:func:`check_sinks`): a missing one is a one-line error naming the pip extra.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from latephase.errors import ConfigError

#: directory of the TensorBoard event files inside a run directory
TENSORBOARD_DIR = "tensorboard"
#: W&B files inside a run directory
WANDB_DIR = "wandb"


class Sink(Protocol):
    def record(self, scalars: Mapping[str, Any]) -> None: ...

    def figures(self, paths: Sequence[Path], step: int) -> None: ...

    def close(self) -> None: ...


def _scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """The numeric entries of a record except ``step`` (bools and None dropped)."""
    return {k: float(v) for k, v in record.items()
            if k != "step" and isinstance(v, int | float) and not isinstance(v, bool)}


def _image(path: Path) -> Any:
    """A PNG as an HxWx3 uint8 array."""
    import numpy as np
    from matplotlib import image

    arr = image.imread(str(path))
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0.0, 1.0) * 255).round().astype(np.uint8)
    return arr[..., :3]


class TensorBoardSink:
    """Scalars ``add_scalar(key, value, step)`` per record; figures ``add_image("figures/
    <name>", ...)`` at the last step.  Event files: ``RUN/tensorboard/``."""

    def __init__(self, run_dir: Path, info: Mapping[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / TENSORBOARD_DIR))

    def record(self, scalars: Mapping[str, Any]) -> None:
        step = int(scalars["step"])
        for key, value in _scalars(scalars).items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def figures(self, paths: Sequence[Path], step: int) -> None:
        for p in paths:
            if p.suffix == ".png":
                self.writer.add_image(f"figures/{p.stem}", _image(p), step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    """``wandb.log(scalars, step=step)`` per record, figures as ``wandb.Image`` at the end.
    The W&B run id is derived from the run directory's path, so a resumed run continues the
    same W&B run (``resume="allow"``), and so do the figures logged after training (offline:
    a second ``offline-run-*`` directory with the same id, merged by ``wandb sync``);
    ``WANDB_MODE=offline`` writes ``RUN/wandb/`` only and needs no network."""

    def __init__(self, run_dir: Path, info: Mapping[str, Any]) -> None:
        import wandb

        run_dir = Path(run_dir)
        cfg = info.get("config") or {}
        project = ((cfg.get("logging") or {}).get("wandb_project")) or "latephase"
        run_id = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:16]
        self.wandb = wandb
        self.run = wandb.init(project=project, name=run_dir.name, id=run_id, resume="allow",
                              dir=str(run_dir), config=cfg, reinit="create_new")

    def record(self, scalars: Mapping[str, Any]) -> None:
        self.run.log(_scalars(scalars), step=int(scalars["step"]))

    def figures(self, paths: Sequence[Path], step: int) -> None:
        images = {f"figures/{p.stem}": self.wandb.Image(str(p)) for p in paths
                  if p.suffix == ".png"}
        if images:
            self.run.log(images, step=step)

    def close(self) -> None:
        self.run.finish()


#: ``logging`` key -> (sink class, module it needs, pip extra)
SINKS: dict[str, tuple[Callable[[Path, Mapping[str, Any]], Sink], str, str]] = {
    "tensorboard": (TensorBoardSink, "tensorboard", "tensorboard"),
    "wandb": (WandbSink, "wandb", "wandb"),
}


def enabled(info: Mapping[str, Any] | Any) -> list[str]:
    """The sinks a config (a Config, or config.json's dict) turns on."""
    if isinstance(info, Mapping):
        logging = (info.get("config") or {}).get("logging") or {}
        return [name for name in SINKS if logging.get(name)]
    return [name for name in SINKS if getattr(info.logging, name)]


def _have(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def check_sinks(cfg: Mapping[str, Any] | Any) -> None:
    """Every sink ``cfg`` turns on has its package: else a ConfigError naming the extra."""
    for name in enabled(cfg):
        _, module, extra = SINKS[name]
        if not _have(module):
            raise ConfigError(f"logging.{name}=true needs the {module} package, which is not "
                              f"installed: pip install 'latephase[{extra}]' (or set "
                              f"logging.{name}=false)")


def open_sinks(run_dir: Path, info: Mapping[str, Any]) -> list[Sink]:
    """The sinks config.json (``info``) turns on, opened on ``run_dir``."""
    check_sinks(info)
    sinks: list[Sink] = []
    try:
        for name in enabled(info):
            sinks.append(SINKS[name][0](run_dir, info))
    except BaseException:
        for sink in sinks:
            sink.close()
        raise
    return sinks


def log_figures(run_dir: str | Path, info: Mapping[str, Any], paths: Sequence[Path],
                step: int) -> None:
    """Hand a run's freshly drawn figures to the sinks its config.json (``info``) turns on,
    at ``step`` (the run's last recorded step)."""
    if not enabled(info) or not paths:
        return
    for sink in open_sinks(Path(run_dir), info):
        try:
            sink.figures(list(paths), max(0, step))
        finally:
            sink.close()


__all__ = ["SINKS", "TENSORBOARD_DIR", "Sink", "TensorBoardSink", "WandbSink", "check_sinks",
           "enabled", "log_figures", "open_sinks"]
