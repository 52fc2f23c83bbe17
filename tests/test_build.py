"""latephase.build: registry names and the model's fit and size checked before anything runs."""

from __future__ import annotations

import re

import pytest
import torch

from latephase.build import (
    OPTIMIZER_STATES,
    build_loss,
    build_model,
    build_optimizer,
    check_model,
    check_registries,
    make_config,
    training_bytes,
)
from latephase.config import OptimConfig
from latephase.data import Dataset
from latephase.errors import ConfigError


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        (["model.name=transformer9"],
         r"^model.name: unknown name 'transformer9'; valid choices: cnn, mlp, resnet18, "
         r"resnet34, transformer$"),
        (["data.name=imagenet"], r"^data.name: unknown name 'imagenet'; valid choices: .*mnist"),
        (["optim.name=lion"], r"^optim.name: unknown name 'lion'; valid choices: adamw, sgd$"),
        (["train.loss=hinge"],
         r"^train.loss: unknown name 'hinge'; valid choices: cross_entropy, sse$"),
    ],
)
def test_unknown_registry_names(overrides: list[str], pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        make_config("demo", overrides=overrides)


def test_check_registries_accepts_every_registered_name() -> None:
    from latephase.data import DATASETS
    from latephase.models import MODELS
    from latephase.train.losses import LOSSES
    from latephase.train.optim import OPTIMIZERS

    for key, names in (("data.name", DATASETS), ("model.name", MODELS),
                       ("optim.name", OPTIMIZERS), ("train.loss", LOSSES)):
        for name in names:
            check_registries(make_config("demo", overrides=[f"{key}={name}"]))
    assert set(OPTIMIZER_STATES) == set(OPTIMIZERS)  # every optimizer has a memory rule


def _data(input_shape: tuple[int, ...] = (1, 28, 28), k: int = 10) -> Dataset:
    x = torch.zeros(4, *input_shape)
    y = torch.arange(4) % k
    return Dataset(x_train=x, y_train=y, x_test=x, y_test=y, num_classes=k, meta={})


def test_check_model_counts_parameters_without_allocating_them() -> None:
    # ground truth: the MLP's parameter count is sum_l (in_l + 1) * out_l; independent
    # reference: the parameters of a model really built on the CPU
    cfg = make_config("demo", overrides=["model.widths=[32, 16]"])
    data = _data()
    analytic = (784 + 1) * 32 + (32 + 1) * 16 + (16 + 1) * 10
    real = sum(p.numel() for p in build_model(cfg, data).parameters())
    assert check_model(cfg, data) == analytic == real
    for name in ("cnn", "resnet18"):
        other = make_config("demo", overrides=[f"model.name={name}"])
        built = sum(p.numel() for p in build_model(other, _data((3, 32, 32))).parameters())
        assert check_model(other, _data((3, 32, 32))) == built


def test_training_bytes_formula() -> None:
    # AdamW keeps parameter, gradient, exp_avg, exp_avg_sq; SGD without momentum two tensors
    assert training_bytes(10, OptimConfig(name="adamw"), 4) == 10 * 4 * 4
    assert training_bytes(10, OptimConfig(name="sgd"), 4) == 10 * 4 * 2
    assert training_bytes(10, OptimConfig(name="sgd", momentum=0.9), 4) == 10 * 4 * 3


def test_a_model_beyond_memory_is_refused_with_the_numbers() -> None:
    # 784 -> 10**6 -> 10**6 -> 10**6 -> 10: about 2.0e12 parameters, 29 TiB with AdamW
    cfg = make_config("demo", overrides=["model.widths=[1000000, 1000000, 1000000]"])
    n = (784 + 1) * 10**6 + 2 * (10**6 + 1) * 10**6 + (10**6 + 1) * 10
    need_gib = re.escape(f"{n * 4 * 4 / 2**30:.3g}")
    with pytest.raises(ConfigError, match=rf"^model.name='mlp' has {n:,} parameters for this "
                                          rf"data: training needs about {need_gib} GiB .* "
                                          r"more than the [\d.e+]+ GiB of cpu memory here; "):
        check_model(cfg, _data())
    # the same model passes when the memory is there (the check compares, it does not guess)
    assert check_model(cfg, _data(), memory=n * 16) == n


def test_memory_boundary_is_exact() -> None:
    # widths [8]: (784 + 1) * 8 + (8 + 1) * 10 = 6370 parameters, 16 bytes each with AdamW
    cfg = make_config("demo", overrides=["model.widths=[8]"])
    need = 6370 * 16
    assert check_model(cfg, _data(), memory=need) == 6370
    gib = [re.escape(f"{b / 2**30:.3g}") for b in (need, need - 1)]
    with pytest.raises(ConfigError, match=rf"about {gib[0]} GiB .* more than the "
                                          rf"{gib[1]} GiB of cpu memory"):
        check_model(cfg, _data(), memory=need - 1)


def test_model_data_misfit_raises_the_builders_error() -> None:
    cfg = make_config("demo", overrides=["model.name=cnn"])
    with pytest.raises(ConfigError):
        check_model(cfg, _data((40,)))  # a CNN needs images [C, H, W]


def test_builders_follow_the_registries() -> None:
    cfg = make_config("demo", overrides=["model.widths=[8]", "optim.name=sgd",
                                         "optim.momentum=0.5", "train.loss=cross_entropy"])
    model = build_model(cfg, _data())
    opt = build_optimizer(cfg, model.parameters())
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0.5
    loss = build_loss(cfg, 10)
    logits, y = torch.randn(5, 10), torch.arange(5)
    torch.testing.assert_close(loss(logits, y), torch.nn.functional.cross_entropy(
        logits, y, reduction="none"), rtol=1e-6, atol=1e-6)  # float32, same op: ~1 ulp
