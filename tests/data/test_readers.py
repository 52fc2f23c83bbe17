"""Tests for latephase.data.readers: small files written in the real on-disk formats."""

from __future__ import annotations

import gzip
import json
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from latephase.data.readers import (
    TREC_CLASSES,
    WordTokenizer,
    find_file,
    load_cifar10,
    load_idx_dataset,
    read_ag_news_csv,
    read_glue_tsv,
    read_idx,
    read_text_table,
    read_trec,
)

from .formats import idx_bytes, write_cifar, write_idx, write_mnist
from .formats import raises_one_line as _raises_one_line

IDX_FMT = r"expected the standard MNIST IDX format \(magic 2051 for images, 2049 for labels\)"
CIFAR_FMT = r"expected the CIFAR-10 python version"


# --------------------------------------------------------------------------- IDX tests


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip_uint8(tmp_path: Path, gz: bool) -> None:
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    p = write_idx(tmp_path / "x-idx3-ubyte", arr, gz=gz)
    out = read_idx(p, expect_magic=2051)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, arr)
    out[0, 0, 0] = 99  # result is a writable copy


@pytest.mark.parametrize(
    ("code", "dtype"),
    [(0x09, np.int8), (0x0B, np.int16), (0x0C, np.int32), (0x0D, np.float32), (0x0E, np.float64)],
)
def test_read_idx_other_dtypes_are_big_endian(tmp_path: Path, code: int, dtype: Any) -> None:
    arr = (np.arange(6).reshape(3, 2) - 2).astype(dtype) * 3
    out = read_idx(write_idx(tmp_path / "a.idx", arr, code=code))
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, arr)


def test_read_idx_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "nope-idx1-ubyte"
    msg = _raises_one_line(r"file not found; " + IDX_FMT, read_idx, p)
    assert str(p.absolute()) in msg


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_truncated(tmp_path: Path, gz: bool) -> None:
    arr = np.zeros((10, 28, 28), dtype=np.uint8)
    data = idx_bytes(arr)[:1000]
    p = tmp_path / ("train-images-idx3-ubyte" + (".gz" if gz else ""))
    p.write_bytes(gzip.compress(data) if gz else data)
    msg = _raises_one_line(
        r"truncated IDX file: header says 10x28x28 uint8 \(7856 bytes\) but only 1000 bytes "
        r"present; " + IDX_FMT,
        read_idx,
        p,
        expect_magic=2051,
    )
    assert msg.startswith(str(p.absolute()) + ": ")


def test_read_idx_truncated_gzip_stream(tmp_path: Path) -> None:
    p = tmp_path / "train-labels-idx1-ubyte.gz"
    p.write_bytes(gzip.compress(idx_bytes(np.zeros(500, dtype=np.uint8)))[:30])
    _raises_one_line(r"truncated or corrupt gzip data .*; " + IDX_FMT, read_idx, p)


def test_read_idx_truncated_header(tmp_path: Path) -> None:
    p = tmp_path / "h"
    p.write_bytes(struct.pack(">HBB", 0, 8, 3) + struct.pack(">I", 5))
    _raises_one_line(r"truncated IDX file: header needs 16 bytes", read_idx, p)
    p.write_bytes(b"\x00\x00")
    _raises_one_line(r"truncated IDX file: only 2 bytes", read_idx, p)


def test_read_idx_over_long(tmp_path: Path) -> None:
    p = tmp_path / "x"
    p.write_bytes(idx_bytes(np.zeros(4, dtype=np.uint8)) + b"\x00")
    _raises_one_line(r"over-long IDX file: header says 4 uint8 \(12 bytes\) but 13", read_idx, p)


def test_read_idx_wrong_magic(tmp_path: Path) -> None:
    labels = write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(3, dtype=np.uint8))
    msg = _raises_one_line(
        r"wrong magic number 2049 \(0x00000801\), wanted 2051 \(0x00000803\); " + IDX_FMT,
        read_idx,
        labels,
        expect_magic=2051,
    )
    assert str(labels.absolute()) in msg
    png = tmp_path / "image.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    _raises_one_line(r"not an IDX file: magic number .*; " + IDX_FMT, read_idx, png)


def test_read_idx_unknown_type_code(tmp_path: Path) -> None:
    p = tmp_path / "x"
    p.write_bytes(struct.pack(">HBBI", 0, 0x07, 1, 1) + b"\x00")
    _raises_one_line(r"unknown IDX data type code 0x07", read_idx, p)


def test_find_file_variants(tmp_path: Path) -> None:
    stem = "train-images-idx3-ubyte"
    (tmp_path / (stem + ".gz")).write_bytes(b"")
    assert find_file(tmp_path, stem) == (tmp_path / (stem + ".gz")).absolute()
    (tmp_path / stem).write_bytes(b"")
    assert find_file(tmp_path, stem) == (tmp_path / stem).absolute()  # raw preferred
    (tmp_path / "t10k-labels.idx1-ubyte").write_bytes(b"")
    assert find_file(tmp_path, "t10k-labels-idx1-ubyte").name == "t10k-labels.idx1-ubyte"


def test_find_file_missing_lists_candidates(tmp_path: Path) -> None:
    msg = _raises_one_line(
        r"file not found \(looked for train-images-idx3-ubyte, train-images-idx3-ubyte.gz, "
        r"train-images.idx3-ubyte, train-images.idx3-ubyte.gz in .*\); " + IDX_FMT,
        find_file,
        tmp_path,
        "train-images-idx3-ubyte",
    )
    assert str(tmp_path.absolute() / "train-images-idx3-ubyte") in msg
    _raises_one_line(r"does not exist", find_file, tmp_path / "absent", "x-idx1-ubyte")


@pytest.mark.parametrize("gz", [False, True])
def test_load_idx_dataset_round_trip(tmp_path: Path, gz: bool) -> None:
    arrays = write_mnist(tmp_path, gz=gz)
    x_tr, y_tr, x_te, y_te = load_idx_dataset(tmp_path)
    assert x_tr.shape == (12, 28, 28) and x_tr.dtype == np.uint8
    assert x_te.shape == (5, 28, 28) and x_te.dtype == np.uint8
    assert y_tr.dtype == np.int64 and y_te.dtype == np.int64
    np.testing.assert_array_equal(x_tr, arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(y_tr, arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(x_te, arrays["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(y_te, arrays["t10k-labels-idx1-ubyte"])


def test_load_idx_dataset_missing_file(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte").unlink()
    msg = _raises_one_line(r"file not found .*; " + IDX_FMT, load_idx_dataset, tmp_path)
    assert "t10k-images-idx3-ubyte" in msg


def test_load_idx_dataset_swapped_files_wrong_magic(tmp_path: Path) -> None:
    arrays = write_mnist(tmp_path)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", arrays["t10k-labels-idx1-ubyte"])
    _raises_one_line(r"t10k-images-idx3-ubyte: wrong magic number 2049", load_idx_dataset, tmp_path)


def test_load_idx_dataset_count_mismatch(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(11, dtype=np.uint8))
    _raises_one_line(r"11 labels but 12 images", load_idx_dataset, tmp_path)


def test_load_idx_dataset_label_out_of_range(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    bad = np.zeros(12, dtype=np.uint8)
    bad[3] = 10
    write_idx(tmp_path / "train-labels-idx1-ubyte", bad)
    msg = _raises_one_line(
        r"1 label\(s\) out of range \[0, 9\] \(e.g. 10\)", load_idx_dataset, tmp_path
    )
    assert "train-labels-idx1-ubyte" in msg


def test_load_idx_dataset_wrong_image_shape(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((12, 32, 32), dtype=np.uint8))
    _raises_one_line(r"images are 32x32 but 28x28 was required", load_idx_dataset, tmp_path)
    x_tr, *_ = load_idx_dataset(tmp_path, image_shape=None)
    assert x_tr.shape == (12, 32, 32)


# --------------------------------------------------------------------------- CIFAR tests


@pytest.mark.parametrize("style", ["py2", "2", "4", "5"])
def test_load_cifar10_round_trip(tmp_path: Path, style: str) -> None:
    batches = write_cifar(tmp_path / "cifar-10-batches-py", style=style)
    x_tr, y_tr, x_te, y_te = load_cifar10(tmp_path)  # finds the subdirectory
    assert x_tr.shape == (4 + 5 + 6 + 7 + 8, 3, 32, 32) and x_tr.dtype == np.uint8
    assert x_te.shape == (9, 3, 32, 32) and y_te.dtype == np.int64 and y_tr.dtype == np.int64
    train = [batches[f"data_batch_{i}"] for i in range(1, 6)]
    np.testing.assert_array_equal(
        x_tr.reshape(-1, 3072), np.concatenate([b[b"data"] for b in train])
    )
    np.testing.assert_array_equal(y_tr, sum((b[b"labels"] for b in train), []))
    # channel-first layout: first 1024 values are the red plane, row-major
    np.testing.assert_array_equal(
        x_te[0, 0], batches["test_batch"][b"data"][0, :1024].reshape(32, 32)
    )
    np.testing.assert_array_equal(y_te, batches["test_batch"][b"labels"])
    # the batch directory itself also works as root
    x_tr2, *_ = load_cifar10(tmp_path / "cifar-10-batches-py")
    np.testing.assert_array_equal(x_tr, x_tr2)


def test_load_cifar10_missing_dir(tmp_path: Path) -> None:
    msg = _raises_one_line(
        r"file not found \(looked for data_batch_1 and test_batch .*; " + CIFAR_FMT,
        load_cifar10,
        tmp_path,
    )
    assert str(tmp_path.absolute()) in msg
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"")
    _raises_one_line(r"must be extracted first", load_cifar10, tmp_path)


def test_load_cifar10_missing_batch(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    msg = _raises_one_line(r"data_batch_3: file not found; " + CIFAR_FMT, load_cifar10, tmp_path)
    assert str((tmp_path / "data_batch_3").absolute()) in msg


def test_load_cifar10_truncated(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    p = tmp_path / "test_batch"
    p.write_bytes(p.read_bytes()[:500])
    msg = _raises_one_line(
        r"test_batch: truncated or corrupt pickle .*; " + CIFAR_FMT, load_cifar10, tmp_path
    )
    assert msg.startswith(str(p.absolute()) + ": ")
    p.write_bytes(b"")
    _raises_one_line(r"test_batch: empty file", load_cifar10, tmp_path)


@pytest.mark.parametrize(
    ("obj", "match"),
    [
        ([1, 2, 3], r"pickle holds a list, not a dict"),
        ({b"data": np.zeros((2, 3072), np.uint8)}, r"dict lacks b'data' or b'labels'"),
        (
            {b"data": np.zeros((2, 3072), np.uint8), b"fine_labels": [0, 1]},
            r"looks like CIFAR-100",
        ),
        ({b"data": np.zeros((2, 1024), np.uint8), b"labels": [0, 1]}, r"shape \(2, 1024\)"),
        ({b"data": np.zeros((2, 3072), np.int64), b"labels": [0, 1]}, r"dtype int64"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, r"1 labels but 2 images"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, r"out of range \[0, 9\]"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": ["a", "b"]}, r"not a flat list"),
    ],
)
def test_load_cifar10_wrong_structure(tmp_path: Path, obj: Any, match: str) -> None:
    write_cifar(tmp_path)
    (tmp_path / "data_batch_2").write_bytes(pickle.dumps(obj, protocol=2))
    msg = _raises_one_line(match + r".*; " + CIFAR_FMT, load_cifar10, tmp_path)
    assert str((tmp_path / "data_batch_2").absolute()) in msg


def test_load_cifar10_not_a_pickle(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    (tmp_path / "data_batch_1").write_bytes(b"this is not a pickle at all")
    _raises_one_line(r"data_batch_1: truncated or corrupt pickle", load_cifar10, tmp_path)


class _Evil:
    def __reduce__(self) -> tuple[Any, tuple[()]]:
        import os

        return (os.getcwd, ())


def test_load_cifar10_refuses_arbitrary_globals(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": _Evil(), b"labels": []}))
    _raises_one_line(r"refusing to load global (posix|nt)\.getcwd", load_cifar10, tmp_path)


# --------------------------------------------------------------------------- text readers


def test_read_glue_tsv(tmp_path: Path) -> None:
    p = tmp_path / "train.tsv"
    p.write_text(
        "sentence\tlabel\nhide new secretions from the parental units \t0\n"
        'contains no wit , only labored gags \t0\nthe "greatest" film \t1\n\n',
        encoding="utf-8",
    )
    texts, labels = read_glue_tsv(p)
    assert texts == [
        "hide new secretions from the parental units ",
        "contains no wit , only labored gags ",
        'the "greatest" film ',
    ]
    assert labels.dtype == np.int64 and labels.tolist() == [0, 0, 1]


def test_read_glue_tsv_errors(tmp_path: Path) -> None:
    p = tmp_path / "test.tsv"
    fmt = r"; expected a GLUE SST-2 TSV file"
    p.write_text("index\tsentence\n0\tuneasy mishmash of styles and genres .\n")
    _raises_one_line(
        r"lacks a 'sentence' and/or 'label' column \(GLUE test files have no labels\)" + fmt,
        read_glue_tsv,
        p,
    )
    p.write_text("sentence\tlabel\ngood\t1\nbad\n")
    _raises_one_line(r"line 3 has 1 tab-separated fields, header has 2" + fmt, read_glue_tsv, p)
    p.write_text("sentence\tlabel\ngood\tpositive\n")
    _raises_one_line(r"line 2: label 'positive' is not an integer" + fmt, read_glue_tsv, p)
    p.write_text("sentence\tlabel\ngood\t2\n")
    _raises_one_line(r"1 label\(s\) out of range \[0, 1\] \(e.g. 2\)" + fmt, read_glue_tsv, p)
    p.write_text("")
    _raises_one_line(r"empty file" + fmt, read_glue_tsv, p)
    _raises_one_line(r"file not found" + fmt, read_glue_tsv, tmp_path / "absent.tsv")


def test_read_trec_latin1(tmp_path: Path) -> None:
    p = tmp_path / "train_5500.label"
    lines = [
        "DESC:manner How did serfdom develop in and then leave Russia ?",
        "ENTY:cremat What films featured the character Popeye Doyle ?",
        "HUM:ind Who was Galileo ?",
        "ABBR:exp What is the full form of .com ?",
        "LOC:other What is the capital of Bogot\xe1 's country ?",
        "NUM:date When was Ozzy Osbourne born ?",
    ]
    p.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    texts, labels = read_trec(p)
    assert labels.tolist() == [1, 2, 3, 0, 4, 5]
    assert texts[0] == "How did serfdom develop in and then leave Russia ?"
    assert texts[4] == "What is the capital of Bogot\xe1 's country ?"
    assert TREC_CLASSES == ("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM")


def test_read_trec_errors(tmp_path: Path) -> None:
    p = tmp_path / "t.label"
    p.write_text("DESC:def What is x ?\nWhat is y ?\n")
    _raises_one_line(
        r"line 2 does not look like 'COARSE:fine question'; expected the TREC", read_trec, p
    )
    p.write_text("FOO:bar What is x ?\n")
    _raises_one_line(r"line 1: unknown coarse label 'FOO'", read_trec, p)
    _raises_one_line(r"file not found; expected the TREC", read_trec, tmp_path / "none.label")


def test_read_ag_news_csv(tmp_path: Path) -> None:
    p = tmp_path / "train.csv"
    p.write_text(
        '"3","Wall St. Bears Claw Back Into the Black (Reuters)","Reuters - Short-sellers, '
        "Wall Street's dwindling\\band of ultra-cynics, are seeing green again.\"\n"
        '"1","Title, with comma","He said ""hello"", then left."\n'
        '"4","Multi\nline","desc"\n',
        encoding="utf-8",
    )
    texts, labels = read_ag_news_csv(p)
    assert labels.tolist() == [2, 0, 3]
    assert texts[0].startswith("Wall St. Bears Claw Back Into the Black (Reuters) Reuters - Short")
    assert "Short-sellers, Wall Street's" in texts[0]
    assert texts[1] == 'Title, with comma He said "hello", then left.'
    assert texts[2] == "Multi\nline desc"
    # Kaggle-style header is tolerated
    p.write_text('Class Index,Title,Description\n"2","t","d"\n')
    assert read_ag_news_csv(p)[1].tolist() == [1]


def test_read_ag_news_csv_errors(tmp_path: Path) -> None:
    p = tmp_path / "x.csv"
    fmt = r"; expected the original AG News CSV"
    p.write_text('"5","t","d"\n')
    _raises_one_line(r"record 1: class index 5 out of range 1-4" + fmt, read_ag_news_csv, p)
    p.write_text('"1","t"\n')
    _raises_one_line(r"record 1 has 2 columns, not 3" + fmt, read_ag_news_csv, p)
    p.write_text('"1","t","d"\n"x","t","d"\n')
    _raises_one_line(r"record 2: class index 'x' is not an integer" + fmt, read_ag_news_csv, p)
    _raises_one_line(r"file not found" + fmt, read_ag_news_csv, tmp_path / "absent.csv")


@pytest.mark.parametrize("fmt", ["sst2", "trec", "ag_news"])
def test_truncated_text_files(tmp_path: Path, fmt: str) -> None:
    """A text file cut off mid-record (a partial download) is a one-line error naming the
    file and the expected format, not a silently shorter dataset."""
    p = tmp_path / "cut"
    content, reader, expected = {
        "sst2": ("sentence\tlabel\ngood film\t1\nbad fi", read_glue_tsv,
                 "expected a GLUE SST-2 TSV file"),
        "trec": ("DESC:def What is x ?\nHUM:ind Who wa", None, ""),
        "ag_news": ('"1","t","d"\n"2","Phelps Wins","He said', read_ag_news_csv,
                    "expected the original AG News CSV"),
    }[fmt]
    p.write_text(content)
    if reader is None:  # a TREC line cut mid-question is still a valid line: nothing to detect
        assert read_trec(p)[0][-1] == "Who wa"
        return
    msg = _raises_one_line(expected, reader, p)
    assert str(p) in msg or p.name in msg


def test_read_text_table_csv_string_labels(tmp_path: Path) -> None:
    p = tmp_path / "d.csv"
    p.write_text('id,text,sentiment\n1,"good, really",pos\n2,bad,neg\n3,meh,neutral\n4,great,pos\n')
    texts, labels, names = read_text_table(p, "text", "sentiment")
    assert texts == ["good, really", "bad", "meh", "great"]
    assert names == ["neg", "neutral", "pos"]
    assert labels.dtype == np.int64 and labels.tolist() == [2, 0, 1, 2]


def test_read_text_table_csv_int_labels_and_tsv(tmp_path: Path) -> None:
    p = tmp_path / "d.csv"
    p.write_text("text,label\na,0\nb,2\n")
    texts, labels, names = read_text_table(p, "text", "label")
    assert labels.tolist() == [0, 2] and names == ["0", "1", "2"]
    t = tmp_path / "d.tsv"
    t.write_text("label\ttext\n1\tx y\n")
    assert read_text_table(t, "text", "label")[0] == ["x y"]


def test_read_text_table_jsonl(tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl"
    rows = [{"text": "a b", "label": 1}, {"text": "c", "label": 0}, {"text": "d", "label": 1}]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    texts, labels, names = read_text_table(p, "text", "label")
    assert texts == ["a b", "c", "d"] and labels.tolist() == [1, 0, 1] and names == ["0", "1"]
    p.write_text(json.dumps({"t": "x", "y": "spam"}) + "\n" + json.dumps({"t": "z", "y": "ham"}))
    texts, labels, names = read_text_table(p, "t", "y")
    assert names == ["ham", "spam"] and labels.tolist() == [1, 0]


def test_read_text_table_errors(tmp_path: Path) -> None:
    fmt = r"; expected a .csv/.tsv file with a header row or a .jsonl file"
    p = tmp_path / "d.csv"
    p.write_text("text,label\na,0\n")
    _raises_one_line(
        r"no column 'sentence' \(columns: text, label\)" + fmt,
        read_text_table,
        p,
        "sentence",
        "label",
    )
    p.write_text("text,label\na,-1\n")
    _raises_one_line(r"negative integer label -1", read_text_table, p, "text", "label")
    p.write_text("text,label\n")
    _raises_one_line(r"no data rows" + fmt, read_text_table, p, "text", "label")
    j = tmp_path / "d.jsonl"
    j.write_text('{"text": "a", "label": 0}\n{"text": "b", "label": \n')
    _raises_one_line(
        r"line 2 is not valid JSON \(Expecting value\)" + fmt, read_text_table, j, "text", "label"
    )
    j.write_text('{"text": "a", "label": 0}\n{"text": "b"}\n')
    _raises_one_line(
        r"line 2: 'label' is missing or not an int or string" + fmt,
        read_text_table,
        j,
        "text",
        "label",
    )
    j.write_text('{"text": "a", "label": 0.5}\n')
    _raises_one_line(r"not an int or string", read_text_table, j, "text", "label")
    x = tmp_path / "d.parquet"
    x.write_bytes(b"PAR1")
    _raises_one_line(r"unsupported file extension '.parquet'" + fmt, read_text_table, x, "t", "l")
    _raises_one_line(r"file not found" + fmt, read_text_table, tmp_path / "no.csv", "t", "l")


# --------------------------------------------------------------------------- tokenizer


def test_tokenizer_vocab_is_deterministic() -> None:
    texts = ["The cat sat.", "the DOG sat!", "a bird"]
    tok = WordTokenizer.fit(texts, vocab_size=7, max_len=8)
    # counts: the 2, sat 2, then '.', '!', a, bird, cat, dog once (alphabetical tie break)
    assert tok.itos == ["[PAD]", "[UNK]", "[CLS]", "sat", "the", "!", "."]
    assert tok.vocab_size == len(tok) == 7
    tok2 = WordTokenizer.fit(list(reversed(texts)), vocab_size=7, max_len=8)
    assert tok2.itos == tok.itos
    rebuilt = WordTokenizer.from_state_dict(json.loads(json.dumps(tok.state_dict())))
    assert rebuilt.itos == tok.itos and rebuilt.max_len == 8


def test_tokenizer_encode_padding_and_unk() -> None:
    tok = WordTokenizer.fit(["the cat sat", "the dog"], vocab_size=100, max_len=6)
    ids, mask = tok.encode(["The cat", "zebra sat"])
    assert ids.dtype == torch.long and mask.dtype == torch.bool
    assert ids.shape == mask.shape == (2, 6)
    the, cat, sat = tok.stoi["the"], tok.stoi["cat"], tok.stoi["sat"]
    assert ids[0].tolist() == [WordTokenizer.CLS, the, cat, 0, 0, 0]
    assert ids[1].tolist() == [WordTokenizer.CLS, WordTokenizer.UNK, sat, 0, 0, 0]
    assert mask[0].tolist() == [False, False, False, True, True, True]
    assert torch.equal(mask, ids == WordTokenizer.PAD)


def test_tokenizer_truncation() -> None:
    tok = WordTokenizer.fit(["a b c d e f g h"], vocab_size=50, max_len=4)
    ids, mask = tok.encode(["a b c d e f g h", ""])
    assert ids.shape == (2, 4)
    assert ids[0].tolist() == [WordTokenizer.CLS, tok.stoi["a"], tok.stoi["b"], tok.stoi["c"]]
    assert not mask[0].any()
    assert ids[1].tolist() == [WordTokenizer.CLS, 0, 0, 0]
    assert mask[1].tolist() == [False, True, True, True]


def test_tokenizer_default_max_len_and_punctuation() -> None:
    tok = WordTokenizer.fit(["it 's a film , isn't it ?"], vocab_size=1000)
    assert tok.max_len == 128
    assert WordTokenizer.tokenize("Isn't it, GREAT?!") == [
        "isn",
        "'",
        "t",
        "it",
        ",",
        "great",
        "?",
        "!",
    ]
    ids, mask = tok.encode(["film"])
    assert ids.shape == (1, 128) and int((~mask).sum()) == 2
