"""Set-up: ``make run`` installs the runtime only, ``make test`` adds ``.[dev]``; torch comes
from TORCH_INDEX only when given (CI stays offline-safe); the README says how to get the
CPU build and how to reach ``latephase``.  Checked with ``make -n`` (prints, runs nothing)
on a copy of the Makefile in an empty directory, so no stamp of this checkout's .venv
hides a recipe."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def _dry(tmp_path: Path, *args: str) -> list[str]:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    (tmp_path / "pyproject.toml").write_text("")
    out = subprocess.run(["make", "-n", *args], cwd=tmp_path, capture_output=True, text=True,
                         check=True).stdout
    return [line for line in out.splitlines() if "pip install" in line]


def test_run_installs_runtime_only_test_adds_dev(tmp_path: Path) -> None:
    run = _dry(tmp_path, "run")
    assert any(line.endswith("install --quiet -e .") for line in run)
    assert not any("[dev]" in line for line in run)
    test = _dry(tmp_path, "test")
    assert any("-e \".[dev]\"" in line for line in test)
    assert not any("download.pytorch.org" in line for line in run + test)  # offline-safe


def test_torch_index_option(tmp_path: Path) -> None:
    lines = _dry(tmp_path, "run", f"TORCH_INDEX={CPU_INDEX}")
    torch_line = next(line for line in lines if "torch==" in line)
    assert f"--index-url {CPU_INDEX}" in torch_line
    # only torch comes from that index; the package and its other dependencies from PyPI
    assert sum(CPU_INDEX in line for line in lines) == 1


def test_readme_setup() -> None:
    text = (ROOT / "README.md").read_text()
    assert f"pip install torch==2.13.0 --index-url {CPU_INDEX}" in text
    assert f"make run TORCH_INDEX={CPU_INDEX}" in text
    assert "source .venv/bin/activate" in text and ".venv/bin/latephase" in text
    for cmd in ("latephase config", "latephase compare", "latephase export",
                "logging.tensorboard=true", "CollapseCallback", "LATEPHASE_PROGRESS_EVERY_S"):
        assert cmd in text, cmd
