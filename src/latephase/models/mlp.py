"""The paper's MLP: in -> [Linear -> act] * len(widths) -> Linear(K), default PyTorch init,
then every parameter multiplied by ``init_scale`` (science.md section 5)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from latephase.config import ModelConfig
from latephase.errors import ConfigError
from latephase.models.base import ACTIVATIONS, FeatureHead, scale_parameters


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
