"""What every model family shares: the :class:`FeatureHead` base and :class:`FeatureModel`
contract, the activations, the builder signature, and which parameters
``ModelConfig.init_scale`` multiplies, per ``init_scope`` and model family.

The families (mlp, cnn, transformer, resnet) import this module only; the registry in
:mod:`latephase.models` imports the families (one way: nothing here imports back).

The init-scale policy is one table of module-name patterns (``fnmatch``; ``""`` is the whole
model): the families' builders call :func:`apply_init_scale` once, after PyTorch's default init.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from fnmatch import fnmatchcase
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from latephase.config import ModelConfig

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


#: builder(cfg, input_shape, num_classes, meta) -> model.  ``meta`` is the dataset's metadata
#: (e.g. ``vocab_size`` and ``pad_id`` for token inputs).
ModelBuilder = Callable[[ModelConfig, tuple[int, ...], int, Mapping[str, Any]], nn.Module]

#: init_scope "paper": the submodules the paper multiplies by init_scale (science.md section 5)
PAPER_INIT_SCOPE: dict[str, tuple[str, ...]] = {
    "mlp": ("",),                             # every parameter (build_mlp applies it itself)
    "cnn": ("fc", "head"),                    # the FC layers only: FC-128 and FC-K
    "transformer": ("layers.*.ffn", "head"),  # the encoder layers' FFNs and the classifier
    "resnet": ("head",),                      # "at standard init": the final linear only
}
#: the other scopes, the same for every family
INIT_SCOPES: dict[str, tuple[str, ...]] = {"all": ("",), "head": ("head",)}


def init_scale_modules(model: nn.Module, scope: str, family: str) -> list[nn.Module]:
    """The submodules whose parameters ``init_scale`` multiplies under ``scope``.

    A ValueError if a pattern matches no submodule (a renamed layer would otherwise silently
    leave its parameters unscaled).
    """
    patterns = {**INIT_SCOPES, "paper": PAPER_INIT_SCOPE[family]}[scope]
    named = list(model.named_modules())
    chosen: list[nn.Module] = []
    for pattern in patterns:
        found = [m for name, m in named if fnmatchcase(name, pattern)]
        if not found:
            raise ValueError(f"init_scope {scope!r}: no submodule of {type(model).__name__} "
                             f"matches {pattern!r}")
        chosen.extend(found)
    return chosen


def apply_init_scale(model: nn.Module, cfg: ModelConfig, family: str) -> None:
    """Multiply the parameters chosen by ``cfg.init_scope`` by ``cfg.init_scale``, in place."""
    for module in init_scale_modules(model, cfg.init_scope, family):
        scale_parameters(module, cfg.init_scale)
