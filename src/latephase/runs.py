"""The run directory: the contract between training, analysis and users.

    runs/<name>/
      config.json     resolved config, package/torch versions, seed, host
      metrics.jsonl   one JSON object per evaluation point, appended and flushed
      summary.json    status (running | finished | diverged | failed | interrupted),
                      time scales, final measures, wall time
      checkpoints/    last.pt: model, optimizer, RNG and sampler state, step
      figures/        PNG figures

Every file except metrics.jsonl is replaced atomically (write to a temporary file, then
``os.replace``), so a run killed at any moment leaves readable files.  A torn last line of
metrics.jsonl is skipped on reading.
"""

from __future__ import annotations

import json
import math
import os
import platform
import socket
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch

from latephase.config import Config, config_from_dict
from latephase.errors import RunDirError

CONFIG, METRICS, SUMMARY = "config.json", "metrics.jsonl", "summary.json"
CHECKPOINT = Path("checkpoints") / "last.pt"
FIGURES = "figures"


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.item() if obj.numel() == 1 else obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def dumps(obj: Any) -> str:
    """Compact JSON; NaN and inf are written as null / strings would lose them, so we keep
    Python's NaN/Infinity tokens, which ``json.loads`` and pandas read back."""
    return json.dumps(obj, default=_json_default, sort_keys=False, allow_nan=True)


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def environment() -> dict[str, str]:
    from latephase import __version__

    return {"latephase": __version__, "torch": torch.__version__,
            "python": platform.python_version(), "host": socket.gethostname()}


def last_step(path: Path) -> int:
    """Step of the last complete record of a metrics.jsonl (0 if none), reading only its
    tail; for progress displays that poll runs written by other processes."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - 65536))
            lines = fh.read().splitlines()
    except OSError:
        return 0
    for line in reversed(lines):
        try:
            return int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):
            continue
    return 0


def iter_records(path: Path) -> Iterator[dict[str, Any]]:
    """Records of a metrics.jsonl; a torn (unparseable) last line is skipped silently,
    an unparseable line elsewhere is skipped with a warning."""
    if not path.exists():
        return
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            if i != len(lines) - 1:
                warnings.warn(f"{path}:{i + 1}: skipping malformed line", RuntimeWarning,
                              stacklevel=2)


class RunDir:
    """A run directory on disk; see the module docstring for its layout."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._metrics_fh: IO[str] | None = None

    # ---- paths
    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    @property
    def summary_path(self) -> Path:
        return self.path / SUMMARY

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def figures_dir(self) -> Path:
        return self.path / FIGURES

    # ---- creation and reading
    @classmethod
    def create(cls, path: str | Path, cfg: Config) -> RunDir:
        """Make a new run directory; refuses to reuse one that holds a run."""
        run = cls(path)
        if run.config_path.exists():
            raise RunDirError(
                f"run directory {str(run.path)!r} already holds a run; continue it with "
                f"--resume {run.path} or choose another --name"
            )
        run.path.mkdir(parents=True, exist_ok=True)
        info = {"config": cfg.to_dict(), "seed": cfg.seed, "environment": environment()}
        atomic_write_text(run.config_path, json.dumps(info, indent=2) + "\n")
        run.write_summary({"status": "running", "step": 0})
        return run

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        run = cls(path)
        if not run.config_path.exists():
            raise RunDirError(
                f"{str(run.path)!r} is not a run directory (no {CONFIG}); pass a directory "
                "written by `latephase run`"
            )
        return run

    def config(self) -> Config:
        try:
            info = json.loads(self.config_path.read_text())
            return config_from_dict(info["config"])
        except (json.JSONDecodeError, KeyError) as exc:
            raise RunDirError(f"{self.config_path}: unreadable run config ({exc})") from None

    def records(self) -> list[dict[str, Any]]:
        return list(iter_records(self.metrics_path))

    def metrics(self) -> Any:
        """The metrics as a pandas DataFrame, one row per evaluation point."""
        return load_metrics(self.path)

    def summary(self) -> dict[str, Any]:
        if not self.summary_path.exists():
            return {}
        try:
            return dict(json.loads(self.summary_path.read_text()))
        except json.JSONDecodeError:
            return {}

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_text(self.summary_path, json.dumps(summary, indent=2, default=_json_default)
                          + "\n")

    # ---- metrics
    def append(self, record: dict[str, Any]) -> None:
        """Append one record as one line and flush it to the OS."""
        if self._metrics_fh is None:
            self._metrics_fh = self.metrics_path.open("a")
        self._metrics_fh.write(dumps(record) + "\n")
        self._metrics_fh.flush()

    def sync(self) -> None:
        if self._metrics_fh is not None:
            os.fsync(self._metrics_fh.fileno())

    def close(self) -> None:
        if self._metrics_fh is not None:
            self._metrics_fh.close()
            self._metrics_fh = None

    def truncate_after(self, step: int) -> None:
        """Keep only records with ``step <= step`` (used when resuming from a checkpoint)."""
        self.close()
        kept = [r for r in iter_records(self.metrics_path) if int(r["step"]) <= step]
        atomic_write_text(self.metrics_path, "".join(dumps(r) + "\n" for r in kept))


def load_metrics(path: str | Path) -> Any:
    """Read ``<run>/metrics.jsonl`` (or a metrics.jsonl path) into a pandas DataFrame."""
    import pandas as pd

    p = Path(path)
    file = p / METRICS if p.is_dir() else p
    if not file.exists():
        raise RunDirError(f"{file}: no metrics file; pass a run directory written by latephase")
    df = pd.DataFrame.from_records(list(iter_records(file)))
    if len(df):
        df = df.sort_values("step").reset_index(drop=True)
    return df


def finite_or_none(x: float) -> float | None:
    return x if isinstance(x, int | float) and math.isfinite(x) else None
