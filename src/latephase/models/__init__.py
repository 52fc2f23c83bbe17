"""Models: a registry from name to a builder.

Every model exposes ``features(x)`` (the representation g(x) the paper analyses, after its
activation), ``head`` (the last ``nn.Linear``, f(x) = W g(x) + b), and
``forward_with_features(x) -> (logits, features)`` so one pass serves every measure.

Imports go one way: this registry imports the families (:mod:`~latephase.models.mlp`,
``cnn``, ``transformer``, ``resnet``), which import only :mod:`latephase.models.base`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from latephase.config import ModelConfig
from latephase.models.base import (
    ACTIVATIONS,
    FeatureHead,
    FeatureModel,
    ModelBuilder,
    head_of,
    scale_parameters,
)
from latephase.models.cnn import build_cnn
from latephase.models.mlp import MLP, build_mlp
from latephase.models.resnet import build_resnet18, build_resnet34
from latephase.models.transformer import build_transformer

__all__ = [
    "ACTIVATIONS",
    "MLP",
    "MODELS",
    "FeatureHead",
    "FeatureModel",
    "ModelBuilder",
    "build_mlp",
    "build_model",
    "head_of",
    "scale_parameters",
]

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
