"""Image datasets: shapes [n, C, H, W], balance, seeding, normalisation, root resolution."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from latephase.config import DataConfig
from latephase.data import build_dataset, images
from latephase.data.images import CIFAR10_MEAN, CIFAR10_STD, FASHION_MEAN, FASHION_STD

from .formats import idx_bytes, py2_pickle, raises_one_line, write_idx, write_mnist

IDX_FMT = r"expected the standard MNIST IDX format"
CIFAR_NAMES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def _cfg(name: str = "mnist", **kw: Any) -> DataConfig:
    return DataConfig(name=name, **kw)


def write_balanced_cifar(root: Path, per_batch: int = 20) -> dict[str, dict[bytes, Any]]:
    """Six CIFAR-10 python-version batches, each with every label 0..9 equally often, in a
    seeded random order."""
    root.mkdir(parents=True, exist_ok=True)
    batches = {}
    for seed, name in enumerate(CIFAR_NAMES):
        rng = np.random.default_rng(seed)
        batch = {
            b"batch_label": name.encode(),
            b"labels": [int(v) for v in rng.permutation(np.arange(per_batch) % 10)],
            b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            b"filenames": [b"img_%d.png" % i for i in range(per_batch)],
        }
        (root / name).write_bytes(py2_pickle(batch))
        batches[name] = batch
    return batches


def _rows(x: np.ndarray) -> dict[bytes, int]:
    return {row.tobytes(): i for i, row in enumerate(x.reshape(len(x), -1))}


# --------------------------------------------------------------------------- MNIST


def test_mnist_embedded_shapes_balance_and_normalisation() -> None:
    d = build_dataset(_cfg(train_size=200, test_size=300))
    assert d.x_train.shape == (200, 1, 28, 28) and d.x_train.dtype == torch.float32
    assert d.x_test.shape == (300, 1, 28, 28) and d.y_test.dtype == torch.long
    assert d.input_shape == (1, 28, 28) and d.num_classes == 10
    assert torch.bincount(d.y_train, minlength=10).tolist() == [20] * 10
    raw = build_dataset(_cfg(train_size=200, test_size=300, normalize=False))
    assert 0.0 <= float(raw.x_train.min()) and float(raw.x_train.max()) <= 1.0
    assert torch.allclose(d.x_train, (raw.x_train - 0.1307) / 0.3081, atol=1e-6)
    assert torch.equal(raw.y_train, d.y_train)
    assert d.meta["normalization"] == [[0.1307], [0.3081]] and raw.meta["normalization"] is None


def test_mnist_embedded_held_out_is_the_rest_and_seeded() -> None:
    d = build_dataset(_cfg(train_size=100))
    assert len(d.y_test) == 4900
    train_rows = {r.numpy().tobytes() for r in d.x_train.flatten(1)}
    assert not any(r.numpy().tobytes() in train_rows for r in d.x_test[:500].flatten(1))
    again = build_dataset(_cfg(train_size=100))
    assert torch.equal(again.x_train, d.x_train) and torch.equal(again.y_test, d.y_test)
    other = build_dataset(_cfg(train_size=100, seed=1))
    assert not torch.equal(other.x_train, d.x_train)


@pytest.mark.parametrize("layout", ["root", "env-subdir", "env-base", "torchvision"])
def test_mnist_idx_files_root_resolution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str
) -> None:
    where = {
        "root": tmp_path / "anywhere",
        "env-subdir": tmp_path / "mnist",
        "env-base": tmp_path,
        "torchvision": tmp_path / "mnist" / "MNIST" / "raw",
    }[layout]
    arrays = write_mnist(where, n_train=50, n_test=20, gz=layout == "env-base")
    if layout == "root":
        cfg = _cfg(root=str(where), train_size=20, normalize=False)
    else:
        monkeypatch.setenv("LATEPHASE_DATA", str(tmp_path))
        cfg = _cfg(train_size=20, normalize=False)
    d = build_dataset(cfg)
    assert str(where) in d.meta["source"]
    assert d.x_train.shape == (20, 1, 28, 28) and d.x_test.shape == (20, 1, 28, 28)
    assert torch.bincount(d.y_train, minlength=10).tolist() == [2] * 10
    # every training row is a source image with its own label; held out = the t10k files
    src = _rows(arrays["train-images-idx3-ubyte"])
    for x, y in zip(d.x_train, d.y_train, strict=True):
        i = src[np.rint(x.numpy() * 255).astype(np.uint8).tobytes()]
        assert arrays["train-labels-idx1-ubyte"][i] == int(y)
    np.testing.assert_array_equal(
        np.rint(d.x_test.numpy()[:, 0] * 255), arrays["t10k-images-idx3-ubyte"]
    )
    np.testing.assert_array_equal(d.y_test.numpy(), arrays["t10k-labels-idx1-ubyte"])


def test_mnist_idx_seeded_subsets(tmp_path: Path) -> None:
    write_mnist(tmp_path, n_train=50, n_test=20)
    cfg = _cfg(root=str(tmp_path), train_size=20, test_size=7)
    d, again = build_dataset(cfg), build_dataset(cfg)
    assert len(d.y_test) == 7
    assert torch.equal(d.x_train, again.x_train) and torch.equal(d.x_test, again.x_test)
    other = build_dataset(_cfg(root=str(tmp_path), train_size=20, test_size=7, seed=5))
    assert not torch.equal(other.x_train, d.x_train)
    raises_one_line(
        r"data.test_size=21 exceeds the 20 held-out examples",
        build_dataset,
        _cfg(root=str(tmp_path), train_size=20, test_size=21),
    )
    raises_one_line(
        r"data.train_size=60 needs 6 examples of class 0 but only 5 exist; "
        r"choose data.train_size <= 50",
        build_dataset,
        _cfg(root=str(tmp_path), train_size=60),
    )


def test_mnist_idx_broken_files_give_one_line_errors(tmp_path: Path) -> None:
    arrays = write_mnist(tmp_path, n_train=50, n_test=20)
    cfg = _cfg(root=str(tmp_path), train_size=20)
    p = tmp_path / "t10k-images-idx3-ubyte"
    p.write_bytes(idx_bytes(arrays["t10k-images-idx3-ubyte"])[:500])
    msg = raises_one_line(r"truncated IDX file.*; " + IDX_FMT, build_dataset, cfg)
    assert str(p.absolute()) in msg
    write_idx(p, arrays["t10k-labels-idx1-ubyte"])  # labels where images belong
    raises_one_line(
        r"t10k-images-idx3-ubyte: wrong magic number 2049 .*; " + IDX_FMT, build_dataset, cfg
    )
    p.unlink()
    raises_one_line(r"t10k-images-idx3-ubyte: file not found .*; " + IDX_FMT, build_dataset, cfg)


# --------------------------------------------------------------------------- Fashion-MNIST


def test_fashion_mnist_own_normalisation_and_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_mnist(tmp_path / "fashion-mnist", n_train=50, n_test=20)
    monkeypatch.setenv("LATEPHASE_DATA", str(tmp_path))
    d = build_dataset(_cfg("fashion-mnist", train_size=30))
    raw = build_dataset(_cfg("fashion-mnist", train_size=30, normalize=False))
    assert d.x_train.shape == (30, 1, 28, 28) and d.num_classes == 10
    assert torch.allclose(d.x_train, (raw.x_train - FASHION_MEAN) / FASHION_STD, atol=1e-6)
    assert (FASHION_MEAN, FASHION_STD) == (0.2860, 0.3530)
    assert d.meta["classes"][0] == "T-shirt/top" and d.meta["classes"][9] == "Ankle boot"


def test_file_datasets_without_root_say_what_to_set() -> None:
    for name, files in [
        ("fashion-mnist", "train-images-idx3-ubyte"),
        ("cifar10", "data_batch_1, data_batch_2"),
        ("sst2", "train.tsv, dev.tsv"),
        ("trec", "train_5500.label, TREC_10.label"),
        ("ag-news", "train.csv, test.csv"),
    ]:
        msg = raises_one_line(r"set data.root=DIR or LATEPHASE_DATA=DIR", build_dataset, _cfg(name))
        assert files in msg, msg


# --------------------------------------------------------------------------- CIFAR-10


def test_cifar10_shapes_per_channel_normalisation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches = write_balanced_cifar(tmp_path / "cifar10" / "cifar-10-batches-py")
    monkeypatch.setenv("LATEPHASE_DATA", str(tmp_path))
    d = build_dataset(_cfg("cifar10", train_size=40, test_size=15))
    raw = build_dataset(_cfg("cifar10", train_size=40, test_size=15, normalize=False))
    assert d.x_train.shape == (40, 3, 32, 32) and d.x_test.shape == (15, 3, 32, 32)
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.long
    assert torch.bincount(d.y_train, minlength=10).tolist() == [4] * 10
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    assert torch.allclose(d.x_train, (raw.x_train - mean) / std, atol=1e-5)
    # channel-first: the first 1024 bytes of a row are the red plane; each image keeps its
    # own label (training rows from the five data batches, held out from test_batch)
    for xs, ys, names in ((raw.x_train, raw.y_train, CIFAR_NAMES[:5]),
                          (raw.x_test, raw.y_test, CIFAR_NAMES[5:])):
        src = _rows(np.concatenate([batches[n][b"data"] for n in names]))
        labels = sum((batches[n][b"labels"] for n in names), [])
        for x, y in zip(xs, ys, strict=True):
            assert labels[src[np.rint(x.numpy() * 255).astype(np.uint8).tobytes()]] == int(y)
    assert d.meta["classes"][0] == "airplane"


def test_cifar10_broken_batch(tmp_path: Path) -> None:
    write_balanced_cifar(tmp_path)
    (tmp_path / "data_batch_3").write_bytes(b"\x80\x02}q")
    msg = raises_one_line(
        r"data_batch_3: truncated or corrupt pickle .*; expected the CIFAR-10 "
        r"python version",
        build_dataset,
        _cfg("cifar10", root=str(tmp_path)),
    )
    assert str((tmp_path / "data_batch_3").absolute()) in msg
    (tmp_path / "data_batch_3").unlink()
    raises_one_line(
        r"data_batch_3: file not found", build_dataset, _cfg("cifar10", root=str(tmp_path))
    )


# --------------------------------------------------------------------------- download


def test_download_needs_torchvision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", None)
    for name in ("mnist", "fashion-mnist", "cifar10"):
        raises_one_line(
            rf"data.download=true for {name} needs the package 'torchvision': "
            r"pip install torchvision",
            build_dataset,
            _cfg(name, root=str(tmp_path / name), download=True),
        )
    raises_one_line(
        r"data.download=true for cifar10 needs a directory to download into: set "
        r"data.root=DIR or LATEPHASE_DATA=DIR",
        build_dataset,
        _cfg("cifar10", download=True),
    )


def _fake_torchvision(monkeypatch: pytest.MonkeyPatch, calls: list[tuple[str, bool]]) -> None:
    """A stand-in for torchvision.datasets.MNIST that writes the IDX files as torchvision
    does (into ROOT/MNIST/raw)."""

    class MNIST:
        def __init__(self, root: str, train: bool, download: bool) -> None:
            calls.append((root, train))
            write_mnist(Path(root) / "MNIST" / "raw", n_train=30, n_test=10)

    tv = types.ModuleType("torchvision")
    tvd = types.ModuleType("torchvision.datasets")
    tvd.MNIST = MNIST  # type: ignore[attr-defined]
    tv.datasets = tvd  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torchvision", tv)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", tvd)


def test_download_only_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, bool]] = []
    _fake_torchvision(monkeypatch, calls)
    monkeypatch.setenv("LATEPHASE_DATA", str(tmp_path))
    # download=false: no fetch; LATEPHASE_DATA without MNIST files -> the embedded digits
    assert "embedded" in build_dataset(_cfg(train_size=10)).meta["source"]
    raises_one_line(
        r"train-images-idx3-ubyte: file not found",
        build_dataset,
        _cfg(train_size=10, root=str(tmp_path)),
    )  # an explicit root must hold them
    assert calls == []
    d = build_dataset(_cfg(train_size=10, download=True))  # into $LATEPHASE_DATA/mnist
    assert calls == [(str(tmp_path / "mnist"), True), (str(tmp_path / "mnist"), False)]
    assert d.x_train.shape == (10, 1, 28, 28) and len(d.y_test) == 10
    build_dataset(_cfg(train_size=10, download=True))  # files present: no second fetch
    assert len(calls) == 2


def test_mnist_files_read_as_fashion_mnist_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Flat MNIST files in $LATEPHASE_DATA would otherwise silently serve as Fashion-MNIST (the
    file names are the same); at the official size the mean pixel tells them apart."""
    monkeypatch.setitem(images.OFFICIAL_TRAIN_SIZE, "mnist", 50)
    monkeypatch.setitem(images.OFFICIAL_TRAIN_SIZE, "fashion-mnist", 50)
    write_mnist(tmp_path, n_train=50, n_test=20)
    mnist_like = np.full((50, 28, 28), 33, dtype=np.uint8)  # mean 0.1294, MNIST's is 0.1307
    write_idx(tmp_path / "train-images-idx3-ubyte", mnist_like)
    monkeypatch.setenv("LATEPHASE_DATA", str(tmp_path))  # flat: no per-dataset directory
    assert build_dataset(_cfg(train_size=20)).x_train.shape == (20, 1, 28, 28)
    msg = raises_one_line(
        r"train-images-idx3-ubyte: these 50 training images have mean pixel 0.129\d, not "
        r"fashion-mnist's 0.2860, so they are another dataset's files .*; expected the "
        r"standard MNIST IDX format",
        build_dataset,
        _cfg("fashion-mnist", train_size=20),
    )
    assert msg.startswith(str((tmp_path / "train-images-idx3-ubyte").absolute()))
    monkeypatch.setitem(images.OFFICIAL_TRAIN_SIZE, "fashion-mnist", 60000)  # not full size
    assert build_dataset(_cfg("fashion-mnist", train_size=20)).num_classes == 10
