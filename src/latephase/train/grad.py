"""Gradient of one minibatch: autograd in general, a hand-derived pass for the paper's MLP.

``make_grad_fn(model, loss, fast=True)`` returns ``grad(x, y)`` that writes d(batch-mean
loss)/d(theta) into every parameter's ``.grad``.  For :class:`~latephase.models.MLP` with a
ReLU or tanh activation and the SSE or cross-entropy loss, the backward pass is written out
(the same gradients as autograd, up to float rounding; tested), with gradients written
in place into preallocated buffers.  On one CPU core this removes the autograd graph
bookkeeping, about 10 % of the paper's training step.  ``train.fast_mlp = false`` selects
autograd everywhere.

MLP, layers l = 1..L, h_0 = x, a_l = h_{l-1} W_l^T + b_l, h_l = act(a_l), logits = a_L:

    dlogits = 2 (logits - onehot(y)) / B                     (SSE: sum_k (f_k - y_k)^2, mean)
            = (softmax(logits) - onehot(y)) / B              (cross-entropy, mean)
    dW_l = dA_l^T h_{l-1},  db_l = sum_batch dA_l,  dA_{l-1} = (dA_l W_l) * act'(a_{l-1})
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from latephase.models import MLP

GradFn = Callable[[torch.Tensor, torch.Tensor], None]
LossModule = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: act'(a) from the activation's OUTPUT h = act(a), applied to the incoming gradient
ACT_BACKWARD: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "relu": lambda grad, h: torch.ops.aten.threshold_backward(grad, h, 0.0),
    "tanh": lambda grad, h: torch.ops.aten.tanh_backward(grad, h),
}


def autograd_fn(model: nn.Module, loss: object) -> GradFn:
    """The general path: forward, batch-mean loss, ``backward``."""
    params = list(model.parameters())
    batch_mean: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    batch_mean = loss.batch_mean  # type: ignore[attr-defined]

    def grad(x: torch.Tensor, y: torch.Tensor) -> None:
        for p in params:
            p.grad = None
        batch_mean(model(x), y).backward()

    return grad


def mlp_fn(model: MLP, loss: object) -> GradFn:
    """The hand-derived pass for an MLP (see the module docstring)."""
    from latephase.train.losses import SSE, CrossEntropy

    layers: list[nn.Linear] = [*model.hidden, model.head]
    back = ACT_BACKWARD[model.activation]
    act = model._act
    for layer in layers:
        for p in (layer.weight, layer.bias):
            p.grad = torch.zeros_like(p)
    eye = torch.eye(model.head.out_features, dtype=model.head.weight.dtype,
                    device=model.head.weight.device)
    sse = isinstance(loss, SSE)
    if not (sse or isinstance(loss, CrossEntropy)):  # pragma: no cover - guarded by caller
        raise TypeError(f"no hand-derived gradient for loss {type(loss).__name__}")

    @torch.no_grad()
    def grad(x: torch.Tensor, y: torch.Tensor) -> None:
        hs = [x.flatten(1)]
        h = hs[0]
        for layer in layers[:-1]:
            h = act(torch.addmm(layer.bias, h, layer.weight.t()))
            hs.append(h)
        out = torch.addmm(layers[-1].bias, h, layers[-1].weight.t())  # [B, K]
        target = eye.index_select(0, y)
        if sse:
            d = (out - target).mul_(2.0 / len(y))
        else:
            d = torch.softmax(out, 1).sub_(target).div_(len(y))
        for i in range(len(layers) - 1, -1, -1):
            layer = layers[i]
            torch.mm(d.t(), hs[i], out=layer.weight.grad)
            torch.sum(d, 0, out=layer.bias.grad)
            if i > 0:
                d = back(torch.mm(d, layer.weight), hs[i])

    return grad


def make_grad_fn(model: nn.Module, loss: object, fast: bool = True) -> GradFn:
    """The hand-derived MLP pass when it applies (and ``fast``), else autograd."""
    from latephase.train.losses import SSE, CrossEntropy

    if (fast and isinstance(model, MLP) and model.activation in ACT_BACKWARD
            and isinstance(loss, SSE | CrossEntropy)
            and all(layer.bias is not None for layer in [*model.hidden, model.head])):
        return mlp_fn(model, loss)
    return autograd_fn(model, loss)
