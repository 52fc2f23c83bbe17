"""The :class:`Dataset` container and helpers shared by every dataset builder.

* :func:`balanced_indices` / :func:`take_subset`: seeded class-balanced training subsets and
  seeded held-out subsets.
* :func:`data_root`: the one place a file dataset's directory is resolved
  (``data.root``, else ``$LATEPHASE_DATA/<name>``, else ``$LATEPHASE_DATA``).
* :class:`FileSource` / :func:`locate_files`: which exact files a dataset needs, where they
  are looked for, and (only with ``data.download=true``) how they are fetched.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from latephase.config import DataConfig
from latephase.data.readers import _idx_candidates
from latephase.errors import DataError

#: environment variable naming a directory of datasets (one subdirectory per dataset name)
ENV_VAR = "LATEPHASE_DATA"


@dataclass(frozen=True)
class Dataset:
    """Train and held-out tensors plus metadata.

    ``x_*``: float32 [n, ...] features (images [n, C, H, W]) or int64 token ids [n, L];
    ``y_*``: int64 [n] class labels in ``[0, num_classes)``.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def balanced_indices(
    labels: np.ndarray, size: int, rng: np.random.Generator, num_classes: int
) -> np.ndarray:
    """``size`` indices with (as nearly as possible) equal counts per class, drawn by ``rng``.

    With ``size = q*K + r`` the first ``r`` classes get ``q + 1`` examples.  ``size`` must be
    at least ``num_classes``: a class without a training example would be silently dropped.
    """
    check_every_class(size, num_classes)
    q, r = divmod(size, num_classes)
    chosen = []
    for c in range(num_classes):
        pool = np.flatnonzero(labels == c)
        want = q + (1 if c < r else 0)
        if want > len(pool):
            raise DataError(
                f"data.train_size={size} needs {want} examples of class {c} but only "
                f"{len(pool)} exist; choose data.train_size <= "
                f"{num_classes * min_count(labels, num_classes)}"
            )
        chosen.append(rng.choice(pool, size=want, replace=False))
    return np.sort(np.concatenate(chosen))


def check_every_class(train_size: int, num_classes: int) -> None:
    """A one-line DataError if ``train_size`` cannot give every class a training example."""
    if train_size < num_classes:
        raise DataError(
            f"data.train_size={train_size} is smaller than the {num_classes} classes, so some "
            f"class would have no training example; choose data.train_size >= {num_classes}"
        )


def min_count(labels: np.ndarray, num_classes: int | None = None) -> int:
    """Smallest per-class count (classes ``0..num_classes-1``, absent classes count 0)."""
    return int(np.bincount(labels, minlength=num_classes or 0).min())


def take_subset(n_pool: int, size: int | None, rng: np.random.Generator) -> np.ndarray | None:
    """Sorted seeded indices of ``size`` held-out rows out of ``n_pool`` (None: keep all)."""
    if size is None:
        return None
    if size > n_pool:
        raise DataError(
            f"data.test_size={size} exceeds the {n_pool} held-out examples; "
            f"choose data.test_size <= {n_pool}"
        )
    return np.sort(rng.choice(n_pool, size=size, replace=False))


# --------------------------------------------------------------------------- file locations


def data_root(name: str, root: str | None) -> Path | None:
    """The directory a file dataset is read from, or None if none is configured.

    ``root`` (``data.root``) if given; else ``$LATEPHASE_DATA/<name>`` if that directory
    exists; else ``$LATEPHASE_DATA`` itself; else None.
    """
    if root:
        return Path(root).expanduser()
    env = os.environ.get(ENV_VAR)
    if not env:
        return None
    base = Path(env).expanduser()
    return base / name if (base / name).is_dir() else base


def download_dir(name: str, root: str | None) -> Path:
    """Where ``data.download=true`` writes: ``data.root``, else ``$LATEPHASE_DATA/<name>``."""
    if root:
        return Path(root).expanduser()
    env = os.environ.get(ENV_VAR)
    if not env:
        raise DataError(
            f"data.download=true for {name} needs a directory to download into: "
            f"set data.root=DIR or {ENV_VAR}=DIR"
        )
    return Path(env).expanduser() / name


def require(module: str, pip_name: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise a one-line DataError naming the package to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DataError(
            f"{purpose} needs the package {pip_name!r}: pip install {pip_name}"
        ) from None


@dataclass(frozen=True)
class FileSource:
    """The exact files a dataset reads and where they are looked for.

    The files are searched in each of ``subdirs`` of the data root (the layouts the
    original archives or torchvision produce), then in the root itself; the first
    directory holding all of them wins.  With ``idx_names`` (the IDX datasets, whose reader
    accepts them) each file may also be gzip-compressed (``.gz``) or spelt with a dot
    (``train-images.idx3-ubyte``); other files must have exactly their listed names.
    ``fetch(directory)`` downloads them (called only with ``data.download=true``).
    """

    name: str
    files: tuple[str, ...]
    fmt: str
    subdirs: tuple[str, ...] = ()
    fetch: Callable[[Path], None] | None = None
    idx_names: bool = False

    def candidates(self, file: str) -> list[str]:
        """The names under which ``file`` is accepted (what the dataset's reader opens)."""
        return _idx_candidates(file) if self.idx_names else [file]

    def describe(self) -> str:
        """``reads <files> from DIR/<subdir> or DIR (<format>)``; DIR is the data root."""
        where = " or ".join([f"DIR/{s}" for s in self.subdirs] + ["DIR"])
        return f"reads {', '.join(self.files)} from {where} ({self.fmt})"


def _has(directory: Path, src: FileSource, file: str) -> bool:
    return any((directory / c).is_file() for c in src.candidates(file))


def _search_dirs(root: Path, src: FileSource) -> list[Path]:
    return [root / s for s in src.subdirs] + [root]


def find_dir(root: Path, src: FileSource) -> Path | None:
    """The first of ``root/<subdir>`` ... and ``root`` that holds every file, else None."""
    for d in _search_dirs(root, src):
        if all(_has(d, src, f) for f in src.files):
            return d
    return None


def _partial_dir(root: Path, src: FileSource) -> Path:
    """The first searched directory holding some of the files (else ``root``): the reader
    then names the file that is really missing, in the directory the user filled."""
    for d in _search_dirs(root, src):
        if any(_has(d, src, f) for f in src.files):
            return d
    return root


def locate_files(cfg: DataConfig, src: FileSource) -> Path:
    """Resolve the directory holding ``src``'s files, downloading only if ``cfg.download``.

    Raises a one-line DataError when no directory is configured.  When a directory is
    configured but incomplete (and no download was asked for), the searched directory that
    holds some of the files (else the root) is returned anyway, so that the reader names the
    exact missing file and the expected format.
    """
    root = data_root(src.name, cfg.root)
    if root is None and not cfg.download:
        raise DataError(
            f"dataset {src.name!r} reads files from disk: set data.root=DIR or {ENV_VAR}=DIR "
            f"(or data.download=true); it {src.describe()}"
        )
    if root is not None and (found := find_dir(root, src)) is not None:
        return found
    if cfg.download:
        target = download_dir(src.name, cfg.root)
        if src.fetch is None:  # pragma: no cover - every file source has a fetcher
            raise DataError(f"dataset {src.name!r} cannot be downloaded; it {src.describe()}")
        src.fetch(target)  # checks its package first, then creates target
        found = find_dir(target, src)
        if found is None:
            raise DataError(
                f"{target.absolute()}: download finished but the files are "
                f"missing; dataset {src.name!r} {src.describe()}"
            )
        return found
    assert root is not None
    return _partial_dir(root, src)


def availability(src: FileSource) -> str:
    """For ``latephase datasets``: are the files there, judged from ``$LATEPHASE_DATA``."""
    root = data_root(src.name, None)
    if root is None:
        return f"not configured (set data.root=DIR or {ENV_VAR}=DIR)"
    if find_dir(root, src) is None:
        return f"files not found in {root} (set data.root or {ENV_VAR})"
    return "available"
