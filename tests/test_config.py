"""Config: presets, TOML files, dotted overrides, and one-line errors for bad input."""

from __future__ import annotations

import dataclasses

import pytest

from latephase.config import Config, make_config, parse_overrides, preset_names
from latephase.errors import ConfigError


def test_defaults_are_the_papers() -> None:
    c = make_config("paper-mnist")
    assert c.model.widths == (200, 200, 200) and c.model.init_scale == 8.0
    assert (c.optim.name, c.optim.lr) == ("adamw", 1e-3)
    assert (c.train.batch_size, c.train.loss, c.train.steps) == (100, "sse", 100_000)
    assert (c.data.name, c.data.train_size, c.data.normalize) == ("mnist", 1000, True)
    assert c.train.eval_schedule == "paper"
    assert c.timescales.grok_threshold == 0.8
    # The dataclass defaults equal the paper preset, so a bare Config is the paper's setting.
    bare = dataclasses.replace(Config(), name="paper-mnist")
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
        (["optim.lr=-1"], r"optim.lr: value -1.0 out of range; valid range is \(0.0, inf\]"),
        (["train.steps=0"], r"train.steps: value 0 out of range"),
        (["model.name=transformer9"],
         r"model.name: unknown name 'transformer9'; valid choices: cnn, mlp, resnet18, "
         r"resnet34, transformer"),
        (["data.name=imagenet"], r"data.name: unknown name 'imagenet'; valid choices: .*mnist"),
        (["optim.name=lion"], r"optim.name: unknown name 'lion'; valid choices: adamw, sgd"),
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
