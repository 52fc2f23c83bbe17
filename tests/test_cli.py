"""CLI: bad input gives one line naming the problem, exit code 2, and no run directory."""

from __future__ import annotations

import gzip
import json
import os
import re
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
        "information_plane.png", "figure2.png", "figure4.png"}


def test_console_script_exit_code(tmp_path) -> None:
    exe = Path(sys.executable).with_name("latephase")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "latephase.cli"]
    proc = subprocess.run([*cmd, "run", "--preset", "demo", "seed=-1", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("latephase: error: seed: value -1 out of range; "
                                   "valid range is [0, 4294967295]")


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


# --------------------------------------------------------------------------- every bad input


def _one_error_line(code: int, err: str, pattern: str, expected_code: int = 2) -> None:
    """Exit code, exactly one stderr line ``latephase: error: ...`` matching, no traceback."""
    assert code == expected_code, err
    assert err.count("\n") == 1 and err.startswith("latephase: error: "), err
    assert "Traceback" not in err
    assert re.search(pattern, err), (pattern, err)


SMALL_RUN = ["--no-progress", "--no-figures", *SMALL, "train.steps=20"]

#: case -> (override, pattern of the error): hyper-parameters refused before any run directory
BAD_VALUES = {
    "lr-nan": ("optim.lr=nan", r"optim.lr: value nan is not a finite number; valid range is "
                               r"\(0.0, inf\)"),
    "lr-inf": ("optim.lr=inf", r"optim.lr: value inf is not a finite number"),
    "wd-nan": ("optim.weight_decay=nan", r"optim.weight_decay: value nan is not a finite"),
    "wd-minus-inf": ("optim.weight_decay=-inf", r"optim.weight_decay: value -inf is not a"),
    "eps-nan": ("optim.eps=nan", r"optim.eps: value nan is not a finite number"),
    "betas-empty": ("optim.betas=[]", r"optim.betas: expected 2 values, got 0"),
    "betas-one": ("optim.betas=[1.0, 0.9]", r"optim.betas: value 1.0 out of range; valid "
                                            r"range is \[0.0, 1.0\)"),
    "seed-22-digits": ("seed=1234567890123456789012",
                       r"seed: value 1234567890123456789012 out of range; valid range is "
                       r"\[0, 4294967295\]"),
    "data-seed": ("data.seed=-3", r"data.seed: value -3 out of range"),
    "information-seed": ("measures.information_seed=4294967296",
                         r"measures.information_seed: value 4294967296 out of range"),
    "width-1e9": ("model.widths=[1000000000]", r"model.widths: value 1000000000 out of range; "
                                               r"valid range is \[1, 1048576\]"),
    "widths-too-much-memory": ("model.widths=[1000000, 1000000, 1000000]",
                               r"model.name='mlp' has 2,000,797,000,010 parameters .* more than "
                               r"the .* GiB of cpu memory here"),
    "steps-beyond-int64": ("train.steps=9223372036854775808",
                           r"train.steps: value 9223372036854775808 out of range"),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_bad_hyper_parameters_exit_2_without_run_dir(tmp_path, capsys, case) -> None:
    override, pattern = BAD_VALUES[case]
    out_dir = tmp_path / "runs"
    code, _, err = run_cli(["run", "--preset", "demo", "--out", str(out_dir), *SMALL_RUN,
                            override], capsys)
    _one_error_line(code, err, pattern)
    assert not out_dir.exists()


def _config_file(tmp_path: Path, case: str) -> Path:
    """A bad --config of the named kind."""
    path = tmp_path / f"{case}.toml"
    writers = {
        "binary": lambda: path.write_bytes(bytes(range(256))),
        "latin1": lambda: path.write_bytes('name = "d\xe9mo"\n'.encode("latin-1")),
        "directory": lambda: path.mkdir(),
        "missing": lambda: None,
        "not-toml": lambda: path.write_text("seed = = 3\n"),
        "bad-value": lambda: path.write_text("[optim]\nlr = nan\n"),
        "bad-preset": lambda: path.write_text('preset = "nope"\n'),
    }
    writers[case]()
    return path


CONFIG_FILE_ERRORS = {
    "binary": r"is not UTF-8 text \(byte 0x80 at offset 128\)",
    "latin1": r"is not UTF-8 text \(byte 0xe9 at offset 9\)",
    "directory": r"is a directory, not a TOML file",
    "missing": r"does not exist",
    "not-toml": r"is not valid TOML",
    "bad-value": r"optim.lr: value nan is not a finite number",
    "bad-preset": r"unknown preset 'nope'",
}


@pytest.mark.parametrize("case", sorted(CONFIG_FILE_ERRORS))
def test_bad_config_file_exit_2(tmp_path, capsys, case) -> None:
    path = _config_file(tmp_path, case)
    out_dir = tmp_path / "runs"
    code, _, err = run_cli(["run", "--config", str(path), "--out", str(out_dir), *SMALL_RUN],
                           capsys)
    _one_error_line(code, err, CONFIG_FILE_ERRORS[case])
    assert not out_dir.exists()


def test_out_is_a_file_exit_2(tmp_path, capsys) -> None:
    out = tmp_path / "a-file"
    out.write_text("not a directory\n")
    code, _, err = run_cli(["run", "--preset", "demo", "--out", str(out), "--name", "r",
                            *SMALL_RUN], capsys)
    _one_error_line(code, err, r"a-file")
    assert out.read_text() == "not a directory\n"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root writes into read-only directories (simulated in the next test)")
def test_out_read_only_exit_2(tmp_path, capsys) -> None:  # pragma: no cover - not as root
    out = tmp_path / "ro"
    out.mkdir(mode=0o500)
    code, _, err = run_cli(["run", "--preset", "demo", "--out", str(out), *SMALL_RUN], capsys)
    _one_error_line(code, err, r"ro.*[Pp]ermission denied")


def test_os_errors_are_one_line_naming_the_path(tmp_path, capsys, monkeypatch) -> None:
    # a read-only --out, as root cannot be made: the OSError a command lets through is one line
    # naming the path and the reason, exit 2 (here from the run directory's creation)
    from latephase import cli

    def denied(args):
        raise PermissionError(13, "Permission denied", str(tmp_path / "ro" / "r"))

    monkeypatch.setitem(cli.COMMANDS, "run", denied)
    code, _, err = run_cli(["run"], capsys)
    where = re.escape(repr(str(tmp_path / "ro" / "r")))
    _one_error_line(code, err, rf"^latephase: error: {where}: Permission denied$")

    def full(args):
        raise OSError(28, "No space left on device", "runs/r/metrics.jsonl", None)

    monkeypatch.setitem(cli.COMMANDS, "run", full)
    code, _, err = run_cli(["run"], capsys)
    _one_error_line(code, err, r"^latephase: error: 'runs/r/metrics.jsonl': No space left on "
                               r"device$")


def test_internal_error_is_one_line_and_exit_1(capsys, monkeypatch) -> None:
    from latephase import cli

    def bug(args):
        raise RuntimeError("something broke\nover two lines")

    monkeypatch.setitem(cli.COMMANDS, "presets", bug)
    monkeypatch.delenv("LATEPHASE_DEBUG", raising=False)
    code, _, err = run_cli(["presets"], capsys)
    _one_error_line(code, err, r"^latephase: error: internal error: RuntimeError: something "
                               r"broke; over two lines \(run with LATEPHASE_DEBUG=1 for the "
                               r"traceback\)$", expected_code=1)
    monkeypatch.setenv("LATEPHASE_DEBUG", "1")
    with pytest.raises(RuntimeError, match="something broke"):
        main(["presets"])


def test_keyboard_interrupt_exit_130(capsys, monkeypatch) -> None:
    from latephase import cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.COMMANDS, "run", interrupted)
    code, _, err = run_cli(["run"], capsys)
    assert code == 130 and err.count("\n") == 1 and "latephase run --resume" in err


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A small finished run directory, copied by each test that corrupts it."""
    out = tmp_path_factory.mktemp("runs")
    assert main(["run", "--preset", "demo", "--out", str(out), "--name", "r", *SMALL_RUN]) == 0
    return out / "r"


#: (file, its content, pattern of the error) for `report` and `run --resume`
RUN_DIR_CORRUPTIONS = {
    "config-garbage": ("config.json", "garbage{", r"config.json: unreadable run config"),
    "config-list": ("config.json", "[1, 2]", r"config.json: run config must be a JSON object, "
                                             r"got list"),
    "config-null": ("config.json", "null", r"config.json: run config must be a JSON object"),
    "summary-garbage": ("summary.json", "\x00\x01garbage", r"summary.json: unreadable run "
                                                           r"summary"),
    "summary-list": ("summary.json", "[]", r"summary.json: run summary must be a JSON object"),
    "summary-null": ("summary.json", "null", r"summary.json: run summary must be a JSON object"),
}
METRICS_CORRUPTIONS = {
    "metrics-list": ("[1, 2]\n", r"metrics.jsonl:1: a record must be a JSON object with an "
                                 r"integer 'step'"),
    "metrics-null": ("null\n", r"metrics.jsonl:1: a record must be a JSON object"),
    "metrics-no-step": ('{"train/acc": 1.0}\n', r"metrics.jsonl:1: a record must be a JSON "
                                                r"object with an integer 'step'"),
    "metrics-garbage": ("garbage{\n\x00\x00\n", r"metrics.jsonl:2: not a latephase record log"),
}


def _corrupt(src: Path, dst: Path, file: str, text: str) -> Path:
    shutil.copytree(src, dst)
    (dst / file).write_text(text)
    return dst


@pytest.mark.parametrize("command", ["report", "resume"])
@pytest.mark.parametrize("case", sorted(RUN_DIR_CORRUPTIONS))
def test_corrupt_run_dir_exit_2(tmp_path, capsys, finished_run, command, case) -> None:
    file, text, pattern = RUN_DIR_CORRUPTIONS[case]
    run = _corrupt(finished_run, tmp_path / "r", file, text)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    args = (["report", str(run)] if command == "report"
            else ["run", "--resume", str(run), "--no-progress", "--no-figures"])
    code, _, err = run_cli(args, capsys)
    _one_error_line(code, err, pattern)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


@pytest.mark.parametrize("case", sorted(METRICS_CORRUPTIONS))
def test_corrupt_metrics_exit_2(tmp_path, capsys, finished_run, case) -> None:
    text, pattern = METRICS_CORRUPTIONS[case]
    run = _corrupt(finished_run, tmp_path / "r", "metrics.jsonl", text)
    with pytest.warns(RuntimeWarning) if case == "metrics-garbage" else _no_op():
        code, _, err = run_cli(["report", str(run)], capsys)
    _one_error_line(code, err, pattern)
    # resume (extending the run) verifies the records against the checkpoint first
    code, _, err = run_cli(["run", "--resume", str(run), "--no-progress", "--no-figures",
                            "train.steps=40"], capsys)
    _one_error_line(code, err, r"metrics.jsonl: .*refusing to resume \(nothing was changed\)")
    assert (run / "metrics.jsonl").read_text() == text


def _no_op():
    import contextlib

    return contextlib.nullcontext()


# --------------------------------------------------------------------------- help and version


def test_version(capsys) -> None:
    from latephase._version import __version__

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out == f"latephase {__version__}\n"


def test_help_names_every_command(capsys) -> None:
    from latephase.cli import COMMANDS

    with pytest.raises(SystemExit) as info:
        main(["--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0
    for name in COMMANDS:
        assert f"\n    {name} " in out, name
    assert "`" not in out
    for name in COMMANDS:  # nor in any command's help
        with pytest.raises(SystemExit):
            main([name, "--help"])
        assert "`" not in capsys.readouterr().out, name


def test_run_without_preset_says_what_it_runs(capsys, monkeypatch) -> None:
    from latephase import api
    from latephase.errors import RunDirError

    def stop(cfg, *args, **kwargs):
        raise RunDirError("stopped before training")

    monkeypatch.setattr(api, "run", stop)
    code, _, err = run_cli(["run"], capsys)
    first, second = err.splitlines()
    assert code == 2 and second == "latephase: error: stopped before training"
    assert first == ("latephase: no --preset or --config given: running preset paper-mnist "
                     "(mnist, mlp 200-200-200, adamw weight_decay 0.01, 100,000 steps); "
                     "'latephase presets' lists the others")
    code, _, err = run_cli(["run", "--preset", "demo"], capsys)
    assert err == "latephase: error: stopped before training\n"  # a named preset: no notice
