"""latephase: reproduce and measure late-phase training dynamics.

Grokking and information-bottleneck compression both follow the contraction of the
within-class variance of the penultimate representation (neural collapse); weight decay sets
when that happens (Sakamoto & Sato, ICLR 2026).

Quick use::

    import latephase
    from latephase.api import run
    run_dir, summary = run(latephase.make_config("demo"))
    table = latephase.load_run(run_dir.path)     # pandas: config columns + metrics

The package init is lazy (PEP 562): ``import latephase`` loads no torch, numpy or sklearn;
``latephase.Tracker``, ``latephase.load_metrics``, ``latephase.eval_steps``,
``latephase.make_config``, ``latephase.load_run`` / ``load_sweep`` (pandas tables of a run or
a sweep), ``latephase.export_csv`` and ``latephase.compare`` import their module on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from latephase._version import __version__

if TYPE_CHECKING:
    from latephase.analysis import compare, export_csv, load_run, load_sweep
    from latephase.build import make_config
    from latephase.runs import load_metrics
    from latephase.tracker import Tracker
    from latephase.train.schedule import eval_steps

#: public name -> the module that defines it (imported on first access)
_LAZY: dict[str, str] = {
    "Tracker": "latephase.tracker",
    "compare": "latephase.analysis",
    "export_csv": "latephase.analysis",
    "load_run": "latephase.analysis",
    "load_sweep": "latephase.analysis",
    "eval_steps": "latephase.train.schedule",
    "load_metrics": "latephase.runs",
    "make_config": "latephase.build",
}

__all__ = ["Tracker", "__version__", "compare", "eval_steps", "export_csv", "load_metrics",
           "load_run", "load_sweep", "make_config"]


def __getattr__(name: str) -> Any:
    """Import the defining module of a public name on first access (PEP 562)."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
