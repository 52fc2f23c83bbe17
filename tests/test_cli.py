"""CLI: bad input gives one line naming the problem, exit code 2, and no run directory."""

from __future__ import annotations

import gzip
import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from latephase.cli import main

from .conftest import SMALL


def _write_idx(path: Path, arr: np.ndarray, magic: int | None = None) -> None:
    header = struct.pack(">I", magic if magic is not None else (0x0800 | arr.ndim))
    header += b"".join(struct.pack(">I", d) for d in arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def make_idx_root(root: Path, n_train: int = 300, n_test: int = 100) -> Path:
    """A directory of the four standard MNIST IDX files filled with random digits."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(root / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(root / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    return root


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["--preset", "demo", "optim.weight_dcay=0.1"], "unknown config key 'optim.weight_dcay'"),
        (["--preset", "demo", "train.steps=many"], "train.steps: expected int, got 'many'"),
        (["--preset", "demo", "optim.lr=0"], "optim.lr: value 0.0 out of range"),
        (["--preset", "no-such-preset"], "unknown preset 'no-such-preset'; valid choices:"),
        (["--preset", "demo", "model.name=vgg"], "model.name: unknown name 'vgg'"),
        (["--preset", "demo", "device=tpu"], "device: unknown value 'tpu'"),
        (["--preset", "paper-fashion"], "set data.root=DIR or LATEPHASE_DATA"),
    ],
)
def test_config_errors_exit_2(tmp_path, capsys, args, pattern) -> None:
    out_dir = tmp_path / "runs"
    code, _, err = run_cli(["run", "--out", str(out_dir), "--no-progress", *args], capsys)
    assert code == 2
    assert err.startswith("latephase: error: ") and pattern in err
    assert err.count("\n") == 1
    assert not out_dir.exists()


@pytest.mark.parametrize("device", ["cuda", "mps"])
def test_unavailable_device_exit_2(tmp_path, capsys, monkeypatch, device) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    out_dir = tmp_path / "runs"
    code, _, err = run_cli(["run", "--preset", "demo", "--out", str(out_dir), f"device={device}"],
                           capsys)
    assert code == 2 and f"device={device!r} is not available" in err
    assert "valid here: auto, cpu" in err and err.count("\n") == 1
    assert not out_dir.exists()


def test_auto_device_is_cpu_without_accelerators(monkeypatch) -> None:
    import torch

    from latephase.train.loop import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_missing_data_file_exit_2(tmp_path, capsys) -> None:
    root = make_idx_root(tmp_path / "mnist")
    (root / "t10k-labels-idx1-ubyte").unlink()
    out_dir = tmp_path / "runs"
    code, _, err = run_cli(["run", "--preset", "demo", "--out", str(out_dir), f"data.root={root}",
                            "data.train_size=100"], capsys)
    assert code == 2 and "t10k-labels-idx1-ubyte" in err and err.count("\n") == 1
    assert not out_dir.exists()


def test_corrupt_data_file_exit_2(tmp_path, capsys) -> None:
    root = make_idx_root(tmp_path / "mnist")
    _write_idx(root / "train-labels-idx1-ubyte", np.arange(300) % 10, magic=1234)
    out_dir = tmp_path / "runs"
    code, _, err = run_cli(["run", "--preset", "demo", "--out", str(out_dir), f"data.root={root}",
                            "data.train_size=100"], capsys)
    assert code == 2 and "train-labels-idx1-ubyte" in err and "magic" in err
    assert err.count("\n") == 1
    assert not out_dir.exists()


def test_resume_errors_exit_2(tmp_path, capsys) -> None:
    code, _, err = run_cli(["run", "--resume", str(tmp_path / "nope")], capsys)
    assert code == 2 and "is not a run directory" in err
    code, _, err = run_cli(["run", "--resume", str(tmp_path), "seed=2"], capsys)
    assert code == 2 and "--resume continues a run with its saved config" in err


def test_existing_run_is_not_overwritten(tmp_path, capsys) -> None:
    args = ["run", "--preset", "demo", "--out", str(tmp_path), "--name", "r", "--no-progress",
            "--no-figures", *SMALL, "train.steps=20"]
    assert run_cli(args, capsys)[0] == 0
    before = (tmp_path / "r" / "metrics.jsonl").read_bytes()
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "already holds a run" in err
    assert (tmp_path / "r" / "metrics.jsonl").read_bytes() == before


def test_run_with_idx_root_and_report(tmp_path, capsys) -> None:
    root = make_idx_root(tmp_path / "mnist")
    code, out, _ = run_cli(["run", "--preset", "demo", "--out", str(tmp_path / "runs"),
                            "--name", "idx", "--no-progress", *SMALL, "train.steps=30",
                            f"data.root={root}", "data.train_size=100", "data.test_size=50"],
                           capsys)
    assert code == 0 and "t_fit" in out
    run = tmp_path / "runs" / "idx"
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["config"]["data"]["root"] == str(root)
    assert {"torch", "latephase", "host"} <= set(cfg["environment"])
    shutil.rmtree(run / "figures")
    code, out, _ = run_cli(["report", str(run)], capsys)
    assert code == 0
    assert {p.name for p in (run / "figures").iterdir()} == {
        "accuracy.png", "collapse.png", "nc2.png", "bound.png", "overview.png",
        "information_plane.png", "figure4.png"}


def test_console_script_exit_code(tmp_path) -> None:
    exe = Path(sys.executable).with_name("latephase")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "latephase.cli"]
    proc = subprocess.run([*cmd, "run", "--preset", "demo", "seed=-1", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("latephase: error: seed: value -1 out of range; "
                                   "valid range is [0, inf]")


def test_datasets_and_presets_listing(capsys) -> None:
    from latephase.data import DATASETS

    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    for name in DATASETS:
        assert name in out
    assert "available" in out and "t10k-images-idx3-ubyte" in out
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "demo" in out and "fig3-small" in out and "modular-addition" in out


def test_model_data_mismatch_exit_2_no_run_dir(tmp_path, capsys) -> None:
    out_dir = tmp_path / "runs"
    code, _, err = run_cli(["run", "--preset", "modular-addition", "--out", str(out_dir),
                            "data.modulus=23", "data.encoding=tokens"], capsys)
    assert code == 2 and err.count("\n") == 1 and "transformer" in err
    assert not out_dir.exists()
