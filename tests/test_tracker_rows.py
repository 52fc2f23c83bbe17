"""The rows the Tracker measures do not depend on how a split is batched or ordered.

Content keys (:class:`latephase.tracker.RowKeys`) are checked against an exact Python-integer
reference, for batch independence in every dtype, and for giving a uniform subsample; the
Tracker is checked with a shuffled DataLoader, a generator yielding a new order at every
pass, a list of batches and permuted tensors against the unshuffled tensors, over several
evaluations of a changing model, with and without a ``keep_rows`` cap; and a split whose
samples really change is rebuilt, with one warning.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import latephase
from latephase.measures.probe import InfoProbe
from latephase.tracker import RowKeys

K, DIM = 3, 6
INFO = ("nhsic", "kl_knn")


def make_data(n: int, seed: int, dtype: torch.dtype = torch.float32
              ) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, K, (n,), generator=gen)
    y[:K] = torch.arange(K)
    x = 1.5 * torch.randn(K, DIM, generator=gen)[y] + torch.randn(n, DIM, generator=gen)
    return x.to(dtype), y


def make_mlp(dtype: torch.dtype, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(DIM, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(),
                         nn.Linear(8, K)).to(dtype)


def key_order(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    return np.lexsort((y.numpy(), RowKeys(0)(x).numpy()))  # by key, then label


def records_close(got: dict[str, Any], want: dict[str, Any], rtol: float) -> dict[str, Any]:
    """The keys whose values differ beyond ``rtol`` (lists: as multisets, i.e. sorted)."""
    assert set(got) == set(want)
    bad = {}
    for k, w in want.items():
        g = got[k]
        if isinstance(w, list):
            ok = len(g) == len(w) and all(math.isclose(a, b, rel_tol=rtol, abs_tol=1e-12)
                                          for a, b in zip(sorted(g), sorted(w), strict=True))
        else:
            ok = math.isclose(g, w, rel_tol=rtol, abs_tol=1e-12)
        if not ok:
            bad[k] = (g, w)
    return bad


# ----------------------------------------------------------------------------- RowKeys
def reference_keys(x: torch.Tensor, keys: RowKeys) -> list[int]:
    """The documented key in exact Python integers (no floating point anywhere)."""
    p = RowKeys.PRIME
    flat = x.reshape(len(x), -1)
    if flat.is_floating_point():
        flat = flat + 0.0
    if flat.element_size() >= 4:
        words = flat.contiguous().view(torch.int32)
    elif flat.element_size() == 2:
        words = flat.contiguous().view(torch.int16).to(torch.int32)
    else:
        words = flat.to(torch.int32)
    w = keys._w(words.shape[1], torch.device("cpu")).to(torch.int64).tolist()
    out = []
    for row in words.tolist():
        h = []
        for m in range(2):
            total = 0
            for start in range(0, len(row), RowKeys.CHUNK):
                chunk = sum(v * w[start + j][m]
                            for j, v in enumerate(row[start:start + RowKeys.CHUNK]))
                total += chunk % p
            h.append(pow(total % p, 5, p))
        out.append(h[0] * 2**31 + h[1])
    return out


def test_row_keys_are_exact_integer_hashes() -> None:
    """float64 products and sums give exactly the integer result, even at the extremes of
    the 2^53 bound: every word +-2^31 over a full chunk of 4096 words plus a partial one."""
    keys = RowKeys(0)
    extreme = torch.full((4, 4096 + 37), -2**31, dtype=torch.int32)
    extreme[1] = 2**31 - 1
    extreme[2, ::2] = 2**31 - 1
    extreme[3] = torch.randint(-2**31, 2**31 - 1, (4096 + 37,), dtype=torch.int32,
                               generator=torch.Generator().manual_seed(1))
    assert keys(extreme).tolist() == reference_keys(extreme, keys)
    x = torch.randn(5, 7, generator=torch.Generator().manual_seed(2))
    for t in (x, x.double(), x.half(), x.bfloat16(), (x * 50).to(torch.uint8), x > 0,
              (x * 1e6).long()):
        assert keys(t).tolist() == reference_keys(t, keys), t.dtype


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16,
                                   torch.bfloat16, torch.int64, torch.uint8, torch.bool])
def test_row_keys_do_not_depend_on_the_batch(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(3)
    x = (torch.randn(300, 3, 5, generator=gen) * 40).to(dtype)
    keys = RowKeys(0)
    whole = keys(x)
    assert whole.dtype == torch.int64 and whole.shape == (300,)
    for bs in (1, 7, 64, 299):
        assert torch.equal(torch.cat([keys(x[i:i + bs]) for i in range(0, 300, bs)]), whole)
    perm = torch.randperm(300, generator=gen)
    assert torch.equal(keys(x[perm]), whole[perm])  # a row's key is its own
    assert torch.equal(keys(x[perm].contiguous()), whole[perm])
    assert torch.equal(RowKeys(0)(x), whole)  # seeded: another instance agrees
    if dtype not in (torch.uint8, torch.bool):  # coarse dtypes repeat rows; others do not
        assert len(whole.unique()) == len(torch.unique(x.flatten(1), dim=0))


def test_row_keys_tell_rows_apart_and_equal_rows_alike() -> None:
    keys = RowKeys(0)
    gen = torch.Generator().manual_seed(4)
    images = torch.randint(0, 256, (2000, 784), generator=gen, dtype=torch.uint8)
    near = images[:1].repeat(785, 1)
    near[torch.arange(1, 785), torch.arange(784)] ^= 1  # rows differing in one pixel by 1
    for x in (images, near, torch.randn(5000, 20, generator=gen)):
        assert len(keys(x).unique()) == len(x)
    x = torch.randn(10, 4, generator=gen)
    assert torch.equal(keys(torch.cat([x, x])), keys(x).repeat(2))  # duplicates agree
    zeros = torch.zeros(2, 4)
    zeros[1, 2] = -0.0
    assert keys(zeros)[0] == keys(zeros)[1]  # -0.0 is the same input as 0.0
    assert RowKeys(1)(x).tolist() != keys(x).tolist()  # the seed matters


def test_smallest_keys_are_a_uniform_subsample() -> None:
    """Inputs 0..N-1 (content perfectly ordered): the 500 smallest keys must be spread over
    the whole range, as a uniform sample without replacement would be.  Its mean index has
    standard deviation sqrt((N^2 - 1)/12 / k * (N - k)/(N - 1)) (~37 here); 4 of them is the
    tolerance.  A bottom-k of a linear projection would pick the 500 smallest inputs (mean
    ~250) and fail by ~100 standard deviations; so would a hash that kept the input order."""
    n, k = 20_000, 500
    for x in (torch.arange(n, dtype=torch.float32)[:, None],
              torch.arange(n)[:, None], torch.arange(n, dtype=torch.float64)[:, None] / n):
        chosen = torch.argsort(RowKeys(0)(x))[:k].double()
        sd = math.sqrt((n * n - 1) / 12 / k * (n - k) / (n - 1))
        assert abs(float(chosen.mean()) - (n - 1) / 2) < 4 * sd, x.dtype
        # and the rank of the key is unrelated to the index (Spearman rho ~ N(0, 1/n))
        rank = torch.argsort(torch.argsort(RowKeys(0)(x))).double()
        rho = float(torch.corrcoef(torch.stack([rank, torch.arange(n).double()]))[0, 1])
        assert abs(rho) < 4 / math.sqrt(n), x.dtype


# ----------------------------------------------------------------------------- the Tracker
def _sources(x: torch.Tensor, y: torch.Tensor, seed: int) -> dict[str, Any]:
    """Ways of feeding one split, each in an order other than (x, y)'s."""
    n = len(x)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    calls = [0]

    def new_order_each_pass() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        calls[0] += 1
        p = torch.randperm(n, generator=torch.Generator().manual_seed(seed + calls[0]))
        for i in range(0, n, 41):
            yield x[p[i:i + 41]], y[p[i:i + 41]]

    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    return {
        "shuffled DataLoader": loader,
        "generator function, new order each pass": new_order_each_pass,
        "list of batches": [(x[perm[i:i + 50]], y[perm[i:i + 50]]) for i in range(0, n, 50)],
        "permuted tensors": (x[perm], y[perm]),
        "batches with an index": [(x[perm[i:i + 64]], y[perm[i:i + 64]], perm[i:i + 64])
                                  for i in range(0, n, 64)],
    }


def _train_a_little(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    for _ in range(5):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()


# float64: the same rows reach every measure in the same order (the estimators included),
# so the records agree to float rounding: per-row features are the same to an ulp and only the
# float64 moment sums change order (~1e-15 relative, amplified by the conditioning of NC1,
# NC1_pinv, CDNV and the smooth estimators) -- 1e-10.  float32: a feature row may round
# differently in another batch shape (an ulp, 6e-8 relative), which the same conditioning
# keeps below 1e-5.  Misaligned rows move I(Z;Y) and nHSIC(Z;Y) by order 1 (checked below).
@pytest.mark.parametrize(("dtype", "rtol"), [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_any_order_any_source_gives_the_unshuffled_records(dtype: torch.dtype,
                                                           rtol: float) -> None:
    x_tr, y_tr = make_data(200, seed=1, dtype=dtype)
    x_te, y_te = make_data(230, seed=2, dtype=dtype)
    model = make_mlp(dtype)
    kw: dict[str, Any] = dict(layers=["1"], information=INFO, information_n=150,
                              information_layers=None)
    ref = latephase.Tracker(model, {"train": (x_tr, y_tr), "test": (x_te, y_te)}, **kw)
    tr, te = _sources(x_tr, y_tr, 10), _sources(x_te, y_te, 20)
    trackers = {name: latephase.Tracker(model, {"train": tr[name], "test": te[name]}, **kw)
                for name in te}
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no "other rows" rebuild warning
        warnings.filterwarnings("ignore", message="kl_knn")  # its own null warning
        for step in range(3):
            want = ref.evaluate(step)
            assert "test/kl_knn/izy" in want and "test/1/nhsic/nhsic_zy" in want
            for name, tracker in trackers.items():
                bad = records_close(tracker.evaluate(step), want, rtol)
                assert not bad, (name, step, bad)
            _train_a_little(model, x_tr, y_tr)
    # the probes were built once (same rows every pass) and hold the key-ordered rows
    for tracker in trackers.values():
        held = tracker.probes[("test", "")]
        order = key_order(x_te, y_te)
        np.testing.assert_array_equal(held.x, x_te[order][held.idx].double().numpy())
    # the check is sensitive: the same probe fed misaligned rows is far off
    probe = ref.probes[("test", "")]
    with torch.no_grad():
        z = model[:4](x_te[key_order(x_te, y_te)])
    aligned = probe(z.double())
    shuffled = probe(z[torch.randperm(len(z), generator=torch.Generator().manual_seed(0))]
                     .double())
    assert aligned["nhsic/nhsic_zy"] - shuffled["nhsic/nhsic_zy"] > 0.5
    assert aligned["kl_knn/izy"] - shuffled["kl_knn/izy"] > 0.3


def test_keep_rows_subsample_is_chosen_by_key() -> None:
    """A split larger than keep_rows: the kept rows are the keep_rows smallest keys, the same
    rows whatever the order; NC4 and the estimators use exactly those (ground truth: NumPy
    NC4 and InfoProbe on them)."""
    x, y = make_data(300, seed=3, dtype=torch.float64)
    model = make_mlp(torch.float64, seed=1)
    kw: dict[str, Any] = dict(information=INFO, information_n=None, keep_rows=100)
    ref = latephase.Tracker(model, {"test": (x, y)}, **kw).evaluate(0)
    for name, spec in _sources(x, y, 30).items():
        got = latephase.Tracker(model, {"test": spec}, **kw).evaluate(0)
        assert not records_close(got, ref, 1e-10), name
    kept = key_order(x, y)[:100]
    xk, yk = x[kept], y[kept]
    with torch.no_grad():
        g, logits = model[:4](xk), model(xk)
    want = InfoProbe(xk, yk, K, INFO, n=None, seed=0)(g)
    for key, value in want.items():
        assert ref[f"test/{key}"] == pytest.approx(value, rel=1e-12, abs=1e-12), key
    # NC4 on the kept rows, with the class means of ALL rows (moments stream every row)
    with torch.no_grad():
        g_all = model[:4](x).numpy()
    mu = np.stack([g_all[y.numpy() == c].mean(0) for c in range(K)])
    ncc = ((g.numpy()[:, None, :] - mu[None]) ** 2).sum(2).argmin(1)
    assert ref["test/nc4"] == pytest.approx(float((ncc == logits.numpy().argmax(1)).mean()))
    # margins of the kept rows of the pair (0, 1)
    w = model[4].weight.detach().numpy()
    diff = (logits[:, 0] - logits[:, 1]).numpy() / np.linalg.norm(w[0] - w[1])
    assert sorted(ref["test/margins_a"]) == pytest.approx(sorted(diff[yk.numpy() == 0]))
    assert sorted(ref["test/margins_b"]) == pytest.approx(sorted(diff[yk.numpy() == 1]))
    # ... and on a split of only 100 rows -- those rows -- the records agree
    small = latephase.Tracker(model, {"test": (xk, yk)}, **kw).evaluate(0)
    for key in want:
        assert small[f"test/{key}"] == pytest.approx(ref[f"test/{key}"], rel=1e-10, abs=1e-12)


def test_a_split_that_changes_rebuilds_its_probes_once_warned() -> None:
    """Random augmentation: every pass yields other inputs.  The probes are rebuilt from the
    pass (so (x, z, y) stay one sample), with one warning; the record equals that of a fresh
    tracker measuring the same pass."""
    x, y = make_data(150, seed=4)
    model = make_mlp(torch.float32, seed=2)

    def augmented(i: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        noise = 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(100 + i))
        return [(x[j:j + 40] + noise[j:j + 40], y[j:j + 40]) for j in range(0, 150, 40)]

    passes = iter(range(10))
    tracker = latephase.Tracker(model, {"test": lambda: augmented(next(passes))},
                                information=INFO, information_n=100)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = [tracker.evaluate(s) for s in range(3)]
    rebuilt = [w for w in caught if "gave other rows" in str(w.message)]
    assert len(rebuilt) == 1 and "split 'test'" in str(rebuilt[0].message)
    for i, rec in enumerate(records):
        fresh = latephase.Tracker(model, {"test": augmented(i)}, information=INFO,
                                  information_n=100)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = fresh.evaluate(i)
        assert not records_close(rec, want, 1e-12), i


def test_row_keys_in_blocks_equal_keys_of_the_whole() -> None:
    """RowKeys hashes large inputs in row blocks (to bound its float64 transient); every key
    equals the one computed on the whole tensor at once, for float and uint8 inputs."""
    g = torch.Generator().manual_seed(0)
    keys = RowKeys(3)
    for x in (torch.randn(3 * RowKeys.ROWS + 7, 784, generator=g),
              torch.randint(0, 255, (RowKeys.ROWS + 1, 3, 8, 8), generator=g,
                            dtype=torch.uint8)):
        assert torch.equal(keys(x), keys._keys(x))
        assert torch.equal(keys(x[5:9]), keys._keys(x)[5:9])
