"""The estimators' own PCA (:func:`latephase.measures.information._pca_project`) against
scikit-learn's exact PCA (``svd_solver="full"``, LAPACK SVD), the independent reference, on
the shapes the probe meets (Z [1000, 200], X [1000, 784], a jackknife replicate with fewer
rows than columns) and on the paper's regimes: random, clustered, collapsed features.

Tolerance: both are exact algorithms in float64; an eigenvector's error is about
eps * lambda_max / gap (Davis-Kahan), so with the spectra below (relative gaps >= 1e-2 among
the kept components, condition lambda_max / lambda_k <= 1e8) scores agree to 1e-6 of the
component's own scale.  Signs are compared after aligning each column (a component's sign is
arbitrary in both).
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA

from latephase.measures import information as info


def data(kind: str, n: int, d: int, seed: int = 0) -> np.ndarray:
    """Rows with a decaying spectrum: ``random`` (Gaussian), ``clustered`` (10 class means +
    0.3 noise), ``collapsed`` (class means + 1e-4 noise: the paper's late phase)."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((d, d)))[0]
    scales = 2.0 ** -np.arange(d, dtype=float) * 0.5 + 1e-3
    if kind == "random":
        return (rng.standard_normal((n, d)) * scales) @ basis.T
    y = np.arange(n) % 10
    means = rng.standard_normal((10, d)) * scales * 10
    noise = {"clustered": 0.3, "collapsed": 1e-4}[kind]
    return (means[y] + noise * rng.standard_normal((n, d)) * scales) @ basis.T


def aligned(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a`` with each column's sign flipped to best match ``b``'s."""
    return a * np.where(np.sum(a * b, axis=0) < 0, -1.0, 1.0)


@pytest.mark.parametrize("solver", ["auto", "covariance_eigh", "full"])
@pytest.mark.parametrize(("kind", "n", "d", "dim"), [
    ("random", 1000, 200, 3), ("random", 1000, 784, 3), ("random", 60, 200, 5),
    ("clustered", 1000, 200, 9), ("collapsed", 1000, 200, 9), ("collapsed", 90, 784, 9)])
def test_pca_matches_sklearn_full(solver: str, kind: str, n: int, d: int, dim: int) -> None:
    a = data(kind, n, d)
    centred = a - a.mean(axis=0)
    scores, ratio, used = info._pca_project(centred, dim, seed=0, svd_solver=solver)
    ref = PCA(n_components=dim, svd_solver="full").fit(centred)
    ref_scores = ref.transform(centred)
    assert used == ("full" if solver == "full" else "covariance_eigh")
    assert scores.shape == (n, dim)
    scale = ref_scores.std(axis=0)
    err = np.abs(aligned(scores, ref_scores) - ref_scores).max(axis=0) / scale
    assert err.max() < 1e-6, err
    np.testing.assert_allclose(ratio, ref.explained_variance_ratio_, rtol=1e-9, atol=1e-15)


def test_pca_is_reproducible_and_sign_fixed() -> None:
    """Same input, same scores, bit for bit; each eigenvector's largest entry is positive,
    so a rerun or another machine's LAPACK sign choice gives the same whitened points."""
    a = data("clustered", 500, 200)
    centred = a - a.mean(axis=0)
    s1, _, _ = info._pca_project(centred, 5, 0, "auto")
    s2, _, _ = info._pca_project(centred.copy(), 5, 1, "auto")  # exact: the seed is unused
    np.testing.assert_array_equal(s1, s2)
    vecs = np.linalg.lstsq(centred, s1, rcond=None)[0]  # the loadings behind the scores
    top = vecs[np.argmax(np.abs(vecs), axis=0), np.arange(5)]
    assert (top > 0).all()


def test_pca_whiten_unit_variance_in_collapse() -> None:
    """Whitened columns have unit variance even at 1e-4 collapse, and the randomized solver
    (scikit-learn, imported only for it) spans the same leading axes."""
    a = data("collapsed", 1000, 200)
    w, meta = info._pca_whiten(a, 9, 0, "auto")
    np.testing.assert_allclose(w.var(axis=0, ddof=1), 1.0, rtol=1e-12)
    assert meta["pca_solver"] == "covariance_eigh" and meta["dim_used"] == 9
    wr, meta_r = info._pca_whiten(a, 9, 0, "randomized")
    assert meta_r["pca_solver"] == "randomized"
    # the first components are far apart in variance: randomized finds them to ~1e-6
    np.testing.assert_allclose(np.abs(aligned(wr, w) - w)[:, :3].max(), 0.0, atol=1e-4)
