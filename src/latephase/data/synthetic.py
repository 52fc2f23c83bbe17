"""Generated datasets: modular arithmetic, MNIST-1D and a Gaussian mixture."""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from latephase.config import DataConfig
from latephase.data.base import (
    Dataset,
    balanced_indices,
    check_every_class,
    require,
    take_subset,
)
from latephase.errors import DataError

# --------------------------------------------------------------------------- modular


def _is_prime(p: int) -> bool:
    return p >= 2 and all(p % d for d in range(2, int(p**0.5) + 1))


MODULAR_OPS: dict[str, Callable[[np.ndarray, np.ndarray, int], np.ndarray]] = {
    "+": lambda a, b, p: (a + b) % p,
    "-": lambda a, b, p: (a - b) % p,
    "*": lambda a, b, p: (a * b) % p,
    "/": lambda a, b, p: (a * np.array([pow(int(v), p - 2, p) for v in b])) % p,
}


def _onehot_pairs(a: np.ndarray, b: np.ndarray, p: int) -> torch.Tensor:
    """Concatenated one-hot codes of a and b: float32 [n, 2p]."""
    x = np.zeros((len(a), 2 * p), dtype=np.float32)
    x[np.arange(len(a)), a] = 1.0
    x[np.arange(len(a)), p + b] = 1.0
    return torch.as_tensor(x)


def _token_pairs(a: np.ndarray, b: np.ndarray, p: int) -> torch.Tensor:
    """Token ids [a, b]: int64 [n, 2], vocabulary 0..p-1."""
    return torch.as_tensor(np.stack([a, b], axis=1), dtype=torch.long)


MODULAR_ENCODINGS: dict[str, Callable[[np.ndarray, np.ndarray, int], torch.Tensor]] = {
    "onehot": _onehot_pairs,
    "tokens": _token_pairs,
}


def build_modular(cfg: DataConfig) -> Dataset:
    """The classic grokking task (Power et al. 2022): c = (a op b) mod p over all pairs.

    Every pair (a, b) in [0, p)^2 (b != 0 for division) is enumerated; a seeded
    ``train_fraction`` of them is trained on, the rest held out.  Labels c in [0, p).
    ``encoding="onehot"`` (default): the concatenated one-hot codes of a and b, float32
    [n, 2p].  ``encoding="tokens"``: the ids [a, b], int64 [n, 2], with ``meta["vocab_size"]
    = p`` and ``meta["pad_id"] = None`` (no padding).
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
    x_t, y_t = MODULAR_ENCODINGS[cfg.encoding](a, b, p), torch.as_tensor(c, dtype=torch.long)
    meta = {
        "source": f"(a {cfg.operation} b) mod {p}",
        "pairs": len(c),
        "train_pairs": n_train,
        "encoding": cfg.encoding,
    }
    if cfg.encoding == "tokens":
        meta.update(vocab_size=p, pad_id=None)
    return Dataset(
        x_train=x_t[tr], y_train=y_t[tr], x_test=x_t[te], y_test=y_t[te], num_classes=p, meta=meta
    )


# --------------------------------------------------------------------------- MNIST-1D

MNIST1D_LENGTH = 40


@functools.lru_cache(maxsize=4)
def _mnist1d_arrays(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNIST-1D generated locally by ``mnist1d.data.make_dataset`` with its default arguments
    (5000 signals of length 40, 4000 train / 1000 test) and generator seed ``seed``.

    ``make_dataset`` seeds the global ``random`` and ``numpy.random`` state; both are
    restored afterwards.  Never calls ``get_dataset``, which downloads a pickle.
    """
    m1d = require("mnist1d.data", "mnist1d", "dataset 'mnist1d'")
    args = m1d.get_dataset_args()
    args.seed = int(seed)
    # mnist1d draws from the legacy global generators; save and restore them
    np_state, py_state = np.random.get_state(), random.getstate()  # noqa: NPY002
    try:
        d = m1d.make_dataset(args)
    finally:
        np.random.set_state(np_state)  # noqa: NPY002
        random.setstate(py_state)
    out = (
        np.asarray(d["x"], dtype=np.float32),
        np.asarray(d["y"], dtype=np.int64),
        np.asarray(d["x_test"], dtype=np.float32),
        np.asarray(d["y_test"], dtype=np.int64),
    )
    for arr in out:
        arr.flags.writeable = False  # shared by the cache
    return out


def build_mnist1d(cfg: DataConfig) -> Dataset:
    """MNIST-1D (Greydanus 2020): 10 classes of 1-D signals, x float32 [n, 1, 40].

    Generated locally (no download) with generator seed ``data.seed``; ``data.seed=42`` is
    the generator's default, from which the published pickle was made.  Training rows: a
    class-balanced seeded ``train_size`` subset of the generator's 4000-signal training
    split; held out: its 1000-signal test split (or a seeded ``test_size`` subset).  The
    generator already standardises the signals (global mean 0, std 1), so
    ``data.normalize`` has no effect.  Layout [n, channels=1, length=40] as for images.
    """
    x, y, x_te, y_te = _mnist1d_arrays(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    tr = balanced_indices(y, cfg.train_size, rng, 10)
    keep = take_subset(len(y_te), cfg.test_size, rng)
    if keep is not None:
        x_te, y_te = x_te[keep], y_te[keep]
    return Dataset(
        x_train=torch.tensor(x[tr][:, None]),
        y_train=torch.tensor(y[tr]),
        x_test=torch.tensor(x_te[:, None]),
        y_test=torch.tensor(y_te),
        num_classes=10,
        meta={
            "source": f"mnist1d.data.make_dataset, seed {cfg.seed}",
            "classes": [str(d) for d in range(10)],
        },
    )


def mnist1d_availability() -> str:
    try:
        import mnist1d  # noqa: F401
    except ImportError:
        return "missing package: pip install mnist1d"
    return "available"


# --------------------------------------------------------------------------- Gaussian mixture

MIXTURE_TEST_SIZE = 1000


def mixture_means(k: int, dim: int, separation: float, rng: np.random.Generator) -> np.ndarray:
    """Class means [k, dim] of norm ``separation``: ``separation * e_c`` (the first k
    standard basis vectors) when k <= dim, else seeded random unit directions."""
    if k <= dim:
        return separation * np.eye(k, dim)
    g = rng.standard_normal((k, dim))
    return separation * g / np.linalg.norm(g, axis=1, keepdims=True)


def orthogonal_bayes_error(k: int, separation: float, std: float) -> float:
    """Bayes error of k equiprobable classes N(separation * e_c, std^2 I), orthogonal means.

    The Bayes rule picks the largest projection on the e_c, so
    P(correct) = E_z[Phi(z + separation/std)^(k-1)], z ~ N(0, 1) (trapezoid rule on [-12, 12]).
    """
    from scipy.special import ndtr

    z = np.linspace(-12.0, 12.0, 4801)
    phi = np.exp(-0.5 * z**2) / np.sqrt(2 * np.pi)
    f = phi * ndtr(z + separation / std) ** (k - 1)
    return float(1.0 - np.sum(f[1:] + f[:-1]) * (z[1] - z[0]) / 2)


def _mixture_sample(
    means: np.ndarray, scale: float | np.ndarray, n: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """n rows, class counts as equal as possible (the first n mod k classes get one more),
    in random order: x float32 [n, dim], y int64 [n].

    ``scale``: the isotropic std (a float), or a Cholesky factor L [dim, dim] of the shared
    covariance (noise z @ L.T with z standard normal)."""
    k, dim = means.shape
    q, r = divmod(n, k)
    y = rng.permutation(np.repeat(np.arange(k), [q + int(c < r) for c in range(k)]))
    z = rng.standard_normal((n, dim))
    x = means[y] + (scale * z if np.ndim(scale) == 0 else z @ np.asarray(scale).T)
    return torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long)


def gaussian_mixture(
    means: np.ndarray | list[list[float]],
    covariance: float | np.ndarray | list[list[float]],
    train_size: int,
    test_size: int = MIXTURE_TEST_SIZE,
    seed: int = 0,
) -> Dataset:
    """K Gaussian classes N(means[c], covariance) with chosen means [K, dim] and a shared
    covariance (a float: that variance times I; or a symmetric positive-definite [dim, dim]
    matrix), for tests with known answers.

    ``train_size`` and ``test_size`` class-balanced rows (the first ``n mod K`` classes get one
    more), x float32 [n, dim]; training and held-out rows come from independent streams of
    ``seed``.  ``meta`` has ``means``, ``covariance`` [dim][dim] and ``classes``.
    """
    mu = np.asarray(means, dtype=np.float64)
    if mu.ndim != 2 or mu.shape[0] < 2:
        raise DataError(f"gaussian mixture: means must be [K >= 2, dim]; got shape {mu.shape}")
    k, dim = mu.shape
    check_every_class(train_size, k)
    if np.ndim(covariance) == 0:
        var = float(np.asarray(covariance))
        if not var > 0:
            raise DataError(f"gaussian mixture: the variance must be > 0; got {var}")
        scale: float | np.ndarray = var**0.5
        cov = var * np.eye(dim)
    else:
        cov = np.asarray(covariance, dtype=np.float64)
        if cov.shape != (dim, dim) or not np.allclose(cov, cov.T):
            raise DataError(
                f"gaussian mixture: covariance must be a symmetric [{dim}, {dim}] matrix; "
                f"got shape {cov.shape}"
            )
        try:
            scale = np.linalg.cholesky(cov)
        except np.linalg.LinAlgError:
            raise DataError("gaussian mixture: covariance is not positive definite") from None
    g_train, g_test = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    return _mixture_dataset(mu, scale, (train_size, g_train), (test_size, g_test),
                            source=f"Gaussian mixture, K={k}, dim={dim}, chosen means, "
                                   f"seed {seed}", covariance=cov.tolist())


def _mixture_dataset(means: np.ndarray, scale: float | np.ndarray,
                     train: tuple[int, np.random.Generator],
                     test: tuple[int, np.random.Generator], **meta: Any) -> Dataset:
    """Sample the (size, stream) ``train`` and ``test`` splits of the mixture into a Dataset
    whose meta holds ``classes``, ``means`` and the given ``meta``."""
    x_tr, y_tr = _mixture_sample(means, scale, *train)
    x_te, y_te = _mixture_sample(means, scale, *test)
    k = len(means)
    return Dataset(x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te, num_classes=k,
                   meta={"classes": [str(c) for c in range(k)], "means": means.tolist(),
                         **meta})


def build_gaussian_mixture(cfg: DataConfig) -> Dataset:
    """K = ``mixture_classes`` isotropic Gaussians N(mu_c, mixture_std^2 I) in
    ``mixture_dim`` dimensions, x float32 [n, dim].

    Means (see :func:`mixture_means`) have norm ``mixture_separation``: the first K standard
    basis vectors scaled, when K <= dim (pairwise distance separation * sqrt 2), else seeded
    random directions.  ``train_size`` class-balanced training rows and ``test_size``
    (default 1000) class-balanced held-out rows.  Means, training and held-out rows come
    from independent streams of ``data.seed``, so the held-out set does not depend on
    ``train_size``.  ``meta``: ``means`` [K][dim], ``std``, ``covariance`` [dim][dim] and
    ``bayes_error`` (None when the means are random directions).  Any other means and
    covariance: :func:`gaussian_mixture`.
    """
    k, dim, std = cfg.mixture_classes, cfg.mixture_dim, cfg.mixture_std
    check_every_class(cfg.train_size, k)
    g_means, g_train, g_test = (
        np.random.default_rng(s) for s in np.random.SeedSequence(cfg.seed).spawn(3)
    )
    means = mixture_means(k, dim, cfg.mixture_separation, g_means)
    n_test = MIXTURE_TEST_SIZE if cfg.test_size is None else cfg.test_size
    return _mixture_dataset(
        means, std, (cfg.train_size, g_train), (n_test, g_test),
        source=f"Gaussian mixture, K={k}, dim={dim}, seed {cfg.seed}", std=std,
        covariance=(std**2 * np.eye(dim)).tolist(),
        bayes_error=(orthogonal_bayes_error(k, cfg.mixture_separation, std) if k <= dim
                     else None),
    )
