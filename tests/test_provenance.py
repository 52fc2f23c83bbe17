"""config.json provenance: git commit of latephase's checkout, resolved device, versions,
command line.  References: ``git`` run here directly, torch's own device query."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import latephase
from latephase.config import make_config
from latephase.runs import RunRecorder, git_revision

from .conftest import SMALL

SRC = Path(latephase.__file__).resolve().parent


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(SRC), *args], capture_output=True, text=True,
                          check=False)


def test_config_json_provenance(tmp_path: Path) -> None:
    import torch

    from latephase.api import run

    cfg = make_config("demo", overrides=[*SMALL, "device=auto", "measures.information=[]"])
    run(cfg, tmp_path, "r", progress=False, figures=False)
    info = json.loads((tmp_path / "r" / "config.json").read_text())
    expected = ("cuda" if torch.cuda.is_available() else
                "mps" if torch.backends.mps.is_available() else "cpu")
    assert info["device"].split(":")[0] == expected and info["config"]["device"] == "auto"
    env = info["environment"]
    assert env["torch"] == torch.__version__.split("+")[0] or env["torch"] == torch.__version__
    for lib in ("numpy", "scipy", "scikit-learn", "python"):
        assert env[lib]
    assert info["command"] == list(sys.argv)
    head = _git("rev-parse", "HEAD")
    if shutil.which("git") is None or head.returncode != 0:
        assert "git" not in info  # not a checkout: nothing claimed
    else:
        assert info["git"]["commit"] == head.stdout.strip()
        dirty = _git("status", "--porcelain", "--untracked-files=no").stdout.strip() != ""
        assert info["git"]["dirty"] is dirty


def test_git_revision_outside_a_checkout_or_without_git(tmp_path: Path, monkeypatch) -> None:
    outside = tmp_path / "plain"
    outside.mkdir()
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    assert git_revision(str(outside)) is None
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))  # no git at all: None, no exception
    git_revision.cache_clear()
    try:
        assert git_revision(str(SRC)) is None
    finally:
        git_revision.cache_clear()


def test_recorder_without_info_has_git_but_no_device(tmp_path: Path) -> None:
    RunRecorder.create(tmp_path / "r", make_config("demo")).close()
    info = json.loads((tmp_path / "r" / "config.json").read_text())
    assert "device" not in info  # only api.run knows the resolved device
    assert ("git" in info) == (git_revision() is not None)
