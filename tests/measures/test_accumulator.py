"""Tests of latephase.measures.SplitAccumulator and measure_split beyond the collapse measures:
the directional bound ``bound_dir`` accumulated over all rows, the signed margins of a class
pair (the paper's Figure 2), non-finite features (NaN with a warning, never an exception) and
the validation of the Python API (one-line ValueError naming the argument and the value).

Every tolerance is stated next to its assertion with the reason for its size.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from latephase.measures import PENULTIMATE, SplitAccumulator, measure_split

F64 = torch.float64
# Good data must not warn; the non-finite / degenerate tests capture what they expect.
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")


def naive_dir_bound(g: np.ndarray, y: np.ndarray, K: int, W: np.ndarray, b: np.ndarray) -> float:
    """Directional Theorem 3.2 bound from FEATURES by loops: projection of the class-c rows on
    u_ck plus (b_c - b_k)/||w_c - w_k||, its mean m and variance s (1/n_c); 1 if m <= 0 else
    1 / (1 + m^2 / s); weighted by n_c / N."""
    total = 0.0
    for c in range(K):
        rows = g[y == c]
        for k in range(K):
            if k == c or len(rows) == 0:
                continue
            d = W[c] - W[k]
            norm = float(np.linalg.norm(d))
            t = rows @ d / norm + (b[c] - b[k]) / norm
            m, s = float(t.mean()), float(t.var())
            total += len(rows) / len(g) * (1.0 if m <= 0 else 1.0 / (1.0 + m * m / s))
    return total


def naive_margins(g: np.ndarray, y: np.ndarray, W: np.ndarray, b: np.ndarray, a: int,
                  c: int) -> tuple[list[float], list[float]]:
    """(<w_a - w_c, g> + b_a - b_c) / ||w_a - w_c|| of the class-a rows and the class-c rows."""
    d = W[a] - W[c]
    m = (g @ d + b[a] - b[c]) / np.linalg.norm(d)
    return list(m[y == a]), list(m[y == c])


def problem(seed: int, K: int = 4, p: int = 6, n: int = 90, dtype: torch.dtype = F64):
    """Clustered features, a linear head with a bias, float logits (model precision)."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, K, (n,), generator=gen)
    means = 2.0 * torch.randn(K, p, generator=gen, dtype=F64)
    g = (means[y] + torch.randn(n, p, generator=gen, dtype=F64)).to(dtype)
    head = nn.Linear(p, K).to(dtype)
    with torch.no_grad():
        head.weight.copy_(means + 0.5 * torch.randn(K, p, generator=gen, dtype=F64))
        head.bias.copy_(torch.randn(K, generator=gen, dtype=F64))
    with torch.no_grad():
        logits = head(g)
    return g, y, head, logits


def accumulate(g, y, logits, K, sizes, **kw) -> SplitAccumulator:
    acc = SplitAccumulator(K, None, [PENULTIMATE], **kw)
    edges = np.cumsum((0, *sizes))
    for s, e in zip(edges[:-1], edges[1:], strict=True):
        acc.update(logits[s:e], {PENULTIMATE: g[s:e]}, y[s:e])
    return acc


def np64(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(F64).numpy()


# --------------------------------------------------------------------------------------------
# bound_dir in the accumulator


@pytest.mark.parametrize("sizes", [(90,), (1, 40, 49), (30, 0, 30, 30)])
@pytest.mark.parametrize("keep_rows", [None, 7])
def test_bound_dir_streams_over_all_rows(sizes, keep_rows):
    """bound_dir from the streamed logit moments = the naive bound from the features of ALL
    rows (float64 everywhere; only the operation order differs: rtol 1e-10), whatever the
    batching and however few rows are kept for NC4 / probes; and bound_dir <= bound,
    bound_dir >= the split's own error (exact in real arithmetic; 1e-12 for rounding)."""
    K = 4
    g, y, head, logits = problem(0, K)
    out = accumulate(g, y, logits, K, sizes, keep_rows=keep_rows).compute(head)[PENULTIMATE]
    W, b = np64(head.weight), np64(head.bias)
    want = naive_dir_bound(np64(g), y.numpy(), K, W, b)
    assert out["bound_dir"] == pytest.approx(want, rel=1e-10)
    assert out["bound_dir"] <= out["bound"] * (1 + 1e-12)
    assert out["bound_dir"] >= out["error"] - 1e-12
    assert 0 < out["error"] < out["bound_dir"] < 1 < out["bound"]  # a case where it matters


class Tiny(nn.Module):
    def __init__(self, d: int, p: int, K: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d, p), nn.ReLU())
        self.head = nn.Linear(p, K)

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.body(x)
        return self.head(g), g


@pytest.mark.parametrize(("dtype", "rtol"), [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_measure_split_bound_dir_matches_naive(dtype, rtol):
    """measure_split records bound_dir next to bound.  float64: operation order only (1e-10).
    float32: the logits are the model's float32 numbers (relative rounding 6e-8 each) while the
    reference recomputes them in float64 from the float32 features; the bound's terms are
    smooth functions of the logit moments with O(10) condition here, so rtol 1e-5."""
    torch.manual_seed(0)
    K, n = 5, 200
    model = Tiny(8, 12, K).to(dtype)
    x = torch.randn(n, 8, dtype=dtype)
    y = torch.randint(0, K, (n,))
    with torch.no_grad():
        _, g = model.forward_with_features(x)
    W, b = np64(model.head.weight), np64(model.head.bias)
    want = naive_dir_bound(np64(g), y.numpy(), K, W, b)
    for bs in (1, 13, n):
        out = measure_split(model, x, y, K, loss_fn=lambda lg, t: lg.sum(1), head=model.head,
                            batch_size=bs)
        assert out["bound_dir"] == pytest.approx(want, rel=rtol), bs
        assert out["error"] - 1e-12 <= out["bound_dir"] <= out["bound"] * (1 + 1e-6)


# --------------------------------------------------------------------------------------------
# margins of a class pair (Figure 2)


@pytest.mark.parametrize("pair", [(0, 1), (3, 1)])
def test_margins_match_naive_and_stream_in_order(pair):
    """margins_a / margins_b = (<w_a - w_b, g> + b_a - b_b) / ||w_a - w_b|| of the class-a /
    class-b rows in data order, computed here from features, W and b (the accumulator uses the
    logit difference): float64, rtol 1e-12.  Batching does not change the lists."""
    K = 4
    g, y, head, logits = problem(1, K)
    W, b = np64(head.weight), np64(head.bias)
    want_a, want_b = naive_margins(np64(g), y.numpy(), W, b, *pair)
    assert len(want_a) > 5 and len(want_b) > 5
    for sizes in ((90,), (1, 2, 87), (45, 45)):
        out = accumulate(g, y, logits, K, sizes, margin_pair=pair).compute(head)[PENULTIMATE]
        np.testing.assert_allclose(out["margins_a"], want_a, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(out["margins_b"], want_b, rtol=1e-12, atol=1e-12)
        assert all(isinstance(v, float) for v in out["margins_a"])
    # the pair reversed: the class-b rows' margins change sign (antisymmetry)
    rev = accumulate(g, y, logits, K, (90,), margin_pair=pair[::-1]).compute(head)[PENULTIMATE]
    np.testing.assert_allclose(rev["margins_a"], -np.asarray(want_b), rtol=1e-12, atol=1e-12)


def test_margin_bias_sign():
    """g = 0: the margin is (b_a - b_b) / ||w_a - w_b|| exactly; the authors' code flips this
    sign (science.md 6.5).  w_0 - w_1 = (3, 4): norm 5; b_0 - b_1 = 2 -> +0.4 for both rows."""
    head = nn.Linear(2, 2).double()
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[3.0, 4.0], [0.0, 0.0]]))
        head.bias.copy_(torch.tensor([2.0, 0.0]))
    g = torch.zeros(2, 2, dtype=F64)
    y = torch.tensor([0, 1])
    with torch.no_grad():
        logits = head(g)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # g = 0: the NC measures are undefined
        out = accumulate(g, y, logits, 2, (2,)).compute(head)[PENULTIMATE]
    assert out["margins_a"] == [pytest.approx(0.4, rel=1e-15)]
    assert out["margins_b"] == [pytest.approx(0.4, rel=1e-15)]


def test_margins_follow_keep_rows_and_none_records_nothing():
    K = 4
    g, y, head, logits = problem(2, K)
    W, b = np64(head.weight), np64(head.bias)
    out = accumulate(g, y, logits, K, (10, 80), keep_rows=30).compute(head)[PENULTIMATE]
    want_a, want_b = naive_margins(np64(g[:30]), y[:30].numpy(), W, b, 0, 1)
    np.testing.assert_allclose(out["margins_a"], want_a, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out["margins_b"], want_b, rtol=1e-12, atol=1e-12)
    out = accumulate(g, y, logits, K, (90,), margin_pair=None).compute(head)[PENULTIMATE]
    assert not any(k.startswith("margins") for k in out)
    out = accumulate(g, y, logits, K, (90,)).compute(None)[PENULTIMATE]  # no head: no margins
    assert not any(k.startswith("margins") for k in out)


@pytest.mark.parametrize("pair", [(0, 0), (0, 4), (-1, 1), (0,), (0, 1.0), "01", (True, 1)])
def test_bad_margin_pair(pair):
    with pytest.raises(ValueError, match=r"margin_pair must be None or two distinct class "
                                         r"indices in \[0, 4\); got"):
        SplitAccumulator(4, None, [PENULTIMATE], margin_pair=pair)


# --------------------------------------------------------------------------------------------
# non-finite features: NaN with a warning, never an exception


def test_non_finite_features_give_nan_and_skip_probes():
    K = 4
    g, y, head, logits = problem(3, K)
    g, logits = g.clone(), logits.clone()
    g[5, 0], logits[5, 2] = math.nan, math.inf

    def probe(feats: torch.Tensor) -> dict[str, float]:
        raise AssertionError("a probe must not see non-finite features")

    acc = accumulate(g, y, logits, K, (50, 40))
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        out = acc.compute(head, {PENULTIMATE: probe})[PENULTIMATE]
    msgs = " ".join(str(w.message) for w in rec)
    assert "collapse measures" in msgs and "NC4" in msgs and "information measures" in msgs
    assert "directional Theorem 3.2 bound" in msgs and "Theorem 3.2 bound" in msgs
    for key in ("tr_sw", "rnc1_mean", "nc1", "nc2", "nc3", "nc4", "bound", "bound_dir"):
        assert math.isnan(out[key]), key
    assert 0.0 <= out["acc"] <= 1.0  # a count: still defined


def test_measure_split_of_a_diverged_model_does_not_raise():
    torch.manual_seed(0)
    model = Tiny(3, 4, 3).double()
    with torch.no_grad():
        model.body[0].weight.fill_(math.nan)
    x, y = torch.randn(20, 3, dtype=F64), torch.arange(20) % 3
    with pytest.warns(RuntimeWarning, match="not finite"):
        out = measure_split(model, x, y, 3, loss_fn=lambda lg, t: lg.sum(1), head=model.head)
    assert math.isnan(out["bound_dir"]) and math.isnan(out["rnc1_mean"])
    assert math.isnan(out["loss"])


# --------------------------------------------------------------------------------------------
# validation of the Python API


def _update(logits, feats, y, K=3, layers=(PENULTIMATE,)):
    SplitAccumulator(K, None, list(layers)).update(logits, feats, y)


L3, G, Y = torch.zeros(4, 3), torch.ones(4, 2), torch.tensor([0, 1, 2, 0])


@pytest.mark.parametrize(("args", "match"), [
    ((torch.zeros(4, 2), {"": G}, Y), r"logits must be \[n, K\] with K = num_classes = 3; got "
                                      r"\(4, 2\)"),
    ((torch.zeros(4), {"": G}, Y), r"logits must be \[n, K\].*got \(4,\)"),
    ((L3, {"": G}, Y[:3]), r"labels has 3 rows but the features/logits have 4"),
    ((L3, {"": G[:3]}, Y), r"features of layer '' has 3 rows but the labels/logits have 4"),
    ((L3, {"": torch.ones(4)}, Y), r"features of layer '' must be \[n, p\].*1-D"),
    ((L3, {"": G}, Y.reshape(2, 2)), r"labels must be a 1-D tensor.*\(2, 2\)"),
    ((L3, {"": G}, torch.tensor([0, 1, 3, 0])), r"labels must be in \[0, 3\).*0\.\.3"),
    ((L3, {"": G}, torch.tensor([0.0, 1.0, 0.5, 0.0])), r"integer class indices.*0\.5.*not "
                                                        r"truncated"),
    ((L3, {"body": G}, Y), r"feats has no layer ''"),
])
def test_update_rejects_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        _update(*args)


@pytest.mark.parametrize(("shape", "bias", "match"), [
    ((4, 2), True, r"head.weight has shape \(4, 2\); expected \(K, p\) = \(3, 2\)"),
    ((3, 5), True, r"head.weight has shape \(3, 5\); expected \(K, p\) = \(3, 2\)"),
])
def test_compute_rejects_wrong_head(shape, bias, match):
    acc = SplitAccumulator(3, None, [PENULTIMATE])
    acc.update(L3, {PENULTIMATE: G}, Y)
    with pytest.raises(ValueError, match=match):
        acc.compute(nn.Linear(shape[1], shape[0], bias=bias))


def test_compute_rejects_wrong_bias():
    head = nn.Linear(2, 3)
    head.bias = nn.Parameter(torch.zeros(4))
    acc = SplitAccumulator(3, None, [PENULTIMATE])
    acc.update(L3, {PENULTIMATE: G}, Y)
    with pytest.raises(ValueError, match=r"head.bias has shape \(4,\); expected \(3,\)"):
        acc.compute(head)


@pytest.mark.parametrize(("kw", "match"), [
    ({"batch_size": 0}, r"batch_size must be an integer >= 1; got 0"),
    ({"batch_size": -5}, r"batch_size must be an integer >= 1; got -5"),
    ({"batch_size": 2.5}, r"batch_size must be an integer >= 1; got 2.5"),
    ({"y": torch.arange(19) % 3}, r"y has 19 rows but the features/logits have 20"),
    ({"y": (torch.arange(20) % 3).reshape(4, 5)}, r"y must be a 1-D tensor"),
    ({"y": torch.arange(20) % 4}, r"y must be in \[0, 3\)"),
    ({"y": (torch.arange(20) % 3) + 0.25}, r"y must be integer class indices.*0\.25"),
    ({"head": nn.Linear(4, 2).double()}, r"head.weight has shape \(2, 4\); expected \(K, p\) "
                                         r"= \(3, 4\)"),
    ({"num_classes": 0}, r"num_classes must be an integer >= 1; got 0"),
])
def test_measure_split_rejects_bad_input(kw, match):
    model = Tiny(3, 4, 3).double()
    args = {"x": torch.randn(20, 3, dtype=F64), "y": torch.arange(20) % 3, "num_classes": 3,
            "head": model.head, "batch_size": 8, **kw}
    with pytest.raises(ValueError, match=match):
        measure_split(model, args["x"], args["y"], args["num_classes"], head=args["head"],
                      loss_fn=lambda lg, t: lg.sum(1), batch_size=args["batch_size"])


@pytest.mark.parametrize(("keep_rows", "batch"), [(7, 5), (7, 3), (50, 8), (100, 9)])
def test_keyed_inputs_are_the_bottom_k_rows_in_key_order(keep_rows: int, batch: int) -> None:
    """Keyed updates with inputs kept: inputs(), labels(), row_keys() and the kept features
    are the ``keep_rows`` rows of smallest (key, label), in that order, whatever the batch
    size (several prunings when 2 keep_rows < rows; the inputs are gathered lazily), checked
    against a sort of all rows done here."""
    g = torch.Generator().manual_seed(3)
    n, k = 60, 4
    x = torch.randn(n, 6, generator=g)
    y = torch.randint(0, k, (n,), generator=g)
    keys = torch.randint(0, 20, (n,), generator=g)  # ties: the label breaks them
    z = torch.randn(n, 5, generator=g)
    acc = SplitAccumulator(k, None, [PENULTIMATE], keep_rows=keep_rows, keep_inputs=True,
                           margin_pair=None)
    for s in range(0, n, batch):
        sl = slice(s, s + batch)
        acc.update(torch.randn(len(y[sl]), k, generator=g), {PENULTIMATE: z[sl]}, y[sl], x[sl],
                   keys=keys[sl])
    rank = sorted(range(n), key=lambda i: (int(keys[i]), int(y[i]), i))[:keep_rows]
    xs, ys = acc.inputs()
    assert torch.equal(ys, y[rank]) and torch.equal(acc.labels(), y[rank])
    assert torch.equal(acc.row_keys(), keys[rank])
    assert torch.equal(torch.cat(acc.kept[PENULTIMATE]), z[rank])
    assert torch.equal(xs, x[rank])
    assert torch.equal(acc.inputs()[0], x[rank])  # asking twice changes nothing
