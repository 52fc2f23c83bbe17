"""The dataset registry, root resolution and the availability checks of `latephase datasets`."""

from __future__ import annotations

from pathlib import Path

import pytest

from latephase.data import DATASET_INFO, DATASETS, data_root

from .formats import write_mnist, write_sst2


def test_every_dataset_has_info() -> None:
    assert set(DATASET_INFO) == set(DATASETS)
    expected = {
        "mnist",
        "fashion-mnist",
        "cifar10",
        "mnist1d",
        "gaussian-mixture",
        "modular",
        "sst2",
        "trec",
        "ag-news",
        "csv",
        "jsonl",
    }
    assert set(DATASETS) == expected
    for name, (check, where) in DATASET_INFO.items():
        status = check()
        assert isinstance(status, str) and status and "\n" not in status, name
        assert isinstance(where, str) and where and "\n" not in where, name
    assert "train_5500.label, TREC_10.label" in DATASET_INFO["trec"][1]
    assert "data_batch_1" in DATASET_INFO["cifar10"][1]
    assert "train.tsv, dev.tsv" in DATASET_INFO["sst2"][1]
    assert "t10k-images-idx3-ubyte" in DATASET_INFO["fashion-mnist"][1]


def test_data_root_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert data_root("cifar10", None) is None
    assert data_root("cifar10", str(tmp_path / "x")) == tmp_path / "x"
    monkeypatch.setenv("LATEPHASE_DATA", str(tmp_path))
    assert data_root("cifar10", None) == tmp_path  # no per-dataset subdirectory yet
    (tmp_path / "cifar10").mkdir()
    assert data_root("cifar10", None) == tmp_path / "cifar10"
    assert data_root("cifar10", str(tmp_path / "x")) == tmp_path / "x"  # data.root wins


def test_availability_follows_the_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check = DATASET_INFO["sst2"][0]
    assert check() == "not configured (set data.root=DIR or LATEPHASE_DATA=DIR)"
    monkeypatch.setenv("LATEPHASE_DATA", str(tmp_path))
    assert check() == f"files not found in {tmp_path} (set data.root or LATEPHASE_DATA)"
    write_sst2(tmp_path / "sst2")
    assert check() == "available"
    assert DATASET_INFO["mnist"][0]() == "available (embedded 5000 digits)"
    write_mnist(tmp_path / "mnist" / "MNIST" / "raw", gz=True)
    assert DATASET_INFO["mnist"][0]() == "available"
    assert DATASET_INFO["csv"][0]() == "needs data.train_file"
