"""The dataset registry, root resolution, file lookup, balanced subsets and the availability
checks of `latephase datasets`."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from latephase.config import DataConfig
from latephase.data import DATASET_INFO, DATASETS, balanced_indices, build_dataset, data_root

from .formats import raises_one_line, write_mnist, write_sst2, write_trec


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


# --------------------------------------------------------------------------- balanced subsets


@pytest.mark.parametrize(("size", "k"), [(10, 10), (23, 10), (99, 10), (7, 6), (1000, 4)])
def test_balanced_indices_exact_counts(size: int, k: int) -> None:
    labels = np.repeat(np.arange(k), 300)[np.random.default_rng(0).permutation(300 * k)]
    idx = balanced_indices(labels, size, np.random.default_rng(1), k)
    assert len(idx) == size == len(np.unique(idx)) and (np.diff(idx) > 0).all()
    q, r = divmod(size, k)
    assert np.bincount(labels[idx], minlength=k).tolist() == [q + (c < r) for c in range(k)]
    again = balanced_indices(labels, size, np.random.default_rng(1), k)
    other = balanced_indices(labels, size, np.random.default_rng(2), k)
    assert np.array_equal(again, idx) and not np.array_equal(other, idx)


def test_fewer_training_rows_than_classes_is_an_error(tmp_path: Path) -> None:
    """A class with no training example would be silently dropped."""
    labels = np.arange(100) % 10
    raises_one_line(
        r"data.train_size=9 is smaller than the 10 classes, so some class would have no "
        r"training example; choose data.train_size >= 10",
        balanced_indices,
        labels,
        9,
        np.random.default_rng(0),
        10,
    )
    write_trec(tmp_path)
    raises_one_line(
        r"data.train_size=5 is smaller than the 6 classes",
        build_dataset,
        DataConfig(name="trec", root=str(tmp_path), train_size=5),
    )
    raises_one_line(
        r"data.train_size=3 is smaller than the 4 classes",
        build_dataset,
        DataConfig(name="gaussian-mixture", mixture_classes=4, train_size=3),
    )


# --------------------------------------------------------------------------- file lookup


def test_only_idx_files_may_be_gzipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The text readers open exactly train.tsv: a train.tsv.gz must not count as present."""
    write_sst2(tmp_path / "sst2")
    raw = (tmp_path / "sst2" / "train.tsv").read_bytes()
    (tmp_path / "sst2" / "train.tsv").unlink()
    (tmp_path / "sst2" / "train.tsv.gz").write_bytes(gzip.compress(raw))
    monkeypatch.setenv("LATEPHASE_DATA", str(tmp_path))
    assert DATASET_INFO["sst2"][0]() != "available"
    write_mnist(tmp_path / "mnist", gz=True)  # IDX: .gz is accepted by its reader
    assert DATASET_INFO["mnist"][0]() == "available"


def test_incomplete_layout_names_the_missing_file_where_the_others_are(tmp_path: Path) -> None:
    write_sst2(tmp_path / "SST-2")  # the GLUE archive's folder
    (tmp_path / "SST-2" / "dev.tsv").unlink()
    msg = raises_one_line(
        r"dev.tsv: file not found; expected a GLUE SST-2 TSV",
        build_dataset,
        DataConfig(name="sst2", root=str(tmp_path), train_size=4),
    )
    assert msg.startswith(str((tmp_path / "SST-2" / "dev.tsv").absolute()) + ": ")
    write_mnist(tmp_path / "MNIST" / "raw")  # torchvision's layout
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    msg = raises_one_line(
        r"file not found .*; expected the standard MNIST IDX format",
        build_dataset,
        DataConfig(name="mnist", root=str(tmp_path), train_size=10),
    )
    assert msg.startswith(str((tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").absolute()))
