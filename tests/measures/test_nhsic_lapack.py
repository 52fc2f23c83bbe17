"""nHSIC's Cholesky inverse through SciPy's LAPACK without the GIL (information._inverse_lower):
the same floats as the scipy.linalg.lapack wrappers, and a second Python thread runs while it
does (what lets the probe run nHSIC beside the k-NN estimators)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from scipy import linalg

from latephase.measures import information as info


def _wrapped(m: np.ndarray) -> np.ndarray:
    """The reference: scipy.linalg.lapack's dpotrf + dpotri wrappers on the same layout (the
    upper triangle of the Fortran view m.T, i.e. m's lower), lower triangle of m^{-1}.  (The
    lower-triangle variant on a copy agrees to ~1e-18 here but not bit for bit: LAPACK's two
    variants order their sums differently.)"""
    chol, i1 = linalg.lapack.dpotrf(m.T, lower=0, clean=1, overwrite_a=0)
    inv, i2 = linalg.lapack.dpotri(chol, lower=0)
    assert i1 == i2 == 0
    return np.tril(np.asarray(inv.T))


def _spd(kind: str, n: int = 300) -> np.ndarray:
    rng = np.random.default_rng(0)
    if kind == "random":
        a = rng.standard_normal((n, n))
        return a @ a.T + n * np.eye(n)
    # the regime nHSIC sees: a centred Gaussian Gram of collapsed class clusters + n eps I
    y = np.arange(n) % 10
    z = rng.standard_normal((10, 50))[y] + 1e-4 * rng.standard_normal((n, 50))
    k, _ = info._gaussian_gram(z, "paper", 5.0)
    return info._centre_regularise(k, n * 1e-5)


@pytest.mark.parametrize("kind", ["random", "collapsed"])
def test_inverse_lower_is_the_lapack_wrappers_float_for_float(kind: str) -> None:
    m = _spd(kind)
    ref = _wrapped(m)
    got = info._inverse_lower(m.copy())
    assert np.array_equal(got, ref)  # the same routines on the same bytes
    assert not np.any(np.triu(got, 1))
    # and it is the inverse: M (M^-1) = I to float64 accuracy for this conditioning
    full = got + np.tril(got, -1).T
    cond = np.linalg.cond(m)
    assert np.abs(m @ full - np.eye(len(m))).max() < 1e-13 * cond


def test_inverse_lower_releases_the_gil_while_lapack_runs() -> None:
    # While a thread holds the GIL, the other cannot stamp a time: the wrappers hold it for
    # dpotri (about 2/3 of the call), leaving a gap over half the call between stamps.
    # Released, the other thread keeps stamping; the largest gap allowed, 30 % of the call
    # (~30 ms for this 1500 x 1500 inverse), leaves room for the scheduler on a loaded machine.
    m = _spd("random", 1500)
    stamps: list[float] = []
    stop = threading.Event()

    def stamp() -> None:
        while not stop.is_set():
            stamps.append(time.perf_counter())

    worker = threading.Thread(target=stamp)
    worker.start()
    try:
        time.sleep(0.02)
        t0 = time.perf_counter()
        info._inverse_lower(m)
        t1 = time.perf_counter()
    finally:
        stop.set()
        worker.join()
    inside = [t0, *[t for t in stamps if t0 < t < t1], t1]
    gap = max(b - a for a, b in zip(inside[:-1], inside[1:], strict=True))
    assert gap < 0.3 * (t1 - t0), f"the other thread stopped for {gap:.3f} s of {t1 - t0:.3f} s"


def _sq_dists_whole(a: np.ndarray) -> np.ndarray:
    """The reference: (|a_i|^2 + |a_j|^2) - 2 a_i.a_j with the whole outer sum at once."""
    sq = np.einsum("ij,ij->i", a, a)
    gram = a @ a.T
    d2 = np.add.outer(sq, sq) - 2.0 * gram
    np.maximum(d2, 0.0, out=d2)
    np.fill_diagonal(d2, 0.0)
    return d2


@pytest.mark.parametrize("n", [1, 63, 64, 65, 300])
@pytest.mark.parametrize("scale", [1.0, 8.0, 1e-4])
def test_sq_dists_in_row_blocks_is_the_whole_outer_sum_float_for_float(n: int,
                                                                      scale: float) -> None:
    rng = np.random.default_rng(n)
    a = scale * rng.standard_normal((n, 20))
    a[: n // 2] = a[0] + 1e-6 * a[: n // 2]  # near-duplicates: the clamp at 0 matters
    ref = _sq_dists_whole(a)
    assert np.array_equal(info._sq_dists(a), ref)
    garbage = np.full((n, n), np.nan)
    assert np.array_equal(info._sq_dists(a, garbage), ref)


def test_nhsic_with_a_kept_buffer_is_the_same_and_a_large_one_is_not_kept(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from latephase.measures import probe as probe_module

    rng = np.random.default_rng(3)
    y = np.arange(400) % 4
    x = rng.standard_normal((400, 30)) + 3.0 * rng.standard_normal((4, 30))[y]
    zs = [x @ rng.standard_normal((30, 8)) for _ in range(2)]
    side = info.NhsicSide.build(x, y, 4, bandwidth="paper", sigma=5.0, eps=1e-5)
    work = np.full((400, 400), np.nan)
    for z in zs:  # the same buffer reused: nothing of the last call leaks into the next
        assert side.values(z, work) == side.values(z)
    kept = probe_module.InfoProbe(x, y, 4, ["nhsic"], n=None)
    monkeypatch.setattr(probe_module, "KEEP_WORK_BYTES", 8 * 399 * 399)
    fresh = probe_module.InfoProbe(x, y, 4, ["nhsic"], n=None)

    def buffers(p: probe_module.InfoProbe) -> int:
        cells = [c.cell_contents for c in p.computers["nhsic"].__closure__ or ()]
        return sum(isinstance(c, np.ndarray) and c.shape == (400, 400) for c in cells)

    assert (buffers(kept), buffers(fresh)) == (1, 0)
    for z in zs:
        assert kept(z) == fresh(z)


@pytest.mark.parametrize("kind", ["random", "collapsed"])
def test_inverse_lower_fallback_through_the_wrappers_is_the_same(
        kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # where SciPy exports no usable cython_lapack routine, the wrappers are called instead
    m = _spd(kind)
    fast = info._inverse_lower(m.copy())
    monkeypatch.setattr(info, "_potrf_potri", lambda: None)
    assert np.array_equal(info._inverse_lower(m.copy()), fast)
