"""Tests of latephase.measures.bounds (Theorem 3.2 of Sakamoto & Sato): Monte-Carlo validity on
Gaussian mixtures, a naive loop reference, exact invariances, saturation, and the sign of the
bias term (which the authors' reference implementation flips, science.md section 6.5).

Every tolerance is stated next to its assertion with the reason for its size.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from latephase.measures.bounds import (
    MarginMoments,
    directional_terms,
    theorem32_bound,
    theorem32_terms,
)
from latephase.measures.collapse import ClassMoments


def T(a) -> torch.Tensor:
    """float64 tensor (torch.as_tensor would make python floats float32)."""
    return torch.as_tensor(a, dtype=torch.float64)


# --------------------------------------------------------------------------------------------
# naive reference


def naive_terms(mu, var, W, b) -> np.ndarray:
    """[1 + max(M_ck, 0)^2 / V_c]^-1 by explicit loops; M_ck the biased margin along u_ck."""
    K = len(W)
    b = np.zeros(K) if b is None else np.asarray(b, dtype=float)
    out = np.zeros((K, K))
    for c in range(K):
        for k in range(K):
            if k == c:
                continue
            d = np.asarray(W[c], dtype=float) - np.asarray(W[k], dtype=float)
            norm = math.sqrt(sum(x * x for x in d))
            M = (sum(m * x for m, x in zip(mu[c], d, strict=True)) + b[c] - b[k]) / norm
            if var[c] > 0:
                out[c, k] = 1.0 / (1.0 + max(M, 0.0) ** 2 / var[c])
            else:  # deterministic projection: error iff the margin is not positive
                out[c, k] = 1.0 if M <= 0 else 0.0
    return out


def naive_bound(mu, var, priors, W, b) -> float:
    t = naive_terms(mu, var, W, b)
    p = np.asarray(priors, dtype=float) / np.sum(priors)
    return float(sum(p[c] * t[c].sum() for c in range(len(W))))


def test_terms_match_naive_loops():
    for seed in range(20):
        rng = np.random.default_rng(seed)
        K, p = int(rng.integers(2, 7)), int(rng.integers(1, 6))
        mu = rng.normal(size=(K, p)) * 3
        var = rng.exponential(size=K)
        var[rng.integers(K)] = 0.0  # one deterministic class
        W = rng.normal(size=(K, p))
        b = None if seed % 3 == 0 else rng.normal(size=K) * 2
        priors = rng.integers(0, 50, K) + 1
        got = theorem32_terms(T(mu), T(var), T(W), None if b is None else T(b)).numpy()
        ref = naive_terms(mu, var, W, b)
        # same float64 formula, different operation order: ~1e-16 relative per term; the
        # terms lie in [0, 1], so rtol 1e-12 / atol 1e-14 is a >100x margin
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-14)
        assert np.all(np.diag(got) == 0)
        bound = theorem32_bound(T(mu), T(var), T(priors), T(W), None if b is None else T(b))
        assert bound == pytest.approx(naive_bound(mu, var, priors, W, b), rel=1e-12, abs=1e-14)


def test_float32_inputs_are_promoted():
    rng = np.random.default_rng(0)
    mu, var, W, b = rng.normal(size=(3, 2)), rng.exponential(size=3), rng.normal(size=(3, 2)), \
        rng.normal(size=3)
    got = theorem32_terms(T(mu).float(), T(var).float(), T(W).float(), T(b).float())
    assert got.dtype == torch.float64
    ref = naive_terms(*(np.asarray(T(a).float(), dtype=float) for a in (mu, var, W, b)))
    # the reference sees the same float32-rounded numbers, so float64 agreement ~1e-15
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------------------------
# (d) saturation and deterministic classes


def test_nonpositive_margin_gives_term_one():
    W = T([[1.0, 0.0], [0.0, 0.0], [-1.0, 0.0]])
    # class 0 mean at x = -2: wrong side of class 1 (margin -2) and of class 2 (margin -2)
    # class 1 mean at the origin: margin to class 0 is 0 exactly -> 1 as well
    mu = T([[-2.0, 0.0], [0.0, 0.0], [-3.0, 0.0]])
    t = theorem32_terms(mu, T([0.5, 0.5, 0.5]), W, None).numpy()
    assert t[0, 1] == 1.0 and t[0, 2] == 1.0 and t[1, 0] == 1.0 and t[1, 2] == 1.0
    # class 2 is on the right side of both: positive margins, terms strictly inside (0, 1)
    assert 0.0 < t[2, 0] < 1.0 and 0.0 < t[2, 1] < 1.0
    # margin M = <mu_2, (w_2 - w_0)/||.||> = <(-3, 0), (-1, 0)> = 3 -> 1 / (1 + 9 / 0.5)
    assert t[2, 0] == pytest.approx(1.0 / 19.0, rel=1e-14)
    # everything on the wrong side: the bound saturates at K - 1 (it is not clipped to 1)
    bound = theorem32_bound(-mu, T([0.5, 0.5, 0.5]), T([1.0, 1.0, 1.0]), W, None)
    assert bound >= 1.0


def test_zero_variance_class_is_a_step_function():
    W, mu = T([[1.0], [-1.0]]), T([[0.0], [0.0]])
    for b, expected in (([1.0, 0.0], [0.0, 1.0]), ([0.0, 0.0], [1.0, 1.0]),
                        ([-1.0, 0.0], [1.0, 0.0])):
        t = theorem32_terms(mu, T([0.0, 0.0]), W, T(b)).numpy()
        assert [t[0, 1], t[1, 0]] == expected, b


def test_identical_classifier_rows_decided_by_bias():
    """w_c = w_k: class c beats k everywhere iff b_c > b_k (the 1/||w_c - w_k|| limit)."""
    W, mu, var = T([[1.0, 2.0], [1.0, 2.0]]), T([[3.0, 0.0], [0.0, 3.0]]), T([1.0, 1.0])
    t = theorem32_terms(mu, var, W, T([0.5, 0.0])).numpy()
    assert t[0, 1] == 0.0 and t[1, 0] == 1.0
    assert np.all(theorem32_terms(mu, var, W, None).numpy() == 1 - np.eye(2))


# --------------------------------------------------------------------------------------------
# (c) invariances


def _random_problem(seed):
    rng = np.random.default_rng(seed)
    K, p = 4, 3
    return (rng.normal(size=(K, p)) * 2, rng.exponential(size=K), rng.integers(1, 9, K),
            rng.normal(size=(K, p)), rng.normal(size=K), rng)


@pytest.mark.parametrize("seed", range(5))
def test_invariances(seed):
    mu, var, pri, W, b, rng = _random_problem(seed)

    def bound(mu_, var_, W_, b_):
        return theorem32_bound(T(mu_), T(var_), T(pri), T(W_), None if b_ is None else T(b_))

    ref = bound(mu, var, W, b)
    # Every identity below is exact in real arithmetic; float64 evaluation differs by a few
    # roundings of O(1) numbers, so rtol 1e-12.
    B = 37.5
    # (1) the representation scale cancels: g -> B g (means x B, variances x B^2) together
    #     with b -> B b, since f = W (B g) + B b = B (W g + b) has the same argmax
    assert bound(B * mu, B**2 * var, W, B * b) == pytest.approx(ref, rel=1e-12)
    # (2) scaling the whole last layer (W, b) -> (a W, a b), a > 0
    assert bound(mu, var, 0.01 * W, 0.01 * b) == pytest.approx(ref, rel=1e-12)
    # (3) a common vector added to every row of W, a common constant to every b_c
    shift = rng.normal(size=W.shape[1])
    assert bound(mu, var, W + shift, b + 5.0) == pytest.approx(ref, rel=1e-12)
    # (4) a rotation of feature space applied to means and rows of W
    Q, _ = np.linalg.qr(rng.normal(size=(W.shape[1],) * 2))
    assert bound(mu @ Q.T, var, W @ Q.T, b) == pytest.approx(ref, rel=1e-12)
    # (5) priors given as counts or as probabilities
    assert theorem32_bound(T(mu), T(var), T(pri / pri.sum()), T(W), T(b)) == \
        pytest.approx(ref, rel=1e-12)
    # Without a bias, scaling g alone is an invariance; with a bias it is NOT (the bias must
    # be scaled with g): check both, so that (1) is not vacuous.
    assert bound(B * mu, B**2 * var, W, None) == pytest.approx(bound(mu, var, W, None), rel=1e-12)
    assert abs(bound(B * mu, B**2 * var, W, b) - ref) > 1e-3


# --------------------------------------------------------------------------------------------
# (a) Monte Carlo: the bound is never below the true error of argmax(W g + b)


def mixture(seed: int, K: int, p: int, sep: float):
    rng = np.random.default_rng(seed)
    means = sep * rng.normal(size=(K, p))
    chol = [rng.normal(size=(p, p)) * rng.uniform(0.3, 1.0) / math.sqrt(p) for _ in range(K)]
    priors = rng.dirichlet(2.0 * np.ones(K))
    return rng, means, chol, priors


def sample(rng, means, chol, priors, n):
    y = rng.choice(len(means), size=n, p=priors)
    z = rng.normal(size=(n, means.shape[1]))
    g = means[y] + np.einsum("npq,nq->np", np.stack(chol)[y], z)
    return g, y


def classifiers(rng, means, priors, kind):
    K, p = means.shape
    if kind == "good_bias":  # Gaussian-Bayes-like linear rule: nearest mean with prior bias
        return means.copy(), -0.5 * (means**2).sum(1) + np.log(priors)
    if kind == "good_nobias":  # centred means, no bias (good when the mixture is centred)
        return means - means.mean(0), None
    if kind == "bad_bias":  # random head, random bias
        return rng.normal(size=(K, p)), 3.0 * rng.normal(size=K)
    if kind == "wrong_bias":  # a good W spoiled by a large reversed bias
        return means.copy(), 0.5 * (means**2).sum(1) * 3.0
    raise ValueError(kind)


MC_CASES = [(seed, K, kind) for seed, K in [(0, 2), (1, 3), (2, 4), (3, 5), (4, 2), (5, 3)]
            for kind in ("good_bias", "good_nobias", "bad_bias", "wrong_bias")]


def monte_carlo(seed: int, K: int, kind: str, n: int = 200_000):
    """Mixture, classifier, its Monte-Carlo error and binomial SE, population variances."""
    p = 2 + seed % 3
    rng, means, chol, priors = mixture(seed, K, p, sep=4.0)
    W, b = classifiers(rng, means, priors, kind)
    g, y = sample(rng, means, chol, priors, n)
    err = float(np.mean((g @ W.T + (0.0 if b is None else b)).argmax(1) != y))
    # binomial standard error of the Monte-Carlo error (floored at 1/n for err = 0); 4 SE is a
    # 3e-5 one-sided false-alarm probability per check (48 checks -> < 2e-3 in all; the seeds
    # are fixed anyway, so the suite is deterministic)
    se = math.sqrt(max(err * (1 - err), 1.0 / n) / n)
    # population moments: E[g|c] = mean_c, E||g - mean_c||^2 = tr(L_c L_c^T)
    var_pop = np.array([np.sum(L * L) for L in chol])
    return rng, means, chol, priors, var_pop, W, b, err, se


@pytest.mark.parametrize(("seed", "K", "kind"), MC_CASES)
def test_bound_dominates_monte_carlo_error(seed, K, kind):
    rng, means, chol, priors, var_pop, W, b, err, se = monte_carlo(seed, K, kind)
    bT = None if b is None else T(b)
    bound_pop = theorem32_bound(T(means), T(var_pop), T(priors), T(W), bT)
    assert bound_pop >= err - 4 * se, (bound_pop, err)

    # sample moments from an independent sample (as done on a held-out split)
    g2, y2 = sample(rng, means, chol, priors, 20_000)
    m = ClassMoments.from_batch(T(g2), torch.as_tensor(y2), K)
    bound_smp = theorem32_bound(m.mean, m.m2_class / m.n, m.n, T(W), bT)
    assert bound_smp >= err - 4 * se, (bound_smp, err)

    # the mean-based rules must give a non-vacuous bound, otherwise the checks prove little
    # (some cases are tight: seed 0, K = 2 has error 0.329 against a bound of 0.336)
    if kind.startswith("good"):
        assert bound_pop < 1.0, bound_pop


def _no_clamp_bound(means, var, priors, W, b) -> float:
    """A plausible wrong formula: the margin is squared without max(., 0)."""
    p = priors / priors.sum()
    b = np.zeros(len(W)) if b is None else b
    tot = 0.0
    for c in range(len(W)):
        for k in range(len(W)):
            if k != c:
                d = W[c] - W[k]
                M = (means[c] @ d + b[c] - b[k]) / np.linalg.norm(d)
                tot += p[c] / (1.0 + M * M / var[c])
    return tot


@pytest.mark.parametrize(("seed", "K", "kind", "wrong"), [
    (1, 3, "wrong_bias", "flipped_bias"),
    (4, 2, "bad_bias", "flipped_bias"),
    (0, 2, "bad_bias", "no_clamp"),
    (3, 5, "good_nobias", "no_clamp"),
])
def test_monte_carlo_check_has_power(seed, K, kind, wrong):
    """The same Monte-Carlo check rejects plausible wrong bounds: the bias sign flipped (the
    reference implementation's bug, i.e. evaluating with -b) or the margin not clamped at 0."""
    _, means, _, priors, var_pop, W, b, err, se = monte_carlo(seed, K, kind)
    if wrong == "flipped_bias":
        bad = theorem32_bound(T(means), T(var_pop), T(priors), T(W), T(-b))
    else:
        bad = _no_clamp_bound(means, var_pop, priors, W, b)
    assert bad < err - 4 * se, (bad, err)


# --------------------------------------------------------------------------------------------
# (e) the sign of the bias term


def test_bias_sign_one_dimensional():
    """1-D, two classes at g = 2 (class 0) and g = 1 (class 1), std 0.2, W = [[1], [-1]]:
    class 0 wins iff 2 g + (b_0 - b_1) > 0.  With no bias every sample (g > 0) goes to class 0;
    only the bias b = (-1.5, 1.5) puts the threshold at g = 1.5 between the classes."""
    W = T([[1.0], [-1.0]])
    mu, var, pri = T([[2.0], [1.0]]), T([0.04, 0.04]), T([0.5, 0.5])
    right, none, flipped = T([-1.5, 1.5]), None, T([1.5, -1.5])

    # margins by hand, u_01 = +1, u_10 = -1, ||w_0 - w_1|| = 2:
    #   right:   M_01 = 2 + (-3)/2 = 0.5,  M_10 = -1 + 3/2 = 0.5 -> terms 1/(1 + 0.25/0.04)
    #   none:    M_01 = 2, M_10 = -1 -> class 1 term = 1
    #   flipped: M_01 = 3.5, M_10 = -2.5 -> class 1 term = 1
    t = theorem32_terms(mu, var, W, right).numpy()
    assert t[0, 1] == pytest.approx(1 / 7.25, rel=1e-14)
    assert t[1, 0] == pytest.approx(1 / 7.25, rel=1e-14)
    assert theorem32_terms(mu, var, W, flipped).numpy()[1, 0] == 1.0

    b_right = theorem32_bound(mu, var, pri, W, right)
    b_none = theorem32_bound(mu, var, pri, W, none)
    b_flip = theorem32_bound(mu, var, pri, W, flipped)
    assert b_right == pytest.approx(1 / 7.25, rel=1e-14)
    assert b_right < 0.2 < 0.5 < b_none  # the right bias brings the bound down ...
    assert b_flip > 0.5 > b_right  # ... and the flipped one sends it back up

    # Monte Carlo: the classifier with the flipped bias really errs on all of class 1; its
    # bound must cover that, while the sign-flipped formula (the reference implementation's
    # bug, equivalent to evaluating with -b) certifies 0.14 and would fail the check.
    rng = np.random.default_rng(0)
    n = 200_000
    y = rng.integers(0, 2, n)
    g = np.where(y == 0, 2.0, 1.0) + 0.2 * rng.normal(size=n)
    for bias, bnd in ((right, b_right), (flipped, b_flip)):
        logits = g[:, None] * W.numpy().T + bias.numpy()
        err = float(np.mean(logits.argmax(1) != y))
        se = math.sqrt(max(err * (1 - err), 1.0 / n) / n)
        assert bnd >= err - 4 * se, (bnd, err)
    buggy = theorem32_bound(mu, var, pri, W, -flipped)  # = b_right, about 0.14
    assert err > 0.45 and buggy < err - 4 * se


# --------------------------------------------------------------------------------------------
# (f) the directional bound (bound_dir): the variance of the projection instead of V_c


def naive_dir_bound(g: np.ndarray, y: np.ndarray, K: int, W: np.ndarray,
                    b: np.ndarray | None) -> float:
    """The directional Theorem 3.2 bound from FEATURES by loops: for each class c and k != c,
    the projection t_i = <u_ck, g_i> + (b_c - b_k)/||w_c - w_k|| of the class-c rows, its mean
    m and its variance s (1/n_c), term 1 if m <= 0, else 1 / (1 + m^2 / s)."""
    b = np.zeros(K) if b is None else b
    total = 0.0
    for c in range(K):
        rows = g[y == c]
        if len(rows) == 0:
            continue
        for k in range(K):
            if k == c:
                continue
            d = W[c] - W[k]
            norm = float(np.linalg.norm(d))
            t = rows @ (d / norm) + (b[c] - b[k]) / norm
            m, s = float(t.mean()), float(((t - t.mean()) ** 2).mean())
            term = 1.0 if m <= 0 else (0.0 if s == 0 else 1.0 / (1.0 + m * m / s))
            total += len(rows) / len(g) * term
    return total


def clustered(seed: int, K: int, p: int, n: int, *, spread: float = 1.0, noise: float = 0.5,
              absent: tuple[int, ...] = (), bias: bool = True, head: str = "means"):
    """Features around K class means (anisotropic noise), a head and the float64 logits."""
    rng = np.random.default_rng(seed)
    present = [c for c in range(K) if c not in absent]
    y = rng.choice(present, size=n)
    means = spread * rng.normal(size=(K, p))
    mix = rng.normal(size=(K, p, p)) / math.sqrt(p) * rng.uniform(0.2, 1.5, size=(K, 1, 1))
    g = means[y] + noise * np.einsum("npq,nq->np", mix[y], rng.normal(size=(n, p)))
    if head == "means":  # a reasonable classifier: nearest-mean rule plus a perturbation
        W = means + 0.3 * rng.normal(size=(K, p))
        b = (-0.5 * (means**2).sum(1) + rng.normal(size=K)) if bias else None
    else:  # a random head
        W, b = rng.normal(size=(K, p)), (rng.normal(size=K) if bias else None)
    logits = g @ W.T + (0.0 if b is None else b)
    return rng, g, y, W, b, logits


def dir_bound(logits: np.ndarray, y: np.ndarray, K: int) -> float:
    return MarginMoments.from_batch(T(logits), torch.as_tensor(y), K).bound()


def trace_bound(g: np.ndarray, y: np.ndarray, K: int, W: np.ndarray, b) -> float:
    m = ClassMoments.from_batch(T(g), torch.as_tensor(y), K)
    return theorem32_bound(m.mean, m.m2_class / m.n.clamp(min=1), m.n, T(W),
                           None if b is None else T(b))


DIR_CASES = [  # (seed, K, p, n, noise, absent, bias, head)
    (0, 2, 3, 50, 0.5, (), True, "means"), (1, 3, 5, 80, 1.0, (), False, "means"),
    (2, 5, 4, 120, 0.3, (2,), True, "random"), (3, 7, 8, 300, 2.0, (0, 6), True, "means"),
    (4, 10, 20, 500, 0.1, (), True, "means"), (5, 4, 2, 40, 0.0, (), True, "means"),
    (6, 97, 16, 3000, 0.5, (), True, "means"), (7, 97, 10, 1500, 3.0, (5, 50), False, "random"),
]


@pytest.mark.parametrize(("seed", "K", "p", "n", "noise", "absent", "bias", "head"), DIR_CASES)
def test_dir_bound_matches_naive_from_features(seed, K, p, n, noise, absent, bias, head):
    """MarginMoments (logit differences, norm cancelled) = the projection computed from the
    features, u_ck and the bias (independent path).  Both float64; they differ in operation
    order only (logits formed first, the norm divided out or not): relative ~1e-14, so rtol
    1e-10 (the sum has up to 97 * 96 terms in [0, 1], each with ~1e-15 rounding; the variances
    of the noise = 0 case are exact zeros on both sides only up to rounding, see atol)."""
    _, g, y, W, b, logits = clustered(seed, K, p, n, noise=noise, absent=absent, bias=bias,
                                      head=head)
    want = naive_dir_bound(g, y, K, W, b)
    if noise == 0.0:  # the rounding residue of s ~ 1e-30 vs m^2 ~ 1 makes terms ~1e-30
        assert want == pytest.approx(dir_bound(logits, y, K), abs=1e-12)
    else:
        assert dir_bound(logits, y, K) == pytest.approx(want, rel=1e-10)


@pytest.mark.parametrize(("seed", "K", "p", "n", "noise", "absent", "bias", "head"), DIR_CASES)
def test_dir_bound_below_trace_bound_and_above_own_error(seed, K, p, n, noise, absent, bias,
                                                         head):
    """u^T Sigma_c u <= Tr(Sigma_c): bound_dir <= bound exactly in real arithmetic (both from
    the same float64 data; slack 1e-12 relative for rounding).  On its own sample moments
    (1/n_c), Cantelli holds for the empirical distribution: bound_dir >= the sample's argmax
    error (slack 1e-12 for rounding; the error is a count / n)."""
    _, g, y, W, b, logits = clustered(seed, K, p, n, noise=noise, absent=absent, bias=bias,
                                      head=head)
    bd, bt = dir_bound(logits, y, K), trace_bound(g, y, K, W, b)
    err = float(np.mean(logits.argmax(1) != y))
    assert bd <= bt * (1 + 1e-12) + 1e-15, (bd, bt)
    assert bd >= err - 1e-12, (bd, err)


def test_dir_bound_checks_have_power():
    """Across many clustered cases (K = 2..97) the directional bound is informative: below 1
    while the error is positive (so 'bound >= error' could fail), and strictly below the trace
    bound, which is often vacuous on the same data."""
    informative, strictly_tighter, vacuous_trace = [], 0, 0
    for seed in range(30):  # 5 class counts x 6 noise levels
        K = (2, 3, 5, 10, 97)[seed % 5]
        noise = (0.1, 0.2, 0.35, 0.5, 1.0, 2.0)[seed // 5]
        _, g, y, W, b, logits = clustered(100 + seed, K, 12, 40 * K, noise=noise)
        bd, bt = dir_bound(logits, y, K), trace_bound(g, y, K, W, b)
        err = float(np.mean(logits.argmax(1) != y))
        assert err - 1e-12 <= bd <= bt * (1 + 1e-12), (seed, err, bd, bt)
        if err > 0 and bd < 1:
            informative.append(K)
        strictly_tighter += bd < 0.9 * bt
        vacuous_trace += bt > 1 > bd
    # fixed seeds, so the counts are deterministic (measured: 9, 30, 8; one K = 97 case has
    # error 0.117 under a bound of 0.37); the floors keep the cases from drifting to trivial
    assert len(informative) >= 8 and 97 in informative, informative
    assert strictly_tighter >= 25 and vacuous_trace >= 5, (strictly_tighter, vacuous_trace)


def test_dir_bound_is_tight_for_the_cantelli_extremal_distribution():
    """Ground truth: one class-1 sample on the decision boundary (l_1 = l_0, argmax picks
    class 0: an error) and four at d = l_1 - l_0 = a.  Then m = 4a/5, s = 4a^2/25 and the term
    s / (s + m^2) = 1/5 equals the error 1/5 exactly (Cantelli's extremal two-point law)."""
    a = 3.0
    logits = T([[0.0, 0.0], *[[0.0, a]] * 4])
    y = torch.ones(5, dtype=torch.long)
    assert float((logits.argmax(1) != y).double().mean()) == 0.2
    assert MarginMoments.from_batch(logits, y, 2).bound() == pytest.approx(0.2, rel=1e-14)


def test_dir_bound_equals_trace_bound_for_noise_along_the_classifier():
    """K = 2 with the within-class noise only along w_0 - w_1: then u^T Sigma u = Tr(Sigma) and
    the two bounds coincide (rtol 1e-12: float64 rounding); any other direction separates
    them."""
    rng = np.random.default_rng(3)
    means = 3 * rng.normal(size=(2, 4))
    W = means + 0.3 * rng.normal(size=(2, 4))
    b = -0.5 * (W**2).sum(1)
    u = (W[0] - W[1]) / np.linalg.norm(W[0] - W[1])
    y = rng.integers(0, 2, 400)
    g = means[y] + rng.normal(size=400)[:, None] * u
    logits = g @ W.T + b
    assert dir_bound(logits, y, 2) == pytest.approx(trace_bound(g, y, 2, W, b), rel=1e-12)
    g2 = g + 0.5 * rng.normal(size=(400, 4))  # isotropic extra noise: strictly tighter
    logits2 = g2 @ W.T + b
    assert dir_bound(logits2, y, 2) < 0.9 * trace_bound(g2, y, 2, W, b)


@pytest.mark.parametrize("sizes", [(1, 1, 1, 97), (50, 0, 50), (7, 13, 1, 29, 50)])
def test_dir_moments_streaming_equals_whole(sizes):
    """Batches merged in any order = one shot: the parallel update is exact in real
    arithmetic; float64 rounding of O(1)-O(100) numbers, so rtol 1e-12 on the moments and the
    bound.  Batches with absent classes and an empty batch included."""
    _, _, y, _, _, logits = clustered(11, 6, 5, sum(sizes), noise=1.0)
    y = np.sort(y) if len(sizes) == 3 else y  # sorted labels: each batch misses classes
    whole = MarginMoments.from_batch(T(logits), torch.as_tensor(y), 6)
    edges = np.cumsum((0, *sizes))
    parts = [MarginMoments.from_batch(T(logits[s:e]), torch.as_tensor(y[s:e]), 6)
             for s, e in zip(edges[:-1], edges[1:], strict=True)]
    for order in (parts, parts[::-1]):
        acc = MarginMoments(6)
        for part in order:
            acc.merge(part)
        torch.testing.assert_close(acc.n, whole.n, rtol=0, atol=0)
        torch.testing.assert_close(acc.mean, whole.mean, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(acc.m2, whole.m2, rtol=1e-12, atol=1e-10)
        assert acc.bound() == pytest.approx(whole.bound(), rel=1e-12)


@pytest.mark.parametrize(("seed", "K", "kind"), MC_CASES)
def test_dir_bound_dominates_monte_carlo_error(seed, K, kind):
    """Population directional bound (m = <w_c - w_k, mean_c> + b_c - b_k,
    s = (w_c - w_k)^T L_c L_c^T (w_c - w_k)) and the sample one from a held-out draw are
    never below the Monte-Carlo error (4 SE, as above), and never above the trace form."""
    rng, means, chol, priors, var_pop, W, b, err, se = monte_carlo(seed, K, kind)
    bb = np.zeros(K) if b is None else b
    dw = W[:, None, :] - W[None, :, :]  # [K, K, p]
    mean = np.einsum("cp,ckp->ck", means, dw) + bb[:, None] - bb[None, :]
    cov = np.stack([L @ L.T for L in chol])
    var = np.einsum("ckp,cpq,ckq->ck", dw, cov, dw)
    terms = directional_terms(T(mean), T(var)).numpy()
    pop = float((priors / priors.sum() * terms.sum(1)).sum())
    trace = theorem32_bound(T(means), T(var_pop), T(priors), T(W), None if b is None else T(b))
    assert err - 4 * se <= pop <= trace * (1 + 1e-12), (err, pop, trace)
    g2, y2 = sample(rng, means, chol, priors, 20_000)
    smp = dir_bound(g2 @ W.T + bb, y2, K)
    assert smp >= err - 4 * se, (smp, err)


# --------------------------------------------------------------------------------------------
# (g) non-finite inputs: NaN with a warning, never an exception or a finite number


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_inputs_give_nan_with_warning(bad):
    _, g, y, W, b, logits = clustered(0, 3, 4, 30)
    logits[4, 1] = bad
    with pytest.warns(RuntimeWarning, match="not finite"):
        assert math.isnan(dir_bound(logits, y, 3))
    m = ClassMoments.from_batch(T(g), torch.as_tensor(y), 3)
    var = m.m2_class / m.n
    mean = m.mean.clone()
    mean[int(y[0]), 0] = bad
    # without the guard, a NaN variance made the zero-variance branch return a finite bound
    var_nan = var.clone()
    var_nan[int(y[0])] = math.nan
    for mu_, var_, W_ in ((mean, var, T(W)), (m.mean, var_nan, T(W)),
                          (m.mean, var, T(np.where(np.eye(3, 4) > 0, bad, W)))):
        with pytest.warns(RuntimeWarning, match="not finite"):
            assert math.isnan(theorem32_bound(mu_, var_, m.n, W_, T(b)))
