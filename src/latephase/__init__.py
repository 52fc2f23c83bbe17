"""latephase: reproduce and measure late-phase training dynamics.

Grokking and information-bottleneck compression both follow the contraction of the
within-class variance of the penultimate representation (neural collapse); weight decay sets
when that happens (Sakamoto & Sato, ICLR 2026).

Quick use::

    from latephase.config import make_config
    from latephase.api import run
    summary = run(make_config("demo"))
"""

__version__ = "0.1.0"

from latephase.runs import load_metrics  # noqa: E402

__all__ = ["__version__", "load_metrics"]

from latephase.tracker import Tracker  # noqa: E402

__all__ += ["Tracker"]
