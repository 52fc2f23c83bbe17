"""Writers for small files in the real on-disk dataset formats (IDX, CIFAR-10 pickles)."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from latephase.errors import DataError


def raises_one_line(match: str, fn: Any, *args: Any, **kwargs: Any) -> str:
    """Call ``fn``; assert it raises a DataError matching ``match`` with a one-line message."""
    with pytest.raises(DataError, match=match) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


# --------------------------------------------------------------------------- IDX writers


def idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    """Encode ``arr`` as an IDX file: 0x0000, type code, ndim, big-endian dims, data."""
    be = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    header = struct.pack(">HBB", 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(be).tobytes()


def write_idx(path: Path, arr: np.ndarray, code: int = 0x08, gz: bool = False) -> Path:
    data = idx_bytes(arr, code)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def write_mnist(root: Path, n_train: int = 12, n_test: int = 5, gz: bool = False) -> dict:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test)[::-1] % 10).astype(np.uint8),
    }
    root.mkdir(parents=True, exist_ok=True)
    for name, arr in arrays.items():
        write_idx(root / name, arr, gz=gz)
    return arrays


# --------------------------------------------------------------------------- CIFAR writers


_PyPickler: Any = pickle._Pickler  # pure-Python pickler (overridable dispatch table)


class _Py2Pickler(_PyPickler):
    """Mimic Python 2 cPickle protocol 2 output: str/bytes as BINSTRING, numpy.core globals."""

    dispatch: dict[type, Any] = _PyPickler.dispatch.copy()

    def _save_bytes(self, obj: bytes) -> None:
        n = len(obj)
        head = (
            pickle.SHORT_BINSTRING + bytes([n])
            if n < 256
            else pickle.BINSTRING + struct.pack("<i", n)
        )
        self.write(head + obj)
        self.memoize(obj)

    def _save_str(self, obj: str) -> None:
        self._save_bytes(obj.encode("latin-1"))

    dispatch[bytes] = _save_bytes
    dispatch[str] = _save_str


def py2_pickle(obj: Any) -> bytes:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")


def cifar_batch(n: int, seed: int) -> dict[bytes, Any]:
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"training batch",
        b"labels": [int(v) for v in rng.integers(0, 10, n)],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [b"img_%d.png" % i for i in range(n)],
    }


def write_cifar(root: Path, style: str = "py2") -> dict[str, dict[bytes, Any]]:
    root.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    batches = {}
    for seed, name in enumerate(names):
        batch = cifar_batch(4 + seed, seed)
        data = py2_pickle(batch) if style == "py2" else pickle.dumps(batch, protocol=int(style))
        (root / name).write_bytes(data)
        batches[name] = batch
    return batches


# --------------------------------------------------------------------------- text writers

SST2_ROWS = [
    ("hide new secretions from the parental units ", 0),
    ("contains no wit , only labored gags ", 0),
    ("that loves its characters and communicates something rather beautiful ", 1),
    ("remains utterly satisfied to remain the same throughout ", 0),
    ("the greatest musicians ", 1),
    ("a charming and often affecting journey ", 1),
]
TREC_ROWS = [
    "ABBR:exp What is the full form of .com ?",
    "DESC:manner How did serfdom develop in and then leave Russia ?",
    "ENTY:cremat What films featured the character Popeye Doyle ?",
    "HUM:ind Who was Galileo ?",
    "LOC:other What is the capital of Bogot\xe1 's country ?",
    "NUM:date When was Ozzy Osbourne born ?",
]
AG_ROWS = [
    (3, "Wall St. Bears Claw Back Into the Black", "Short-sellers are seeing green again."),
    (1, "Iraq Halts Oil Exports", "Authorities have halted oil export flows."),
    (2, "Phelps Wins Again", 'He said "gold", then left.'),
    (4, "New Chip, Faster", "A new processor doubles speed."),
]


def write_sst2(root: Path, copies: int = 2) -> Path:
    """GLUE SST-2 train.tsv / dev.tsv (header sentence<TAB>label) with ``copies`` x 6 rows."""
    root.mkdir(parents=True, exist_ok=True)
    body = "".join(f"{t}\t{y}\n" for t, y in SST2_ROWS * copies)
    for name in ("train.tsv", "dev.tsv"):
        (root / name).write_text("sentence\tlabel\n" + body, encoding="utf-8")
    return root


def write_trec(root: Path, copies: int = 2) -> Path:
    """TREC train_5500.label / TREC_10.label (Latin-1, 'COARSE:fine question')."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("train_5500.label", "TREC_10.label"):
        (root / name).write_bytes(("\n".join(TREC_ROWS * copies) + "\n").encode("latin-1"))
    return root


def write_ag_news(root: Path, copies: int = 2) -> Path:
    """AG News train.csv / test.csv (no header; quoted class index 1-4, title, description)."""
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for cls, title, desc in AG_ROWS * copies:
        fields = [str(cls), title, desc]
        lines.append(",".join('"' + f.replace('"', '""') + '"' for f in fields))
    for name in ("train.csv", "test.csv"):
        (root / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root
