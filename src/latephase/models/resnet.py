"""ResNet-18/34, CIFAR variant (He et al. 2016 basic blocks, 3x3 stem, no max-pool).

stem: conv3x3(C -> 64, stride 1, padding 1) -> BN -> act; four stages of basic blocks with
widths 64, 128, 256, 512 and first strides 1, 2, 2, 2 ([2, 2, 2, 2] blocks for ResNet-18,
[3, 4, 6, 3] for ResNet-34); global average pool -> g(x) [n, 512] -> ``head`` Linear(512, K).

Init: PyTorch's default module init (the paper trains ResNet-18 "at standard init");
``init_scope="paper"`` multiplies the head only.  BatchNorm uses batch statistics in train
mode and running statistics in eval mode, so g(x) depends on the mode (as in any ResNet).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from latephase.config import ModelConfig
from latephase.errors import ConfigError
from latephase.models.base import ACTIVATIONS, FeatureHead, apply_init_scale

WIDTHS: tuple[int, ...] = (64, 128, 256, 512)
STRIDES: tuple[int, ...] = (1, 2, 2, 2)
#: blocks per stage
DEPTHS: dict[str, tuple[int, ...]] = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}


def conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution, padding 1, no bias (a BatchNorm follows)."""
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """x -> conv3x3(stride) -> BN -> act -> conv3x3 -> BN, plus the shortcut, -> act.

    The shortcut is the identity, or conv1x1(stride) -> BN when the shape changes.
    [n, c_in, H, W] -> [n, c_out, H/stride, W/stride].
    """

    def __init__(self, c_in: int, c_out: int, stride: int,
                 act: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.conv1 = conv3x3(c_in, c_out, stride)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = conv3x3(c_out, c_out)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(c_out))
        self._act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self._act(self.bn1(self.conv1(x)))  # [n, c_out, H', W']
        h = self.bn2(self.conv2(h)) + self.shortcut(x)  # [n, c_out, H', W']
        return self._act(h)


class ResNet(FeatureHead):
    """[n, C, H, W] -> stem -> stages -> global average pool = g(x) [n, 512] -> ``head``."""

    def __init__(self, in_channels: int, depths: tuple[int, ...], num_classes: int,
                 activation: str = "relu") -> None:
        super().__init__()
        act = ACTIVATIONS[activation]
        self._act = act
        self.stem = conv3x3(in_channels, WIDTHS[0])
        self.bn = nn.BatchNorm2d(WIDTHS[0])
        blocks: list[nn.Module] = []
        c_in = WIDTHS[0]
        for width, stride, depth in zip(WIDTHS, STRIDES, depths, strict=True):
            for i in range(depth):
                blocks.append(BasicBlock(c_in, width, stride if i == 0 else 1, act))
                c_in = width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(WIDTHS[-1], num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = self._act(self.bn(self.stem(x)))  # [n, 64, H, W]
        h = self.blocks(h)  # [n, 512, H/8, W/8]
        return h.mean(dim=(2, 3))  # [n, 512]


def _build(name: str, cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> ResNet:
    if len(input_shape) != 3:
        raise ConfigError(f"{name} needs images with per-example shape (C, H, W); got "
                          f"{input_shape}")
    model = ResNet(input_shape[0], DEPTHS[name], num_classes, cfg.activation)
    apply_init_scale(model, cfg, "resnet")
    return model


def build_resnet18(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int,
                   meta: Mapping[str, Any] | None = None) -> nn.Module:
    """CIFAR ResNet-18 for images ``(C, H, W)``: 11,173,962 parameters for C = 3, K = 10."""
    return _build("resnet18", cfg, input_shape, num_classes)


def build_resnet34(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int,
                   meta: Mapping[str, Any] | None = None) -> nn.Module:
    """CIFAR ResNet-34 for images ``(C, H, W)``: 21,282,122 parameters for C = 3, K = 10."""
    return _build("resnet34", cfg, input_shape, num_classes)
