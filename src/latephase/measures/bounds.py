"""Generalization bound of Theorem 3.2 (Sakamoto & Sato 2026).

For f(x) = W g(x) + b and g~ = g / B_g:

    P(error) <= sum_c p(c) sum_{k != c} [1 + max(M_ck, 0)^2 / V_c]^{-1},
    M_ck = <m_c, u_ck> + (b_c - b_k) / ||w_c - w_k|| / B_g,   u_ck = (w_c - w_k)/||w_c - w_k||,
    m_c = E[g~ | Y=c],   V_c = E[||g~ - m_c||^2 | Y=c].

Each term is Cantelli's inequality for the projection <u_ck, g~> (whose variance is at most
V_c), then a union bound over k.  Both M_ck^2 and V_c scale as 1/B_g^2, so B_g cancels and
the bound is evaluated on the raw features.  Evaluated with held-out moments it estimates the
population bound; it is never below the true error (up to sampling noise).

The directional form (``bound_dir``) replaces V_c by the variance of the projection itself,
which is all Cantelli's inequality needs:

    P(error) <= sum_c p(c) sum_{k != c} [1 + max(m_ck, 0)^2 / s_ck]^{-1},
    m_ck = E[<u_ck, g> + (b_c - b_k)/||w_c - w_k|| | Y=c],   s_ck = u_ck^T Sigma_c u_ck.

Since <u_ck, g> + (b_c - b_k)/||w_c - w_k|| = (l_c - l_k)/||w_c - w_k|| for the logits
l = W g + b, the norm cancels in the ratio: m_ck^2 / s_ck = E[d_ck]^2 / Var[d_ck] with
d_ck = l_c - l_k over the class-c samples.  :class:`MarginMoments` keeps exactly those
per-class (n_c, mean, M2) of the K logit differences ([K, K] in float64, mergeable), so the
bound costs O(K^2) memory for any K.  As u^T Sigma_c u <= Tr(Sigma_c) = V_c, bound_dir <= bound.
Evaluated on a split's own moments (variance with 1/n_c) it is a valid bound on that split's
empirical error: Cantelli holds for any distribution, the empirical one included.

Non-finite inputs (a diverged network) give NaN with a RuntimeWarning, never an exception.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import torch

F64 = torch.float64


def _all_finite(*tensors: torch.Tensor | None) -> bool:
    return all(t is None or bool(torch.isfinite(t).all()) for t in tensors)


def _nan_warning(what: str) -> float:
    warnings.warn(f"{what}: inputs are not finite (NaN or inf); returning NaN", RuntimeWarning,
                  stacklevel=3)
    return math.nan


def theorem32_terms(means: torch.Tensor, variances: torch.Tensor, weight: torch.Tensor,
                    bias: torch.Tensor | None) -> torch.Tensor:
    """Per-pair terms [K, K] (zero on the diagonal).

    ``means`` [K, p] class means, ``variances`` [K] E||g - mu_c||^2, ``weight`` [K, p],
    ``bias`` [K] or None.  A class with zero variance gets 0 (margin > 0) or 1 (margin <= 0).
    """
    mu, var = means.to(F64), variances.to(F64)
    w = weight.detach().to(F64)
    b = torch.zeros(len(w), dtype=F64, device=w.device) if bias is None else bias.detach().to(F64)
    dw = w.unsqueeze(1) - w.unsqueeze(0)  # [K, K, p]: w_c - w_k
    dn = dw.norm(dim=2)  # [K, K]
    proj = torch.einsum("cp,ckp->ck", mu, dw)  # <mu_c, w_c - w_k>
    margin = (proj + b.unsqueeze(1) - b.unsqueeze(0)) / dn.clamp(min=torch.finfo(F64).tiny)
    pos = margin.clamp(min=0.0).square()
    v = var.unsqueeze(1).expand_as(pos)
    terms = torch.where(
        v > 0, 1.0 / (1.0 + pos / v.clamp(min=torch.finfo(F64).tiny)), (margin <= 0).to(F64)
    )
    eye = torch.eye(len(w), dtype=torch.bool, device=w.device)
    return terms.masked_fill(eye, 0.0)


def theorem32_bound(means: torch.Tensor, variances: torch.Tensor, priors: torch.Tensor,
                    weight: torch.Tensor, bias: torch.Tensor | None) -> float:
    """sum_c p(c) sum_{k != c} [1 + max(M_ck, 0)^2 / V_c]^{-1}  (may exceed 1 early on)."""
    present = priors > 0
    if not _all_finite(means[present], variances[present], weight, bias):
        return _nan_warning("Theorem 3.2 bound")
    terms = theorem32_terms(means, variances, weight, bias)
    p = priors.to(F64)
    return float((p / p.sum() * terms.sum(1)).sum())


def directional_terms(mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """Per-pair terms [K, K] of the directional bound from logit-difference moments.

    ``mean`` [K, K]: E[l_c - l_k | Y=c]; ``var`` [K, K]: Var[l_c - l_k | Y=c].
    term_ck = s / (s + m^2) = [1 + m^2/s]^{-1} if m > 0, else 1 (a zero variance with a
    positive margin gives 0); zero on the diagonal.
    """
    mu, s = mean.to(F64), var.to(F64).clamp(min=0.0)  # clamp: M2 is >= 0 up to rounding
    pos = mu.clamp(min=0.0)
    terms = torch.where(mu > 0, s / (s + pos.square()).clamp(min=torch.finfo(F64).tiny),
                        torch.ones_like(mu))
    eye = torch.eye(len(mu), dtype=torch.bool, device=mu.device)
    return terms.masked_fill(eye, 0.0)


@dataclass
class MarginMoments:
    """Mergeable per-class moments of the logit differences d_ck = l_c - l_k (class-c rows).

    Shapes: ``n`` [K], ``mean`` [K, K] (row c: E[d_c. | Y=c]), ``m2`` [K, K] (row c:
    sum over class-c rows of (d_ck - mean_ck)^2).  All float64; merged with the parallel
    (Chan et al.) update, like :class:`~latephase.measures.collapse.ClassMoments`.
    """

    num_classes: int
    device: torch.device | str = "cpu"
    n: torch.Tensor = field(init=False)
    mean: torch.Tensor = field(init=False)
    m2: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        K = self.num_classes
        self.n = torch.zeros(K, dtype=F64, device=self.device)
        self.mean = torch.zeros(K, K, dtype=F64, device=self.device)
        self.m2 = torch.zeros(K, K, dtype=F64, device=self.device)

    @classmethod
    def from_batch(cls, logits: torch.Tensor, labels: torch.Tensor,
                   num_classes: int) -> MarginMoments:
        """Moments of one batch: logits [n, K], integer labels [n] in [0, K)."""
        lg = logits.detach()
        if lg.device.type == "mps":  # no float64 on MPS
            lg = lg.cpu()
        lg = lg.to(F64)  # [n, K]
        y = labels.detach().to(lg.device).long()
        out = cls(num_classes, lg.device)
        if len(lg) == 0:
            return out
        d = lg.gather(1, y.unsqueeze(1)) - lg  # [n, K]: l_{y_i} - l_k
        n = torch.bincount(y, minlength=num_classes).to(F64)  # [K]
        mean = torch.zeros_like(out.mean).index_add_(0, y, d) / n.clamp(min=1).unsqueeze(1)
        out.n, out.mean = n, mean
        out.m2 = torch.zeros_like(out.m2).index_add_(0, y, (d - mean[y]).square())
        return out

    def merge(self, other: MarginMoments) -> MarginMoments:
        """Combine with ``other`` in place and return self (M2 += M2_b + n_a n_b/n delta^2)."""
        n = self.n + other.n
        w = torch.where(n > 0, other.n / n.clamp(min=1), torch.zeros_like(n))  # n_b / n
        delta = other.mean - self.mean  # [K, K]
        self.m2 = self.m2 + other.m2 + (self.n * w).unsqueeze(1) * delta.square()
        self.mean = self.mean + delta * w.unsqueeze(1)
        self.n = n
        return self

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> MarginMoments:
        return self.merge(MarginMoments.from_batch(logits, labels, self.num_classes))

    def bound(self) -> float:
        """sum_c p(c) sum_{k != c} [1 + max(m_ck, 0)^2 / s_ck]^{-1}, p(c) = n_c / N."""
        N = float(self.n.sum())
        if N == 0:
            raise ValueError("MarginMoments.bound: no samples were accumulated")
        present = self.n > 0
        if not _all_finite(self.mean[present], self.m2[present]):
            return _nan_warning("directional Theorem 3.2 bound")
        var = self.m2 / self.n.clamp(min=1).unsqueeze(1)
        terms = directional_terms(self.mean, var)
        return float((self.n / N * terms.sum(1)).sum())
