"""Offline readers for the raw dataset files used in the paper's experiments.

Every function here reads files that are already on disk and returns numpy arrays (or
lists of strings); nothing is ever downloaded.  Each reader validates what it reads and
raises :class:`~latephase.errors.DataError` with a one-line message of the form
``"<absolute path>: <what is wrong>; expected <format>"`` for a missing file, a truncated
file, a wrong magic number or structure, or labels out of range.

Supported formats:

* IDX (MNIST, Fashion-MNIST), raw or gzip-compressed: :func:`read_idx`,
  :func:`find_file`, :func:`load_idx_dataset`.
* CIFAR-10 "python version" pickles: :func:`load_cifar10`.
* Text: GLUE SST-2 TSV (:func:`read_glue_tsv`), TREC label files (:func:`read_trec`),
  the original AG News CSV (:func:`read_ag_news_csv`), and generic CSV/TSV/JSONL tables
  (:func:`read_text_table`); plus an offline :class:`WordTokenizer`.
"""

from __future__ import annotations

import collections
import csv
import functools
import gzip
import importlib
import io
import json
import os
import pickle
import re
import struct
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latephase.errors import DataError

__all__ = [
    "AG_NEWS_FORMAT",
    "CIFAR10_FORMAT",
    "GLUE_TSV_FORMAT",
    "IDX_FORMAT",
    "IDX_IMAGES_MAGIC",
    "IDX_LABELS_MAGIC",
    "TEXT_TABLE_FORMAT",
    "TREC_CLASSES",
    "TREC_FORMAT",
    "WordTokenizer",
    "find_file",
    "load_cifar10",
    "load_idx_dataset",
    "read_ag_news_csv",
    "read_glue_tsv",
    "read_idx",
    "read_text_table",
    "read_trec",
]

PathLike = str | os.PathLike[str]

IDX_IMAGES_MAGIC = 2051  # 0x00000803: uint8, 3 dimensions
IDX_LABELS_MAGIC = 2049  # 0x00000801: uint8, 1 dimension

IDX_FORMAT = "the standard MNIST IDX format (magic 2051 for images, 2049 for labels)"
CIFAR10_FORMAT = (
    "the CIFAR-10 python version (pickled dict with b'data' [N,3072] uint8 and "
    "b'labels' list of N ints in [0, 9]; files data_batch_1..5 and test_batch)"
)
GLUE_TSV_FORMAT = (
    "a GLUE SST-2 TSV file (header 'sentence<TAB>label', then one "
    "'text<TAB>integer label' row per line)"
)
TREC_FORMAT = (
    "the TREC question-classification label format (one 'COARSE:fine question' per line, "
    "COARSE in ABBR, DESC, ENTY, HUM, LOC, NUM)"
)
AG_NEWS_FORMAT = (
    "the original AG News CSV (no header; three quoted columns: class index 1-4, title, "
    "description)"
)
TEXT_TABLE_FORMAT = (
    "a .csv/.tsv file with a header row or a .jsonl file with one JSON object per line, "
    "containing the text and label columns"
)

TREC_CLASSES: tuple[str, ...] = ("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM")

# IDX type codes (third byte of the magic number) -> big-endian numpy dtype.
_IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = "test_batch"
_CIFAR_SUBDIR = "cifar-10-batches-py"


# --------------------------------------------------------------------------- helpers


def _abs(path: PathLike) -> Path:
    return Path(path).expanduser().absolute()


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _error(path: PathLike, problem: str, expected: str) -> DataError:
    """A one-line DataError: ``<absolute path>: <problem>; expected <expected>``."""
    return DataError(f"{_abs(path)}: {_one_line(problem)}; expected {_one_line(expected)}")


def _read_bytes(path: PathLike, expected: str) -> bytes:
    p = _abs(path)
    if p.is_dir():
        raise _error(p, "is a directory, not a file", expected)
    try:
        return p.read_bytes()
    except FileNotFoundError:
        raise _error(p, "file not found", expected) from None
    except OSError as exc:
        raise _error(p, f"cannot read file ({exc.strerror or exc})", expected) from None


def _read_text(path: PathLike, expected: str) -> str:
    """Decode a text file as UTF-8 (BOM stripped), falling back to Latin-1."""
    raw = _read_bytes(path, expected)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _nonempty_lines(text: str) -> Iterable[tuple[int, str]]:
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield lineno, line


def _describe_shape(dims: Sequence[int]) -> str:
    return "x".join(str(d) for d in dims)


def _check_labels(path: PathLike, labels: np.ndarray, num_classes: int, expected: str) -> None:
    if labels.size == 0:
        return
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        bad = labels[(labels < 0) | (labels >= num_classes)]
        raise _error(
            path,
            f"{bad.size} label(s) out of range [0, {num_classes - 1}] (e.g. {int(bad[0])})",
            expected,
        )


# --------------------------------------------------------------------------- IDX


def read_idx(path: PathLike, expect_magic: int | None = None) -> np.ndarray:
    """Read one IDX file (raw or gzip-compressed) into a native-endian numpy array.

    The header is the magic number ``0x0000 <type code> <ndim>`` followed by ``ndim``
    big-endian uint32 dimensions; the payload must be exactly ``prod(dims)`` elements.
    Gzip compression is detected from the content, not the file name.  If
    ``expect_magic`` is given (2051 for images, 2049 for labels) the magic must match.
    """
    raw = _read_bytes(path, IDX_FORMAT)
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise _error(path, f"truncated or corrupt gzip data ({exc})", IDX_FORMAT) from None
    if len(raw) < 4:
        raise _error(
            path, f"truncated IDX file: only {len(raw)} bytes, no 4-byte magic number", IDX_FORMAT
        )
    zero, code, ndim = struct.unpack(">HBB", raw[:4])
    magic = (code << 8) | ndim
    if zero != 0:
        magic_full = struct.unpack(">I", raw[:4])[0]
        raise _error(
            path,
            f"not an IDX file: magic number {magic_full} (0x{magic_full:08X}) does not start "
            "with two zero bytes",
            IDX_FORMAT,
        )
    if expect_magic is not None and magic != expect_magic:
        raise _error(
            path,
            f"wrong magic number {magic} (0x{magic:08X}), wanted {expect_magic} "
            f"(0x{expect_magic:08X})",
            IDX_FORMAT,
        )
    if code not in _IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
        raise _error(path, f"unknown IDX data type code 0x{code:02X} (known: {known})", IDX_FORMAT)
    if ndim == 0:
        raise _error(path, "IDX header declares 0 dimensions", IDX_FORMAT)
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise _error(
            path,
            f"truncated IDX file: header needs {header_len} bytes for {ndim} dimensions but "
            f"only {len(raw)} bytes present",
            IDX_FORMAT,
        )
    dims = struct.unpack(f">{ndim}I", raw[4:header_len])
    dtype = _IDX_DTYPES[code]
    count = 1
    for d in dims:
        count *= d
    payload = count * dtype.itemsize
    present = len(raw) - header_len
    if present != payload:
        what = "truncated IDX file" if present < payload else "over-long IDX file"
        only = "only " if present < payload else ""
        raise _error(
            path,
            f"{what}: header says {_describe_shape(dims)} {dtype.name} ({header_len + payload} "
            f"bytes) but {only}{len(raw)} bytes present",
            IDX_FORMAT,
        )
    arr = np.frombuffer(raw, dtype=dtype, count=count, offset=header_len)
    return arr.reshape(dims).astype(dtype.newbyteorder("="), copy=True)


def _idx_candidates(stem: str) -> list[str]:
    names = [stem]
    alt = re.sub(r"-(idx\d)", r".\1", stem)
    if alt != stem:
        names.append(alt)
    return [n for name in names for n in (name, name + ".gz")]


def find_file(root: PathLike, stem: str) -> Path:
    """Return the path of ``stem`` inside ``root``, accepting ``stem`` or ``stem + '.gz'``.

    Also accepts the common alternative spelling with '.' before the IDX part, e.g.
    ``train-images.idx3-ubyte`` for ``train-images-idx3-ubyte`` (and its ``.gz``).
    Candidates are tried in that order; the first existing file wins.
    """
    base = _abs(root)
    candidates = _idx_candidates(stem)
    if not base.is_dir():
        raise _error(
            base / stem,
            f"data directory {base} does not exist, so none of {', '.join(candidates)} "
            "can be found",
            IDX_FORMAT,
        )
    for name in candidates:
        p = base / name
        if p.is_file():
            return p
    raise _error(
        base / stem,
        f"file not found (looked for {', '.join(candidates)} in {base})",
        IDX_FORMAT,
    )


def load_idx_dataset(
    root: PathLike, image_shape: tuple[int, int] | None = (28, 28), num_classes: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Load MNIST / Fashion-MNIST from the four standard IDX files in ``root``.

    Reads ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``
    and ``t10k-labels-idx1-ubyte`` (each optionally ``.gz``, see :func:`find_file`).
    Returns ``(x_train [N,28,28] uint8, y_train [N] int64, x_test, y_test)``; checks that
    image and label counts agree and labels lie in ``[0, num_classes - 1]``.  Pass
    ``image_shape=None`` to accept any image height and width.
    """
    paths = [find_file(root, stem) for stem in _IDX_FILES]
    out: list[np.ndarray] = []
    for img_path, lab_path in ((paths[0], paths[1]), (paths[2], paths[3])):
        images = read_idx(img_path, expect_magic=IDX_IMAGES_MAGIC)
        labels = read_idx(lab_path, expect_magic=IDX_LABELS_MAGIC).astype(np.int64)
        if image_shape is not None and tuple(images.shape[1:]) != tuple(image_shape):
            raise _error(
                img_path,
                f"images are {_describe_shape(images.shape[1:])} but "
                f"{_describe_shape(image_shape)} was required",
                IDX_FORMAT,
            )
        if images.shape[0] != labels.shape[0]:
            raise _error(
                lab_path,
                f"{labels.shape[0]} labels but {images.shape[0]} images in {img_path.name}",
                IDX_FORMAT + " with one label per image",
            )
        _check_labels(lab_path, labels, num_classes, IDX_FORMAT)
        out.extend([images, labels])
    return out[0], out[1], out[2], out[3]


# --------------------------------------------------------------------------- CIFAR-10


def _numpy_attr(module: str, name: str) -> Any:
    """``numpy._core.<module>.<name>`` (numpy >= 2) or ``numpy.core.<module>.<name>``."""
    try:
        return getattr(importlib.import_module(f"numpy._core.{module}"), name)
    except (ImportError, AttributeError):  # pragma: no cover - numpy 1.x
        return getattr(importlib.import_module(f"numpy.core.{module}"), name)


@functools.lru_cache(maxsize=1)
def _allowed_globals() -> dict[tuple[str, str], Any]:
    import _codecs

    reconstruct = _numpy_attr("multiarray", "_reconstruct")
    scalar = _numpy_attr("multiarray", "scalar")
    frombuffer = _numpy_attr("numeric", "_frombuffer")
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _codecs.encode,
    }
    for mod in ("numpy.core", "numpy._core"):
        allowed[(f"{mod}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{mod}.multiarray", "scalar")] = scalar
        allowed[(f"{mod}.numeric", "_frombuffer")] = frombuffer
    return allowed


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickler that only resolves the globals needed to rebuild numpy arrays."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _allowed_globals()[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name} (only numpy arrays are allowed)"
            ) from None


def _get(d: dict[Any, Any], key: str) -> Any:
    if key.encode() in d:
        return d[key.encode()]
    return d.get(key)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = _read_bytes(path, CIFAR10_FORMAT)
    try:
        obj = _ArrayOnlyUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as exc:  # unpickling can fail in many ways on corrupt input
        kind = "truncated or corrupt pickle" if raw else "empty file"
        raise _error(path, f"{kind} ({type(exc).__name__}: {exc})", CIFAR10_FORMAT) from None
    if not isinstance(obj, dict):
        raise _error(path, f"pickle holds a {type(obj).__name__}, not a dict", CIFAR10_FORMAT)
    data, labels = _get(obj, "data"), _get(obj, "labels")
    if data is None or labels is None:
        keys = ", ".join(repr(k) for k in obj)
        hint = " (this looks like CIFAR-100)" if _get(obj, "fine_labels") is not None else ""
        raise _error(path, f"dict lacks b'data' or b'labels' (keys: {keys}){hint}", CIFAR10_FORMAT)
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072:
        shape = data.shape if isinstance(data, np.ndarray) else type(data).__name__
        raise _error(path, f"b'data' has shape {shape}, not [N, 3072]", CIFAR10_FORMAT)
    if data.dtype != np.uint8:
        raise _error(path, f"b'data' has dtype {data.dtype}, not uint8", CIFAR10_FORMAT)
    try:
        y = np.asarray(labels)
    except Exception:  # ragged or otherwise unconvertible labels
        y = np.asarray([], dtype=object)
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise _error(path, "b'labels' is not a flat list of integers", CIFAR10_FORMAT)
    if y.shape[0] != data.shape[0]:
        raise _error(
            path, f"{y.shape[0]} labels but {data.shape[0]} images in b'data'", CIFAR10_FORMAT
        )
    y = y.astype(np.int64)
    _check_labels(path, y, 10, CIFAR10_FORMAT)
    return data.reshape(-1, 3, 32, 32).copy(), y


def _cifar_dir(root: PathLike) -> Path:
    base = _abs(root)
    for d in (base, base / _CIFAR_SUBDIR):
        if (d / _CIFAR_TEST).exists() or (d / _CIFAR_TRAIN[0]).exists():
            return d
    if (base / "cifar-10-python.tar.gz").exists():
        raise _error(
            base / _CIFAR_SUBDIR,
            "directory not found; cifar-10-python.tar.gz is present but must be extracted "
            f"first (tar xzf cifar-10-python.tar.gz -C {base})",
            CIFAR10_FORMAT,
        )
    raise _error(
        base / _CIFAR_SUBDIR / _CIFAR_TRAIN[0],
        f"file not found (looked for {_CIFAR_TRAIN[0]} and {_CIFAR_TEST} in {base} and "
        f"{base / _CIFAR_SUBDIR})",
        CIFAR10_FORMAT,
    )


def load_cifar10(root: PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Load CIFAR-10 (python version) from ``root`` or ``root/cifar-10-batches-py``.

    Reads ``data_batch_1`` .. ``data_batch_5`` and ``test_batch`` and returns
    ``(x_train [N,3,32,32] uint8, y_train [N] int64, x_test, y_test)``.

    Security: the files are pickles, and unpickling can execute arbitrary code, so only
    load files you trust.  As a safeguard the batches are read with
    ``pickle.Unpickler(..., encoding="bytes")`` restricted to the numpy globals needed to
    rebuild arrays; any other global makes the file fail with a DataError.
    """
    d = _cifar_dir(root)
    train = [_read_cifar_batch(d / name) for name in _CIFAR_TRAIN]
    x_test, y_test = _read_cifar_batch(d / _CIFAR_TEST)
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    return x_train, y_train, x_test, y_test


# --------------------------------------------------------------------------- text


def read_glue_tsv(path: PathLike, num_classes: int = 2) -> tuple[list[str], np.ndarray]:
    """Read a GLUE SST-2 style TSV (header ``sentence<TAB>label``) into texts and labels.

    Columns are located by header name, so extra columns are ignored.  Labels are
    required (the unlabeled GLUE test files are rejected) and must be integers in
    ``[0, num_classes - 1]``.  Returns ``(texts, labels int64 [N])``.
    """
    lines = list(_nonempty_lines(_read_text(path, GLUE_TSV_FORMAT)))
    if not lines:
        raise _error(path, "empty file", GLUE_TSV_FORMAT)
    header = [h.strip() for h in lines[0][1].split("\t")]
    if "sentence" not in header or "label" not in header:
        extra = " (GLUE test files have no labels)" if "sentence" in header else ""
        raise _error(
            path,
            f"header {header!r} lacks a 'sentence' and/or 'label' column{extra}",
            GLUE_TSV_FORMAT,
        )
    ti, li = header.index("sentence"), header.index("label")
    texts: list[str] = []
    labels: list[int] = []
    for lineno, line in lines[1:]:
        fields = line.split("\t")
        if len(fields) != len(header):
            raise _error(
                path,
                f"line {lineno} has {len(fields)} tab-separated fields, header has {len(header)}",
                GLUE_TSV_FORMAT,
            )
        try:
            label = int(fields[li])
        except ValueError:
            raise _error(
                path, f"line {lineno}: label {fields[li]!r} is not an integer", GLUE_TSV_FORMAT
            ) from None
        texts.append(fields[ti])
        labels.append(label)
    y = np.asarray(labels, dtype=np.int64)
    _check_labels(path, y, num_classes, GLUE_TSV_FORMAT)
    return texts, y


def read_trec(path: PathLike) -> tuple[list[str], np.ndarray]:
    """Read a TREC label file (``DESC:manner How did serfdom develop ... ?``).

    Coarse labels ABBR, DESC, ENTY, HUM, LOC, NUM map to 0..5 in that fixed order
    (:data:`TREC_CLASSES`); fine labels are dropped.  The file may be UTF-8 or Latin-1
    (the original distribution is Latin-1).  Returns ``(texts, labels int64 [N])``.
    """
    texts: list[str] = []
    labels: list[int] = []
    for lineno, line in _nonempty_lines(_read_text(path, TREC_FORMAT)):
        parts = line.strip().split(maxsplit=1)
        tag = parts[0]
        coarse, sep, fine = tag.partition(":")
        if not sep or not fine or len(parts) < 2:
            raise _error(
                path, f"line {lineno} does not look like 'COARSE:fine question'", TREC_FORMAT
            )
        if coarse not in TREC_CLASSES:
            raise _error(path, f"line {lineno}: unknown coarse label {coarse!r}", TREC_FORMAT)
        texts.append(parts[1].strip())
        labels.append(TREC_CLASSES.index(coarse))
    if not texts:
        raise _error(path, "empty file", TREC_FORMAT)
    return texts, np.asarray(labels, dtype=np.int64)


_AG_HEADER_NAMES = {"class index", "class", "label"}


def read_ag_news_csv(path: PathLike) -> tuple[list[str], np.ndarray]:
    """Read the original AG News CSV (no header; class index 1-4, title, description).

    Text is ``title + " " + description``; labels are the class index minus one
    (0 World, 1 Sports, 2 Business, 3 Sci/Tech).  A Kaggle-style header row
    (``Class Index,Title,Description``) is skipped.  Returns ``(texts, labels int64 [N])``.
    """
    text = _read_text(path, AG_NEWS_FORMAT)
    texts: list[str] = []
    labels: list[int] = []
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        for rowno, row in enumerate(reader, start=1):
            if not row or all(not f.strip() for f in row):
                continue
            if rowno == 1 and row[0].strip().lower() in _AG_HEADER_NAMES:
                continue
            if len(row) != 3:
                raise _error(path, f"record {rowno} has {len(row)} columns, not 3", AG_NEWS_FORMAT)
            try:
                cls = int(row[0])
            except ValueError:
                raise _error(
                    path,
                    f"record {rowno}: class index {row[0]!r} is not an integer",
                    AG_NEWS_FORMAT,
                ) from None
            if not 1 <= cls <= 4:
                raise _error(
                    path, f"record {rowno}: class index {cls} out of range 1-4", AG_NEWS_FORMAT
                )
            texts.append(f"{row[1].strip()} {row[2].strip()}".strip())
            labels.append(cls - 1)
    except csv.Error as exc:
        raise _error(path, f"malformed CSV ({exc})", AG_NEWS_FORMAT) from None
    if not texts:
        raise _error(path, "empty file", AG_NEWS_FORMAT)
    return texts, np.asarray(labels, dtype=np.int64)


def _table_rows(path: Path, text: str) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    """Rows of a CSV/TSV/JSONL table as ``(columns, [(line/record number, row dict)])``."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        rows: list[tuple[int, dict[str, Any]]] = []
        columns: list[str] = []
        for lineno, line in _nonempty_lines(text):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise _error(
                    path, f"line {lineno} is not valid JSON ({exc.msg})", TEXT_TABLE_FORMAT
                ) from None
            if not isinstance(obj, dict):
                raise _error(
                    path,
                    f"line {lineno} is a JSON {type(obj).__name__}, not an object",
                    TEXT_TABLE_FORMAT,
                )
            for key in obj:
                if key not in columns:
                    columns.append(key)
            rows.append((lineno, obj))
        return columns, rows
    if suffix in (".csv", ".tsv"):
        delimiter = "\t" if suffix == ".tsv" else ","
        try:
            reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
            columns = list(reader.fieldnames or [])
            rows = [
                (i, dict(r))
                for i, r in enumerate(reader, start=2)
                if any((v or "").strip() for v in r.values() if isinstance(v, str))
            ]
        except csv.Error as exc:
            raise _error(path, f"malformed CSV ({exc})", TEXT_TABLE_FORMAT) from None
        return columns, rows
    raise _error(path, f"unsupported file extension {path.suffix!r}", TEXT_TABLE_FORMAT)


def read_text_table(
    path: PathLike, text_column: str, label_column: str
) -> tuple[list[str], np.ndarray, list[str]]:
    """Read texts and labels from a ``.csv``/``.tsv`` (with header) or ``.jsonl`` file.

    Labels may be non-negative integers (used as ids directly; class names are
    ``"0" .. str(max)``) or strings (mapped to ids in sorted order of the unique values,
    which are returned as class names).  Returns ``(texts, labels int64 [N], class_names)``.
    """
    p = _abs(path)
    columns, rows = _table_rows(p, _read_text(p, TEXT_TABLE_FORMAT))
    for col in (text_column, label_column):
        if col not in columns:
            raise _error(
                p,
                f"no column {col!r} (columns: {', '.join(map(str, columns))})",
                TEXT_TABLE_FORMAT,
            )
    if not rows:
        raise _error(p, "no data rows", TEXT_TABLE_FORMAT)
    texts: list[str] = []
    raw_labels: list[str] = []
    for lineno, row in rows:
        t, lab = row.get(text_column), row.get(label_column)
        if not isinstance(t, str):
            raise _error(
                p,
                f"line {lineno}: {text_column!r} is missing or not a string",
                TEXT_TABLE_FORMAT,
            )
        if isinstance(lab, bool) or not isinstance(lab, int | str) or lab == "":
            raise _error(
                p,
                f"line {lineno}: {label_column!r} is missing or not an int or string",
                TEXT_TABLE_FORMAT,
            )
        texts.append(t)
        raw_labels.append(str(lab).strip())
    if all(re.fullmatch(r"[+-]?\d+", s) for s in raw_labels):
        y = np.asarray([int(s) for s in raw_labels], dtype=np.int64)
        if int(y.min()) < 0:
            raise _error(
                p,
                f"negative integer label {int(y.min())} in {label_column!r}",
                TEXT_TABLE_FORMAT + " (integer labels must be >= 0)",
            )
        names = [str(i) for i in range(int(y.max()) + 1)]
        return texts, y, names
    names = sorted(set(raw_labels))
    index = {name: i for i, name in enumerate(names)}
    return texts, np.asarray([index[s] for s in raw_labels], dtype=np.int64), names


# --------------------------------------------------------------------------- tokenizer

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")


class WordTokenizer:
    """Lower-cased word/punctuation tokenizer with a vocabulary built offline.

    Documented deviation: the paper's text models use BERT word pieces; this library
    uses a simple word-level vocabulary (regex ``\\w+|[^\\w\\s]`` on lower-cased text) so
    that nothing has to be downloaded.  Ids: ``PAD=0``, ``UNK=1``, ``CLS=2``, then words
    by decreasing training frequency, ties broken alphabetically (deterministic).
    """

    PAD = 0
    UNK = 1
    CLS = 2
    SPECIALS: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]")

    def __init__(self, words: Sequence[str], max_len: int = 128) -> None:
        """Build from an ordered word list (without the special tokens)."""
        if max_len < 2:
            raise ValueError(f"max_len must be >= 2 (CLS plus one token), got {max_len}")
        if len(set(words)) != len(words):
            raise ValueError("words must be unique")
        self.max_len = int(max_len)
        self.itos: list[str] = list(self.SPECIALS) + list(words)
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(self.itos)}

    @staticmethod
    def tokenize(text: str) -> list[str]:
        """Split lower-cased ``text`` into words and single punctuation characters."""
        return _TOKEN_RE.findall(text.lower())

    @classmethod
    def fit(
        cls, texts: Iterable[str], vocab_size: int = 30000, max_len: int = 128, min_freq: int = 1
    ) -> WordTokenizer:
        """Build a tokenizer from training texts.

        ``vocab_size`` is the total number of ids *including* the three special tokens
        (i.e. the embedding-table size); the ``vocab_size - 3`` most frequent words with
        count >= ``min_freq`` are kept.
        """
        if vocab_size < len(cls.SPECIALS):
            raise ValueError(f"vocab_size must be >= {len(cls.SPECIALS)}, got {vocab_size}")
        counts: collections.Counter[str] = collections.Counter()
        for t in texts:
            counts.update(cls.tokenize(t))
        ranked = sorted(
            (item for item in counts.items() if item[1] >= min_freq),
            key=lambda kv: (-kv[1], kv[0]),
        )
        words = [w for w, _ in ranked[: vocab_size - len(cls.SPECIALS)]]
        return cls(words, max_len=max_len)

    @property
    def vocab_size(self) -> int:
        """Number of ids (special tokens included)."""
        return len(self.itos)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode texts to ``(ids LongTensor [N, max_len], pad_mask BoolTensor [N, max_len])``.

        Each row is ``CLS`` followed by up to ``max_len - 1`` token ids (longer texts are
        truncated), then ``PAD``; unseen words map to ``UNK``.  ``pad_mask`` is True at
        padding positions.
        """
        ids = torch.full((len(texts), self.max_len), self.PAD, dtype=torch.long)
        for i, text in enumerate(texts):
            toks = self.tokenize(text)[: self.max_len - 1]
            row = [self.CLS] + [self.stoi.get(t, self.UNK) for t in toks]
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        return ids, ids == self.PAD

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (word list and ``max_len``)."""
        return {"words": self.itos[len(self.SPECIALS) :], "max_len": self.max_len}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> WordTokenizer:
        """Rebuild a tokenizer saved with :meth:`state_dict`."""
        return cls(list(state["words"]), max_len=int(state["max_len"]))
