"""Measures: pure functions on tensors, plus the one-pass evaluation that feeds them.

:func:`measure_split` runs ONE forward pass over a split (in chunks), yielding logits and
features, and derives every measure from them: accuracy, loss, the neural-collapse measures
of :mod:`latephase.measures.collapse` and the Theorem 3.2 bound of
:mod:`latephase.measures.bounds`.  Nothing here knows about training.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
from torch import nn

from latephase.measures.bounds import theorem32_bound
from latephase.measures.collapse import ClassMoments, collapse_measures, ncc_agreement

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits, y) -> per-sample [n]


def measure_split(model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int, *,
                  loss_fn: LossFn, head: nn.Linear, batch_size: int = 5000,
                  probe: Callable[[torch.Tensor], dict[str, float]] | None = None,
                  ) -> dict[str, float]:
    """All per-split measures from one forward pass; ``model.forward_with_features`` required.

    Returns acc, loss (mean per-sample), error, the NC measures, nc4 and ``bound``
    (Theorem 3.2 with the bias, from this split's class moments), plus whatever ``probe``
    (e.g. an :class:`~latephase.measures.probe.InfoProbe`) computes from the same features.
    """
    forward: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    forward = model.forward_with_features  # type: ignore[assignment]
    was_training = model.training
    model.eval()
    moments: ClassMoments | None = None
    feats, logits_all = [], []
    loss_sum, correct = 0.0, 0
    try:
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                xb, yb = x[start:start + batch_size], y[start:start + batch_size]
                logits, g = forward(xb)  # [b, K], [b, p]
                batch = ClassMoments.from_batch(g, yb, num_classes)
                moments = batch if moments is None else moments.merge(batch)
                loss_sum += float(loss_fn(logits, yb).to(torch.float64).sum())
                correct += int((logits.argmax(1) == yb).sum())
                feats.append(g)
                logits_all.append(logits)
    finally:
        model.train(was_training)
    if moments is None:
        raise ValueError("measure_split: the split is empty")
    n = len(x)
    out: dict[str, float] = {"acc": correct / n, "error": 1.0 - correct / n, "loss": loss_sum / n}
    out.update(collapse_measures(moments, head.weight))
    all_feats = torch.cat(feats)
    out["nc4"] = ncc_agreement(all_feats, torch.cat(logits_all), moments)
    variances = moments.m2_class / moments.n.clamp(min=1)
    out["bound"] = theorem32_bound(moments.mean, variances, moments.n, head.weight, head.bias)
    if probe is not None:
        out.update(probe(all_feats))
    return out


def parameter_norms(model: nn.Module, head: nn.Linear) -> dict[str, float]:
    """Global parameter norm sqrt(sum ||theta||^2) and last-layer norms ||W||_F, ||[W b]||_F."""
    with torch.no_grad():
        total = sum(float(p.detach().to(torch.float64).square().sum()) for p in model.parameters())
        w2 = float(head.weight.detach().to(torch.float64).square().sum())
        bias = head.bias
        b2 = 0.0 if bias is None else float(bias.detach().to(torch.float64).square().sum())
    return {"weight_norm": math.sqrt(total), "head_norm": math.sqrt(w2),
            "head_norm_with_bias": math.sqrt(w2 + b2)}


def evaluate(model: nn.Module, splits: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
             num_classes: int, *, loss_fn: LossFn, head: nn.Linear,
             batch_size: int = 5000,
             probes: Mapping[str, Callable[[torch.Tensor], dict[str, float]]] | None = None,
             ) -> dict[str, float]:
    """One record: ``{split}/{measure}`` for every split, plus the parameter norms."""
    record: dict[str, float] = {}
    probes = probes or {}
    for name, (x, y) in splits.items():
        vals = measure_split(model, x, y, num_classes, loss_fn=loss_fn, head=head,
                             batch_size=batch_size, probe=probes.get(name))
        record.update({f"{name}/{k}": v for k, v in vals.items()})
    record.update(parameter_norms(model, head))
    return record
