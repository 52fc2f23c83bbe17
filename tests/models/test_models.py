"""The model registry: every family satisfies the FeatureModel contract on every input kind.

Contract: ``head`` is an nn.Linear, ``features(x)`` is exactly the head's input,
``forward_with_features`` equals (``forward``, ``features``), gradients reach every parameter,
construction is deterministic, and ``init_scale`` multiplies exactly the parameters
``init_scope`` names.  Plus per-family checks (RGB channels, ResNet sizes, Transformer
padding, modes and equivalence with ``nn.TransformerEncoderLayer``) and ``latephase.Tracker``.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from tests.data.formats import write_sst2
from torch import nn

import latephase
from latephase.config import DataConfig, ModelConfig
from latephase.data import build_dataset
from latephase.errors import ConfigError
from latephase.models import MODELS, FeatureModel, build_model, head_of
from latephase.models.transformer import EncoderLayer

torch.set_num_threads(1)

K = 3
#: small but structurally complete settings; init_scale 1 so a few steps surely train
SMALL: dict[str, dict[str, Any]] = {
    "mlp": {"widths": (16, 16)},
    "cnn": {"channels": (4, 8), "fc_width": 16},
    "transformer": {"dim": 16, "heads": 4, "ffn": 32, "layers": 2, "patch": 4},
    "resnet18": {},
    "resnet34": {},
}
TOKENS_PAD = {"vocab_size": 11, "pad_id": 0}
TOKENS_NOPAD = {"vocab_size": 7, "pad_id": None}  # modular arithmetic: [a, b]
#: case id -> (registry name, per-example input shape, dataset meta)
CASES: dict[str, tuple[str, tuple[int, ...], dict[str, Any]]] = {
    "mlp": ("mlp", (1, 8, 8), {}),
    "cnn-gray": ("cnn", (1, 8, 8), {}),
    "cnn-rgb": ("cnn", (3, 8, 8), {}),
    "transformer-image": ("transformer", (1, 8, 8), {}),
    "transformer-one-layer": ("transformer", (3, 8, 12), {}),
    "transformer-text": ("transformer", (9,), TOKENS_PAD),
    "transformer-modular": ("transformer", (2,), TOKENS_NOPAD),
    "resnet18": ("resnet18", (3, 8, 8), {}),
    "resnet34": ("resnet34", (1, 8, 8), {}),
}


def make_cfg(name: str, **overrides: Any) -> ModelConfig:
    return replace(ModelConfig(name=name, init_scale=1.0, **SMALL[name]), **overrides)


def make_model(case: str, seed: int = 0, **overrides: Any) -> nn.Module:
    name, shape, meta = CASES[case]
    if case == "transformer-one-layer":
        overrides = {"layers": 1, **overrides}
    torch.manual_seed(seed)
    return build_model(make_cfg(name, **overrides), shape, K, meta)


def make_batch(case: str, n: int = 12, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs of the case's kind and labels (every class present)."""
    _, shape, meta = CASES[case]
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % K
    if "vocab_size" not in meta:
        return torch.randn(n, *shape, generator=gen), y
    pad = meta["pad_id"]
    lo = 0 if pad is None else pad + 1
    x = torch.randint(lo, meta["vocab_size"], (n, *shape), generator=gen)  # [n, L]
    if pad is not None:
        for i in range(n):  # lengths 1..L, as padded text
            x[i, 1 + i % shape[0]:] = pad
    return x, y


def head_input(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What ``model.head`` receives during ``model(x)``, read with a forward hook."""
    seen: list[torch.Tensor] = []
    handle = head_of(model).register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
    try:
        model(x)
    finally:
        handle.remove()
    assert len(seen) == 1
    return seen[0]


def test_every_registry_entry_is_covered() -> None:
    assert {name for name, _, _ in CASES.values()} == set(MODELS)


# ----------------------------------------------------------------------------- contract
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_contract(case: str, mode: str) -> None:
    model = make_model(case)
    x, _ = make_batch(case)
    assert isinstance(model, FeatureModel)
    head = head_of(model)
    model.train(mode == "train")
    with torch.set_grad_enabled(mode == "train"):
        logits, g = model.forward_with_features(x)  # type: ignore[operator]
        assert logits.shape == (len(x), K)
        assert g.shape == (len(x), head.in_features)
        assert torch.isfinite(logits).all() and torch.isfinite(g).all()
        torch.testing.assert_close(model(x), logits, rtol=0, atol=0)
        torch.testing.assert_close(model.features(x), g, rtol=0, atol=0)  # type: ignore[operator]
        torch.testing.assert_close(head_input(model, x), g, rtol=0, atol=0)
        torch.testing.assert_close(head(g), logits, rtol=0, atol=0)


@pytest.mark.parametrize("case", list(CASES))
def test_training_steps_reduce_loss_and_reach_every_parameter(case: str) -> None:
    model = make_model(case)
    x, y = make_batch(case)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]
    pad_id = CASES[case][2].get("pad_id")
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        grad = p.grad
        if name == "embed.weight" and pad_id is not None:  # the padding row's gradient is zero
            assert not grad[pad_id].any(), name
            grad = grad[torch.arange(len(grad)) != pad_id]
        assert grad.abs().sum() > 0, name


@pytest.mark.parametrize("case", list(CASES))
def test_construction_is_deterministic(case: str) -> None:
    a, b = make_model(case, seed=3).state_dict(), make_model(case, seed=3).state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    c = make_model(case, seed=4).state_dict()
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


# ----------------------------------------------------------------------------- init scale
def _ffn(layers: int) -> set[str]:
    return {f"layers.{i}.ffn.{lin}.{p}" for i in range(layers) for lin in ("up", "down")
            for p in ("weight", "bias")}


HEAD = {"head.weight", "head.bias"}
#: init_scope "paper": the parameters the paper scales, per case (None = every parameter)
PAPER: dict[str, set[str] | None] = {
    "mlp": None,
    "cnn-gray": {"fc.weight", "fc.bias"} | HEAD,
    "transformer-image": _ffn(2) | HEAD,
    "transformer-modular": _ffn(2) | HEAD,
    "resnet18": HEAD,
    "resnet34": HEAD,
}


@pytest.mark.parametrize("case", list(PAPER))
@pytest.mark.parametrize("scope", ["paper", "all", "head"])
def test_init_scale_multiplies_exactly_the_scoped_parameters(case: str, scope: str) -> None:
    base = dict(make_model(case, init_scope=scope).named_parameters())
    scaled = dict(make_model(case, init_scope=scope, init_scale=3.0).named_parameters())
    everything = set(base)
    expected = {"all": everything, "head": HEAD, "paper": PAPER[case] or everything}[scope]
    assert expected <= everything
    for name, p in base.items():
        want = 3.0 * p if name in expected else p
        torch.testing.assert_close(scaled[name], want, rtol=0, atol=0, msg=name)
        if name in expected and name.endswith("weight"):
            assert p.abs().sum() > 0, name  # a zero tensor would make the check vacuous


# ----------------------------------------------------------------------------- CNN
def test_cnn_doubles_channels_for_rgb_and_takes_fc_width() -> None:
    gray, rgb = make_model("cnn-gray"), make_model("cnn-rgb")
    assert [c.out_channels for c in gray.convs] == [4, 8]  # type: ignore[union-attr]
    assert [c.out_channels for c in rgb.convs] == [8, 16]  # type: ignore[union-attr]
    assert head_of(gray).in_features == head_of(rgb).in_features == 16
    torch.manual_seed(0)
    paper = build_model(ModelConfig(name="cnn"), (3, 32, 32), 10, {})
    assert [c.out_channels for c in paper.convs] == [32, 64]  # type: ignore[union-attr]
    assert paper.fc.in_features == 64 * 16 * 16  # type: ignore[union-attr]
    assert head_of(paper).in_features == 128


def test_cnn_features_are_the_fc_output_after_relu() -> None:
    model = make_model("cnn-gray")
    x, _ = make_batch("cnn-gray")
    g = model.features(x)  # type: ignore[operator]
    assert (g >= 0).all() and (g == 0).any()


# ----------------------------------------------------------------------------- ResNet
@pytest.mark.parametrize(("name", "count"), [("resnet18", 11_173_962), ("resnet34", 21_282_122)])
def test_resnet_parameter_count_and_512_features(name: str, count: int) -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(name=name), (3, 32, 32), 10, {})
    assert sum(p.numel() for p in model.parameters()) == count
    assert head_of(model).in_features == 512
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    model.eval()
    with torch.no_grad():
        assert model.features(torch.randn(2, 3, 32, 32)).shape == (2, 512)  # type: ignore[operator]


def test_resnet_rejects_tokens() -> None:
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        build_model(make_cfg("resnet18"), (9,), K, TOKENS_PAD)


# ----------------------------------------------------------------------------- Transformer
def test_transformer_padding_does_not_change_features() -> None:
    """Padding is defined by the id, so "other ids at padded positions" would not be padding;
    instead: the pad embedding's value and the amount of trailing padding do not matter."""
    model = make_model("transformer-text")
    x, _ = make_batch("transformer-text")  # row i has 1 + i % 9 real tokens, then padding
    pad_id = TOKENS_PAD["pad_id"]
    assert (x == pad_id).any()
    g = model.features(x)  # type: ignore[operator]
    with torch.no_grad():
        model.embed.weight[pad_id] = torch.randn(model.embed.weight.shape[1])  # type: ignore[index,union-attr]
    torch.testing.assert_close(model.features(x), g)  # type: ignore[operator]
    short = (x[:, 4:] == pad_id).all(dim=1)  # rows whose padding starts by position 4
    assert short.sum() >= 2
    torch.testing.assert_close(model.features(x[short, :4]), g[short])  # type: ignore[operator]
    real = x.clone()
    real[:, 0] = x[:, 0] % (TOKENS_PAD["vocab_size"] - 1) + 1  # another non-padding id
    changed = (model.features(real) - g).abs().amax(dim=1)  # type: ignore[operator]
    assert (changed > 1e-4).all()  # while a real token does change them


def test_transformer_cls_is_never_masked() -> None:
    model = make_model("transformer-text")
    x = torch.zeros(3, 9, dtype=torch.long)  # every position is padding
    g = model.features(x)  # type: ignore[operator]
    assert torch.isfinite(g).all()
    torch.testing.assert_close(g[1:], g[:1].expand(2, -1))


@pytest.mark.parametrize("case", ["transformer-image", "transformer-text"])
def test_transformer_features_equal_in_train_and_eval_no_grad(case: str) -> None:
    model = make_model(case)
    x, _ = make_batch(case)
    model.train()
    g_train = model.features(x)  # type: ignore[operator]
    model.eval()
    with torch.no_grad():
        g_eval = model.features(x)  # type: ignore[operator]
        hooked = head_input(model, x)
    torch.testing.assert_close(g_eval, g_train, rtol=0, atol=0)
    torch.testing.assert_close(hooked, g_train, rtol=0, atol=0)


def test_encoder_layer_matches_torch_transformer_encoder_layer() -> None:
    """Same weights -> same outputs as nn.TransformerEncoderLayer (post-LN, ReLU, no dropout),
    with a key-padding mask; the CLS-only path gives the first row."""
    torch.manual_seed(0)
    d, heads, ffn, n, t = 16, 4, 32, 4, 7
    ours = EncoderLayer(d, heads, ffn, "relu")
    ref = nn.TransformerEncoderLayer(d, heads, ffn, dropout=0.0, batch_first=True)
    with torch.no_grad():
        ref.self_attn.in_proj_weight.copy_(ours.qkv.weight)
        ref.self_attn.in_proj_bias.copy_(ours.qkv.bias)
        ref.self_attn.out_proj.weight.copy_(ours.proj.weight)
        ref.self_attn.out_proj.bias.copy_(ours.proj.bias)
        for a, b in [(ref.linear1, ours.ffn.up), (ref.linear2, ours.ffn.down),
                     (ref.norm1, ours.norm1), (ref.norm2, ours.norm2)]:
            a.weight.copy_(b.weight)
            a.bias.copy_(b.bias)
    h = torch.randn(n, t, d)
    pad = torch.zeros(n, t, dtype=torch.bool)
    pad[1, 4:] = pad[2, 2:] = True
    expected = ref(h, src_key_padding_mask=pad)
    keep = (~pad)[:, None, None, :]
    torch.testing.assert_close(ours(h, keep), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours(h, keep, cls_only=True), expected[:, :1], rtol=1e-5,
                               atol=1e-5)


def test_transformer_paper_defaults_are_one_layer_128_4_256() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="transformer"), (1, 28, 28), 10, {})
    assert len(model.layers) == 1  # type: ignore[arg-type]
    assert model.pos.shape == (1, 7 * 7 + 1, 128)
    assert model.layers[0].ffn.up.out_features == 256  # type: ignore[index]
    assert model.layers[0].heads == 4  # type: ignore[index]
    assert head_of(model).in_features == 128


def test_transformer_rejects_a_patch_that_does_not_divide_the_image() -> None:
    with pytest.raises(ValueError, match="not divisible by patch=3"):
        build_model(make_cfg("transformer", patch=3), (1, 8, 8), K, {})


def test_text_dataset_and_transformer_agree_on_padding(tmp_path: Path) -> None:
    """A real text dataset (rows ``[CLS] w1 .. wn [PAD] ..``, pad id in ``meta``) through the
    Transformer built from its ``meta``: padding is masked, the data-side [CLS] is an ordinary
    token, and trailing padding of any length leaves g(x) unchanged."""
    write_sst2(tmp_path)
    data = build_dataset(DataConfig(name="sst2", root=str(tmp_path), train_size=12, max_len=16))
    pad = data.meta["pad_id"]
    x = data.x_train
    assert (x == pad).any() and not (x[:, 0] == pad).any()  # padded rows, never all padding
    torch.manual_seed(0)
    model = build_model(make_cfg("transformer"), data.input_shape, 2, data.meta)
    assert model.embed.padding_idx == pad  # type: ignore[union-attr]
    assert model.pos.shape[1] == 16 + 1  # the model's CLS + max_len positions
    model.eval()
    with torch.no_grad():
        g = model.features(x)  # type: ignore[operator]
        used = int((x != pad).sum(1).max())
        torch.testing.assert_close(model.features(x[:, :used]), g)  # type: ignore[operator]
        noisy = x.clone()  # ids other than the pad id are real tokens, even unknown ones
        noisy[x == pad] = data.meta["unk_id"]
        assert ((model.features(noisy) - g).abs().amax(1) > 1e-4).all()  # type: ignore[operator]


def test_build_errors_are_config_errors() -> None:
    """Model/data mismatches a user can cause print one line in the CLI (LatephaseError)."""
    with pytest.raises(ConfigError, match="mlp reads float features"):
        build_model(make_cfg("mlp"), (2,), K, TOKENS_NOPAD)
    with pytest.raises(ConfigError, match=r"cnn needs images"):
        build_model(make_cfg("cnn"), (9,), K, TOKENS_PAD)
    with pytest.raises(ConfigError, match=r"resnet18 needs images"):
        build_model(make_cfg("resnet18"), (1, 40), K, {})
    with pytest.raises(ConfigError, match="not divisible by heads=3"):
        build_model(make_cfg("transformer", heads=3), (1, 8, 8), K, {})
    with pytest.raises(ConfigError, match="vocab_size"):
        build_model(make_cfg("transformer"), (1, 40), K, {})


def test_transformer_rejects_the_wrong_input_kind() -> None:
    image, tokens = make_model("transformer-image"), make_model("transformer-text")
    with pytest.raises(ValueError, match="expects token ids"):
        tokens(torch.randn(2, 9))
    with pytest.raises(ValueError, match="expects float images"):
        image(torch.zeros(2, 1, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="vocab_size"):
        build_model(make_cfg("transformer"), (9,), K, {})


# ----------------------------------------------------------------------------- Tracker
@pytest.mark.parametrize("case", list(CASES))
def test_tracker_measures_every_model(case: str) -> None:
    model = make_model(case)
    x, y = make_batch(case, n=24)
    tracker = latephase.Tracker(model, splits={"train": (x, y)}, num_classes=K,
                                information=(), batch_size=10)
    assert tracker.head is head_of(model)
    record = tracker.measure()
    for key in ("train/acc", "train/loss", "train/rnc1_mean", "train/nc1", "train/nc2",
                "train/bound", "weight_norm"):
        assert math.isfinite(record[key]), key
    assert model.training  # the tracker restores the mode
