"""Generated datasets: MNIST-1D (local generator) and the Gaussian mixture (known answers)."""

from __future__ import annotations

import math
import random
import sys
from typing import Any

import numpy as np
import pytest
import torch

from latephase.config import DataConfig
from latephase.data import build_dataset
from latephase.data.synthetic import _mnist1d_arrays, gaussian_mixture, orthogonal_bayes_error

from .formats import raises_one_line


def _mix(**kw: Any) -> DataConfig:
    return DataConfig(name="gaussian-mixture", **kw)


# --------------------------------------------------------------------------- MNIST-1D


def test_mnist1d_generated_locally_seeded(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mnist1d")
    import mnist1d.data

    def no_download(*a: Any, **k: Any) -> None:
        raise AssertionError("get_dataset downloads; it must not be called")

    monkeypatch.setattr(mnist1d.data, "get_dataset", no_download)
    np.random.seed(123)  # noqa: NPY002 - the legacy global state mnist1d touches
    random.seed(123)
    np_before, py_before = np.random.get_state()[1].copy(), random.getstate()  # noqa: NPY002
    d = build_dataset(DataConfig(name="mnist1d", train_size=200, test_size=100))
    # the generator's global seeding is undone
    np_after = np.random.get_state()[1]  # noqa: NPY002
    assert np.array_equal(np_after, np_before) and random.getstate() == py_before
    assert d.x_train.shape == (200, 1, 40) and d.x_train.dtype == torch.float32
    assert d.x_test.shape == (100, 1, 40) and d.num_classes == 10
    assert torch.bincount(d.y_train, minlength=10).tolist() == [20] * 10
    full = build_dataset(DataConfig(name="mnist1d", train_size=200))
    assert len(full.y_test) == 1000  # the generator's own test split
    assert abs(float(torch.cat([full.x_train, full.x_test]).std()) - 1.0) < 0.1
    again = build_dataset(DataConfig(name="mnist1d", train_size=200, test_size=100))
    assert torch.equal(again.x_train, d.x_train) and torch.equal(again.x_test, d.x_test)
    _mnist1d_arrays.cache_clear()  # regenerate from scratch: same numbers
    fresh = build_dataset(DataConfig(name="mnist1d", train_size=200, test_size=100))
    assert torch.equal(fresh.x_train, d.x_train)
    other = build_dataset(DataConfig(name="mnist1d", train_size=200, test_size=100, seed=1))
    assert not torch.equal(other.x_train, d.x_train)


def test_mnist1d_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    _mnist1d_arrays.cache_clear()
    monkeypatch.setitem(sys.modules, "mnist1d", None)
    monkeypatch.setitem(sys.modules, "mnist1d.data", None)
    try:
        raises_one_line(
            r"dataset 'mnist1d' needs the package 'mnist1d': pip install mnist1d",
            build_dataset,
            DataConfig(name="mnist1d", seed=7),
        )
        from latephase.data import DATASET_INFO

        assert DATASET_INFO["mnist1d"][0]() == "missing package: pip install mnist1d"
    finally:
        _mnist1d_arrays.cache_clear()


# --------------------------------------------------------------------------- Gaussian mixture


def test_mixture_shapes_balance_and_seeding() -> None:
    d = build_dataset(_mix(train_size=105))
    assert d.x_train.shape == (105, 20) and d.x_train.dtype == torch.float32
    assert d.x_test.shape == (1000, 20) and d.num_classes == 10  # default held-out size
    assert torch.bincount(d.y_train).tolist() == [11] * 5 + [10] * 5
    assert torch.bincount(d.y_test).tolist() == [100] * 10
    assert torch.equal(build_dataset(_mix(train_size=105)).x_train, d.x_train)
    assert not torch.equal(build_dataset(_mix(train_size=105, seed=1)).x_train, d.x_train)
    # held-out rows come from their own stream: independent of train_size
    assert torch.equal(build_dataset(_mix(train_size=40)).x_test, d.x_test)
    means = np.asarray(d.meta["means"])
    np.testing.assert_array_equal(means, 3.0 * np.eye(10, 20))  # K <= dim: scaled basis
    np.testing.assert_array_equal(np.asarray(d.meta["covariance"]), np.eye(20))


def test_mixture_sample_means_match_meta() -> None:
    """Each class mean of the sample is within 5 standard errors of the true mean.

    A coordinate of a class's sample mean is N(mu, std^2 / n_c), so |error| < 5 std/sqrt(n_c)
    fails with probability 5.7e-7 per coordinate; over K * dim = 60 coordinates and 2
    splits the chance of any false failure is below 1e-4, for any seed.
    """
    cfg = _mix(
        mixture_classes=6,
        mixture_dim=5,
        mixture_separation=2.5,
        mixture_std=0.7,
        train_size=600,
        test_size=1200,
        seed=3,
    )
    d = build_dataset(cfg)
    means = torch.tensor(d.meta["means"], dtype=torch.float32)
    assert means.shape == (6, 5) and d.meta["bayes_error"] is None  # K > dim: random dirs
    assert torch.allclose(means.norm(dim=1), torch.full((6,), 2.5))
    assert d.meta["std"] == 0.7
    for x, y in ((d.x_train, d.y_train), (d.x_test, d.y_test)):
        for c in range(6):
            xc = x[y == c]
            se = 0.7 / math.sqrt(len(xc))
            assert float((xc.mean(0) - means[c]).abs().max()) < 5 * se
            # and the spread is the stated isotropic std (5 standard errors of a variance)
            var = xc.var(0)
            assert float((var - 0.49).abs().max()) < 5 * 0.49 * math.sqrt(2 / (len(xc) - 1))


def test_mixture_bayes_error_known_answers() -> None:
    # K = 2: the error is Phi(-distance / (2 std)) with distance = separation * sqrt(2)
    for sep, std in [(1.0, 1.0), (3.0, 0.5)]:
        exact = 0.5 * math.erfc(sep * math.sqrt(2) / (2 * std) / math.sqrt(2))
        assert abs(orthogonal_bayes_error(2, sep, std) - exact) < 1e-9
    assert abs(orthogonal_bayes_error(7, 0.0, 1.0) - 6 / 7) < 1e-9  # no signal: chance
    # the nearest-mean (Bayes) rule on a large sample errs at the stated rate, within 5 SE
    d = build_dataset(
        _mix(mixture_classes=4, mixture_dim=6, mixture_separation=2.0, test_size=20000)
    )
    means = torch.tensor(d.meta["means"], dtype=torch.float32)
    err = float((torch.cdist(d.x_test, means).argmin(1) != d.y_test).float().mean())
    p = d.meta["bayes_error"]
    assert 0.1 < p < 0.3  # a regime where the check has power
    assert abs(err - p) < 5 * math.sqrt(p * (1 - p) / 20000)


def test_mixture_with_chosen_means_and_covariance_known_answer() -> None:
    """Two classes with a shared anisotropic covariance: the Bayes (LDA) error is
    Phi(-Delta / 2), Delta the Mahalanobis distance between the means."""
    means = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 0.0]])
    cov = np.array([[2.0, 0.6, 0.0], [0.6, 1.0, 0.0], [0.0, 0.0, 0.25]])
    d = gaussian_mixture(means, cov, train_size=11, test_size=40000, seed=5)
    assert d.x_train.shape == (11, 3) and d.x_test.shape == (40000, 3) and d.num_classes == 2
    assert torch.bincount(d.y_train).tolist() == [6, 5]
    np.testing.assert_array_equal(np.asarray(d.meta["covariance"]), cov)
    x, y = d.x_test.double(), d.y_test
    for c in range(2):  # sample covariance within 5 standard errors (entries <= 2)
        xc = x[y == c]
        assert float((xc.mean(0) - torch.tensor(means[c])).abs().max()) < 5 * math.sqrt(2 / len(xc))
        assert float((torch.cov(xc.T) - torch.tensor(cov)).abs().max()) < 5 * 2 * math.sqrt(
            2 / len(xc)
        )
    inv = np.linalg.inv(cov)
    diff = means[1] - means[0]
    delta = math.sqrt(diff @ inv @ diff)
    p = 0.5 * math.erfc(delta / 2 / math.sqrt(2))
    w = torch.tensor(inv @ diff)
    b = float(w @ torch.tensor(means[0] + means[1])) / 2
    err = float(((x @ w > b).long() != y).double().mean())
    assert 0.1 < p < 0.3 and abs(err - p) < 5 * math.sqrt(p * (1 - p) / len(y))
    again = gaussian_mixture(means, cov, train_size=11, test_size=40000, seed=5)
    assert torch.equal(again.x_train, d.x_train) and torch.equal(again.x_test, d.x_test)
    assert not torch.equal(gaussian_mixture(means, cov, 11, 10, seed=6).x_train, d.x_train)
    iso = gaussian_mixture(means, 0.49, train_size=4, test_size=4)  # a float: variance * I
    np.testing.assert_allclose(np.asarray(iso.meta["covariance"]), 0.49 * np.eye(3))


def test_mixture_with_chosen_covariance_errors() -> None:
    means = np.eye(2)
    raises_one_line(r"must be a symmetric \[2, 2\]", gaussian_mixture, means, np.eye(3), 4)
    raises_one_line(
        r"not positive definite", gaussian_mixture, means, np.array([[1.0, 2], [2, 1]]), 4
    )
    raises_one_line(r"variance must be > 0", gaussian_mixture, means, 0.0, 4)
    raises_one_line(r"means must be \[K >= 2, dim\]", gaussian_mixture, np.ones(3), 1.0, 4)
    raises_one_line(r"train_size=1 is smaller than the 2 classes", gaussian_mixture, means, 1.0, 1)
