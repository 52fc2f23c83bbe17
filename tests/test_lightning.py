"""CollapseCallback in a real Lightning Trainer (skipped when lightning is not installed).

Ground truth: the evaluation steps are the paper's schedule for max_steps (or the given
steps); the last record's accuracies equal a direct forward pass of the trained module
(count / n: exact), and the run directory holds exactly the callback's records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pl = pytest.importorskip("lightning.pytorch", reason="lightning not installed "
                                                      "(optional extra latephase[lightning])")

import torch  # noqa: E402

import latephase  # noqa: E402
from latephase.errors import TrackerError  # noqa: E402
from latephase.integrations.lightning import CollapseCallback  # noqa: E402

from .test_examples import _load  # noqa: E402


def _fit(tmp_path: Path, steps: int, **kw):
    ex = _load("lightning_digits")
    pl.seed_everything(0, verbose=False)
    x_tr, y_tr, x_te, y_te = ex.digits()
    cb = CollapseCallback({"train": (x_tr, y_tr), "test": (x_te, y_te)}, run_dir=tmp_path / "r",
                          head="head", information=(), **kw)
    trainer = pl.Trainer(max_steps=steps, callbacks=[cb], accelerator="cpu", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    module = ex.MLP()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x_tr, y_tr),
                                         batch_size=100, shuffle=True)
    trainer.fit(module, loader)
    return cb, module, (x_tr, y_tr, x_te, y_te)


def test_paper_schedule_and_records(tmp_path: Path) -> None:
    cb, module, (x_tr, y_tr, x_te, y_te) = _fit(tmp_path, 40)
    assert cb.tracker is not None
    records = cb.tracker.records
    assert [r["step"] for r in records] == latephase.eval_steps(40)
    module.eval()
    with torch.no_grad():
        for split, x, y in (("train", x_tr, y_tr), ("test", x_te, y_te)):
            acc = (module(x).argmax(1) == y).sum().item() / len(y)
            assert records[-1][f"{split}/acc"] == acc
    disk = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in disk] == [r["step"] for r in records]
    assert [r["test/rnc1_mean"] for r in disk] == [r["test/rnc1_mean"] for r in records]
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["status"] == "finished"


def test_given_steps(tmp_path: Path) -> None:
    cb, _, _ = _fit(tmp_path, 30, eval_steps=[0, 7, 30, 99])
    assert cb.tracker is not None
    assert [r["step"] for r in cb.tracker.records] == [0, 7, 30]  # 99 never reached


def test_bad_input() -> None:
    with pytest.raises(TrackerError, match="eval_steps=\\[-1\\]: expected a non-empty list"):
        CollapseCallback({}, eval_steps=[-1])


def test_example_runs(tmp_path: Path) -> None:
    ex = _load("lightning_digits")
    out = ex.main(steps=30, out=str(tmp_path / "ex"), information_n=200)
    df = latephase.load_run(out)
    assert df["step"].tolist() == latephase.eval_steps(30)
    assert {"test/acc", "train/rnc1_mean", "test/nhsic/redundancy"} <= set(df.columns)
    assert (out / "figures" / "overview.png").exists()
