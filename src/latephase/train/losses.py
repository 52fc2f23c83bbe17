"""Training losses: a registry name -> class built with the number of classes K.

Each loss, called as ``loss(logits, y)``, gives the per-sample loss [n]; ``batch_mean`` gives
its mean over the batch as one fused op (what the optimizer minimises).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


class SSE:
    """Summed squared error against one-hot targets: sum_k (f_k(x) - 1[y=k])^2 per sample.

    Calling it gives the per-sample loss [n]; ``batch_mean`` gives its mean over the batch
    as one fused op (what the optimizer minimises)."""

    def __init__(self, num_classes: int) -> None:
        self.eye = torch.eye(num_classes)

    def _target(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.eye.device != logits.device or self.eye.dtype != logits.dtype:
            self.eye = self.eye.to(logits.device, logits.dtype)
        return self.eye.index_select(0, y)

    def __call__(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (logits - self._target(logits, y)).square().sum(1)

    def batch_mean(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(logits, self._target(logits, y), reduction="sum") / len(y)


class CrossEntropy:
    """-log softmax(f(x))_y per sample; ``batch_mean`` is its batch mean."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes

    def __call__(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y, reduction="none")

    def batch_mean(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y)


LOSSES: dict[str, Callable[[int], SSE | CrossEntropy]] = {"sse": SSE,
                                                           "cross_entropy": CrossEntropy}
