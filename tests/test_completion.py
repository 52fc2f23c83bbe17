"""``latephase completion SHELL``: the generated bash script completes commands and options
when bash itself runs it (skipped without shtab or bash); without shtab, one line, exit 2."""

from __future__ import annotations

import builtins
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from latephase.cli import main


def _complete(script: Path, words: list[str]) -> list[str]:
    """COMPREPLY of the script's completion function for the command line ``words``."""
    arr = " ".join(words)
    cmd = (f"source {script}; COMP_WORDS=({arr}); COMP_CWORD={len(words) - 1}; "
           f"_shtab_latephase latephase {words[-1]} {words[-2]}; "
           "printf '%s\\n' \"${COMPREPLY[@]}\"")
    out = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_bash_completion_completes_commands_and_options(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("shtab", reason="shtab not installed (extra latephase[completion])")
    if shutil.which("bash") is None:
        pytest.skip("bash not found")
    assert main(["completion", "bash"]) == 0
    script = tmp_path / "latephase.bash"
    script.write_text(capsys.readouterr().out)
    assert _complete(script, ["latephase", "sw"]) == ["sweep"]
    assert _complete(script, ["latephase", "sweep", "--ex"]) == ["--executor"]
    assert set(_complete(script, ["latephase", "co"])) == {"compare", "completion", "config"}


def test_completion_without_shtab_is_one_line_exit_2(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture) -> None:
    real = builtins.__import__

    def no_shtab(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "shtab":
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_shtab)
    assert main(["completion", "zsh"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "latephase[completion]" in err
