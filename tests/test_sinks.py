"""Logging sinks: TensorBoard event files beside metrics.jsonl, read back with tensorboard's
own EventAccumulator (the independent reader); W&B offline when wandb is installed.

Ground truth is metrics.jsonl: every scalar of every record must come back at its step.
TensorBoard stores scalars as float32, so a value compares to its float32 rounding exactly
(relative 2**-24 ~ 6e-8 of the float64 value, not an approximate match)."""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from latephase import eval_steps
from latephase.build import make_config
from latephase.cli import main
from latephase.config import Config, LoggingConfig
from latephase.errors import ConfigError
from latephase.integrations import sinks
from latephase.integrations.sinks import TENSORBOARD_DIR, check_sinks

from .conftest import SMALL

TINY = [*SMALL, "measures.information=[]", "train.eval_points=8"]


def _records(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_tensorboard_events_read_back(tmp_path: Path, capsys) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    code = main(["run", "--preset", "demo", *TINY, "logging.tensorboard=true",
                 "--out", str(tmp_path), "--name", "r", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    run = tmp_path / "r"
    acc = EventAccumulator(str(run / TENSORBOARD_DIR), size_guidance={"scalars": 0,
                                                                      "images": 0})
    acc.Reload()
    records = _records(run)
    keys = [k for k in records[0] if k != "step" and isinstance(records[0][k], float)]
    assert set(keys) <= set(acc.Tags()["scalars"]) and "test/acc" in keys
    for key in keys:
        events = acc.Scalars(key)
        assert [e.step for e in events] == [r["step"] for r in records]
        np.testing.assert_array_equal(
            np.array([e.value for e in events], dtype=np.float32),
            np.array([r[key] for r in records], dtype=np.float32))
    pngs = sorted(p.stem for p in (run / "figures").glob("*.png"))
    tags = acc.Tags()["images"]
    assert sorted(t.removeprefix("figures/") for t in tags) == pngs
    img = acc.Images("figures/accuracy")[0]
    assert img.step == records[-1]["step"] and img.width > 100 and img.height > 100
    # metrics.jsonl is untouched by the sink: same records as a run without it
    code = main(["run", "--preset", "demo", *TINY, "--out", str(tmp_path), "--name", "plain",
                 "--no-progress", "--no-figures"])
    assert code == 0
    assert _records(tmp_path / "plain") == records
    assert not (tmp_path / "plain" / TENSORBOARD_DIR).exists()


def test_missing_package_is_one_line_before_any_run_dir(tmp_path: Path, monkeypatch,
                                                        capsys) -> None:
    monkeypatch.setattr(sinks, "_have", lambda module: False)
    with pytest.raises(ConfigError, match=r"logging.tensorboard=true needs the tensorboard "
                                          r"package.*pip install 'latephase\[tensorboard\]'"):
        check_sinks(Config(logging=LoggingConfig(tensorboard=True)))
    check_sinks(Config())  # nothing turned on: nothing needed
    code = main(["run", "--preset", "demo", *TINY, "logging.wandb=true", "--out",
                 str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "logging.wandb=true needs the wandb package" in err and "latephase[wandb]" in err
    assert not any(tmp_path.iterdir())


def test_failing_sink_warns_and_the_run_goes_on(tmp_path: Path, monkeypatch) -> None:
    class Broken:
        def __init__(self, run_dir: Path, info: dict) -> None:
            pass

        def record(self, scalars: dict) -> None:
            raise OSError("disk of the sink is full")

        def figures(self, paths: list, step: int) -> None:
            pass

        def close(self) -> None:
            pass

    monkeypatch.setitem(sinks.SINKS, "tensorboard", (Broken, "json", "tensorboard"))
    from latephase.api import run

    cfg = make_config("demo", overrides=[*TINY, "logging.tensorboard=true"])
    with pytest.warns(RuntimeWarning, match="Broken failed .*disk of the sink is full"):
        _, summary = run(cfg, tmp_path, "r", progress=False, figures=False)
    assert summary["status"] == "finished"
    t = cfg.train
    assert [r["step"] for r in _records(tmp_path / "r")] == eval_steps(
        t.steps, t.eval_schedule, t.eval_points)


def test_wandb_offline(tmp_path: Path) -> None:
    pytest.importorskip("wandb", reason="wandb not installed (optional extra latephase[wandb])")
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true",
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "latephase.cli", "run", "--preset", "demo",
                           *TINY, "logging.wandb=true", "--out", str(tmp_path), "--name", "r",
                           "--no-progress", "--no-figures"], capture_output=True, text=True,
                          env=env, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    offline = list((tmp_path / "r" / "wandb").glob("offline-run-*"))
    assert len(offline) == 1
    (log,) = offline[0].glob("*.wandb")
    history = {int(h["_step"]): h for h in _wandb_history(log)}
    records = _records(tmp_path / "r")
    assert sorted(history) == [r["step"] for r in records]
    for rec in records:  # every finite scalar of every record, as logged (JSON round trip)
        logged = history[rec["step"]]
        for key, value in rec.items():
            if key != "step" and isinstance(value, float) and math.isfinite(value):
                assert logged[key] == value, (rec["step"], key)


def _wandb_history(path: Path) -> list[dict]:
    """History rows of a W&B offline transaction log, read without wandb's reader (0.31 has
    none in Python): a 7-byte header (':W&B', 0xBEE1, version), then LevelDB-log records in
    32 KiB blocks (crc32 4 bytes, length 2, type 1: full/first/middle/last), each payload a
    wandb_internal_pb2.Record."""
    from wandb.proto import wandb_internal_pb2 as pb

    buf = path.read_bytes()
    assert buf[:4] == b":W&B"
    block, pos, payloads, part = 32768, 7, [], b""
    while pos + 7 <= len(buf):
        left = block - pos % block
        if left < 7:  # block trailer
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", buf[pos:pos + 7])
        if kind == 0 and length == 0:  # zero padding to the block's end
            pos += left
            continue
        data, pos = buf[pos + 7:pos + 7 + length], pos + 7 + length
        part = data if kind in (1, 2) else part + data
        if kind in (1, 4):
            payloads.append(part)
    rows = []
    for data in payloads:
        rec = pb.Record()
        rec.ParseFromString(data)
        if rec.WhichOneof("record_type") == "history":
            rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                         for i in rec.history.item})
    return rows
