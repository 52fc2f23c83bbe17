"""Tracker split names (train / held-out rules, any names), input validation, margin_pair,
the thread cap, and a ``val``-named run reported by ``latephase report``."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import latephase
from latephase.cli import main as cli_main
from latephase.errors import TrackerError

K, DIM = 3, 6


def make_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, K, (n,), generator=gen)
    y[:K] = torch.arange(K)
    return 2.0 * torch.randn(K, DIM, generator=gen)[y] + torch.randn(n, DIM, generator=gen), y


def make_mlp(seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(DIM, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(),
                         nn.Linear(8, K)).to(dtype)


DATA = {name: make_data(n, seed) for name, n, seed in
        (("train", 120, 1), ("val", 90, 2), ("test", 80, 3), ("holdout", 70, 4))}


def splits(*names: str) -> dict[str, Any]:
    return {name: DATA[name] for name in names}


# ----------------------------------------------------------------------------- split rules
@pytest.mark.parametrize(("names", "kwargs", "heldout"), [
    (("train", "test"), {}, "test"),
    (("train", "val"), {}, "val"),                       # the only other split
    (("train", "val", "test"), {}, "test"),              # test wins when present
    (("val", "train"), {}, "val"),
    (("train", "val", "holdout"), {"heldout_split": "holdout"}, "holdout"),
    (("train",), {}, None),                              # nothing held out
    (("test",), {}, "test"),                             # no training split
])
def test_heldout_split_rules(names: tuple[str, ...], kwargs: dict[str, Any],
                             heldout: str | None) -> None:
    tracker = latephase.Tracker(make_mlp(), splits(*names), information_n=50, **kwargs)
    assert tracker.heldout_split == heldout
    assert tracker.train_split == ("train" if "train" in names else None)
    assert tracker.information_splits == ([] if heldout is None else [heldout])
    rec = tracker.evaluate(0)
    info = {k.split("/")[0] for k in rec if "/nhsic/" in k}
    assert info == ({heldout} if heldout else set())  # information on the held-out split only
    assert {k.split("/")[0] for k in rec if k.endswith("/acc")} == set(names)


def test_ambiguous_or_unknown_splits_are_refused() -> None:
    model = make_mlp()
    with pytest.raises(TrackerError, match=re.escape(
            "which split is held out? splits ['val', 'holdout'] are all candidates: pass "
            "heldout_split=<name>")):
        latephase.Tracker(model, splits("train", "val", "holdout"))
    with pytest.raises(TrackerError, match=r"heldout_split 'tset' is not a split other than "
                                           r"the training one; valid choices: 'val', 'test'"):
        latephase.Tracker(model, splits("train", "val", "test"), heldout_split="tset")
    with pytest.raises(TrackerError, match=r"heldout_split 'train' is not a split other"):
        latephase.Tracker(model, splits("train", "val"), heldout_split="train")
    with pytest.raises(TrackerError, match=r"train_split 'fit' is not a split; valid choices: "
                                           r"'train', 'val'"):
        latephase.Tracker(model, splits("train", "val"), train_split="fit")
    # today's silent drop of an unknown information split is an error
    with pytest.raises(TrackerError, match=r"information_splits: 'tests' is not measured; "
                                           r"valid choices: 'train', 'test'"):
        latephase.Tracker(model, splits("train", "test"), information_splits=["tests"])
    with pytest.raises(TrackerError, match=r"information_splits must be a list of names, not "
                                           r"the string 'test'"):
        latephase.Tracker(model, splits("train", "test"), information_splits="test")
    with pytest.raises(TrackerError, match=r"split name 'a/b' is not valid"):
        latephase.Tracker(model, {"a/b": DATA["train"]})


def test_custom_train_split_and_information_splits() -> None:
    model = make_mlp()
    tracker = latephase.Tracker(model, {"fit": DATA["train"], "val": DATA["val"]},
                                train_split="fit", information_splits=["fit", "val"],
                                information=["nhsic"], information_n=50)
    assert (tracker.train_split, tracker.heldout_split) == ("fit", "val")
    rec = tracker.evaluate(0)
    assert "fit/nhsic/nhsic_zy" in rec and "val/nhsic/nhsic_zy" in rec


# ----------------------------------------------------------------------------- report
def _run(tmp_path: Path, names: tuple[str, ...]) -> tuple[Path, latephase.Tracker]:
    model = make_mlp(seed=5)
    x_tr, y_tr = DATA["train"]
    run_dir = tmp_path / "-".join(names)
    tracker = latephase.Tracker(model, splits(*names), information_n=60, run_dir=run_dir)
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    steps = [0, 2, 5, 10, 20, 40, 80]
    for step in range(steps[-1] + 1):
        if step in steps:
            tracker.evaluate(step)
        opt.zero_grad()
        F.cross_entropy(model(x_tr), y_tr).backward()
        opt.step()
    tracker.close()
    return run_dir, tracker


@pytest.mark.parametrize("names", [("train", "val"), ("train", "val", "test")])
def test_val_named_run_is_reported(tmp_path: Path, names: tuple[str, ...]) -> None:
    run_dir, tracker = _run(tmp_path, names)
    heldout = "test" if "test" in names else "val"
    info = json.loads((run_dir / "config.json").read_text())["tracker"]
    assert info["train_split"] == "train" and info["heldout_split"] == heldout
    assert info["splits"] == list(names) and info["information_splits"] == [heldout]
    summary = json.loads((run_dir / "summary.json").read_text())
    th = summary["timescales"]["thresholds"]
    assert th["fit"]["key"] == "train/acc" and th["grok"]["key"] == f"{heldout}/acc"
    assert th["collapse"]["key"] == "train/rnc1_mean"
    assert summary["timescales"]["t_fit"] is not None  # blobs are fitted within 80 steps
    df = latephase.load_metrics(run_dir)
    assert f"{heldout}/nhsic/nhsic_zy" in df.columns and f"{heldout}/cmi_ksg/izy" in df.columns
    # Reading the split names back is the report's job (engineer B): a Tracker run with a
    # "val" split must be reported, not crash with a KeyError.
    assert cli_main(["report", str(run_dir)]) == 0
    figures = {p.name for p in (run_dir / "figures").iterdir()}
    assert {"accuracy.png", "collapse.png", "bound.png", "overview.png",
            "information_plane.png", "figure4.png"} <= figures
    assert all((run_dir / "figures" / f).stat().st_size > 1000 for f in figures)


# ----------------------------------------------------------------------------- validation
def test_bad_inputs_get_one_line_errors() -> None:
    model = make_mlp()
    x, y = DATA["train"]

    def refuse(pattern: str, **kwargs: Any) -> None:
        spec = kwargs.pop("splits", {"train": (x, y)})
        kwargs.setdefault("information_n", 50)
        with pytest.raises(TrackerError, match=pattern) as err:
            latephase.Tracker(model, spec, **kwargs).evaluate(0)
        assert "\n" not in str(err.value)

    refuse(r"split 'train': x has 120 rows but y has 119", splits={"train": (x, y[:-1])})
    refuse(r"split 'train': labels must be a 1-D tensor of class indices \[n\]; got shape "
           r"\(120, 1\)", splits={"train": (x, y[:, None])})
    refuse(r"split 'train': labels must be a 1-D tensor", splits={"train": [(x, y[:, None])]})
    frac = y.double()
    frac[3] = 1.5
    refuse(r"split 'train': labels must be integer class indices; got the value 1\.5 "
           r"\(fractional float labels are refused, not truncated\)",
           splits={"train": (x, frac)})
    refuse(r"split 'train': labels must be in \[0, 3\)", splits={"train": (x, y + 1)})
    refuse(r"split 'train': a batch has 40 input rows but 39 labels",
           splits={"train": [(x[:40], y[:39])]})
    refuse(r"split 'train': inputs must be tensors, got ndarray",
           splits={"train": [(x.numpy(), y)]})
    for bad in (0, -3, 2.5, True):
        refuse(rf"batch_size must be an integer >= 1; got {bad!r}", batch_size=bad)
    refuse(r"information_n must be an integer >= 2 or None; got 1", information_n=1)
    refuse(r"keep_rows must be an integer >= 1 or None; got 0", keep_rows=0)
    refuse(r"num_classes=4 does not match the head '4' \(3 outputs\)", num_classes=4)
    wide = nn.Sequential(nn.Linear(DIM, 8), nn.ReLU(), nn.Linear(8, 5))
    with pytest.raises(TrackerError, match=r"split 'train': labels must be in \[0, 5\)"):
        latephase.Tracker(wide, {"train": (x, y + 3)}, information=())
    for pair in ((0, 0), (0, 3), (1,), "ab", (0.0, 1)):
        refuse(r"margin_pair must be None or two distinct class indices in \[0, 3\)",
               margin_pair=pair)


def test_integer_valued_float_labels_are_accepted() -> None:
    model = make_mlp()
    x, y = DATA["val"]
    a = latephase.Tracker(model, {"val": (x, y)}, information_n=50).evaluate(0)
    b = latephase.Tracker(model, {"val": (x, y.double())}, information_n=50).evaluate(0)
    assert a == b


def test_low_precision_model_with_estimators() -> None:
    """bfloat16 features reach the estimators (NumPy has no bfloat16) as float64."""
    model = make_mlp(dtype=torch.bfloat16)
    x, y = DATA["test"]
    rec = latephase.Tracker(model, {"test": (x, y)}, information=["nhsic"],
                            information_n=60).evaluate(0)
    assert math.isfinite(rec["test/nhsic/nhsic_zy"]) and rec["test/nhsic/nhsic_zy"] > 0


# ----------------------------------------------------------------------------- margin_pair
def test_margin_pair_is_passed_to_the_accumulator() -> None:
    model = make_mlp(seed=3)
    x, y = DATA["test"]
    rec = latephase.Tracker(model, {"test": (x, y)}, margin_pair=(2, 0),
                            information=()).evaluate(0)
    with torch.no_grad():
        logits = model(x).double().numpy()
    w = model[4].weight.detach().double().numpy()
    m = (logits[:, 2] - logits[:, 0]) / np.linalg.norm(w[2] - w[0])
    # float32 logits, differenced in float64: equal up to float32 rounding of the logits
    assert sorted(rec["test/margins_a"]) == pytest.approx(sorted(m[y.numpy() == 2]), rel=1e-6)
    assert sorted(rec["test/margins_b"]) == pytest.approx(sorted(m[y.numpy() == 0]), rel=1e-6)
    off = latephase.Tracker(model, {"test": (x, y)}, margin_pair=None,
                            information=()).evaluate(0)
    assert not any("margins" in k for k in off)
    default = latephase.Tracker(model, {"test": (x, y)}, information=()).evaluate(0)
    assert len(default["test/margins_a"]) == int((y == 0).sum())  # default pair (0, 1)


# ----------------------------------------------------------------------------- threads
def test_blas_threads_capped_inside_measure() -> None:
    from threadpoolctl import threadpool_info, threadpool_limits

    seen: list[int] = []

    def blas() -> list[int]:
        return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]

    class Probe(nn.Module):
        def forward(self, h: torch.Tensor) -> torch.Tensor:
            seen.extend(blas())
            return h

    model = nn.Sequential(nn.Linear(DIM, 8), nn.ReLU(), Probe(), nn.Linear(8, K))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    outer = threadpool_limits(limits=2, user_api="blas")  # NumPy/SciPy BLAS: 2 threads
    try:
        assert blas() and set(blas()) == {2}  # so the check below can fail
        latephase.Tracker(model, splits("test"), information=()).evaluate(0)
        assert seen and set(seen) == {1}  # inside measure: torch's thread count
        assert set(blas()) == {2}  # restored afterwards
    finally:
        outer.restore_original_limits()
        torch.set_num_threads(before)


def test_docstring_documents_schedule_splits_and_cost() -> None:
    doc = latephase.Tracker.__doc__ or ""
    for phrase in ("latephase.eval_steps", "every step below 30", "heldout_split",
                   "information_layers", "ms per ``evaluate``", "nhsic", "kl_knn"):
        assert phrase in doc, phrase
