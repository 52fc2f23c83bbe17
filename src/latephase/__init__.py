"""latephase: reproduce and measure late-phase training dynamics.

Grokking and information-bottleneck compression both follow the contraction of the
within-class variance of the penultimate representation (neural collapse); weight decay sets
when that happens (Sakamoto & Sato, ICLR 2026).

Quick use::

    from latephase.config import make_config
    from latephase.api import run
    summary = run(make_config("demo"))

The package init is lazy (PEP 562): ``import latephase`` loads no torch, numpy or sklearn;
``latephase.Tracker``, ``latephase.load_metrics``, ``latephase.eval_steps`` and
``latephase.make_config`` import their module on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from latephase._version import __version__

if TYPE_CHECKING:
    from latephase.build import make_config
    from latephase.runs import load_metrics
    from latephase.tracker import Tracker
    from latephase.train.schedule import eval_steps

#: public name -> the module that defines it (imported on first access)
_LAZY: dict[str, str] = {
    "Tracker": "latephase.tracker",
    "eval_steps": "latephase.train.schedule",
    "load_metrics": "latephase.runs",
    "make_config": "latephase.build",
}

__all__ = ["Tracker", "__version__", "eval_steps", "load_metrics", "make_config"]


def __getattr__(name: str) -> Any:
    """Import the defining module of a public name on first access (PEP 562)."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
