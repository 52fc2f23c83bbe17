"""Models: a registry from name to a builder.

Every model exposes ``features(x)`` (the representation g(x) the paper analyses, after its
activation), ``head`` (the last ``nn.Linear``, f(x) = W g(x) + b), and
``forward_with_features(x) -> (logits, features)`` so one pass serves every measure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from latephase.config import ModelConfig

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU,
}


class MLP(nn.Module):
    """in -> [Linear -> act] * len(widths) -> Linear(K).  g(x) = last hidden layer after act."""

    def __init__(self, in_dim: int, widths: tuple[int, ...], num_classes: int,
                 activation: str = "relu") -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_dim
        for w in widths:
            layers += [nn.Linear(prev, w), ACTIVATIONS[activation]()]
            prev = w
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(prev, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.flatten(1))  # [n, p]

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.features(x)
        return self.head(g), g  # [n, K], [n, p]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@runtime_checkable
class FeatureModel(Protocol):
    """What the run path needs of a model: one pass giving logits and features, and a head."""

    head: nn.Linear

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


def head_of(model: nn.Module) -> nn.Linear:
    """The model's classifier layer ``model.head``; a TypeError if it is not an nn.Linear."""
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Linear):
        raise TypeError(f"{type(model).__name__}.head must be an nn.Linear, got "
                        f"{type(head).__name__}")
    return head


def scale_parameters(module: nn.Module, scale: float) -> None:
    """Multiply every parameter (weights and biases) of ``module`` by ``scale`` in place."""
    with torch.no_grad():
        for p in module.parameters():
            p.mul_(scale)


def build_mlp(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The paper's MLP: default PyTorch init, then every parameter times ``init_scale``."""
    in_dim = 1
    for s in input_shape:
        in_dim *= s
    model = MLP(in_dim, cfg.widths, num_classes, cfg.activation)
    scale_parameters(model, cfg.init_scale)
    return model


MODELS: dict[str, Callable[[ModelConfig, tuple[int, ...], int], nn.Module]] = {"mlp": build_mlp}


def build_model(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return MODELS[cfg.name](cfg, input_shape, num_classes)
