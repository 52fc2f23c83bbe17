"""Exceptions raised for bad user input.

Every error a user can cause is a :class:`LatephaseError`; the CLI prints its message
on one line and exits with code 2.  Messages name what is wrong and what would be valid.
"""

from __future__ import annotations


class LatephaseError(Exception):
    """Base class of user-facing errors (bad config, bad data, bad run directory)."""


class ConfigError(LatephaseError, ValueError):
    """A config key, value, preset or registry name is invalid."""


class DataError(LatephaseError, ValueError):
    """A data file is missing, truncated or not in the expected format."""


class RunDirError(LatephaseError, ValueError):
    """A run directory is missing, incomplete or would be overwritten."""


def unknown_choice(what: str, value: object, choices: object) -> str:
    """One-line message for a name that is not in a registry."""
    valid = ", ".join(sorted(map(str, choices)))  # type: ignore[call-overload]
    return f"unknown {what} {value!r}; valid choices: {valid}"


class TrackerError(LatephaseError, ValueError):
    """A Tracker was given a layer, head, split or labels it cannot measure."""


class RunDirBusy(RunDirError):
    """Another process holds the run directory's writer lock (a run, resume or sweep)."""


class ResumeError(RunDirError):
    """A run cannot be resumed: its checkpoint and records disagree, or it ended diverged."""
