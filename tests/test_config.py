"""Config: presets, TOML files, dotted overrides, and one-line errors for bad input."""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from pathlib import Path

import pytest

from latephase.config import (
    INT_MAX,
    SEED_MAX,
    WIDTH_MAX,
    Config,
    load_toml,
    make_config,
    parse_overrides,
    preset_names,
)
from latephase.errors import ConfigError


def test_defaults_are_the_papers() -> None:
    c = make_config("paper-mnist")
    assert c.model.widths == (200, 200, 200) and c.model.init_scale == 8.0
    assert (c.optim.name, c.optim.lr) == ("adamw", 1e-3)
    assert (c.train.batch_size, c.train.loss, c.train.steps) == (100, "sse", 100_000)
    assert (c.data.name, c.data.train_size, c.data.normalize) == ("mnist", 1000, True)
    assert c.train.eval_schedule == "paper"
    assert c.timescales.grok_threshold == 0.8
    # The dataclass defaults equal the paper preset, so a bare Config is the paper's setting,
    # except the information estimators: the paper presets add the paper's kl_knn to the
    # default (nhsic, cmi_ksg) so Figure 4 can be drawn the paper's way (issue 10).
    assert Config().measures.information == ("nhsic", "cmi_ksg")
    assert c.measures.information == ("nhsic", "kl_knn", "cmi_ksg")
    measures = dataclasses.replace(Config().measures, information=c.measures.information)
    bare = dataclasses.replace(Config(), name="paper-mnist", measures=measures)
    assert bare == c


def test_demo_preset() -> None:
    c = make_config("demo")
    assert c.optim.weight_decay == 0.1 and c.train.steps == 30_000
    assert {"demo", "paper-mnist"} <= set(preset_names())


def test_overrides_are_typed() -> None:
    c = make_config("paper-mnist", overrides=["seed=3", "optim.weight_decay=0.03",
                                              "train.steps=1e5", "model.widths=[64, 64]"])
    assert c.seed == 3 and c.optim.weight_decay == 0.03
    assert c.train.steps == 100_000 and isinstance(c.train.steps, int)
    assert c.model.widths == (64, 64)
    assert make_config(overrides=["optim.lr=1"]).optim.lr == 1.0  # int -> float
    assert make_config(overrides=["data.root=none"]).data.root is None


def test_config_is_frozen() -> None:
    c = make_config("demo")
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.seed = 1  # type: ignore[misc]


def test_toml_file_with_preset(tmp_path) -> None:
    f = tmp_path / "my.toml"
    f.write_text('preset = "demo"\nseed = 7\n[optim]\nweight_decay = 0.3\n')
    c = make_config(config_file=f, overrides=["train.steps=500"])
    assert (c.name, c.seed, c.optim.weight_decay, c.train.steps) == ("demo", 7, 0.3, 500)


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        (["optim.weight_dcay=0.1"], r"unknown config key 'optim.weight_dcay'.*optim.weight_decay"),
        (["foo=1"], r"unknown config key 'foo'; valid choices: .*seed"),
        (["seed=abc"], r"seed: expected int, got 'abc'"),
        (["optim.lr=-1"], r"optim.lr: value -1.0 out of range; valid range is \(0.0, inf\)"),
        (["train.steps=0"], r"train.steps: value 0 out of range"),
        (["train.eval_schedule=sometimes"], r"train.eval_schedule: unknown value 'sometimes'"),
        (["data=3"], r"data: expected a table of settings"),
        (["seed"], r"not of the form key=value"),
    ],
)
def test_bad_overrides(overrides: list[str], pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern) as info:
        make_config("demo", overrides=overrides)
    assert "\n" not in str(info.value)


def test_bad_preset_and_file(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"unknown preset 'dmeo'; valid choices: demo"):
        make_config("dmeo")
    with pytest.raises(ConfigError, match="does not exist"):
        make_config(config_file=tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("seed = = 3\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        make_config(config_file=bad)


def test_parse_overrides_nesting() -> None:
    assert parse_overrides(["a.b=1", "a.c=x", "d=[1,2]"]) == {"a": {"b": 1, "c": "x"},
                                                              "d": [1, 2]}


# --------------------------------------------------------------------------- hyper-parameters


def _fields(cls: type = Config, prefix: str = "") -> list[tuple[str, typing.Any, typing.Any]]:
    """(dotted key, annotation, field) for every leaf field of the config tree."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out += _fields(tp, f"{prefix}{f.name}.")  # type: ignore[arg-type]
        else:
            out.append((prefix + f.name, tp, f))
    return out


def _is(tp: typing.Any, base: type) -> bool:
    """Whether annotation ``tp`` is ``base``, ``base | None`` or ``tuple[base, ...]``."""
    return tp is base or base in typing.get_args(tp)


FLOAT_KEYS = [k for k, tp, _ in _fields() if _is(tp, float)]
INT_KEYS = [k for k, tp, _ in _fields() if _is(tp, int) and not _is(tp, bool)]
SEED_KEYS = ["seed", "data.seed", "measures.information_seed"]


def test_field_lists_are_complete() -> None:
    # guards the parametrisations below: every float field, and a known int field, is covered
    assert {"optim.lr", "optim.weight_decay", "optim.betas", "optim.eps",
            "train.checkpoint_every_s", "model.init_scale"} <= set(FLOAT_KEYS)
    assert {"seed", "train.steps", "model.widths"} <= set(INT_KEYS)
    assert not set(FLOAT_KEYS) & set(INT_KEYS)


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "+inf", "1e400"])
@pytest.mark.parametrize("key", FLOAT_KEYS)
def test_every_float_field_refuses_nan_and_inf(key: str, text: str) -> None:
    # 1e400 overflows to inf when TOML parses it: the same refusal
    value = f"[0.5, {text}]" if key == "optim.betas" else text
    with pytest.raises(ConfigError, match=rf"^{key}: value -?(nan|inf) is not a finite number; "
                                          r"valid range is [\[(].*[\])]$"):
        make_config("demo", overrides=[f"{key}={value}"])


def test_float_from_an_int_beyond_float64() -> None:
    with pytest.raises(ConfigError, match=r"^optim.lr: value 1000+\.\.\.\(401 chars\) is too "
                                          r"large for a float; expected a finite number$"):
        make_config("demo", overrides=[f"optim.lr={10**400}"])


@pytest.mark.parametrize(
    ("value", "pattern"),
    [
        ("[]", r"^optim.betas: expected 2 values, got 0 \(\[\]\); AdamW: \(beta1, beta2\), each "
               r"in \[0, 1\)$"),
        ("[0.9]", r"^optim.betas: expected 2 values, got 1 \(\[0.9\]\)"),
        ("[0.9, 0.99, 0.999]", r"^optim.betas: expected 2 values, got 3"),
        ("[0.9, 1.0]", r"^optim.betas: value 1.0 out of range; valid range is \[0.0, 1.0\)$"),
        ("[-0.1, 0.9]", r"^optim.betas: value -0.1 out of range; valid range is \[0.0, 1.0\)$"),
        ("0.9", r"^optim.betas: expected 2 values, got 1"),  # a scalar is one value
    ],
)
def test_betas_are_two_values_in_unit_interval(value: str, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        make_config("demo", overrides=[f"optim.betas={value}"])


def test_betas_bounds_are_inclusive_at_zero() -> None:
    assert make_config(overrides=["optim.betas=[0, 0.999999]"]).optim.betas == (0.0, 0.999999)


@pytest.mark.parametrize("key", SEED_KEYS)
def test_seeds_are_bounded(key: str) -> None:
    assert SEED_MAX == 2**32 - 1  # numpy RandomState / sklearn random_state limit
    node = make_config("demo", overrides=[f"{key}={SEED_MAX}"]).to_dict()
    for part in key.split("."):
        node = node[part]
    assert node == SEED_MAX
    for bad in (SEED_MAX + 1, -1, 10**21):  # 10**21: the 22-digit seed
        with pytest.raises(ConfigError, match=rf"^{key}: value {bad} out of range; valid range "
                                              rf"is \[0, {SEED_MAX}\]$"):
            make_config("demo", overrides=[f"{key}={bad}"])


def test_the_largest_seed_is_accepted_by_numpy_and_torch() -> None:
    # the documented bound is real: both RNGs take it, numpy's legacy one refuses one more
    import numpy as np
    import torch

    np.random.RandomState(SEED_MAX)
    torch.Generator().manual_seed(SEED_MAX)
    with pytest.raises(ValueError):
        np.random.RandomState(SEED_MAX + 1)


@pytest.mark.parametrize("key", [k for k in INT_KEYS if k not in SEED_KEYS])
def test_every_int_field_fits_int64(key: str) -> None:
    value = f"[{INT_MAX + 1}]" if key in ("model.widths", "model.channels") else str(INT_MAX + 1)
    with pytest.raises(ConfigError, match=rf"^{key}: value {INT_MAX + 1} out of range; valid "
                                          r"range is \[-?\d+, \d+\]$"):
        make_config("demo", overrides=[f"{key}={value}"])


@pytest.mark.parametrize("key", ["model.widths", "model.channels"])
def test_each_width_is_bounded(key: str) -> None:
    ok = make_config(overrides=[f"{key}=[{WIDTH_MAX}, 3]"])
    assert getattr(ok.model, key.split(".")[1]) == (WIDTH_MAX, 3)
    with pytest.raises(ConfigError, match=rf"^{key}: value 1000000000 out of range; valid range "
                                          rf"is \[1, {WIDTH_MAX}\]$"):
        make_config(overrides=[f"{key}=[8, 1000000000]"])


def test_config_checks_no_registry_names() -> None:
    # config.py imports nothing above it: registry names are latephase.build's check
    # (tests/test_build.py); here they pass, every other field is still checked.
    cfg = make_config("demo", overrides=["model.name=vgg", "data.name=imagenet"])
    assert (cfg.model.name, cfg.data.name) == ("vgg", "imagenet")


# --------------------------------------------------------------------------- config files


def _files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Name -> (a bad --config path, the pattern of its one-line error)."""
    binary = tmp_path / "binary.toml"
    binary.write_bytes(bytes(range(256)) * 4)
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes('name = "caf\xe9"\n'.encode("latin-1"))
    nul = tmp_path / "nul.toml"
    nul.write_bytes(b"seed = 1\x00\n")
    directory = tmp_path / "adir.toml"
    directory.mkdir()
    return {
        "binary": (binary, r"is not UTF-8 text \(byte 0x80 at offset 128\); TOML files are UTF-8"),
        "latin1": (latin1, r"is not UTF-8 text \(byte 0xe9 at offset 11\); TOML files are UTF-8"),
        "nul": (nul, r"is not valid TOML: .*"),
        "directory": (directory, r"is a directory, not a TOML file"),
        "missing": (tmp_path / "missing.toml", r"does not exist"),
    }


@pytest.mark.parametrize("case", ["binary", "latin1", "nul", "directory", "missing"])
def test_bad_config_files_are_one_line_errors(tmp_path: Path, case: str) -> None:
    path, pattern = _files(tmp_path)[case]
    for call in (lambda: load_toml(path), lambda: make_config(config_file=path)):
        with pytest.raises(ConfigError,
                           match=rf"^config file {re.escape(repr(str(path)))} {pattern}$") as info:
            call()
        assert "\n" not in str(info.value)


def test_unreadable_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a permission error (simulated: root reads anything) names the file and the reason
    path = tmp_path / "secret.toml"
    path.write_text("seed = 1\n")

    def deny(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", deny)
    where = re.escape(repr(str(path)))
    with pytest.raises(ConfigError, match=rf"^config file {where} cannot be read: "
                                          r"Permission denied$"):
        load_toml(path)


def test_utf8_config_file_with_non_ascii_text(tmp_path: Path) -> None:
    path = tmp_path / "utf8.toml"
    path.write_text('name = "café"\nseed = 4\n', encoding="utf-8")
    assert make_config(config_file=path).name == "café"
    assert math.isfinite(make_config(config_file=path).optim.lr)
