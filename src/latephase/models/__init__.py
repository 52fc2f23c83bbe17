"""Models: a registry from name to a builder.

Every model exposes ``features(x)`` (the representation g(x) the paper analyses, after its
activation), ``head`` (the last ``nn.Linear``, f(x) = W g(x) + b), and
``forward_with_features(x) -> (logits, features)`` so one pass serves every measure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from latephase.config import ModelConfig
from latephase.errors import ConfigError

#: in-place activations applied to a fresh linear output (saves an allocation per layer)
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu_, "tanh": torch.tanh_, "gelu": lambda t: F.gelu(t),
}


class FeatureHead(nn.Module):
    """Base of the registry's models: a representation ``features(x)`` [n, p] read by a
    linear ``head``, f(x) = W g(x) + b, with one pass giving both."""

    head: nn.Linear

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.features(x)
        return self.head(g), g  # [n, K], [n, p]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class MLP(FeatureHead):
    """in -> [Linear -> act] * len(widths) -> Linear(K).  g(x) = last hidden layer after act.

    The hidden layers are ``hidden.0 .. hidden.{L-1}`` (nn.Linear); the activation is applied
    functionally, in place, which keeps the training step close to its matmul FLOP floor.
    """

    def __init__(self, in_dim: int, widths: tuple[int, ...], num_classes: int,
                 activation: str = "relu") -> None:
        super().__init__()
        dims = (in_dim, *widths)
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:],
                                                                      strict=True))
        self.head = nn.Linear(dims[-1], num_classes)
        self.activation = activation
        self._act = ACTIVATIONS[activation]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        for layer in self.hidden:
            assert isinstance(layer, nn.Linear)  # for the type checker; hidden holds Linears
            h = self._act(F.linear(h, layer.weight, layer.bias))
        return h  # [n, p]



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


def build_mlp(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int,
              meta: Mapping[str, Any] | None = None) -> nn.Module:
    """The paper's MLP: default PyTorch init, then ``init_scale`` times every parameter
    (``init_scope`` paper/all) or the head only (``head``).  Token ids (``meta`` with
    ``vocab_size``) are rejected: the MLP reads float features."""
    if meta and meta.get("vocab_size") is not None:
        raise ConfigError("mlp reads float features, but this dataset gives token ids "
                          f"[n, {', '.join(map(str, input_shape))}]; use model.name=transformer "
                          "(or data.encoding=onehot for modular)")
    in_dim = 1
    for s in input_shape:
        in_dim *= s
    model = MLP(in_dim, cfg.widths, num_classes, cfg.activation)
    scale_parameters(model.head if cfg.init_scope == "head" else model, cfg.init_scale)
    return model


#: builder(cfg, input_shape, num_classes, meta) -> model.  ``meta`` is the dataset's metadata
#: (e.g. ``vocab_size`` and ``pad_id`` for token inputs).
ModelBuilder = Callable[[ModelConfig, tuple[int, ...], int, Mapping[str, Any]], nn.Module]

# The families below import ACTIVATIONS and scale_parameters from this module: import them last.
from latephase.models.cnn import build_cnn  # noqa: E402
from latephase.models.resnet import build_resnet18, build_resnet34  # noqa: E402
from latephase.models.transformer import build_transformer  # noqa: E402

MODELS: dict[str, ModelBuilder] = {
    "mlp": build_mlp,
    "cnn": build_cnn,
    "transformer": build_transformer,
    "resnet18": build_resnet18,
    "resnet34": build_resnet34,
}


def build_model(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int,
                meta: Mapping[str, Any] | None = None) -> nn.Module:
    """``MODELS[cfg.name]`` applied to the data's input shape, class count and metadata."""
    return MODELS[cfg.name](cfg, input_shape, num_classes, meta or {})
