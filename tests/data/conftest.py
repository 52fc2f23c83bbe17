"""Data tests see no LATEPHASE_DATA from the calling environment."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_data_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LATEPHASE_DATA", raising=False)
