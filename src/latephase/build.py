"""Composition root: a :class:`~latephase.config.Config` -> dataset, model, loss, optimizer.

This is the one module that knows every registry (``DATASETS``, ``MODELS``, ``LOSSES``,
``OPTIMIZERS``), so :mod:`latephase.config` needs none of them (it imports nothing above
:mod:`latephase.errors`).  Everything here checks before anything is written to disk:

- :func:`make_config` = :func:`latephase.config.make_config` + :func:`check_registries`;
- :func:`check_model` builds the model on PyTorch's ``meta`` device (shapes only, no memory),
  which raises the builders' own errors for a model/data misfit, and refuses a model whose
  training memory (see :func:`training_bytes`) exceeds the device's memory.

torch and the registries are imported inside the functions: ``import latephase.build`` is cheap.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from latephase.config import Config, OptimConfig
from latephase.config import make_config as _parse_config
from latephase.errors import ConfigError, unknown_choice

if TYPE_CHECKING:
    import torch
    from torch import nn

    from latephase.data import Dataset
    from latephase.train.optim import Optimizer


def registries() -> dict[str, Mapping[str, Any]]:
    """Config key -> the registry its value must name."""
    from latephase.data import DATASETS
    from latephase.models import MODELS
    from latephase.train.losses import LOSSES
    from latephase.train.optim import OPTIMIZERS

    return {"data.name": DATASETS, "model.name": MODELS, "optim.name": OPTIMIZERS,
            "train.loss": LOSSES}


def _value(cfg: Config, key: str) -> Any:
    """The value of dotted ``key`` in ``cfg``."""
    node: Any = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def check_registries(cfg: Config) -> None:
    """Registry names (dataset, model, optimizer, loss) must exist; a ConfigError lists the
    valid names otherwise."""
    for key, registry in registries().items():
        value = _value(cfg, key)
        if value not in registry:
            raise ConfigError(f"{key}: {unknown_choice('name', value, registry)}")
    from latephase.measures.probe import estimator_params

    estimator_params(cfg.measures)  # estimator parameters: checked once, before any run dir
    from latephase.integrations.sinks import check_sinks

    check_sinks(cfg)  # logging.tensorboard / logging.wandb: their package must be installed
    if cfg.forecast.enabled:
        from latephase.forecast import from_config

        from_config(cfg.forecast)  # forecast.*: the forecaster's own checks, before any run dir


def make_config(preset: str | None = None, config_file: str | Path | None = None,
                overrides: list[str] | Mapping[str, Any] | None = None) -> Config:
    """Preset -> TOML file -> overrides, every key, type, range and registry name checked."""
    cfg = _parse_config(preset, config_file, overrides)
    check_registries(cfg)
    return cfg


# --------------------------------------------------------------------------- memory

#: optimizer name -> state tensors it keeps per parameter tensor (AdamW: exp_avg and
#: exp_avg_sq; SGD: the momentum buffer when momentum > 0)
OPTIMIZER_STATES: dict[str, Callable[[OptimConfig], int]] = {
    "adamw": lambda c: 2,
    "sgd": lambda c: 1 if c.momentum > 0 else 0,
}


def training_bytes(n_params: int, optim: OptimConfig, itemsize: int) -> int:
    """Bytes of parameter-sized tensors during training: n_params * itemsize * (parameter +
    gradient + optimizer states).  Activations are not counted (they scale with the batch)."""
    states = OPTIMIZER_STATES[optim.name](optim) if optim.name in OPTIMIZER_STATES else 0
    return n_params * itemsize * (2 + states)


def _host_memory() -> int | None:
    """Physical memory of this machine in bytes (POSIX ``sysconf``), None where unknown."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):  # pragma: no cover - non-POSIX
        return None


def _cuda_memory(device: torch.device) -> int | None:
    import torch

    return int(torch.cuda.get_device_properties(device).total_memory)


#: device type -> its total memory in bytes (None: unknown, no check)
DEVICE_MEMORY: dict[str, Callable[[torch.device], int | None]] = {
    "cpu": lambda d: _host_memory(),
    "mps": lambda d: _host_memory(),  # unified memory
    "cuda": _cuda_memory,
}


def _gib(n: float) -> str:
    return f"{n / 2**30:.3g} GiB"


def check_model(cfg: Config, data: Dataset, device: torch.device | str = "cpu",
                memory: int | None = None) -> int:
    """Build ``cfg.model`` for ``data`` on the meta device (no memory used) and return its
    parameter count.  A model/data misfit raises the builder's ConfigError; a model whose
    :func:`training_bytes` exceed ``memory`` (default: the total memory of ``device``) is a
    ConfigError giving both numbers."""
    import torch

    from latephase.models import build_model

    with torch.device("meta"):
        model = build_model(cfg.model, data.input_shape, data.num_classes, data.meta)
    n_params = sum(p.numel() for p in model.parameters())
    itemsize = torch.get_default_dtype().itemsize
    need = training_bytes(n_params, cfg.optim, itemsize)
    dev = torch.device(device)
    if memory is None and dev.type in DEVICE_MEMORY:
        memory = DEVICE_MEMORY[dev.type](dev)
    if memory is not None and need > memory:
        raise ConfigError(
            f"model.name={cfg.model.name!r} has {n_params:,} parameters for this data: training "
            f"needs about {_gib(need)} for parameters, gradients and {cfg.optim.name} state, "
            f"more than the {_gib(memory)} of {dev.type} memory here; use smaller model sizes "
            "(model.widths, model.channels, model.dim, ...)")
    return n_params


# --------------------------------------------------------------------------- builders


def build_dataset(cfg: Config) -> Dataset:
    """``DATASETS[cfg.data.name](cfg.data)``: in-memory tensors and metadata."""
    from latephase.data import build_dataset as build

    return build(cfg.data)


def build_model(cfg: Config, data: Dataset) -> nn.Module:
    """``MODELS[cfg.model.name]`` for the data's input shape, classes and metadata."""
    from latephase.models import build_model as build

    return build(cfg.model, data.input_shape, data.num_classes, data.meta)


def build_loss(cfg: Config, num_classes: int) -> Callable[..., Any]:
    """``LOSSES[cfg.train.loss](K)``: per-sample loss with a ``batch_mean``."""
    from latephase.train.losses import LOSSES

    return LOSSES[cfg.train.loss](num_classes)


def build_optimizer(cfg: Config, params: Iterable[nn.Parameter]) -> Optimizer:
    """``OPTIMIZERS[cfg.optim.name](params, cfg.optim)``."""
    from latephase.train.optim import OPTIMIZERS

    return OPTIMIZERS[cfg.optim.name](params, cfg.optim)
