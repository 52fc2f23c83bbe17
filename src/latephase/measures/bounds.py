"""Generalization bound of Theorem 3.2 (Sakamoto & Sato 2026).

For f(x) = W g(x) + b and g~ = g / B_g:

    P(error) <= sum_c p(c) sum_{k != c} [1 + max(M_ck, 0)^2 / V_c]^{-1},
    M_ck = <m_c, u_ck> + (b_c - b_k) / ||w_c - w_k|| / B_g,   u_ck = (w_c - w_k)/||w_c - w_k||,
    m_c = E[g~ | Y=c],   V_c = E[||g~ - m_c||^2 | Y=c].

Each term is Cantelli's inequality for the projection <u_ck, g~> (whose variance is at most
V_c), then a union bound over k.  Both M_ck^2 and V_c scale as 1/B_g^2, so B_g cancels and
the bound is evaluated on the raw features.  Evaluated with held-out moments it estimates the
population bound; it is never below the true error (up to sampling noise).
"""

from __future__ import annotations

import torch

F64 = torch.float64


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
    terms = theorem32_terms(means, variances, weight, bias)
    p = priors.to(F64)
    return float((p / p.sum() * terms.sum(1)).sum())
