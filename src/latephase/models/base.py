"""Which parameters ``ModelConfig.init_scale`` multiplies, per ``init_scope`` and model family.

The policy is one table of module-name patterns (``fnmatch``; ``""`` is the whole model): the
families' builders call :func:`apply_init_scale` once, after PyTorch's default init.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from torch import nn

from latephase.config import ModelConfig
from latephase.models import scale_parameters  # defined before __init__ imports the families

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
