"""Neural-collapse measures of a representation g(x) in R^p with K classes.

A :class:`ClassMoments` accumulator holds the sufficient statistics, in float64 whatever the
features' dtype, as mergeable per-class (n_c, mu_c) plus the pooled within-class scatter

    M2 = sum_i (g_i - mu_{y_i})(g_i - mu_{y_i})^T,

combined across batches with the parallel (Chan et al.) update.  It never forms
sum ||g||^2 - n ||mu||^2, which cancels catastrophically for large features.

:func:`collapse_measures` turns the moments into the measures of science.md section 3:

    Tr(Sigma_W) = Tr(M2) / N,   Tr(Sigma_B) = sum_c (n_c/N) ||mu_c - mu_G||^2
    RNC1 = Tr(Sigma_W) / B^2    (B = max or mean feature norm: two proxies of sup ||g||)
    NC1 = Tr(Sigma_W) / Tr(Sigma_B)          NC1_pinv = Tr(Sigma_W Sigma_B^+) / K
    CDNV = mean_{c<c'} (V_c + V_c') / (2 ||mu_c - mu_c'||^2),   V_c = E||g - mu_c||^2 | c
    NC2 = sigma_max / sigma_min of the uncentred K x p class-mean matrix
    NC2_etf = || G/||G||_F - T/||T||_F ||_F,  G = Mc Mc^T,  T = I - 11^T/K
    NC3 = || W/||W||_F - Mc/||Mc||_F ||_F     (Mc: means centred on their average)
    NC4 = fraction of samples whose prediction equals the nearest-class-mean rule

Degenerate inputs (a zero scale, no between-class spread, fewer than two classes present)
give NaN for the affected measure with a warning, never an exception; so do non-finite
features (a diverged network): every measure is NaN, with one warning.

Bad arguments (labels that are not 1-D integer class indices in [0, K), features that are
not [n, p], mismatched lengths) raise a one-line ValueError naming the argument, the value
and what is valid (:func:`check_labels`, :func:`check_features`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import torch

F64 = torch.float64


def check_num_classes(num_classes: object) -> int:
    """``num_classes`` as an int >= 1, or a ValueError naming it."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1; got {num_classes!r}")
    return num_classes


def check_labels(labels: object, num_classes: int, n: int | None = None,
                 what: str = "labels") -> torch.Tensor:
    """Labels as a 1-D int64 tensor of class indices in [0, K), or a one-line ValueError.

    Integer-valued floats are accepted; fractional or non-finite ones are refused (never
    truncated).  ``n``: the number of rows the labels must match.
    """
    y = labels if isinstance(labels, torch.Tensor) else torch.as_tensor(labels)
    if y.ndim != 1:
        raise ValueError(f"{what} must be a 1-D tensor of class indices [n]; got shape "
                         f"{tuple(y.shape)}")
    if n is not None and len(y) != n:
        raise ValueError(f"{what} has {len(y)} rows but the features/logits have {n}; one "
                         "label per row is required")
    if y.is_floating_point():
        bad = ~torch.isfinite(y) | (y != y.round())
        if bool(bad.any()):
            raise ValueError(f"{what} must be integer class indices; got the value "
                             f"{float(y[bad][0])!r} (fractional float labels are refused, not "
                             "truncated)")
    elif y.is_complex():
        raise ValueError(f"{what} must be integer class indices; got dtype {y.dtype}")
    y = y.detach().long()
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"{what} must be in [0, {num_classes}) (num_classes={num_classes}); "
                         f"found values {int(y.min())}..{int(y.max())}")
    return y


def check_features(feats: object, n: int | None = None, what: str = "features") -> torch.Tensor:
    """Features as a tensor of at least 2 dimensions [n, ...], or a one-line ValueError."""
    if not isinstance(feats, torch.Tensor):
        raise ValueError(f"{what} must be a torch.Tensor [n, p]; got {type(feats).__name__}")
    if feats.ndim < 2:
        raise ValueError(f"{what} must be [n, p] (one row per sample; [n, ...] is flattened); "
                         f"got a {feats.ndim}-D tensor of shape {tuple(feats.shape)} (for one "
                         "feature per sample pass x.unsqueeze(1))")
    if n is not None and len(feats) != n:
        raise ValueError(f"{what} has {len(feats)} rows but the labels/logits have {n}; they "
                         "must match")
    return feats


def features_finite(m: ClassMoments) -> bool:
    """True when the accumulated moments of the present classes are all finite."""
    present = m.n > 0
    return all(bool(torch.isfinite(t).all()) for t in (
        m.mean[present], m.m2, m.m2_class[present], m.norm_sum, m.norm_max))


@dataclass
class ClassMoments:
    """Mergeable per-class first and pooled second moments, plus feature-norm statistics.

    Shapes: ``n`` [K], ``mean`` [K, p], ``m2`` [p, p] (pooled within-class scatter),
    ``m2_class`` [K] (per-class scatter trace).  All float64.
    """

    num_classes: int
    dim: int
    device: torch.device | str = "cpu"
    n: torch.Tensor = field(init=False)
    mean: torch.Tensor = field(init=False)
    m2: torch.Tensor = field(init=False)
    m2_class: torch.Tensor = field(init=False)
    norm_sum: torch.Tensor = field(init=False)
    norm_max: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        K, p, dev = self.num_classes, self.dim, self.device
        self.n = torch.zeros(K, dtype=F64, device=dev)
        self.mean = torch.zeros(K, p, dtype=F64, device=dev)
        self.m2 = torch.zeros(p, p, dtype=F64, device=dev)
        self.m2_class = torch.zeros(K, dtype=F64, device=dev)
        self.norm_sum = torch.zeros((), dtype=F64, device=dev)
        self.norm_max = torch.zeros((), dtype=F64, device=dev)

    @classmethod
    def from_batch(cls, feats: torch.Tensor, labels: torch.Tensor,
                   num_classes: int) -> ClassMoments:
        """Moments of one batch, centred on the batch's own class means (exact in float64).

        ``feats`` [n, p] (or [n, ...], flattened), ``labels`` [n] integer class indices.
        """
        num_classes = check_num_classes(num_classes)
        g = check_features(feats).detach().flatten(1)
        labels = check_labels(labels, num_classes, len(g))
        if g.device.type == "mps":  # MPS has no float64: accumulate these moments on the host
            g = g.cpu()
        g = g.to(F64)  # [n, p]
        y = labels.detach().to(g.device).long()
        out = cls(num_classes, g.shape[1], g.device)
        if len(g) == 0:
            return out
        n = torch.bincount(y, minlength=num_classes).to(F64)  # [K]
        sums = torch.zeros_like(out.mean).index_add_(0, y, g)  # [K, p]
        mean = sums / n.clamp(min=1).unsqueeze(1)
        centred = g - mean[y]  # [n, p]
        out.n, out.mean = n, mean
        out.m2 = centred.T @ centred
        out.m2_class = torch.zeros_like(n).index_add_(0, y, centred.square().sum(1))
        norms = g.norm(dim=1)
        out.norm_sum = norms.sum()
        out.norm_max = norms.max()
        return out

    def merge(self, other: ClassMoments) -> ClassMoments:
        """Combine with ``other`` in place (parallel variance update) and return self.

        delta_c = mu_c^b - mu_c^a;  mu_c = mu_c^a + delta_c n_b/n;
        M2 += M2^b + sum_c (n_a n_b / n) delta_c delta_c^T.
        """
        n = self.n + other.n
        w = torch.where(n > 0, other.n / n.clamp(min=1), torch.zeros_like(n))  # n_b / n
        delta = other.mean - self.mean  # [K, p]
        factor = self.n * w  # n_a n_b / n
        self.m2 = self.m2 + other.m2 + (delta * factor.unsqueeze(1)).T @ delta
        self.m2_class = self.m2_class + other.m2_class + factor * delta.square().sum(1)
        self.mean = self.mean + delta * w.unsqueeze(1)
        self.n = n
        self.norm_sum = self.norm_sum + other.norm_sum
        self.norm_max = torch.maximum(self.norm_max, other.norm_max)
        return self

    def update(self, feats: torch.Tensor, labels: torch.Tensor) -> ClassMoments:
        """Add a batch of features [n, p] with labels [n]."""
        return self.merge(ClassMoments.from_batch(feats, labels, self.num_classes))

    @property
    def total(self) -> float:
        return float(self.n.sum())


def _ratio(num: float, den: float, what: str) -> float:
    """num / den, or NaN with a warning when den is zero or not finite."""
    if not math.isfinite(den) or den <= 0.0:
        warnings.warn(f"{what}: denominator is {den}; returning NaN", RuntimeWarning, stacklevel=3)
        return math.nan
    return num / den


def _nan(what: str) -> float:
    warnings.warn(f"{what} is undefined for these features; returning NaN", RuntimeWarning,
                  stacklevel=3)
    return math.nan


def _etf_distance(centred: torch.Tensor) -> float:
    """|| G/||G||_F - T/||T||_F ||_F with G = Mc Mc^T and T = I - 11^T/K (simplex ETF Gram)."""
    K = centred.shape[0]
    gram = centred @ centred.T
    target = torch.eye(K, dtype=F64, device=centred.device) - 1.0 / K
    gn = float(gram.norm())
    if gn == 0.0:
        return _nan("NC2 ETF distance (all class means equal)")
    return float((gram / gn - target / target.norm()).norm())


def _nc3(weight: torch.Tensor, centred: torch.Tensor) -> float:
    """|| W/||W||_F - Mc/||Mc||_F ||_F (self-duality of classifier and class means)."""
    wn, mn = float(weight.norm()), float(centred.norm())
    if wn == 0.0 or mn == 0.0:
        return _nan("NC3 (zero classifier or equal class means)")
    return float((weight / wn - centred / mn).norm())


def _cdnv(mean: torch.Tensor, var: torch.Tensor) -> float:
    """Average over class pairs of (V_c + V_c') / (2 ||mu_c - mu_c'||^2) (Galanti et al.)."""
    K = mean.shape[0]
    if K < 2:
        return math.nan
    d2 = torch.cdist(mean, mean).square()  # [K, K]
    iu = torch.triu_indices(K, K, offset=1)
    num = (var.unsqueeze(0) + var.unsqueeze(1))[iu[0], iu[1]]
    den = 2.0 * d2[iu[0], iu[1]]
    if bool((den <= 0).any()):
        return _nan("CDNV (two classes share a mean)")
    return float((num / den).mean())


def _nc1_pinv(sigma_w: torch.Tensor, a: torch.Tensor, q: torch.Tensor, K: int) -> float:
    """Tr(Sigma_W Sigma_B^+) / K with Sigma_B = A^T A, A = [sqrt(p_c) (mu_c - mu_G)] [K, p].

    q = [sqrt(p_c)] satisfies q^T A = 0 exactly, but rounding leaves a residue along q that
    scales with the uncentred means.  A Householder reflection H (H q = e_1) removes that
    direction: Sigma_B = B^T B with B = (H A)[1:].  With B = U S V^T,
    Sigma_B^+ = V S^-2 V^T over singular values above max(S) * max(K, p) * eps (numpy's pinv
    rule), so only a (K-1) x p SVD is needed.
    """
    if K < 2:
        return math.nan
    v = q.clone()
    v[0] -= 1.0  # v = q - e_1 (||q|| = 1)
    vv = float(v @ v)
    h_a = a - (2.0 / vv) * torch.outer(v, v @ a) if vv > 0 else a
    b = h_a[1:]  # [K-1, p]
    _, s, vh = torch.linalg.svd(b, full_matrices=False)  # s [r], vh [r, p]
    if len(s) == 0 or float(s[0]) == 0.0:
        return math.nan
    keep = s > s[0] * max(a.shape) * torch.finfo(F64).eps
    v, s = vh[keep], s[keep]
    return float(((v @ sigma_w * v).sum(1) / s.square()).sum()) / K


def collapse_measures(m: ClassMoments, weight: torch.Tensor | None = None) -> dict[str, float]:
    """Every moment-based NC measure (see module docstring).  ``weight``: head W [K, p]."""
    present = m.n > 0
    N = float(m.n.sum())
    if N == 0:
        raise ValueError("collapse_measures: no samples were accumulated")
    if not features_finite(m) or (weight is not None and not bool(torch.isfinite(weight).all())):
        warnings.warn("collapse measures: the features (or the head) are not finite (NaN or "
                      "inf); every measure is NaN", RuntimeWarning, stacklevel=2)
        keys = [*NAN_KEYS, *(("nc3",) if weight is not None else ())]
        return dict.fromkeys(keys, math.nan)
    n, mean = m.n[present], m.mean[present]  # [K', ...]
    mu_g = (n.unsqueeze(1) * mean).sum(0) / N  # [p]
    tr_sw = float(m.m2.trace()) / N
    diff = mean - mu_g
    tr_sb = float((n * diff.square().sum(1)).sum()) / N
    norm_mean, norm_max = float(m.norm_sum) / N, float(m.norm_max)
    out: dict[str, float] = {
        "tr_sw": tr_sw,
        "tr_sb": tr_sb,
        "rnc1_max": _ratio(tr_sw, norm_max**2, "RNC1 (max-norm scale)"),
        "rnc1_mean": _ratio(tr_sw, norm_mean**2, "RNC1 (mean-norm scale)"),
        "nc1": _ratio(tr_sw, tr_sb, "NC1 = Tr(Sigma_W)/Tr(Sigma_B)"),
        "feat_norm_mean": norm_mean,
        "feat_norm_max": norm_max,
    }
    K = int(present.sum())
    sqrt_p = (n / N).sqrt()
    out["nc1_pinv"] = _nc1_pinv(m.m2 / N, diff * sqrt_p.unsqueeze(1), sqrt_p, K)
    out["cdnv"] = _cdnv(mean, m.m2_class[present] / n)
    sv = torch.linalg.svdvals(mean)
    if float(sv[0]) == 0.0:
        out["nc2"] = _nan("NC2 (all class means are zero)")
    else:
        out["nc2"] = float(sv[0] / sv[-1]) if float(sv[-1]) > 0 else math.inf
    centred = mean - mean.mean(0)  # centred on the average of the class means
    out["nc2_etf"] = _etf_distance(centred) if K > 1 else math.nan
    if weight is not None:
        out["nc3"] = _nc3(weight.detach().to(F64)[present], centred)
    return out


#: the keys of :func:`collapse_measures` without a head (``nc3`` needs the head)
NAN_KEYS = ("tr_sw", "tr_sb", "rnc1_max", "rnc1_mean", "nc1", "feat_norm_mean", "feat_norm_max",
            "nc1_pinv", "cdnv", "nc2", "nc2_etf")


def ncc_agreement(feats: torch.Tensor, logits: torch.Tensor, m: ClassMoments) -> float:
    """NC4: fraction of rows where argmax(logits) equals argmin_c ||g - mu_c|| (-> 1).

    Only classes present in ``m`` are candidate centres.  Non-finite features: NaN.
    """
    g = feats.detach().reshape(len(feats), -1).to(F64)
    if not bool(torch.isfinite(g).all()) or not features_finite(m):
        warnings.warn("NC4: the features are not finite (NaN or inf); returning NaN",
                      RuntimeWarning, stacklevel=2)
        return math.nan
    dist = torch.cdist(g, m.mean.to(g.device))  # [n, K]
    dist[:, m.n.to(g.device) == 0] = math.inf
    ncc = dist.argmin(1)
    return float((ncc == logits.argmax(1)).to(F64).mean())
