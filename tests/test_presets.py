"""Every preset runs a smoke version (a few steps, tiny data, small widths) on CPU: shapes are
right and every measure is finite.  File-based datasets read small files the test writes in
their real formats."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from latephase.config import make_config, preset_names
from latephase.data import build_dataset
from latephase.models import build_model, head_of
from latephase.runs import RunDir
from latephase.train import train
from tests.data.formats import (
    cifar_batch,
    py2_pickle,
    write_ag_news,
    write_mnist,
    write_sst2,
    write_trec,
)


def _cifar(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for seed, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        batch = cifar_batch(60, seed)
        batch[b"labels"] = [i % 10 for i in range(60)]  # every class present
        (root / name).write_bytes(py2_pickle(batch))


#: dataset -> (writer of its files into a directory, overrides that shrink it)
FILES: dict[str, tuple[Callable[[Path], object] | None, list[str]]] = {
    "mnist": (None, ["data.train_size=100", "data.test_size=200"]),
    "fashion-mnist": (lambda d: write_mnist(d, n_train=60, n_test=200), ["data.train_size=20"]),
    "cifar10": (_cifar, ["data.train_size=20", "data.test_size=60"]),
    "sst2": (lambda d: write_sst2(d, copies=10), ["data.train_size=10"]),
    "trec": (lambda d: write_trec(d, copies=10), ["data.train_size=12"]),
    "ag-news": (lambda d: write_ag_news(d, copies=10), ["data.train_size=8"]),
    "modular": (None, ["data.modulus=23"]),
}
#: model -> overrides that shrink it (the architecture stays the preset's)
SMALL_MODEL = {
    "mlp": ["model.widths=[32, 32]"],
    "cnn": ["model.channels=[4, 8]", "model.fc_width=16"],
    "transformer": ["model.dim=16", "model.heads=2", "model.ffn=32"],
    "resnet18": [],
}


@pytest.mark.parametrize("preset", preset_names())
def test_preset_smoke(tmp_path, preset: str) -> None:
    base = make_config(preset)
    writer, shrink = FILES[base.data.name]
    extra = [*shrink, *SMALL_MODEL[base.model.name]]
    if writer is not None:
        writer(tmp_path / "data")
        extra.append(f"data.root={str(tmp_path / 'data')!r}")
    cfg = make_config(preset, overrides=[*extra, "train.steps=6", "train.batch_size=10",
                                         "train.eval_schedule=log", "train.eval_points=3",
                                         "data.max_len=16", "device=cpu"])
    summary = train(cfg, RunDir.create(tmp_path / preset, cfg), progress=False)
    assert summary["status"] == "finished"
    rec = summary["final"]
    assert rec["step"] == 6
    bad = {k: v for k, v in rec.items() if isinstance(v, float) and not math.isfinite(v)
           and k != "train/nc2"}  # nc2 is +inf when a class mean matrix is rank deficient
    assert not bad, bad
    assert {"train/rnc1_mean", "test/bound", "test/nhsic/redundancy",
            "test/kl_knn/redundancy"} <= set(rec)
    assert 0.0 <= rec["test/acc"] <= 1.0 and np.isfinite(rec["test/loss"])
    data = build_dataset(cfg.data)
    model = build_model(cfg.model, data.input_shape, data.num_classes, data.meta)
    with torch.no_grad():
        logits, feats = model.forward_with_features(data.x_test[:5])  # type: ignore[operator]
    assert logits.shape == (5, data.num_classes)
    assert feats.shape[0] == 5 and feats.shape[1] == head_of(model).in_features


def test_modular_tokens_transformer_smoke(tmp_path) -> None:
    """The token form of the classic task: [a, b] ids through the Transformer's embedding."""
    cfg = make_config("modular-addition", overrides=[
        "data.modulus=23", "data.encoding=tokens", "model.name=transformer", "model.dim=16",
        "model.heads=2", "model.ffn=32", "train.steps=6", "train.batch_size=32",
        "train.eval_schedule=log", "train.eval_points=3", "device=cpu"])
    summary = train(cfg, RunDir.create(tmp_path / "run", cfg), progress=False)
    rec = summary["final"]
    assert summary["status"] == "finished" and rec["step"] == 6
    assert math.isfinite(rec["train/rnc1_mean"]) and math.isfinite(rec["test/loss"])
