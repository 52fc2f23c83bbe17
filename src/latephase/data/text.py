"""Text classification datasets as int64 token ids [n, max_len].

Every builder reads the original files (see :mod:`latephase.data.readers`), draws a
class-balanced seeded ``train_size`` subset of the training split, fits a
:class:`~latephase.data.readers.WordTokenizer` on those training texts only, and encodes
both splits to ``[CLS] w1 w2 ... [PAD] ...`` rows of ``max_len`` ids (pad id 0, unk 1,
CLS 2).  ``meta`` carries ``vocab_size`` (the embedding-table size, specials included),
``pad_id``, the tokenizer state (``WordTokenizer.from_state_dict`` rebuilds it), the class
names and the source.  (The Transformer prepends its own learned CLS and reads g(x) there; the
data-side ``[CLS]`` id is an ordinary token to it, see :mod:`latephase.models.transformer`.)

Documented deviation: the paper tokenizes with BERT word pieces; here the vocabulary is
word-level and built offline from the training texts, so nothing is downloaded.

Datasets: ``sst2`` (GLUE SST-2 TSV; train.tsv trained on, dev.tsv held out because the GLUE
test set has no labels), ``trec`` (6 coarse classes; train_5500.label / TREC_10.label),
``ag-news`` (original train.csv / test.csv, 4 classes), and the generic ``csv`` / ``jsonl``
tables named by ``data.train_file`` / ``data.test_file``.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latephase.config import DataConfig
from latephase.data.base import (
    ENV_VAR,
    Dataset,
    FileSource,
    balanced_indices,
    data_root,
    locate_files,
    require,
    take_subset,
)
from latephase.data.readers import (
    AG_NEWS_FORMAT,
    GLUE_TSV_FORMAT,
    TEXT_TABLE_FORMAT,
    TREC_CLASSES,
    TREC_FORMAT,
    WordTokenizer,
    read_ag_news_csv,
    read_glue_tsv,
    read_text_table,
    read_trec,
)
from latephase.errors import DataError

Texts = tuple[list[str], np.ndarray]

TOKENIZATION_NOTE = (
    "word-level WordTokenizer fitted on the training texts (deviation: the "
    "paper uses BERT word pieces)"
)


# --------------------------------------------------------------------------- shared builder


def text_dataset(
    cfg: DataConfig, train: Texts, test: Texts | None, classes: list[str], source: str
) -> Dataset:
    """Balanced ``train_size`` training texts, tokenized; held out: ``test`` or (None) the
    training rows not chosen; then a seeded ``test_size`` subset of the held-out rows.

    Returns x int64 [n, max_len] (pad 0), y int64 [n].
    """
    rng = np.random.default_rng(cfg.seed)
    texts, y = train
    tr = balanced_indices(y, cfg.train_size, rng, len(classes))
    if test is None:
        rest = np.setdiff1d(np.arange(len(y)), tr)
        test = ([texts[i] for i in rest], y[rest])
    te_texts, y_te = test
    keep = take_subset(len(y_te), cfg.test_size, rng)
    if keep is not None:
        te_texts, y_te = [te_texts[i] for i in keep], y_te[keep]
    try:
        tok = WordTokenizer.fit(
            [texts[i] for i in tr], vocab_size=cfg.vocab_size, max_len=cfg.max_len
        )
    except ValueError as exc:
        raise DataError(
            f"cannot build the tokenizer: {exc} (data.vocab_size, data.max_len)"
        ) from None
    x_tr, _ = tok.encode([texts[i] for i in tr])
    x_te, _ = tok.encode(te_texts)
    meta: dict[str, Any] = {
        "source": source,
        "classes": list(classes),
        "vocab_size": tok.vocab_size,
        "pad_id": WordTokenizer.PAD,
        "cls_id": WordTokenizer.CLS,
        "unk_id": WordTokenizer.UNK,
        "max_len": tok.max_len,
        "tokenizer": tok.state_dict(),
        "tokenization": TOKENIZATION_NOTE,
    }
    return Dataset(
        x_train=x_tr,
        y_train=torch.as_tensor(y[tr], dtype=torch.long),
        x_test=x_te,
        y_test=torch.as_tensor(y_te, dtype=torch.long),
        num_classes=len(classes),
        meta=meta,
    )


# --------------------------------------------------------------------------- downloads


def _hf_splits(name: str, target: Path, *args: str) -> Any:
    """``datasets.load_dataset(*args)`` with its cache under ``target`` (download=true only)."""
    hf = require("datasets", "datasets", f"data.download=true for {name}")
    target.mkdir(parents=True, exist_ok=True)
    return hf.load_dataset(*args, cache_dir=str(target / ".hf-cache"))


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _fetch_sst2(target: Path) -> None:
    """GLUE SST-2 from the Hugging Face hub, written as train.tsv and dev.tsv."""
    splits = _hf_splits("sst2", target, "nyu-mll/glue", "sst2")
    for split, fname in (("train", "train.tsv"), ("validation", "dev.tsv")):
        rows = [f"{_one_line(r['sentence'])}\t{int(r['label'])}" for r in splits[split]]
        (target / fname).write_text("\n".join(["sentence\tlabel", *rows]) + "\n", encoding="utf-8")


def _fetch_trec(target: Path) -> None:
    """TREC from the Hugging Face hub, written as train_5500.label and TREC_10.label."""
    splits = _hf_splits("trec", target, "CogComp/trec")
    feats = splits["train"].features
    coarse, fine = feats["coarse_label"].names, feats["fine_label"].names
    for split, fname in (("train", "train_5500.label"), ("test", "TREC_10.label")):
        rows = [
            f"{coarse[r['coarse_label']]}:{fine[r['fine_label']].split(':')[-1]} "
            f"{_one_line(r['text'])}"
            for r in splits[split]
        ]
        (target / fname).write_text("\n".join(rows) + "\n", encoding="utf-8")


def _fetch_ag_news(target: Path) -> None:
    """AG News from the Hugging Face hub, written as the original train.csv and test.csv
    (class index 1-4, an empty title -- the hub joins title and description -- and text)."""
    splits = _hf_splits("ag-news", target, "fancyzhx/ag_news")
    for split, fname in (("train", "train.csv"), ("test", "test.csv")):
        with open(target / fname, "w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh, quoting=csv.QUOTE_ALL)
            for r in splits[split]:
                writer.writerow([int(r["label"]) + 1, "", _one_line(r["text"])])


# --------------------------------------------------------------------------- file datasets


@dataclass(frozen=True)
class TextSpec:
    """A text dataset in its original files: training and held-out file, reader, classes."""

    source: FileSource
    read: Callable[[Path], Texts]
    classes: tuple[str, ...]

    def build(self, cfg: DataConfig) -> Dataset:
        directory = locate_files(cfg, self.source)
        train_file, test_file = self.source.files
        return text_dataset(
            cfg,
            self.read(directory / train_file),
            self.read(directory / test_file),
            list(self.classes),
            f"{self.source.name} files in {directory}",
        )


TEXT_SPECS: dict[str, TextSpec] = {
    "sst2": TextSpec(
        FileSource("sst2", ("train.tsv", "dev.tsv"), GLUE_TSV_FORMAT, ("SST-2",), _fetch_sst2),
        read_glue_tsv,
        ("negative", "positive"),
    ),
    "trec": TextSpec(
        FileSource("trec", ("train_5500.label", "TREC_10.label"), TREC_FORMAT, (), _fetch_trec),
        read_trec,
        TREC_CLASSES,
    ),
    "ag-news": TextSpec(
        FileSource(
            "ag-news", ("train.csv", "test.csv"), AG_NEWS_FORMAT, ("ag_news_csv",), _fetch_ag_news
        ),
        read_ag_news_csv,
        ("World", "Sports", "Business", "Sci/Tech"),
    ),
}


def build_sst2(cfg: DataConfig) -> Dataset:
    """GLUE SST-2 (2 classes): train.tsv trained on, dev.tsv held out.  x int64 [n, max_len]."""
    return TEXT_SPECS["sst2"].build(cfg)


def build_trec(cfg: DataConfig) -> Dataset:
    """TREC (6 coarse classes): train_5500.label / TREC_10.label.  x int64 [n, max_len]."""
    return TEXT_SPECS["trec"].build(cfg)


def build_ag_news(cfg: DataConfig) -> Dataset:
    """AG News (4 classes): original train.csv / test.csv.  x int64 [n, max_len]."""
    return TEXT_SPECS["ag-news"].build(cfg)


# --------------------------------------------------------------------------- csv / jsonl

TABLE_SUFFIXES: dict[str, tuple[str, ...]] = {
    "csv": (".csv", ".tsv"),
    "jsonl": (".jsonl", ".ndjson"),
}


def _table_path(cfg: DataConfig, file: str) -> Path:
    """``file`` as given if absolute; a relative path is looked up under the data root
    (``data.root`` or ``$LATEPHASE_DATA``) first, then the working directory."""
    p = Path(file).expanduser()
    root = data_root(cfg.name, cfg.root)
    if not p.is_absolute() and root is not None and (root / p).exists():
        p = root / p
    suffixes = TABLE_SUFFIXES[cfg.name]
    if p.suffix.lower() not in suffixes:
        other = "jsonl" if cfg.name == "csv" else "csv"
        raise DataError(
            f"{p.absolute()}: data.name={cfg.name} reads {'/'.join(suffixes)} "
            f"files (use data.name={other} for the other format); expected "
            f"{TEXT_TABLE_FORMAT}"
        )
    return p


def build_table(cfg: DataConfig) -> Dataset:
    """Generic ``csv`` (.csv/.tsv with a header) or ``jsonl`` text classification tables.

    ``data.train_file`` (required) and ``data.test_file`` (optional: without it the
    training rows not chosen are held out) with columns ``data.text_column`` and
    ``data.label_column``.  Labels may be integers or strings; the sorted unique training
    labels (numeric order for integers) become classes 0..K-1, and a held-out label that
    does not occur in the training file is an error.  x int64 [n, max_len].
    """
    if cfg.train_file is None:
        raise DataError(
            f"dataset {cfg.name!r} needs data.train_file=PATH (and optionally "
            f"data.test_file=PATH): {TEXT_TABLE_FORMAT} {cfg.text_column!r} and "
            f"{cfg.label_column!r}; relative paths are looked up under data.root or {ENV_VAR}"
        )
    train_path = _table_path(cfg, cfg.train_file)
    texts, ids, names = read_text_table(train_path, cfg.text_column, cfg.label_column)
    present = np.unique(ids)  # the reader's ids are in sorted (numeric or string) order
    classes = [names[i] for i in present]
    y = np.searchsorted(present, ids).astype(np.int64)
    test: Texts | None = None
    if cfg.test_file is not None:
        test_path = _table_path(cfg, cfg.test_file)
        te_texts, te_ids, te_names = read_text_table(test_path, cfg.text_column, cfg.label_column)
        index = {name: i for i, name in enumerate(classes)}
        unseen = sorted({te_names[i] for i in te_ids} - index.keys())
        if unseen:
            raise DataError(
                f"{test_path.absolute()}: held-out label(s) {', '.join(map(repr, unseen[:5]))} "
                f"do not occur in the training file {train_path.name} (training classes: "
                f"{', '.join(classes[:10])}{', ...' if len(classes) > 10 else ''}); expected "
                f"{TEXT_TABLE_FORMAT} whose labels all occur in training"
            )
        test = (te_texts, np.asarray([index[te_names[i]] for i in te_ids], dtype=np.int64))
    return text_dataset(
        cfg,
        (texts, y),
        test,
        classes,
        f"{cfg.name} table {train_path}" + (f" / {cfg.test_file}" if cfg.test_file else ""),
    )


def table_availability() -> str:
    return "needs data.train_file"
