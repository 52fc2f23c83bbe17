"""Training: the loop, evaluation schedule, optimizers, losses, checkpoints.

The package init is lazy (PEP 562): ``latephase.train.schedule`` (pure Python) can be imported
without torch, and ``from latephase.train import train`` imports the loop on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from latephase.train.loop import train
    from latephase.train.losses import LOSSES
    from latephase.train.optim import OPTIMIZERS
    from latephase.train.schedule import eval_steps

#: public name -> the module that defines it
_LAZY: dict[str, str] = {
    "LOSSES": "latephase.train.losses",
    "OPTIMIZERS": "latephase.train.optim",
    "eval_steps": "latephase.train.schedule",
    "train": "latephase.train.loop",
}

__all__ = ["LOSSES", "OPTIMIZERS", "eval_steps", "train"]


def __getattr__(name: str) -> Any:
    """Import the defining module of a public name on first access (PEP 562)."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
