"""The paper's appendix CNN: conv3x3-16, conv3x3-32, maxpool 2, FC-128, FC-K.

Channels are doubled for RGB inputs (conv3x3-32, conv3x3-64).  The representation g(x) is
the FC-128 output after its activation; ``init_scope="paper"`` scales the two FC layers only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from latephase.config import ModelConfig
from latephase.errors import ConfigError
from latephase.models.base import ACTIVATIONS, FeatureHead, apply_init_scale


class CNN(FeatureHead):
    """[n, C, H, W] -> [conv3x3 (padding 1) -> act] * len(channels) -> maxpool 2 -> flatten
    -> ``fc`` (Linear) -> act = g(x) [n, fc_width] -> ``head`` (Linear) -> logits [n, K]."""

    def __init__(self, input_shape: tuple[int, int, int], channels: tuple[int, ...],
                 fc_width: int, num_classes: int, activation: str = "relu") -> None:
        super().__init__()
        c, h, w = input_shape
        dims = (c, *channels)
        self.convs = nn.ModuleList(nn.Conv2d(a, b, kernel_size=3, padding=1)
                                   for a, b in zip(dims[:-1], dims[1:], strict=True))
        self.fc = nn.Linear(channels[-1] * (h // 2) * (w // 2), fc_width)
        self.head = nn.Linear(fc_width, num_classes)
        self.activation = activation
        self._act = ACTIVATIONS[activation]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = x  # [n, C, H, W]
        for conv in self.convs:
            h = self._act(conv(h))  # [n, c_i, H, W]
        h = F.max_pool2d(h, 2).flatten(1)  # [n, c_last * (H//2) * (W//2)]
        return self._act(self.fc(h))  # [n, fc_width]


def build_cnn(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int,
              meta: Mapping[str, Any] | None = None) -> nn.Module:
    """The appendix CNN for images ``input_shape = (C, H, W)``; ``cfg.channels`` doubled when
    C == 3 (RGB), FC width ``cfg.fc_width``; default PyTorch init, then ``init_scale``."""
    if len(input_shape) != 3 or min(input_shape[1:]) < 2:
        raise ConfigError(f"cnn needs images with per-example shape (C, H, W), H and W >= 2; "
                          f"got {input_shape}")
    c, h, w = input_shape
    channels = tuple(2 * k for k in cfg.channels) if c == 3 else tuple(cfg.channels)
    model = CNN((c, h, w), channels, cfg.fc_width, num_classes, cfg.activation)
    apply_init_scale(model, cfg, "cnn")
    return model
