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
    assert all(isinstance(v, int | float) for v in rec.values()), rec
    bad = {k: v for k, v in rec.items() if not math.isfinite(v)}
    # every measure, NC2 included; the forecast is NaN ("none yet") before t_fit, by design
    forecast = {k for k in bad if k.startswith("forecast/")}
    assert forecast == ({f"forecast/{q}" for q in ("t_grok", "t_grok_lo", "t_grok_hi")}
                        if cfg.forecast.enabled else set())
    assert not {k: v for k, v in bad.items() if k not in forecast}, bad
    assert {"train/rnc1_mean", "test/bound", "test/nhsic/redundancy", "test/cmi_ksg/redundancy",
            *(f"test/{e}/redundancy" for e in cfg.measures.information)} <= set(rec)
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


#: preset -> the settings issue 5 / science.md section 5 prescribe for it
PAPER_SETTINGS: dict[str, dict[str, object]] = {
    "paper-fashion": {"data.name": "fashion-mnist", "data.train_size": 1000,
                      "model.name": "mlp", "model.widths": (200, 200, 200)},
    "paper-fashion-3000": {"data.name": "fashion-mnist", "data.train_size": 3000,
                           "model.name": "mlp", "model.widths": (200, 200, 200)},
    "paper-cnn": {"model.name": "cnn", "model.channels": (16, 32), "model.fc_width": 128,
                  "model.init_scope": "paper"},
    "paper-vit": {"model.name": "transformer", "model.dim": 128, "model.heads": 4,
                  "model.ffn": 256, "model.layers": 1, "model.patch": 4,
                  "model.init_scope": "paper"},
    "paper-text-sst2": {"data.name": "sst2", "model.name": "transformer", "data.max_len": 128},
    "paper-text-trec": {"data.name": "trec", "model.name": "transformer", "data.max_len": 128},
    "paper-text-agnews": {"data.name": "ag-news", "model.name": "transformer",
                          "data.max_len": 128},
    "paper-resnet-cifar10": {"data.name": "cifar10", "data.train_size": 50000,
                             "model.name": "resnet18", "model.init_scale": 1.0},
    "modular-addition": {"data.name": "modular", "data.modulus": 97, "data.operation": "+",
                         "data.train_fraction": 0.3},
}


@pytest.mark.parametrize("preset", list(PAPER_SETTINGS))
def test_preset_matches_the_paper_setting(preset: str) -> None:
    assert preset in preset_names()
    cfg = make_config(preset)
    for key, want in PAPER_SETTINGS[preset].items():
        section, name = key.split(".")
        assert getattr(getattr(cfg, section), name) == want, key
    if cfg.model.name == "transformer":
        assert (cfg.model.dim, cfg.model.heads, cfg.model.ffn, cfg.model.layers) == (
            128, 4, 256, 1)
    if preset.startswith("paper-") and preset != "paper-resnet-cifar10":
        assert (cfg.optim.name, cfg.optim.lr, cfg.train.loss) == ("adamw", 1e-3, "sse")
        assert cfg.model.init_scale == 8.0
