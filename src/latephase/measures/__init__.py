"""Measures: pure functions on tensors, plus the one-pass accumulator that feeds them.

:class:`SplitAccumulator` receives the batches of ONE forward pass over a split (logits,
the representations of one or more layers, labels) and derives every measure from them:
accuracy, loss, the neural-collapse measures of :mod:`latephase.measures.collapse`, the
Theorem 3.2 bound of :mod:`latephase.measures.bounds` and, through probes, the information
measures.  It is the single measuring path: :class:`latephase.Tracker` (and through it
``latephase run``) and :func:`measure_split` both feed it.  Nothing here knows about training.

Layer ``""`` denotes the penultimate representation (the input of the head); the measures
that need the head (NC3, NC4, the bound) are computed for it only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from latephase.measures.bounds import theorem32_bound
from latephase.measures.collapse import ClassMoments, collapse_measures, ncc_agreement

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits, y) -> per-sample [n]
Probe = Callable[[torch.Tensor], dict[str, float]]  # features [N, p] -> {name: value}
PENULTIMATE = ""


class SplitAccumulator:
    """Streaming per-split statistics of one forward pass.

    ``update`` takes a batch: logits [b, K], ``feats`` {layer: [b, ...]}, labels [b] (and
    optionally inputs [b, ...]).  Class moments are merged exactly (float64) for every row;
    features (and inputs when ``keep_inputs``) are also kept for the first ``keep_rows`` rows,
    which NC4 and the probes use.  When the split has at most ``keep_rows`` rows, streaming it
    in batches gives exactly the in-memory result.
    """

    def __init__(self, num_classes: int, loss_fn: LossFn | None, layers: Sequence[str], *,
                 keep_rows: int | None = 100_000, keep_inputs: bool = False) -> None:
        self.K, self.loss_fn, self.layers = num_classes, loss_fn, list(layers)
        self.keep_rows, self.keep_inputs = keep_rows, keep_inputs
        self.moments: dict[str, ClassMoments | None] = dict.fromkeys(self.layers)
        self.kept: dict[str, list[torch.Tensor]] = {name: [] for name in self.layers}
        self.kept_logits: list[torch.Tensor] = []
        self.kept_y: list[torch.Tensor] = []
        self.kept_x: list[torch.Tensor] = []
        self.n = self.n_kept = self.correct = 0
        self.loss_sum = 0.0

    def update(self, logits: torch.Tensor, feats: Mapping[str, torch.Tensor], y: torch.Tensor,
               x: torch.Tensor | None = None) -> None:
        y = y.to(logits.device)
        flat = {name: feats[name].detach().flatten(1) for name in self.layers}  # [b, p] each
        for name in self.layers:
            batch = ClassMoments.from_batch(flat[name], y, self.K)
            m = self.moments[name]
            self.moments[name] = batch if m is None else m.merge(batch)
        if self.loss_fn is not None:
            self.loss_sum += float(self.loss_fn(logits, y).to(torch.float64).sum())
        self.correct += int((logits.argmax(1) == y).sum())
        b = len(y)
        room = b if self.keep_rows is None else max(0, min(b, self.keep_rows - self.n_kept))
        if room:
            for name in self.layers:
                self.kept[name].append(flat[name][:room])
            self.kept_logits.append(logits.detach()[:room])
            self.kept_y.append(y[:room])
            if self.keep_inputs and x is not None:
                self.kept_x.append(x.detach()[:room])
            self.n_kept += room
        self.n += b

    def inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The kept inputs and labels (for building probes)."""
        return torch.cat(self.kept_x), torch.cat(self.kept_y)

    def compute(self, head: nn.Linear | None = None,
                probes: Mapping[str, Probe] | None = None) -> dict[str, dict[str, float]]:
        """``{layer: {measure: value}}``; split-level measures (acc, loss) are under ``""``."""
        if self.n == 0:
            raise ValueError("the split is empty: no batches were measured")
        probes = probes or {}
        out: dict[str, dict[str, float]] = {}
        logits = torch.cat(self.kept_logits)
        for name in self.layers:
            m = self.moments[name]
            assert m is not None
            vals: dict[str, float] = {}
            is_pen = name == PENULTIMATE and head is not None
            vals.update(collapse_measures(m, head.weight if is_pen and head else None))
            feats = torch.cat(self.kept[name])
            if is_pen and head is not None:
                vals["nc4"] = ncc_agreement(feats, logits, m)
                var = m.m2_class / m.n.clamp(min=1)
                vals["bound"] = theorem32_bound(m.mean, var, m.n, head.weight, head.bias)
            if name in probes:
                vals.update(probes[name](feats))
            out[name] = vals
        acc = self.correct / self.n
        split = {"acc": acc, "error": 1.0 - acc}
        if self.loss_fn is not None:
            split["loss"] = self.loss_sum / self.n
        out[PENULTIMATE] = {**split, **out.get(PENULTIMATE, {})}
        return out


def flatten_record(split: str, per_layer: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """``{split}/{measure}`` for the penultimate layer, ``{split}/{layer}/{measure}`` else."""
    rec: dict[str, float] = {}
    for layer, vals in per_layer.items():
        prefix = f"{split}/" if layer == PENULTIMATE else f"{split}/{layer}/"
        rec.update({prefix + k: v for k, v in vals.items()})
    return rec


def measure_split(model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int, *,
                  loss_fn: LossFn, head: nn.Linear, batch_size: int = 5000,
                  probe: Probe | None = None) -> dict[str, float]:
    """Every measure of one split from one forward pass of ``model.forward_with_features``.

    Returns acc, error, loss (mean per sample), the NC measures, nc4 and ``bound``
    (Theorem 3.2 with the bias), plus what ``probe`` computes from the same features.
    """
    forward: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    forward = model.forward_with_features  # type: ignore[assignment]
    acc = SplitAccumulator(num_classes, loss_fn, [PENULTIMATE], keep_rows=None)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                logits, g = forward(x[start:start + batch_size])  # [b, K], [b, p]
                acc.update(logits, {PENULTIMATE: g}, y[start:start + batch_size])
    finally:
        model.train(was_training)
    probes = {PENULTIMATE: probe} if probe is not None else None
    return acc.compute(head, probes)[PENULTIMATE]


def parameter_norms(model: nn.Module, head: nn.Linear) -> dict[str, float]:
    """Global parameter norm sqrt(sum ||theta||^2) and last-layer norms ||W||_F, ||[W b]||_F."""
    with torch.no_grad():
        total = sum(float(p.detach().to(torch.float64).square().sum()) for p in model.parameters())
        w2 = float(head.weight.detach().to(torch.float64).square().sum())
        bias = head.bias
        b2 = 0.0 if bias is None else float(bias.detach().to(torch.float64).square().sum())
    return {"weight_norm": math.sqrt(total), "head_norm": math.sqrt(w2),
            "head_norm_with_bias": math.sqrt(w2 + b2)}
