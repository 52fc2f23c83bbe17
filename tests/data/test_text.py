"""Text datasets: token ids [n, max_len], tokenizer fitted on training texts only, labels."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch

from latephase.config import DataConfig
from latephase.data import build_dataset
from latephase.data.readers import TREC_CLASSES, WordTokenizer

from .formats import raises_one_line, write_ag_news, write_sst2, write_trec


def _cfg(name: str, **kw: Any) -> DataConfig:
    return DataConfig(name=name, **kw)


def _check_tokens(d: Any, n_train: int, max_len: int, k: int) -> None:
    assert d.x_train.shape == (n_train, max_len) and d.x_train.dtype == torch.long
    assert d.x_test.shape[1] == max_len and d.x_test.dtype == torch.long
    assert d.y_train.dtype == torch.long and d.num_classes == k == len(d.meta["classes"])
    assert torch.bincount(d.y_train, minlength=k).min() >= n_train // k
    assert d.meta["pad_id"] == 0 and (d.x_train[:, 0] == WordTokenizer.CLS).all()
    assert (
        int(d.x_train.max()) < d.meta["vocab_size"] and int(d.x_test.max()) < d.meta["vocab_size"]
    )
    tok = WordTokenizer.from_state_dict(json.loads(json.dumps(d.meta["tokenizer"])))
    assert tok.vocab_size == d.meta["vocab_size"] and tok.max_len == max_len
    assert "BERT" in d.meta["tokenization"]


@pytest.mark.parametrize(
    ("name", "write", "k"),
    [("sst2", write_sst2, 2), ("trec", write_trec, 6), ("ag-news", write_ag_news, 4)],
)
def test_text_datasets_from_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, write: Any, k: int
) -> None:
    write(tmp_path / name, copies=3)
    monkeypatch.setenv("LATEPHASE_DATA", str(tmp_path))
    cfg = _cfg(name, train_size=k, max_len=12)
    d = build_dataset(cfg)
    _check_tokens(d, k, 12, k)
    assert torch.bincount(d.y_train, minlength=k).tolist() == [1] * k
    assert str(tmp_path / name) in d.meta["source"]
    again = build_dataset(cfg)
    assert torch.equal(again.x_train, d.x_train) and torch.equal(again.x_test, d.x_test)
    seeds = {
        tuple(
            build_dataset(_cfg(name, train_size=k, max_len=12, seed=s)).x_train.flatten().tolist()
        )
        for s in range(6)
    }
    assert len(seeds) > 1  # different seeds draw different training rows
    sub = build_dataset(_cfg(name, train_size=k, max_len=12, test_size=5))
    assert sub.x_test.shape == (5, 12)


def test_sst2_dev_held_out_and_tokenizer_from_training_only(tmp_path: Path) -> None:
    write_sst2(tmp_path / "SST-2")  # the GLUE archive's folder name
    (tmp_path / "SST-2" / "dev.tsv").write_text(
        "sentence\tlabel\nzyzzyva greatest\t1\nbad film\t0\n", encoding="utf-8"
    )
    d = build_dataset(_cfg("sst2", root=str(tmp_path), train_size=12, max_len=6))
    assert d.meta["classes"] == ["negative", "positive"]
    assert d.y_test.tolist() == [1, 0]
    tok = WordTokenizer.from_state_dict(d.meta["tokenizer"])
    assert "zyzzyva" not in tok.stoi and "greatest" in tok.stoi  # fitted on train.tsv only
    assert d.x_test[0, :3].tolist() == [WordTokenizer.CLS, WordTokenizer.UNK, tok.stoi["greatest"]]
    assert d.x_test[0, 3:].tolist() == [0, 0, 0]
    small = build_dataset(_cfg("sst2", root=str(tmp_path), train_size=12, vocab_size=5))
    assert small.meta["vocab_size"] == 5 and int(small.x_train.max()) <= 4


def test_trec_classes_and_errors(tmp_path: Path) -> None:
    write_trec(tmp_path)
    d = build_dataset(_cfg("trec", root=str(tmp_path), train_size=12))
    assert d.meta["classes"] == list(TREC_CLASSES)
    raises_one_line(
        r"data.train_size=13 needs 3 examples of class 0 but only 2 exist; choose "
        r"data.train_size <= 12",
        build_dataset,
        _cfg("trec", root=str(tmp_path), train_size=13),
    )
    (tmp_path / "TREC_10.label").write_text("What is this ?\n")
    msg = raises_one_line(
        r"TREC_10.label: line 1 does not look like 'COARSE:fine question'; "
        r"expected the TREC",
        build_dataset,
        _cfg("trec", root=str(tmp_path), train_size=12),
    )
    assert str((tmp_path / "TREC_10.label").absolute()) in msg


def test_missing_held_out_file_names_it(tmp_path: Path) -> None:
    write_sst2(tmp_path)
    (tmp_path / "dev.tsv").unlink()
    raises_one_line(
        r"dev.tsv: file not found; expected a GLUE SST-2 TSV file",
        build_dataset,
        _cfg("sst2", root=str(tmp_path), train_size=4),
    )
    write_ag_news(tmp_path)
    (tmp_path / "test.csv").write_text('"9","t","d"\n')
    raises_one_line(
        r"test.csv: record 1: class index 9 out of range 1-4; expected the original "
        r"AG News CSV",
        build_dataset,
        _cfg("ag-news", root=str(tmp_path), train_size=4),
    )


def test_bad_tokenizer_settings_are_data_errors(tmp_path: Path) -> None:
    write_sst2(tmp_path)
    raises_one_line(
        r"cannot build the tokenizer: max_len must be >= 2",
        build_dataset,
        _cfg("sst2", root=str(tmp_path), train_size=4, max_len=1),
    )


# --------------------------------------------------------------------------- csv / jsonl


def _write_table(path: Path, rows: list[tuple[str, Any]]) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps({"review": t, "stars": y}) + "\n" for t, y in rows))
    else:
        path.write_text("review,stars\n" + "".join(f'"{t}",{y}\n' for t, y in rows))
    return path


TRAIN_ROWS = [
    ("good movie", "pos"),
    ("bad plot", "neg"),
    ("fine, ok", "neutral"),
    ("great cast", "pos"),
    ("awful", "neg"),
    ("so so", "neutral"),
] * 2


@pytest.mark.parametrize("ext", [".csv", ".jsonl"])
def test_table_string_labels(tmp_path: Path, ext: str) -> None:
    name = ext[1:]
    train = _write_table(tmp_path / f"train{ext}", TRAIN_ROWS)
    test = _write_table(tmp_path / f"test{ext}", [("good", "pos"), ("meh", "neutral")])
    cfg = _cfg(
        name,
        train_file=str(train),
        test_file=str(test),
        text_column="review",
        label_column="stars",
        train_size=6,
        max_len=5,
    )
    d = build_dataset(cfg)
    _check_tokens(d, 6, 5, 3)
    assert d.meta["classes"] == ["neg", "neutral", "pos"]  # sorted unique training labels
    assert d.y_test.tolist() == [2, 1]
    _write_table(test, [("good", "pos"), ("strange", "mixed"), ("odd", "other")])
    msg = raises_one_line(
        r"held-out label\(s\) 'mixed', 'other' do not occur in the training "
        rf"file train{ext} \(training classes: neg, neutral, pos\)",
        build_dataset,
        cfg,
    )
    assert msg.startswith(str(test.absolute()) + ": ")


def test_table_integer_labels_relative_paths_and_no_test_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [(f"text number {i}", 1 + i % 3) for i in range(12)]  # labels 1..3
    _write_table(tmp_path / "train.csv", rows)
    monkeypatch.setenv("LATEPHASE_DATA", str(tmp_path))  # relative paths resolve under it
    d = build_dataset(
        _cfg(
            "csv", train_file="train.csv", text_column="review", label_column="stars", train_size=6
        )
    )
    assert d.meta["classes"] == ["1", "2", "3"] and d.num_classes == 3
    assert torch.bincount(d.y_train).tolist() == [2, 2, 2]
    assert len(d.y_test) == 6  # without data.test_file the other training rows are held out
    train_ids = {tuple(r.tolist()) for r in d.x_train}
    assert not any(tuple(r.tolist()) in train_ids for r in d.x_test)


def test_table_errors(tmp_path: Path) -> None:
    raises_one_line(r"dataset 'jsonl' needs data.train_file=PATH", build_dataset, _cfg("jsonl"))
    p = _write_table(tmp_path / "train.csv", TRAIN_ROWS)
    raises_one_line(
        r"train.csv: data.name=jsonl reads .jsonl/.ndjson files \(use data.name=csv "
        r"for the other format\); expected a .csv/.tsv file",
        build_dataset,
        _cfg("jsonl", train_file=str(p)),
    )
    raises_one_line(
        r"train.csv: no column 'text' \(columns: review, stars\); expected",
        build_dataset,
        _cfg("csv", train_file=str(p)),
    )
    raises_one_line(
        r"absent.csv: file not found",
        build_dataset,
        _cfg("csv", train_file=str(tmp_path / "absent.csv")),
    )


# --------------------------------------------------------------------------- download


class _Split(list):  # type: ignore[type-arg]
    def __init__(self, rows: list[dict[str, Any]], features: dict[str, Any]) -> None:
        super().__init__(rows)
        self.features = features


def _names(*names: str) -> Any:
    return types.SimpleNamespace(names=list(names))


def _fake_hub() -> dict[str, dict[str, _Split]]:
    sst = {
        s: _Split(
            [
                {"sentence": "a fine film ", "label": 1, "idx": 0},
                {"sentence": "dull\tand long", "label": 0, "idx": 1},
            ]
            * 2,
            {},
        )
        for s in ("train", "validation", "test")
    }
    trec_feats = {
        "coarse_label": _names("ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM"),
        "fine_label": _names(
            "ABBR:abb", "ENTY:animal", "DESC:def", "HUM:ind", "LOC:city", "NUM:date"
        ),
    }
    trec = {
        s: _Split(
            [{"text": f"question {c} ?", "coarse_label": c, "fine_label": c} for c in range(6)] * 2,
            trec_feats,
        )
        for s in ("train", "test")
    }
    ag = {
        s: _Split([{"text": f'story "{c}", with comma', "label": c} for c in range(4)] * 2, {})
        for s in ("train", "test")
    }
    return {"nyu-mll/glue": sst, "CogComp/trec": trec, "fancyzhx/ag_news": ag}


@pytest.mark.parametrize(("name", "k"), [("sst2", 2), ("trec", 6), ("ag-news", 4)])
def test_download_with_hugging_face_datasets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, k: int
) -> None:
    hub, calls = _fake_hub(), []

    def load_dataset(path: str, *args: str, cache_dir: str | None = None) -> Any:
        calls.append((path, args, cache_dir))
        return hub[path]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    raises_one_line(r"set data.root=DIR or LATEPHASE_DATA=DIR", build_dataset, _cfg(name))
    assert calls == []  # never downloads unless asked
    d = build_dataset(_cfg(name, root=str(tmp_path), download=True, train_size=k))
    assert len(calls) == 1 and calls[0][2].startswith(str(tmp_path))
    _check_tokens(d, k, 128, k)
    assert torch.bincount(d.y_test, minlength=k).tolist() == [2] * k
    if name == "trec":  # coarse names written by name, not by the hub's label order
        tok = WordTokenizer.from_state_dict(d.meta["tokenizer"])
        desc = d.y_test.tolist().index(TREC_CLASSES.index("DESC"))
        assert d.x_test[desc, 2].item() == tok.stoi["2"]  # "question 2 ?" is hub class DESC
    build_dataset(_cfg(name, root=str(tmp_path), download=True, train_size=k))
    assert len(calls) == 1  # files present: no second download


def test_download_needs_datasets_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)
    for name in ("sst2", "trec", "ag-news"):
        raises_one_line(
            rf"data.download=true for {name} needs the package 'datasets': "
            r"pip install datasets",
            build_dataset,
            _cfg(name, root=str(tmp_path), download=True),
        )
    assert not any(tmp_path.iterdir())  # nothing created before the package check


def test_tokenizer_never_sees_held_out_rows_drawn_from_the_training_file(tmp_path: Path) -> None:
    """Without data.test_file the held-out rows come from the training file: the vocabulary
    must be fitted on the chosen training rows only, or held-out words would leak into it."""
    rows = [(f"shared word{i}", "a" if i % 2 else "b") for i in range(20)]
    train = _write_table(tmp_path / "train.jsonl", rows)
    d = build_dataset(
        _cfg("jsonl", train_file=str(train), text_column="review", label_column="stars",
             train_size=6)
    )
    tok = WordTokenizer.from_state_dict(d.meta["tokenizer"])
    assert len(d.y_test) == 14 and "shared" in tok.stoi
    held_out_words = {f"word{i}" for i in range(20)} - {
        tok.itos[int(t)] for t in d.x_train.flatten()
    }
    assert len(held_out_words) == 14 and not held_out_words & set(tok.stoi)
    assert (d.x_test[:, 2] == WordTokenizer.UNK).all()  # [CLS] shared <unk>
