"""Typed, frozen experiment configuration.

A :class:`Config` is a tree of frozen dataclasses.  It is built from a preset (a TOML file
shipped in ``latephase/presets``), an optional user TOML file and dotted ``key=value``
overrides, in that order.  Every value is checked against its field's type and range here;
registry names (dataset, model, optimizer, loss) are checked by :mod:`latephase.build`, the
composition root, before anything is written to disk.  This module imports no other part of
latephase but :mod:`latephase.errors`.

Ranges every field obeys on top of its own: a float is finite (NaN and +-inf are refused); an
int fits a signed 64-bit integer.  Seeds (``seed``, ``data.seed``,
``measures.information_seed``) lie in [0, 2**32 - 1], the range both ``numpy`` (legacy
``RandomState``, used by scikit-learn's ``random_state``) and ``torch.manual_seed`` accept.
Model sizes (widths, channels, hidden sizes) lie in [1, 2**20]; the parameter memory of the
whole model is checked against the machine by :func:`latephase.build.check_model`.

Defaults are the paper's main setting (Sakamoto & Sato 2026, section 5 of science.md):
MNIST, 1000 training images, MLP 784-200-200-200-10 with init scale 8, AdamW lr 1e-3,
summed squared error, batch 100, the paper's evaluation schedule.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from latephase.errors import ConfigError, unknown_choice

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


#: largest int any field takes (torch and numpy index with signed 64-bit integers)
INT_MAX = 2**63 - 1
#: largest seed: numpy's RandomState (scikit-learn's random_state) and torch.manual_seed
#: both accept [0, 2**32 - 1]
SEED_MAX = 2**32 - 1
#: largest width of one layer (hidden widths, channels, hidden sizes); a whole model is also
#: checked against the machine's memory (latephase.build.check_model)
WIDTH_MAX = 2**20
#: largest number of stacked layers, heads, patch side, threads
COUNT_MAX = 2**12


def _rng(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
         hi_open: bool = False, length: int | None = None,
         choices: tuple[str, ...] | None = None, doc: str = "") -> dict[str, Any]:
    """Field metadata: valid range ``[lo, hi]`` (``(lo`` if ``lo_open``, ``hi)`` if
    ``hi_open``), exact number of values of a tuple field (``length``), choices, doc."""
    return {"lo": lo, "hi": hi, "lo_open": lo_open, "hi_open": hi_open, "length": length,
            "choices": choices, "doc": doc}


@dataclass(frozen=True)
class DataConfig:
    """Which data, how much of it, and how it is split."""

    name: str = field(default="mnist", metadata=_rng(doc="dataset registry name"))
    root: str | None = field(
        default=None, metadata=_rng(doc="directory of the standard files; None = embedded data")
    )
    train_size: int = field(default=1000, metadata=_rng(1, doc="class-balanced training set size"))
    test_size: int | None = field(
        default=None, metadata=_rng(1, doc="held-out size (None = all remaining)")
    )
    seed: int = field(
        default=0, metadata=_rng(0, SEED_MAX,
                                 doc="seed of the train/held-out split (fixed across run seeds)")
    )
    normalize: bool = field(
        default=True,
        metadata=_rng(doc="standardise with the dataset's mean/std (MNIST: 0.1307/0.3081)"),
    )
    modulus: int = field(default=97, metadata=_rng(2, doc="modular: the prime p"))
    operation: str = field(
        default="+", metadata=_rng(choices=("+", "-", "*", "/"), doc="modular: a op b mod p")
    )
    train_fraction: float = field(
        default=0.3, metadata=_rng(0.0, 1.0, lo_open=True, doc="modular: share of pairs trained")
    )
    encoding: str = field(
        default="onehot", metadata=_rng(choices=("onehot", "tokens"),
                                        doc="modular: one-hot codes (MLP) or token ids [a, b]")
    )
    download: bool = field(
        default=False, metadata=_rng(doc="fetch missing files into data.root (needs torchvision"
                                         " or Hugging Face datasets, and a network)")
    )
    train_file: str | None = field(
        default=None, metadata=_rng(doc="csv/jsonl: training file (text and label columns)")
    )
    test_file: str | None = field(
        default=None, metadata=_rng(doc="csv/jsonl: held-out file")
    )
    text_column: str = field(default="text", metadata=_rng(doc="csv/jsonl: text column"))
    label_column: str = field(default="label", metadata=_rng(doc="csv/jsonl: label column"))
    vocab_size: int = field(
        default=20000, metadata=_rng(4, doc="text: vocabulary size (incl. pad, unk and [CLS])")
    )
    max_len: int = field(default=128, metadata=_rng(2, doc="text: tokens kept per example"))
    mixture_classes: int = field(default=10, metadata=_rng(2, doc="gaussian-mixture: K"))
    mixture_dim: int = field(default=20, metadata=_rng(1, doc="gaussian-mixture: dimension"))
    mixture_separation: float = field(
        default=3.0, metadata=_rng(0.0, doc="gaussian-mixture: norm of each class mean")
    )
    mixture_std: float = field(
        default=1.0, metadata=_rng(0.0, lo_open=True, doc="gaussian-mixture: isotropic std")
    )


@dataclass(frozen=True)
class ModelConfig:
    """Architecture.  The MLP's representation is the last hidden layer after its activation."""

    name: str = field(default="mlp", metadata=_rng(doc="model registry name"))
    widths: tuple[int, ...] = field(
        default=(200, 200, 200), metadata=_rng(1, WIDTH_MAX, doc="hidden widths, each")
    )
    init_scale: float = field(
        default=8.0, metadata=_rng(0.0, lo_open=True, doc="multiplies every parameter after init")
    )
    activation: str = field(default="relu", metadata=_rng(choices=("relu", "tanh", "gelu")))
    init_scope: str = field(
        default="paper",
        metadata=_rng(choices=("paper", "all", "head"),
                      doc="which parameters init_scale multiplies: paper = the paper's choice "
                          "per model (MLP all, CNN FC layers, Transformer FFN+head, ResNet head)"),
    )
    channels: tuple[int, ...] = field(
        default=(16, 32), metadata=_rng(1, WIDTH_MAX, doc="cnn: conv channels (doubled for RGB)")
    )
    fc_width: int = field(
        default=128, metadata=_rng(1, WIDTH_MAX, doc="cnn: width of the hidden FC layer")
    )
    dim: int = field(default=128, metadata=_rng(1, WIDTH_MAX, doc="transformer: hidden size"))
    heads: int = field(default=4, metadata=_rng(1, COUNT_MAX, doc="transformer: attention heads"))
    ffn: int = field(
        default=256, metadata=_rng(1, WIDTH_MAX, doc="transformer: feed-forward width")
    )
    layers: int = field(default=1, metadata=_rng(1, COUNT_MAX, doc="transformer: encoder layers"))
    patch: int = field(default=4, metadata=_rng(1, COUNT_MAX, doc="transformer: image patch side"))


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer.  Weight decay applies to all parameters (the paper's setting)."""

    name: str = field(default="adamw", metadata=_rng(doc="optimizer registry name"))
    lr: float = field(default=1e-3, metadata=_rng(0.0, lo_open=True))
    weight_decay: float = field(default=0.01, metadata=_rng(0.0))
    momentum: float = field(default=0.0, metadata=_rng(0.0, 1.0, doc="SGD only"))
    betas: tuple[float, ...] = field(
        default=(0.9, 0.999),
        metadata=_rng(0.0, 1.0, hi_open=True, length=2,
                      doc="AdamW: (beta1, beta2), each in [0, 1)"),
    )
    eps: float = field(default=1e-8, metadata=_rng(0.0, lo_open=True, doc="AdamW"))


@dataclass(frozen=True)
class TrainConfig:
    """Training loop and evaluation schedule."""

    steps: int = field(default=100_000, metadata=_rng(1))
    batch_size: int = field(default=100, metadata=_rng(1))
    loss: str = field(default="sse", metadata=_rng(doc="loss registry name (sse | cross_entropy)"))
    eval_schedule: str = field(default="paper", metadata=_rng(choices=("paper", "log")))
    eval_points: int = field(
        default=200, metadata=_rng(2, 10**6, doc="number of points for 'log'")
    )
    eval_batch_size: int = field(default=5000, metadata=_rng(1, doc="rows per evaluation chunk"))
    checkpoint_every_s: float = field(
        default=30.0, metadata=_rng(0.0, doc="seconds between checkpoints (0 = every evaluation)")
    )
    threads: int | str = field(
        default="auto",
        metadata=_rng(1, COUNT_MAX, choices=("auto",),
                      doc="torch/BLAS threads: 'auto' (the cores other work leaves idle; in a "
                          "sweep cores // runs at once) or an int"),
    )
    flush_denormal: bool = field(
        default=True, metadata=_rng(doc="flush subnormal floats to zero while training "
                                        "(false: IEEE subnormals, slower late in a run)")
    )
    fast_mlp: bool = field(
        default=True, metadata=_rng(doc="hand-derived MLP backward (false: autograd)")
    )


@dataclass(frozen=True)
class MeasureConfig:
    """Which measures, and which scale proxy stands in for B_g = sup ||g(x)||."""

    rnc1_scale: str = field(
        default="mean",
        metadata=_rng(choices=("mean", "max"), doc="RNC1 proxy used for t_collapse and the bar"),
    )
    information: tuple[str, ...] = field(
        default=("nhsic", "cmi_ksg"),
        metadata=_rng(choices=("nhsic", "kl_knn", "ksg", "cmi_ksg", "noise_channel", "binning"),
                      doc="information estimators computed at every evaluation point"),
    )
    information_splits: tuple[str, ...] = field(
        default=("test",), metadata=_rng(choices=("train", "test"), doc="splits they run on")
    )
    information_n: int | None = field(
        default=1000, metadata=_rng(2, doc="seeded subsample size (fixed for the whole run)")
    )
    information_seed: int = field(
        default=0, metadata=_rng(0, SEED_MAX, doc="subsample/estimator seed")
    )
    nhsic_bandwidth: str = field(default="paper", metadata=_rng(choices=("paper", "median")))
    nhsic_sigma: float = field(default=5.0, metadata=_rng(0.0, lo_open=True))
    knn_k: int = field(default=3, metadata=_rng(1, doc="neighbours of kl_knn, ksg, cmi_ksg"))
    knn_dim: int = field(default=3, metadata=_rng(1, doc="PCA dims of Z and of X for k-NN"))
    knn_se_groups: int = field(default=10, metadata=_rng(0, doc="jackknife groups (0: no SE)"))
    noise_sigma: float = field(
        default=0.1, metadata=_rng(0.0, lo_open=True, doc="Theorem 3.4 noise level sigma")
    )
    binning_bins: int = field(default=30, metadata=_rng(2))


@dataclass(frozen=True)
class TimescaleConfig:
    """Thresholds of the time scales (first crossing, interpolated on the log-step axis)."""

    fit_threshold: float = field(default=0.99, metadata=_rng(0.0, 1.0, lo_open=True))
    grok_threshold: float = field(default=0.8, metadata=_rng(0.0, 1.0, lo_open=True))
    collapse_fraction: float = field(default=0.5, metadata=_rng(0.0, 1.0, lo_open=True))


@dataclass(frozen=True)
class ForecastConfig:
    """The online grokking forecast (:mod:`latephase.forecast`): each evaluation record gets
    ``forecast/t_grok`` with its interval, from the records up to that step only.

    Every field but ``enabled`` is an option of the forecaster
    (:class:`latephase.forecast.ForecastOptions` is this class plus its validation); the
    defaults are what ``latephase.forecast.calibrate`` returns on the fig3-small runs
    (demo preset, weight decay 0.1/0.03/0.01 x seeds 0, 1, 60k steps)."""

    enabled: bool = field(
        default=True,
        metadata=_rng(doc="forecast t_grok at every evaluation point (on for the MLP presets)"),
    )
    signal: str = field(default="train_rnc1", metadata=_rng(
        doc="collapse signal fitted after t_fit: train_rnc1, heldout_rnc1, heldout_nc1"))
    model: str = field(default="exp", metadata=_rng(
        doc="model form of log(signal): exp (linear in step), power (linear in log step)"))
    window: int = field(default=8, metadata=_rng(
        doc="number of most recent post-fit evaluation points in the fit (>= min_points)"))
    min_points: int = field(default=5, metadata=_rng(
        doc="fewer post-fit points than this: not_yet (>= 3: the fit needs a residual)"))
    level_mode: str = field(default="relative", metadata=_rng(
        doc="relative: target = level * signal(t_fit); absolute: target = level"))
    level: float = field(default=0.8426888227717028, metadata=_rng(
        doc="signal level at t_grok (median over calibration runs) for the point forecast"))
    level_lo: float = field(default=0.6679635071045235, metadata=_rng(
        doc="lowest calibration level (interval end)"))
    level_hi: float = field(default=0.9205663422247463, metadata=_rng(
        doc="highest calibration level (interval end)"))
    confidence: float = field(default=0.9, metadata=_rng(
        doc="confidence of the Fieller interval of the fit, in (0, 1)"))
    handoff: str = field(default="accuracy", metadata=_rng(
        doc="once this baseline gives a forecast, report it instead of the collapse fit: "
            "accuracy (held-out accuracy extrapolation), none (the collapse fit throughout)"))
    handoff_fraction: float = field(default=0.375, metadata=_rng(
        doc="hand off only once held-out accuracy >= handoff_fraction x grok_threshold, [0, 1)"))
    max_ratio: float = field(default=20.0, metadata=_rng(
        doc="a forecast later than max_ratio x the current step is not_yet (> 1)"))
    acc_window: int = field(default=8, metadata=_rng(
        doc="accuracy_extrapolation: most recent points in the logit-accuracy fit"))
    inverse_wd_c: float = field(default=796.7783564090741, metadata=_rng(
        doc="inverse_wd baseline: t_grok * weight_decay of the calibration run inverse_wd_run"))
    inverse_wd_run: str = field(default="wd0.03-seed0", metadata=_rng(
        doc="the calibration run inverse_wd_c was taken from"))
    calibrated_on: str = field(default=(
        "17625c64d638,18ce97869340,54676497d215,5abc24d77d91,9e63cc007957,e7b6f8bb56d6"),
        metadata=_rng(doc="comma-separated config digests of the calibration runs "
                          "(forecast-eval refuses them)"))


@dataclass(frozen=True)
class LoggingConfig:
    """Sinks fed every record metrics.jsonl gets (metrics.jsonl stays the source of truth)
    and, at the end, the figures (:mod:`latephase.integrations.sinks`)."""

    tensorboard: bool = field(
        default=False,
        metadata=_rng(doc="TensorBoard event files in RUN/tensorboard: scalars per record, "
                          "figures as images (pip install 'latephase[tensorboard]')"),
    )
    wandb: bool = field(
        default=False,
        metadata=_rng(doc="log to Weights & Biases; WANDB_MODE=offline needs no network "
                          "(pip install 'latephase[wandb]')"),
    )
    wandb_project: str = field(default="latephase", metadata=_rng(doc="W&B project name"))


@dataclass(frozen=True)
class Config:
    """A whole experiment."""

    name: str = field(default="paper-mnist", metadata=_rng(doc="preset or experiment name"))
    seed: int = field(default=0, metadata=_rng(0, SEED_MAX, doc="init and batch-order seed"))
    device: str = field(
        default="auto", metadata=_rng(choices=("auto", "cpu", "cuda", "mps"),
                                      doc="auto: cuda if available, else mps, else cpu")
    )
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    measures: MeasureConfig = field(default_factory=MeasureConfig)
    timescales: TimescaleConfig = field(default_factory=TimescaleConfig)
    forecast: ForecastConfig = field(default_factory=ForecastConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- parsing

def _parse_literal(text: str) -> Any:
    """Parse a command-line value as a TOML literal; bare words stay strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _show(value: Any, width: int = 60) -> str:
    """``repr(value)`` cut to ``width`` characters (a 400-digit number stays one short line)."""
    text = repr(value)
    return text if len(text) <= width else f"{text[: width - 15]}...({len(text)} chars)"


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp``; return it converted (int->float etc.)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        if isinstance(value, str) and value.lower() == "none" and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) > 1:  # int | str: the first type the value fits
            for a in inner:
                try:
                    return _coerce(key, value, a)
                except ConfigError:
                    pass
            names = " or ".join(_type_name(a) for a in inner)
            raise ConfigError(f"{key}: expected {names}, got {_show(value)}")
        return _coerce(key, value, inner[0])
    if origin is tuple:
        if not isinstance(value, list | tuple):
            value = [value]
        return tuple(_coerce(key, v, args[0]) for v in value)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:  # an int beyond float64 (about 1.8e308)
                raise ConfigError(f"{key}: value {_show(value)} is too large for a float; "
                                  "expected a finite number") from None
    elif tp is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - every field type is listed above
        raise TypeError(f"unsupported config type {tp!r}")
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {_show(value)}")


def _valid_range(v: int | float, meta: Mapping[str, Any]) -> tuple[float | None, float | None,
                                                                    bool, bool]:
    """(lo, hi, lo_open, hi_open) for value ``v``: the field's range, with the bounds every
    field obeys (finite floats; ints within [-INT_MAX - 1, INT_MAX]) filled in."""
    lo, hi = meta.get("lo"), meta.get("hi")
    lo_open, hi_open = bool(meta.get("lo_open")), bool(meta.get("hi_open"))
    if isinstance(v, int):
        lo = -INT_MAX - 1 if lo is None else lo
        hi = INT_MAX if hi is None else hi
    return lo, hi, lo_open, hi_open


def _format_range(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    """``[0.0, 1.0)``; a missing bound of a float field is -inf / inf, open (never valid)."""
    left = "(" if lo_open or lo is None else "["
    right = ")" if hi_open or hi is None else "]"
    return f"{left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"


def _check_range(key: str, value: Any, meta: Mapping[str, Any]) -> None:
    """Length of a tuple field, choices, and the range of every number (floats finite)."""
    length = meta.get("length")
    if isinstance(value, tuple) and length is not None and len(value) != length:
        raise ConfigError(f"{key}: expected {length} values, got {len(value)} "
                          f"({_show(list(value))}); {meta.get('doc') or ''}".rstrip("; "))
    vals = value if isinstance(value, tuple) else (value,)
    choices = meta.get("choices")
    for v in vals:
        if v is None:
            continue
        if choices is not None and isinstance(v, str) and v not in choices:
            rng = "" if meta.get("lo") is None else (  # int | str: a word or a number
                f", or an int in {_format_range(*_valid_range(0, meta))}")
            raise ConfigError(f"{key}: {unknown_choice('value', v, choices)}{rng}")
        if isinstance(v, int | float) and not isinstance(v, bool):
            lo, hi, lo_open, hi_open = _valid_range(v, meta)
            rng = _format_range(lo, hi, lo_open, hi_open)
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"{key}: value {v!r} is not a finite number; "
                                  f"valid range is {rng}")
            low_bad = lo is not None and (v <= lo if lo_open else v < lo)
            high_bad = hi is not None and (v >= hi if hi_open else v > hi)
            if low_bad or high_bad:
                raise ConfigError(f"{key}: value {_show(v)} out of range; valid range is {rng}")


def _build(cls: type, values: Mapping[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a nested mapping, validating every key and value."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(fields)
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(unknown_choice("config key", prefix + key, [prefix + k for k in fields]))
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        f, key, tp = fields[name], prefix + name, hints[name]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{key}: expected a table of settings, got {value!r}")
            kwargs[name] = _build(tp, value, key + ".")  # type: ignore[arg-type]
        else:
            kwargs[name] = _coerce(key, value, tp)
            _check_range(key, kwargs[name], f.metadata)
    return cls(**kwargs)


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["optim.weight_decay=0.03", "seed=3"]`` -> nested dict with parsed values."""
    tree: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. seed=3)")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"override {item!r} has an empty key part")
        node = tree
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with an earlier override")
        node[parts[-1]] = _parse_literal(text.strip())
    return tree


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file (UTF-8).  A ConfigError naming the file and the problem when it is
    missing, a directory, unreadable, not UTF-8 text (binary, Latin-1, ...) or not TOML."""
    p = Path(path)
    where = f"config file {str(p)!r}"
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{where} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"{where} is a directory, not a TOML file") from None
    except OSError as exc:
        raise ConfigError(f"{where} cannot be read: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                          f"{exc.start}); TOML files are UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where} is not valid TOML: {exc}") from None


def preset_names() -> list[str]:
    files = resources.files("latephase.presets").iterdir()
    return sorted(f.name[: -len(".toml")] for f in files if f.name.endswith(".toml"))


def load_preset(name: str) -> dict[str, Any]:
    """The settings of a named preset, as a nested dict (with ``name`` set to the preset)."""
    if name not in preset_names():
        raise ConfigError(unknown_choice("preset", name, preset_names()))
    text = resources.files("latephase.presets").joinpath(f"{name}.toml").read_text()
    return _merge({"name": name}, tomllib.loads(text))


def make_config(preset: str | None = None, config_file: str | Path | None = None,
                overrides: list[str] | Mapping[str, Any] | None = None) -> Config:
    """Resolve preset -> TOML file -> overrides into a :class:`Config` whose every key, type
    and range is checked.  Registry names are not (config imports nothing above it):
    :func:`latephase.build.make_config` is this plus that check."""
    values: dict[str, Any] = load_preset(preset) if preset else {}
    if config_file is not None:
        file_values = load_toml(config_file)
        if "preset" in file_values:
            values = _merge(load_preset(str(file_values.pop("preset"))), values)
        values = _merge(values, file_values)
    if overrides:
        extra = parse_overrides(list(overrides)) if isinstance(overrides, list) else overrides
        values = _merge(values, extra)
    cfg: Config = _build(Config, values)
    return cfg


def config_from_dict(values: Mapping[str, Any]) -> Config:
    """Rebuild a Config from ``Config.to_dict()`` output (e.g. a run's config.json)."""
    cfg: Config = _build(Config, values)
    return cfg


def to_json(cfg: Config) -> str:
    return json.dumps(cfg.to_dict(), indent=2, sort_keys=True)
