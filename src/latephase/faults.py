"""Fault injection for tests: kill or fail the process at a named point of a file write.

Set ``LATEPHASE_FAULT="point[:n[:action]]"`` (several separated by commas).  At the ``n``-th
(default 1st) time this process reaches ``point`` the action happens:

- ``kill`` (default): ``SIGKILL`` of this process, before the write;
- ``torn``: the first half of the bytes being written are written and flushed, then SIGKILL;
- ``enospc``: ``OSError(ENOSPC)`` is raised, as a full disk would.

Points: ``metrics_append``, ``margins_append``, ``checkpoint_write``, ``summary_write``,
``figure_draw``.  Unset (the normal case) this costs one dictionary lookup per call.
"""

from __future__ import annotations

import errno
import os
import signal
from typing import IO, Any

_counts: dict[str, int] = {}


def _spec(point: str) -> tuple[int, str] | None:
    raw = os.environ.get("LATEPHASE_FAULT")
    if not raw:
        return None
    for item in raw.split(","):
        parts = item.strip().split(":")
        if parts[0] == point:
            n = int(parts[1]) if len(parts) > 1 and parts[1] else 1
            return n, parts[2] if len(parts) > 2 else "kill"
    return None


def fault(point: str, fh: IO[Any] | None = None, data: bytes | str = b"") -> None:
    """Called by writers just before they write ``data`` to ``fh`` at ``point``."""
    spec = _spec(point)
    if spec is None:
        return
    _counts[point] = _counts.get(point, 0) + 1
    n, action = spec
    if _counts[point] != n:
        return
    if action == "enospc":
        raise OSError(errno.ENOSPC, "No space left on device (injected)")
    if action == "torn" and fh is not None and data:
        fh.write(data[: max(1, len(data) // 2)])
        fh.flush()
        os.fsync(fh.fileno())
    os.kill(os.getpid(), signal.SIGKILL)
