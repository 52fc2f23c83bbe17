"""The examples run as documented (shortened)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import latephase

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_track_custom_cnn(tmp_path) -> None:
    example = _load("track_custom_cnn")
    out = example.main(steps=40, eval_every=20, out=str(tmp_path / "cnn"), information_n=200)
    df = latephase.load_metrics(out)
    assert list(df["step"]) == [0, 20, 40]
    assert {"train/rnc1_mean", "test/body.5/rnc1_mean", "test/nhsic/redundancy",
            "test/body.5/cmi_ksg/izx", "test/bound"} <= set(df.columns)
    assert json.loads((out / "summary.json").read_text())["status"] == "finished"
    figures = {p.name for p in (out / "figures").iterdir()}
    assert {"overview.png", "layers_rnc1.png", "layers_information_plane.png"} <= figures
