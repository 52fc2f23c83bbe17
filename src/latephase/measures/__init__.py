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
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from latephase.keys import record_key
from latephase.measures.bounds import MarginMoments, theorem32_bound
from latephase.measures.collapse import (
    ClassMoments,
    check_features,
    check_labels,
    check_num_classes,
    collapse_measures,
    ncc_agreement,
)

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits, y) -> per-sample [n]
Probe = Callable[[torch.Tensor], dict[str, float]]  # features [N, p] -> {name: value}
PENULTIMATE = ""
Value = float | list[float]  # a measure: a number, or (margins_a / margins_b) a list of numbers


def check_head(head: nn.Linear, num_classes: int, dim: int | None = None) -> None:
    """The head must be a linear layer with weight [K, p] (and bias [K] or None)."""
    weight = getattr(head, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
        raise ValueError(f"head must be an nn.Linear with a 2-D weight [K, p]; got "
                         f"{type(head).__name__}")
    p = weight.shape[1] if dim is None else dim
    if tuple(weight.shape) != (num_classes, p):
        raise ValueError(f"head.weight has shape {tuple(weight.shape)}; expected (K, p) = "
                         f"({num_classes}, {p}) for num_classes={num_classes} and features of "
                         f"dimension {p}")
    bias = head.bias
    if bias is not None and tuple(bias.shape) != (num_classes,):
        raise ValueError(f"head.bias has shape {tuple(bias.shape)}; expected ({num_classes},)")


def check_margin_pair(pair: object, num_classes: int) -> tuple[int, int] | None:
    """``margin_pair``: None or two distinct class indices in [0, K)."""
    if pair is None:
        return None
    items = list(pair) if isinstance(pair, tuple | list) else []
    ints = [c for c in items if isinstance(c, int) and not isinstance(c, bool)]
    if len(ints) != 2 or len(items) != 2 or ints[0] == ints[1] or not all(
            0 <= c < num_classes for c in ints):
        raise ValueError(f"margin_pair must be None or two distinct class indices in [0, "
                         f"{num_classes}); got {pair!r}")
    return ints[0], ints[1]


def _joined(parts: list[torch.Tensor]) -> torch.Tensor:
    """``torch.cat(parts)`` without the copy when there is one part (kept rows after
    :meth:`SplitAccumulator._settle`)."""
    return parts[0] if len(parts) == 1 else torch.cat(parts)


class SplitAccumulator:
    """Streaming per-split statistics of one forward pass.

    ``update`` takes a batch: logits [b, K], ``feats`` {layer: [b, ...]}, labels [b] (and
    optionally inputs [b, ...]).  Class moments of the features and of the logit differences
    (for ``bound_dir``) are merged exactly (float64) for every row; features (and inputs when
    ``keep_inputs``) are also kept for the first ``keep_rows`` rows, which NC4 and the probes
    use.  When the split has at most ``keep_rows`` rows, streaming it in batches gives exactly
    the in-memory result.

    ``margin_pair`` (a, b): the signed margins (l_a - l_b) / ||w_a - w_b|| of the kept rows with
    y = a and y = b are returned as the lists ``margins_a`` / ``margins_b`` of the penultimate
    layer (the paper's Figure 2); None records none.
    """

    def __init__(self, num_classes: int, loss_fn: LossFn | None, layers: Sequence[str], *,
                 keep_rows: int | None = 100_000, keep_inputs: bool = False,
                 margin_pair: tuple[int, int] | None = (0, 1)) -> None:
        self.K, self.loss_fn, self.layers = check_num_classes(num_classes), loss_fn, list(layers)
        self.margin_pair = check_margin_pair(margin_pair, self.K)
        self.logit_moments = MarginMoments(self.K)
        self.margin_diffs: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])
        self.keep_rows, self.keep_inputs = keep_rows, keep_inputs
        self.moments: dict[str, ClassMoments | None] = dict.fromkeys(self.layers)
        self.kept: dict[str, list[torch.Tensor]] = {name: [] for name in self.layers}
        self.kept_logits: list[torch.Tensor] = []
        self.kept_y: list[torch.Tensor] = []
        self.kept_x: list[torch.Tensor] = []
        self._x_order: torch.Tensor | None = None  # kept_x's pending order (see _settle)
        self.kept_keys: list[torch.Tensor] = []  # row keys, when update() is given keys
        self.n = self.n_kept = self.correct = 0
        self.loss_sum = 0.0

    def update(self, logits: torch.Tensor, feats: Mapping[str, torch.Tensor], y: torch.Tensor,
               x: torch.Tensor | None = None, keys: torch.Tensor | None = None) -> None:
        """Add one batch.  ``keys`` [b] (int64 row keys, for every batch or none): keep the
        ``keep_rows`` rows of smallest (key, label), in that order, instead of the first ones
        (see :meth:`_settle`)."""
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[1] != self.K:
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits)
            raise ValueError(f"logits must be [n, K] with K = num_classes = {self.K}; got "
                             f"{shape}")
        y = check_labels(y, self.K, len(logits), "labels").to(logits.device)
        missing = [name for name in self.layers if name not in feats]
        if missing:
            raise ValueError(f"feats has no layer {missing[0]!r}; it must hold every measured "
                             f"layer {self.layers} (got {list(feats)})")
        flat = {name: check_features(feats[name], len(y), f"features of layer {name!r}")
                .detach().flatten(1) for name in self.layers}  # [b, p] each
        self.logit_moments.merge(MarginMoments.from_batch(logits, y, self.K))
        for name in self.layers:
            batch = ClassMoments.from_batch(flat[name], y, self.K)
            m = self.moments[name]
            self.moments[name] = batch if m is None else m.merge(batch)
        if self.loss_fn is not None:
            self.loss_sum += float(self.loss_fn(logits, y).to(torch.float64).sum())
        self.correct += int((logits.argmax(1) == y).sum())
        b = len(y)
        room = (b if self.keep_rows is None or keys is not None  # keyed: pruned in _settle
                else max(0, min(b, self.keep_rows - self.n_kept)))
        if room:
            for name in self.layers:
                self.kept[name].append(flat[name][:room])
            self.kept_logits.append(logits.detach()[:room])
            self.kept_y.append(y[:room])
            if self.margin_pair is not None:
                a, b_ = self.margin_pair
                lg, yk = logits.detach()[:room].to(torch.float64), y[:room]
                diff = lg[:, a] - lg[:, b_]  # [room]: l_a - l_b
                self.margin_diffs[0].append(diff[yk == a].cpu())
                self.margin_diffs[1].append(diff[yk == b_].cpu())
            if self.keep_inputs and x is not None:
                self._gather_x()
                self.kept_x.append(x.detach()[:room])
            if keys is not None:
                self.kept_keys.append(keys.detach().to(y.device))
            self.n_kept += room
        self.n += b
        if keys is not None and self.keep_rows is not None and self.n_kept >= 2 * max(
                self.keep_rows, 1):
            self._settle()  # amortised: at most 2 keep_rows rows are held between prunings

    def _settle(self) -> None:
        """Keyed rows: sort the kept rows by (key, label) and keep the ``keep_rows`` first.

        A bottom-k selection: the same rows in the same order whatever the batch order (the
        keys identify rows by content).  Idempotent; a no-op when no keys were given.
        """
        if not self.kept_keys:
            return
        keys, y = torch.cat(self.kept_keys), torch.cat(self.kept_y)
        order = torch.argsort(y, stable=True)
        order = order[torch.argsort(keys[order], stable=True)][:self.keep_rows]

        def pick(parts: list[torch.Tensor]) -> list[torch.Tensor]:
            return [torch.cat(parts)[order.to(parts[0].device)]] if parts else []

        for name in self.layers:
            self.kept[name] = pick(self.kept[name])
        self.kept_logits = pick(self.kept_logits)
        if self.kept_x:  # inputs are gathered only when asked for (probes are built rarely):
            self._gather_x()  # a 4000-row MNIST split is 12.5 MB to copy per evaluation
            self._x_order = order
        self.kept_y, self.kept_keys = [y[order]], [keys[order]]
        self.n_kept = len(order)
        if self.margin_pair is not None:  # the margins of the rows kept now
            a, b = self.margin_pair
            lg, yk = self.kept_logits[0].to(torch.float64), self.kept_y[0]
            diff = lg[:, a] - lg[:, b]
            self.margin_diffs = ([diff[yk == a].cpu()], [diff[yk == b].cpu()])

    def _gather_x(self) -> list[torch.Tensor]:
        """``kept_x`` in kept order: applies the order :meth:`_settle` left pending."""
        if self._x_order is not None:
            order, self._x_order = self._x_order, None
            self.kept_x = [torch.cat(self.kept_x)[order.to(self.kept_x[0].device)]]
        return self.kept_x

    def row_keys(self) -> torch.Tensor:
        """The kept rows' keys [n_kept], in kept order (only with keyed updates)."""
        self._settle()
        return _joined(self.kept_keys)

    def labels(self) -> torch.Tensor:
        """The kept rows' labels [n_kept], in kept order."""
        self._settle()
        return _joined(self.kept_y)

    def inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The kept inputs and labels (for building probes)."""
        self._settle()
        return _joined(self._gather_x()), _joined(self.kept_y)

    def _margins(self, head: nn.Linear) -> dict[str, Value]:
        """Signed margins (l_a - l_b) / ||w_a - w_b|| of the kept class-a and class-b rows."""
        assert self.margin_pair is not None
        a, b = self.margin_pair
        w = head.weight.detach().to(torch.float64)
        norm = float((w[a] - w[b]).norm())
        if not (math.isfinite(norm) and norm > 0):
            warnings.warn(f"margins: ||w_{a} - w_{b}|| = {norm}; the margins are NaN",
                          RuntimeWarning, stacklevel=3)
            norm = math.nan
        return {f"margins_{side}": (torch.cat(parts) / norm).tolist() if parts else []
                for side, parts in zip("ab", self.margin_diffs, strict=True)}

    def compute(self, head: nn.Linear | None = None,
                probes: Mapping[str, Probe] | None = None) -> dict[str, dict[str, Value]]:
        """``{layer: {measure: value}}``; split-level measures (acc, loss) are under ``""``.

        Non-finite features give NaN measures with a warning (their probes are skipped).
        """
        if self.n == 0:
            raise ValueError("the split is empty: no batches were measured")
        self._settle()
        probes = probes or {}
        out: dict[str, dict[str, Value]] = {}
        logits = torch.cat(self.kept_logits)
        for name in self.layers:
            m = self.moments[name]
            assert m is not None
            vals: dict[str, Value] = {}
            is_pen = name == PENULTIMATE and head is not None
            if is_pen and head is not None:
                check_head(head, self.K, m.dim)
            vals.update(collapse_measures(m, head.weight if is_pen and head else None))
            feats = torch.cat(self.kept[name])
            if is_pen and head is not None:
                vals["nc4"] = ncc_agreement(feats, logits, m)
                var = m.m2_class / m.n.clamp(min=1)
                vals["bound"] = theorem32_bound(m.mean, var, m.n, head.weight, head.bias)
                vals["bound_dir"] = self.logit_moments.bound()
                if self.margin_pair is not None:
                    vals.update(self._margins(head))
            if name in probes:
                if bool(torch.isfinite(feats).all()):
                    vals.update(probes[name](feats))
                else:
                    warnings.warn(f"layer {name!r}: the features are not finite (NaN or inf); "
                                  "its information measures are skipped", RuntimeWarning,
                                  stacklevel=2)
            out[name] = vals
        acc = self.correct / self.n
        split = {"acc": acc, "error": 1.0 - acc}
        if self.loss_fn is not None:
            split["loss"] = self.loss_sum / self.n
        out[PENULTIMATE] = {**split, **out.get(PENULTIMATE, {})}
        return out


def flatten_record(split: str, per_layer: Mapping[str, Mapping[str, Value]]) -> dict[str, Any]:
    """``{split}/{measure}`` for the penultimate layer, ``{split}/{layer}/{measure}`` else.

    Values are floats, except the list-valued ``margins_a`` / ``margins_b``.
    """
    rec: dict[str, Any] = {}
    for layer, vals in per_layer.items():
        rec.update({record_key(split, k, layer): v for k, v in vals.items()})
    return rec


def measure_split(model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int, *,
                  loss_fn: LossFn, head: nn.Linear, batch_size: int = 5000,
                  probe: Probe | None = None,
                  margin_pair: tuple[int, int] | None = (0, 1)) -> dict[str, Any]:
    """Every measure of one split from one forward pass of ``model.forward_with_features``.

    Returns acc, error, loss (mean per sample), the NC measures, nc4, ``bound`` (Theorem 3.2
    with the bias) and ``bound_dir`` (its directional form), plus what ``probe`` computes from
    the same features; with ``margin_pair`` (a, b) also the lists ``margins_a``/``margins_b``.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1; got {batch_size!r}")
    num_classes = check_num_classes(num_classes)
    if not isinstance(x, torch.Tensor) or x.ndim == 0:
        raise ValueError(f"x must be a tensor of inputs [n, ...]; got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    y = check_labels(y, num_classes, len(x), "y")
    check_head(head, num_classes)
    forward: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    forward = model.forward_with_features  # type: ignore[assignment]
    acc = SplitAccumulator(num_classes, loss_fn, [PENULTIMATE], keep_rows=None,
                           margin_pair=margin_pair)
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
