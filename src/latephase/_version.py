"""The package version (kept apart so that any module can read it without the package init)."""

__version__ = "0.1.0"
