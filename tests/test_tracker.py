"""latephase.Tracker on models the package does not define.

Every record is checked against an independent computation (NumPy on features taken with the
model minus its head, or ``measure_split`` / ``InfoProbe`` on the same features); batch
sources (generator function, list, DataLoader) are checked against in-memory tensors; the
model's modes, BatchNorm statistics, parameters, gradients and hooks are checked to be left
as they were; and a run directory written by the Tracker is read back and reported.
"""

from __future__ import annotations

import json
import math
import re
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import latephase
from latephase.cli import main as cli_main
from latephase.errors import TrackerError
from latephase.measures import measure_split
from latephase.measures.probe import InfoProbe
from latephase.tracker import RowKeys

K, DIM = 3, 6
#: moment-based measures, reported for every measured layer
COLLAPSE = {"tr_sw", "tr_sb", "rnc1_max", "rnc1_mean", "nc1", "nc1_pinv", "cdnv", "nc2",
            "nc2_etf", "feat_norm_mean", "feat_norm_max"}
HEAD_ONLY = {"nc3", "nc4", "bound"}  # need the head: penultimate (un-prefixed) keys only
SPLIT_ONLY = {"acc", "error", "loss"}
INFO = ("nhsic", "cmi_ksg")  # the Tracker's default estimators


# ----------------------------------------------------------------------------- helpers
def make_data(n: int, seed: int, dtype: torch.dtype = torch.float32,
              num_classes: int = K) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian blobs: ``n`` inputs [n, DIM] with labels in [0, num_classes)."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, num_classes, (n,), generator=gen)
    y[:num_classes] = torch.arange(num_classes)  # every class present
    centres = 1.5 * torch.randn(num_classes, DIM, generator=gen)
    x = centres[y] + torch.randn(n, DIM, generator=gen)
    return x.to(dtype), y


def make_mlp(dtype: torch.dtype = torch.float32, seed: int = 0) -> nn.Sequential:
    """Linear-ReLU-Linear-ReLU-Linear; '1' and '3' are the ReLUs, '4' the head."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(DIM, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(),
                         nn.Linear(8, K)).to(dtype)


def named_mlp() -> nn.Sequential:
    torch.manual_seed(1)
    return nn.Sequential(OrderedDict(fc1=nn.Linear(DIM, 16), act1=nn.ReLU(),
                                     fc2=nn.Linear(16, 8), act2=nn.ReLU(),
                                     head=nn.Linear(8, K)))


def forward_np(module: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        out = module(x)
    return out.detach().to(torch.float64).numpy().reshape(len(x), -1)


def reference(g: np.ndarray, y: np.ndarray, logits: np.ndarray | None = None,
              w: np.ndarray | None = None, b: np.ndarray | None = None) -> dict[str, float]:
    """The measures written out in NumPy (float64, two-pass), from their definitions."""
    g = np.asarray(g, dtype=np.float64).reshape(len(g), -1)
    n, num = len(y), int(y.max()) + 1
    counts = np.bincount(y, minlength=num)
    p = counts / n
    mu = np.stack([g[y == c].mean(0) for c in range(num)])  # [K, p]
    mu_g = g.mean(0)
    within = g - mu[y]
    tr_sw = float((within**2).sum() / n)
    tr_sb = float((p * ((mu - mu_g) ** 2).sum(1)).sum())
    norms = np.linalg.norm(g, axis=1)
    var_c = np.array([(within[y == c] ** 2).sum(1).mean() for c in range(num)])
    pairs = [(c, d) for c in range(num) for d in range(c + 1, num)]
    cdnv = np.mean([(var_c[c] + var_c[d]) / (2 * np.sum((mu[c] - mu[d]) ** 2))
                    for c, d in pairs])
    sv = np.linalg.svd(mu, compute_uv=False)
    centred = mu - mu.mean(0)
    gram, target = centred @ centred.T, np.eye(num) - 1.0 / num
    a = np.sqrt(p)[:, None] * (mu - mu_g)
    evals, evecs = np.linalg.eigh(a.T @ a)  # Sigma_B has rank K - 1
    top, vecs = evals[-(num - 1):], evecs[:, -(num - 1):]
    sigma_w = within.T @ within / n
    out = {
        "tr_sw": tr_sw, "tr_sb": tr_sb, "nc1": tr_sw / tr_sb,
        "rnc1_mean": tr_sw / norms.mean() ** 2, "rnc1_max": tr_sw / norms.max() ** 2,
        "feat_norm_mean": float(norms.mean()), "feat_norm_max": float(norms.max()),
        "cdnv": float(cdnv), "nc2": float(sv[0] / sv[-1]),
        "nc2_etf": float(np.linalg.norm(gram / np.linalg.norm(gram)
                                        - target / np.linalg.norm(target))),
        "nc1_pinv": float(np.trace(vecs.T @ sigma_w @ vecs / top)) / num,
    }
    if logits is not None:
        pred = logits.argmax(1)
        out["acc"] = float((pred == y).mean())
        out["error"] = 1.0 - out["acc"]
        mx = logits.max(1, keepdims=True)
        lse = mx[:, 0] + np.log(np.exp(logits - mx).sum(1))
        out["loss"] = float((lse - logits[np.arange(n), y]).mean())
    if w is not None and b is not None and logits is not None:
        out["nc3"] = float(np.linalg.norm(w / np.linalg.norm(w)
                                          - centred / np.linalg.norm(centred)))
        dist = ((g[:, None, :] - mu[None]) ** 2).sum(2)
        out["nc4"] = float((dist.argmin(1) == logits.argmax(1)).mean())
        bound = 0.0
        for c in range(num):
            for k in range(num):
                if k != c:
                    dw = w[c] - w[k]
                    margin = (mu[c] @ dw + b[c] - b[k]) / np.linalg.norm(dw)
                    bound += p[c] / (1.0 + max(margin, 0.0) ** 2 / var_c[c])
        out["bound"] = bound
    return out


def assert_records_close(got: dict[str, Any], want: dict[str, Any], rtol: float,
                         atol: float = 0.0) -> None:
    assert set(got) == set(want)

    def close(a: Any, b: Any) -> bool:
        if isinstance(b, list):  # margins_a / margins_b: in batch order, compared as multisets
            return len(a) == len(b) and all(math.isclose(u, v, rel_tol=rtol, abs_tol=atol)
                                            for u, v in zip(sorted(a), sorted(b), strict=True))
        return math.isclose(a, b, rel_tol=rtol, abs_tol=atol)

    bad = {k: (got[k], want[k]) for k in want if not close(got[k], want[k])}
    assert not bad, bad


def key_order(x: torch.Tensor, y: torch.Tensor, seed: int = 0) -> np.ndarray:
    """The row order the Tracker hands the estimators: by (content key, label)."""
    keys = RowKeys(seed)(x).numpy()
    return np.lexsort((y.numpy(), keys))  # last key is primary


def same_multiset(a: list[float], b: list[float], rel: float, abs_: float = 0.0) -> bool:
    """Margins (lists) in whatever row order: equal as sorted lists, within tolerance."""
    return len(a) == len(b) and all(math.isclose(u, v, rel_tol=rel, abs_tol=abs_)
                                    for u, v in zip(sorted(a), sorted(b), strict=True))


def hooks_everywhere(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


class WithFeatures(nn.Module):
    """A Sequential seen through ``measure_split``'s interface (shares its modules)."""

    def __init__(self, seq: nn.Sequential) -> None:
        super().__init__()
        self.body, self.head = seq[:-1], seq[-1]

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.body(x)
        return self.head(g), g


# ----------------------------------------------------------------------------- 1. Sequential
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sequential_record_matches_direct_computation(dtype: torch.dtype) -> None:
    model = make_mlp(dtype)
    x_tr, y_tr = make_data(240, seed=1, dtype=dtype)
    x_te, y_te = make_data(200, seed=2, dtype=dtype)
    tracker = latephase.Tracker(model, {"train": (x_tr, y_tr), "test": (x_te, y_te)},
                                information_n=150)
    assert tracker.head_name == "4" and tracker.head is model[4]
    assert tracker.num_classes == K
    rec = tracker.evaluate(7)
    assert rec["step"] == 7

    body, head = model[:-1], model[-1]
    w = head.weight.detach().double().numpy()
    b = head.bias.detach().double().numpy()
    for split, x, y in (("train", x_tr, y_tr), ("test", x_te, y_te)):
        g, logits = forward_np(body, x), forward_np(model, x)
        want = reference(g, y.numpy(), logits, w, b)
        for key in COLLAPSE | HEAD_ONLY | {"acc", "error"}:
            assert rec[f"{split}/{key}"] == pytest.approx(want[key], rel=1e-9, abs=1e-12), key
        # The default loss keeps the model's precision (float32 models: float32 rounding of a
        # log-sum-exp over 4 classes, ~1e-7 relative): 1e-6 covers both dtypes.
        assert rec[f"{split}/loss"] == pytest.approx(want["loss"], rel=1e-6)

        # measure_split on the features of the Sequential minus its head: the same numbers
        # (same accumulator, same rows, one batch), including the information probe, which
        # the Tracker hands its rows in key order (so measure_split gets them in that order).
        order = key_order(x, y)
        probe = (InfoProbe(x[order], y[order], K, INFO, n=150, seed=0) if split == "test"
                 else None)
        direct = measure_split(WithFeatures(model), x[order], y[order], K,
                               loss_fn=tracker.loss_fn, head=head, probe=probe)
        assert {k for k in rec if k.startswith(f"{split}/")} == {f"{split}/{k}" for k in direct}
        # One batch of the same rows, permuted: float64 sums in another order (~1e-16
        # relative, amplified by the conditioning of NC1 / CDNV); for a float32 model a
        # feature row may also round differently in another row position of the GEMM (an ulp,
        # 6e-8 relative) -- 1e-12 resp. 1e-5 (as in test_batch_sources_match_in_memory).
        rtol = 1e-12 if dtype == torch.float64 else 1e-5
        for key, value in direct.items():
            if isinstance(value, list):  # margins_a / margins_b: one per row, any order
                assert same_multiset(rec[f"{split}/{key}"], value, rtol, 1e-12), key
            else:
                assert rec[f"{split}/{key}"] == pytest.approx(value, rel=rtol, abs=1e-12), key
        if split == "test":  # the probe holds exactly the key-ordered rows of the split
            held = tracker.probes[("test", "")]
            np.testing.assert_array_equal(held.x, x[order][held.idx].double().numpy())
            np.testing.assert_array_equal(held.y, y[order][held.idx].numpy())
    # information measures only on information_splits (default: test)
    assert "test/nhsic/nhsic_zx" in rec and "test/cmi_ksg/izx" in rec
    assert not any(k.startswith(("train/nhsic", "train/cmi_ksg")) for k in rec)
    # parameter norms
    total = sum(float(p.detach().double().square().sum()) for p in model.parameters())
    assert rec["weight_norm"] == pytest.approx(math.sqrt(total), rel=1e-12)
    assert rec["head_norm"] == pytest.approx(float(np.linalg.norm(w)), rel=1e-12)
    assert rec["head_norm_with_bias"] == pytest.approx(
        math.sqrt(float((w**2).sum() + (b**2).sum())), rel=1e-12)


def test_per_layer_keys_match_direct_computation() -> None:
    model = make_mlp(torch.float64)
    x_tr, y_tr = make_data(240, seed=1, dtype=torch.float64)
    x_te, y_te = make_data(200, seed=2, dtype=torch.float64)
    tracker = latephase.Tracker(model, {"train": (x_tr, y_tr), "test": (x_te, y_te)},
                                layers=["1", "3"], information_n=150,
                                information_layers=["", "1", "3"])
    rec = tracker.evaluate(0)
    # by default the estimators run on the penultimate layer only
    default = latephase.Tracker(model, {"train": (x_tr, y_tr), "test": (x_te, y_te)},
                                layers=["1", "3"], information_n=150).evaluate(0)
    assert "test/nhsic/nhsic_zx" in default and not any(
        k.startswith(("test/1/nhsic", "test/3/nhsic", "test/1/cmi_ksg")) for k in default)
    every = latephase.Tracker(model, {"train": (x_tr, y_tr), "test": (x_te, y_te)},
                              layers=["1", "3"], information_n=150,
                              information_layers=None).evaluate(0)  # None: every layer
    assert every == rec
    for split, x, y in (("train", x_tr, y_tr), ("test", x_te, y_te)):
        # "1": the first ReLU's output, a representation the head never sees
        want = reference(forward_np(model[:2], x), y.numpy())
        layer_keys = {k.split("/", 2)[2] for k in rec if k.startswith(f"{split}/1/")}
        info_keys = {k for k in layer_keys if "/" in k}
        assert layer_keys - info_keys == COLLAPSE  # no NC3/NC4/bound/acc/loss per layer
        for key in COLLAPSE:
            assert rec[f"{split}/1/{key}"] == pytest.approx(want[key], rel=1e-9), key
        # "3": the last ReLU, whose output IS the head's input -> same as the un-prefixed keys
        for key in COLLAPSE:
            assert rec[f"{split}/3/{key}"] == rec[f"{split}/{key}"], key
        for key in HEAD_ONLY | SPLIT_ONLY:
            assert f"{split}/{key}" in rec
            assert f"{split}/1/{key}" not in rec and f"{split}/3/{key}" not in rec
    # the information measures are computed for every measured layer of the test split
    for layer in ("1", "3"):
        assert f"test/{layer}/nhsic/nhsic_zx" in rec and f"test/{layer}/cmi_ksg/izx" in rec
        assert not any(k.startswith(f"train/{layer}/nhsic") for k in rec)
    info = [k.split("/", 2)[2] for k in rec if k.startswith("test/3/") and "/" in k[7:]]
    assert info and all(rec[f"test/3/{k}"] == rec[f"test/{k}"] for k in info)
    # ... and for the per-layer representation, equal to the probe on that layer's features
    order = key_order(x_te, y_te)
    probe = InfoProbe(x_te[order], y_te[order], K, INFO, n=150, seed=0)
    for key, value in probe(torch.as_tensor(forward_np(model[:2], x_te[order]))).items():
        assert rec[f"test/1/{key}"] == pytest.approx(value, rel=1e-9, abs=1e-12), key


def test_conv_layer_output_is_flattened_and_measured() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, K))
    x, y = make_data(120, seed=3)
    x = x.unsqueeze(1)[:, :, :DIM]  # [n, 1, 6] -> conv output [n, 2, 4]
    rec = latephase.Tracker(model, {"test": (x, y)}, layers=["0"], information=()).evaluate(0)
    want = reference(forward_np(model[0], x), y.numpy())
    for key in COLLAPSE:
        assert rec[f"test/0/{key}"] == pytest.approx(want[key], rel=1e-9), key


# ----------------------------------------------------------------------------- 2. dict output
class DictNet(nn.Module):
    """forward returns a dict; the classifier is ``classifier`` (not the last Linear)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.encoder = nn.Sequential(nn.Linear(DIM, 12), nn.Tanh())
        self.classifier = nn.Linear(12, K)
        self.aux_head = nn.Linear(12, 2)  # the last Linear: not the classifier

    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        h = self.encoder(x)
        return {"logits": self.classifier(h), "aux": (self.aux_head(h), h.norm(dim=1))}


def test_dict_output_model() -> None:
    model = DictNet()
    x, y = make_data(200, seed=4)
    tracker = latephase.Tracker(model, {"train": (x, y), "test": (x, y)}, head="classifier",
                                layers=["encoder.0"], information=())
    rec = tracker.evaluate(0)
    g = forward_np(model.encoder, x)
    with torch.no_grad():
        logits = model(x)["logits"].double().numpy()
    w = model.classifier.weight.detach().double().numpy()
    b = model.classifier.bias.detach().double().numpy()
    want = reference(g, y.numpy(), logits, w, b)
    for key in COLLAPSE | HEAD_ONLY | {"acc", "error"}:
        assert rec[f"test/{key}"] == pytest.approx(want[key], rel=1e-9, abs=1e-12), key
    assert rec["test/loss"] == pytest.approx(want["loss"], rel=1e-6)
    pre = reference(forward_np(model.encoder[0], x), y.numpy())
    assert rec["test/encoder.0/tr_sw"] == pytest.approx(pre["tr_sw"], rel=1e-9)
    # default head = last nn.Linear = aux_head (2 outputs): labels 2 are out of range
    with pytest.raises(TrackerError, match=r"labels must be in \[0, 2\)"):
        latephase.Tracker(model, {"test": (x, y)}, information=()).evaluate(0)


def test_tuple_output_model() -> None:
    class TupleNet(DictNet):
        def forward(self, x: torch.Tensor) -> Any:  # type: ignore[override]
            out = super().forward(x)
            return out["aux"], out["logits"]

    x, y = make_data(150, seed=5)
    a = latephase.Tracker(DictNet(), {"test": (x, y)}, head="classifier",
                          information=()).evaluate(0)
    b = latephase.Tracker(TupleNet(), {"test": (x, y)}, head="classifier",
                          information=()).evaluate(0)
    assert a == b


# ----------------------------------------------------------------------------- 3. modes
def make_bn_dropout() -> nn.Sequential:
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(DIM, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5),
                         nn.Linear(16, K))


def test_eval_mode_deterministic_and_batchnorm_untouched() -> None:
    model = make_bn_dropout()
    x, y = make_data(200, seed=6)
    model.train()
    with torch.no_grad():  # give BatchNorm non-trivial running statistics
        for _ in range(3):
            model(x + 0.3)
        a, b = model(x), model(x)
    assert not torch.equal(a, b)  # dropout is active in train mode: the check is meaningful
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    tracker = latephase.Tracker(model, {"train": (x, y), "test": (x[:100], y[:100])},
                                batch_size=64, information=())
    r1 = tracker.evaluate(0)
    r2 = tracker.evaluate(1)
    assert {k: v for k, v in r1.items() if k != "step"} == \
        {k: v for k, v in r2.items() if k != "step"}
    for name, value in model.named_buffers():
        assert torch.equal(value, buffers[name]), f"evaluate changed buffer {name}"
    assert all(m.training for m in model.modules())
    # eval-mode numbers: those of the model in eval mode (running statistics, no dropout)
    model.eval()
    want = reference(forward_np(model[:-1], x), y.numpy(), forward_np(model, x))
    for key in ("acc", "tr_sw", "rnc1_mean", "nc1"):
        assert r1[f"train/{key}"] == pytest.approx(want[key], rel=1e-9), key


def test_mixed_training_flags_restored() -> None:
    model = make_bn_dropout()
    model.train()
    model[1].eval()  # frozen BatchNorm chosen by the user
    model[3].eval()
    before = {name: m.training for name, m in model.named_modules()}
    x, y = make_data(100, seed=7)
    tracker = latephase.Tracker(model, {"test": (x, y)}, information=())
    tracker.evaluate(0)
    assert {name: m.training for name, m in model.named_modules()} == before
    model.eval()
    model[3].train()
    before = {name: m.training for name, m in model.named_modules()}
    tracker.evaluate(1)
    assert {name: m.training for name, m in model.named_modules()} == before


# ----------------------------------------------------------------------------- 4. batch sources
def _sources(x: torch.Tensor, y: torch.Tensor, bs: int) -> dict[str, Any]:
    batches = [(x[i:i + bs], y[i:i + bs]) for i in range(0, len(x), bs)]

    def gen() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(0, len(x), bs):
            yield x[i:i + bs], y[i:i + bs]

    return {
        "generator function": gen,
        "list of batches": batches,
        "DataLoader": DataLoader(TensorDataset(x, y), batch_size=bs, shuffle=False),
        "lambda returning a list": lambda: iter(batches),
    }


# float64: per-row features do not depend on the batch (at worst an ulp, ~1e-16 relative)
# and the moments are merged exactly in float64, so only summation order differs: ~1e-15
# relative, amplified by the conditioning of the ratios (NC1, NC1_pinv, CDNV; tr_sb is a
# small difference of large means) and smoothly by the estimators (k-NN distances, Gaussian
# Grams; a fixed subsample of the same kept rows) -- 1e-10 is ample and would still catch a
# dropped, duplicated or misaligned row (errors of order 1/n).  float32: the BLAS may use a
# batch-size-dependent kernel, so a feature may differ by an ulp (6e-8 relative) between a
# batch of 53 rows and one of 260; through the same conditioning that is at most ~1e-6.
@pytest.mark.parametrize(("dtype", "rtol"), [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_batch_sources_match_in_memory(dtype: torch.dtype, rtol: float) -> None:
    model = make_mlp(dtype, seed=4)
    x_tr, y_tr = make_data(260, seed=8, dtype=dtype)
    x_te, y_te = make_data(230, seed=9, dtype=dtype)
    kwargs: dict[str, Any] = dict(layers=["1"], information_n=120,
                                  information_splits=("train", "test"), information_layers=None)
    ref_tracker = latephase.Tracker(model, {"train": (x_tr, y_tr), "test": (x_te, y_te)},
                                    **kwargs)
    ref = ref_tracker.evaluate(0)
    assert any(k.startswith("test/cmi_ksg/") for k in ref)
    assert any(k.startswith("train/1/nhsic/") for k in ref)
    # in-memory tensors chunked by a small batch_size
    chunked = latephase.Tracker(model, {"train": (x_tr, y_tr), "test": (x_te, y_te)},
                                batch_size=37, **kwargs).evaluate(0)
    assert_records_close(chunked, ref, rtol, atol=1e-12)
    tr, te = _sources(x_tr, y_tr, 53), _sources(x_te, y_te, 64)
    trackers = {name: latephase.Tracker(model, {"train": tr[name], "test": te[name]}, **kwargs)
                for name in tr}
    for name, tracker in trackers.items():
        assert_records_close(tracker.evaluate(0), ref, rtol, atol=1e-12), name
    # re-iterable: a second evaluate after the model changed streams the split again
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.1)
    ref2 = ref_tracker.evaluate(1)
    assert ref2["test/tr_sw"] != ref["test/tr_sw"]
    for name, tracker in trackers.items():
        got = tracker.evaluate(1)
        assert got["step"] == 1, name
        assert_records_close(got, ref2, rtol, atol=1e-12)


def test_batches_with_extra_fields_and_bad_batches() -> None:
    model = make_mlp()
    x, y = make_data(100, seed=10)
    ref = latephase.Tracker(model, {"test": (x, y)}, information=()).evaluate(0)
    idx = torch.arange(100)
    extra = [(x[i:i + 30], y[i:i + 30], idx[i:i + 30]) for i in range(0, 100, 30)]
    got = latephase.Tracker(model, {"test": extra}, information=()).evaluate(0)
    # float32 model, batches of 30 against one of 100: the BLAS may round a feature row
    # differently for another batch shape (an ulp, 6e-8 relative), and the loss is a float32
    # log-sum-exp summed in another grouping; through NC1/CDNV conditioning that stays far
    # below 1e-5, while a dropped or misread row moves every measure by ~1/n = 1e-2.
    # (1e-12 failed on a fresh clone: it asked float32 results to agree to float64 rounding.)
    assert_records_close(got, ref, 1e-5, atol=1e-12)
    bad = [{"x": x, "y": y}]
    with pytest.raises(TrackerError, match=r"split 'test': each batch must be an \(x, y\) "
                                           r"pair, got dict"):
        latephase.Tracker(model, {"test": bad}, information=()).evaluate(0)


# ----------------------------------------------------------------------------- 5. errors
def test_unknown_layer_suggests_close_matches() -> None:
    model = named_mlp()
    x, y = make_data(50, seed=11)
    with pytest.raises(TrackerError, match=r"layer 'act' is not a module of the model; "
                                           r"did you mean '(act1|act2)', '(act1|act2)'\?") as err:
        latephase.Tracker(model, {"test": (x, y)}, layers=["act"])
    assert "'act1'" in str(err.value) and "'act2'" in str(err.value)
    with pytest.raises(TrackerError, match=r"head 'haed' .*did you mean 'head'"):
        latephase.Tracker(model, {"test": (x, y)}, head="haed")
    with pytest.raises(TrackerError, match=r"layer 'encoder\.fcc' .*did you mean "
                                           r"'encoder\.fc'"):
        latephase.Tracker(nn.Sequential(OrderedDict(encoder=nn.Sequential(
            OrderedDict(fc=nn.Linear(DIM, 4))), head=nn.Linear(4, K))),
            {"test": (x, y)}, layers=["encoder.fcc"])
    with pytest.raises(TrackerError, match=r"layer 'zzz' is not a module of the model \("):
        latephase.Tracker(model, {"test": (x, y)}, layers=["zzz"])  # nothing close: no hint


def test_head_must_be_linear() -> None:
    x, y = make_data(50, seed=12)
    with pytest.raises(TrackerError, match=r"head 'act1' is a ReLU, not an nn\.Linear"):
        latephase.Tracker(named_mlp(), {"test": (x, y)}, head="act1")
    conv = nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten(), nn.Linear(8, K))
    with pytest.raises(TrackerError, match=r"head '0' is a Conv1d, not an nn\.Linear"):
        latephase.Tracker(conv, {"test": (x, y)}, head="0")
    with pytest.raises(TrackerError, match=r"Sequential has no nn\.Linear to use as the head"):
        latephase.Tracker(nn.Sequential(nn.Conv1d(1, K, 6), nn.Flatten()), {"test": (x, y)})


def test_labels_out_of_range_name_split_and_range() -> None:
    model = make_mlp()
    x, y = make_data(80, seed=13)
    y_bad = y.clone()
    y_bad[5] = 7
    with pytest.raises(TrackerError, match=r"split 'val': labels must be in \[0, 3\) "
                                           r"\(num_classes=3\); found values 0\.\.7"):
        latephase.Tracker(model, {"train": (x, y), "val": (x, y_bad)},
                          information=()).evaluate(0)
    y_neg = y.clone()
    y_neg[0] = -1
    with pytest.raises(TrackerError, match=r"split 'train': labels must be in \[0, 3\) "
                                           r"\(num_classes=3\); found values -1\.\.2"):
        latephase.Tracker(model, {"train": (x, y_neg)}, information=()).evaluate(0)
    # the same check for batches streamed from a list: at evaluate, naming the split
    with pytest.raises(TrackerError, match=r"split 'val': labels must be in \[0, 3\)"):
        latephase.Tracker(model, {"train": (x, y), "val": [(x, y_bad)]},
                          information=()).evaluate(0)
    # num_classes that is not the head's output count
    with pytest.raises(TrackerError, match=r"num_classes=2 does not match the head '4' "
                                           r"\(3 outputs\)"):
        latephase.Tracker(model, {"train": (x, y)}, num_classes=2, information=())


def test_empty_splits_and_other_errors() -> None:
    model = make_mlp()
    with pytest.raises(TrackerError, match="splits must be a non-empty mapping"):
        latephase.Tracker(model, {})

    class Unused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Linear(DIM, K)
            self.spare = nn.Linear(K, K)  # last Linear, never called

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x)

    x, y = make_data(40, seed=14)
    with pytest.raises(TrackerError, match=r"head 'spare' was not called in forward"):
        latephase.Tracker(Unused(), {"test": (x, y)}, information=()).evaluate(0)
    assert isinstance(TrackerError("x"), latephase.errors.LatephaseError)


# ----------------------------------------------------------------------------- 6. run_dir
def test_run_dir_round_trip_and_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = make_mlp(seed=5)
    x_tr, y_tr = make_data(200, seed=15)
    x_te, y_te = make_data(150, seed=16)
    run_dir = tmp_path / "runs" / "mine"
    tracker = latephase.Tracker(model, {"train": (x_tr, y_tr), "test": (x_te, y_te)},
                                layers=["1"], information_n=100, run_dir=run_dir)
    info = json.loads((run_dir / "config.json").read_text())
    assert info["tracker"] == {"model": "Sequential", "head": "4", "layers": ["1"],
                               "splits": ["train", "test"], "num_classes": K,
                               "train_split": "train", "heldout_split": "test",
                               "information_splits": ["test"], "margin_pair": [0, 1]}
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "running"

    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    steps = [1, 5, 20, 60]
    for step in range(steps[-1] + 1):
        if step in steps:
            tracker.evaluate(step)
            lines = (run_dir / "metrics.jsonl").read_text().splitlines()
            assert len(lines) == steps.index(step) + 1  # one line per call, flushed
            assert json.loads(lines[-1])["step"] == step
            summary = json.loads((run_dir / "summary.json").read_text())
            assert summary["status"] == "running" and summary["step"] == step
        opt.zero_grad()
        F.cross_entropy(model(x_tr), y_tr).backward()
        opt.step()

    df = latephase.load_metrics(run_dir)
    assert len(df) == len(steps) and df["step"].tolist() == steps
    # list values (the Figure 2 margins) are recorded in margins.jsonl, not as columns
    assert set(df.columns) == {k for k, v in tracker.records[0].items()
                               if not isinstance(v, list)}
    for i, rec in enumerate(tracker.records):
        for key in ("train/acc", "test/rnc1_mean", "test/1/nc1", "test/nhsic/nhsic_zx"):
            assert df[key].iloc[i] == pytest.approx(rec[key], rel=1e-15)
    assert df["train/acc"].iloc[-1] > df["train/acc"].iloc[0]  # it did train

    tracker.close()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["step"] == steps[-1]
    assert summary["final"]["test/acc"] == tracker.records[-1]["test/acc"]
    assert {"t_fit", "t_grok", "t_collapse"} <= set(summary["timescales"])

    with pytest.raises(TrackerError, match="already holds a run"):
        latephase.Tracker(model, {"test": (x_te, y_te)}, run_dir=run_dir)
    assert len(latephase.load_metrics(run_dir)) == len(steps)  # untouched

    assert cli_main(["report", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "finished" in out
    figures = {p.name for p in (run_dir / "figures").iterdir()}
    # accuracy/collapse/nc2 plot train AND test columns; bound plots the test ones
    assert {"accuracy.png", "collapse.png", "nc2.png", "bound.png", "overview.png",
            "information_plane.png", "figure4.png"} <= figures
    assert all((run_dir / "figures" / f).stat().st_size > 1000 for f in figures)


def test_context_manager_marks_failed(tmp_path: Path) -> None:
    model = make_mlp()
    x, y = make_data(60, seed=17)
    with pytest.raises(RuntimeError, match="boom"):
        with latephase.Tracker(model, {"train": (x, y), "test": (x, y)}, information=(),
                               run_dir=tmp_path / "r") as tracker:
            tracker.evaluate(3)
            raise RuntimeError("boom")
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["step"] == 3


# ----------------------------------------------------------------------------- 7. dtype, grads
def test_float64_model_casts_inputs_and_tracks_no_gradients() -> None:
    model = make_mlp(torch.float64)
    x32, y = make_data(150, seed=18)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rec32 = latephase.Tracker(model, {"test": (x32, y.int())}, information_n=100).evaluate(0)
    rec64 = latephase.Tracker(model, {"test": (x32.double(), y)},
                              information_n=100).evaluate(0)
    assert rec32 == rec64  # float32 -> float64 is exact, int32 labels -> long
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert torch.is_grad_enabled()

    # float32 model, float64 inputs: cast down, so the model runs (it would not otherwise)
    model32 = make_mlp(torch.float32)
    a = latephase.Tracker(model32, {"test": (x32.double(), y)}, information=()).evaluate(0)
    b = latephase.Tracker(model32, {"test": (x32, y)}, information=()).evaluate(0)
    assert a == b


class Spy(nn.Module):
    """Identity that records, at each call, whether autograd is on and its output's state."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[bool, bool, bool]] = []

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        self.calls.append((torch.is_grad_enabled(), h.requires_grad, self.training))
        return h


def test_no_graph_even_with_grad_inputs() -> None:
    torch.manual_seed(0)
    spy = Spy()
    model = nn.Sequential(nn.Linear(DIM, 8), nn.ReLU(), spy, nn.Linear(8, K)).train()
    x, y = make_data(100, seed=19)
    x.requires_grad_(True)
    rec = latephase.Tracker(model, {"test": (x, y)}, information_n=80,
                            batch_size=40).evaluate(0)
    assert spy.calls == [(False, False, False)] * 3  # 3 batches: no autograd, eval mode
    assert spy.training and torch.is_grad_enabled()
    assert all(isinstance(v, int | float) or (isinstance(v, list) and all(  # margins_a/_b
        isinstance(u, float) for u in v)) for v in rec.values())
    assert x.grad is None and all(p.grad is None for p in model.parameters())
    # the model still trains normally afterwards
    F.cross_entropy(model(x), y).backward()
    assert all(p.grad is not None for p in model.parameters())


# ----------------------------------------------------------------------------- 8. hooks
def test_hooks_removed_after_evaluate_and_after_errors() -> None:
    model = named_mlp()
    model.train()
    x, y = make_data(80, seed=20)
    assert hooks_everywhere(model) == 0
    tracker = latephase.Tracker(model, {"train": (x, y), "test": (x, y)}, layers=["act1"],
                                information=())
    assert hooks_everywhere(model) == 0  # hooks exist only during evaluate
    tracker.evaluate(0)
    assert hooks_everywhere(model) == 0

    y_bad = y.clone()
    y_bad[-1] = K
    bad = latephase.Tracker(model, {"train": (x, y), "test": [(x, y_bad)]}, layers=["act1"],
                            information=())  # batches: labels checked as they stream
    with pytest.raises(TrackerError, match="split 'test'"):
        bad.evaluate(0)  # the first split was measured with hooks in place
    assert hooks_everywhere(model) == 0
    assert all(m.training for m in model.modules())
    assert not bad.records

    # a user's own hook is left alone
    handle = model.fc2.register_forward_hook(lambda *args: None)
    tracker.evaluate(1)
    assert hooks_everywhere(model) == 1
    handle.remove()


def test_hooks_removed_when_a_hook_raises() -> None:
    class PairOut(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(DIM, 8)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            h = self.lin(x)
            return h, h.relu()

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block = PairOut()
            self.head = nn.Linear(8, K)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.block(x)[1])

    model = Net().train()
    x, y = make_data(60, seed=21)
    tracker = latephase.Tracker(model, {"test": (x, y)}, layers=["block"], information=())
    with pytest.raises(TrackerError, match=r"layer 'block' returns a tuple, not a tensor"):
        tracker.evaluate(0)
    assert hooks_everywhere(model) == 0
    assert all(m.training for m in model.modules())
    # the submodule that does return a tensor works
    rec = latephase.Tracker(model, {"test": (x, y)}, layers=["block.lin"],
                            information=()).evaluate(0)
    assert "test/block.lin/tr_sw" in rec


# ----------------------------------------------------------------------------- known bugs
def test_duplicate_layer_names() -> None:
    model = make_mlp(torch.float64)
    x, y = make_data(200, seed=22, dtype=torch.float64)
    batches = [(x[i:i + 64], y[i:i + 64]) for i in range(0, 200, 64)]
    ref = latephase.Tracker(model, {"test": batches}, layers=["1"],
                            information_n=120).evaluate(0)
    try:
        got = latephase.Tracker(model, {"test": batches}, layers=["1", "1"],
                                information_n=120).evaluate(0)
    except TrackerError:  # rejecting duplicates would be a fix too
        return
    assert_records_close(got, ref, 1e-10, atol=1e-12)


@pytest.mark.parametrize("fail", [False, True])
def test_close_before_any_evaluate(tmp_path: Path, fail: bool) -> None:
    model = make_mlp()
    x, y = make_data(40, seed=23)
    try:
        with latephase.Tracker(model, {"test": (x, y)}, information=(),
                               run_dir=tmp_path / "r"):
            if fail:
                raise RuntimeError("boom")
    except RuntimeError:
        pass
    status = json.loads((tmp_path / "r" / "summary.json").read_text())["status"]
    assert status == ("failed" if fail else "finished")


@pytest.mark.parametrize("kind", ["empty tensors", "one-shot generator"])
def test_empty_split_names_the_split(kind: str) -> None:
    model = make_mlp()
    x, y = make_data(40, seed=24)
    spec: Any = (x[:0], y[:0]) if kind == "empty tensors" else iter([(x, y)])
    tracker = latephase.Tracker(model, {"train": (x, y), "held": spec}, information=())
    if kind == "one-shot generator":
        tracker.evaluate(0)  # consumes it
    with pytest.raises(TrackerError, match="split 'held'"):
        tracker.evaluate(1)


def test_information_layers_must_be_measured() -> None:
    model = make_mlp()
    x, y = make_data(80, seed=25)
    with pytest.raises(TrackerError, match=re.escape("'1'")):
        latephase.Tracker(model, {"test": (x, y)}, information_layers=["1"],
                          information_n=50)


def test_default_loss_keeps_float64_precision() -> None:
    model = make_mlp(torch.float64)
    x, y = make_data(200, seed=26, dtype=torch.float64)
    rec = latephase.Tracker(model, {"test": (x, y)}, information=()).evaluate(0)
    with torch.no_grad():
        want = float(F.cross_entropy(model(x), y))
    assert rec["test/loss"] == pytest.approx(want, rel=1e-13)
