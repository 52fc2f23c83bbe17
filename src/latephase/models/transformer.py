"""The paper's appendix Transformer: a learned CLS token, ``cfg.layers`` (default one) encoder
layers of width ``cfg.dim`` with ``cfg.heads`` heads and an FFN of width ``cfg.ffn``, no
dropout, and a linear head on the CLS output.

The input embedding follows the data: images [n, C, H, W] are cut into non-overlapping
``cfg.patch`` x ``cfg.patch`` patches, each mapped linearly to ``dim`` (a strided conv); token
ids [n, L] (the dataset's ``meta`` has ``vocab_size``) go through an ``nn.Embedding``, and
positions holding ``meta["pad_id"]`` are masked out as attention keys.  Learned position
embeddings cover the CLS token too.

Text rows from :mod:`latephase.data.text` begin with the tokenizer's own ``[CLS]`` id; to this
model it is an ordinary (learned, never masked) token at position 1 -- the representation is
always read at position 0, from the model's CLS.  The data-side ``[CLS]`` is kept on purpose:
it is redundant but harmless (one more key per row), and dropping it would make the rows differ
from what the saved tokenizer (``meta["tokenizer"]``) encodes.

The encoder layer is written here rather than taken from ``nn.TransformerEncoderLayer``: it is
the same post-LayerNorm layer (``norm_first=False``, as in that class and BERT), with the same
init, but it behaves identically in train and eval mode (no fast path, no nested tensors), and
its last layer updates the CLS position only -- the other positions' outputs are never used.

Representation g(x) = the CLS token's output of the last encoder layer.  No extra final
LayerNorm is applied: in a post-LN layer that output already is LayerNorm(h + FFN(h)).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from latephase.config import ModelConfig
from latephase.errors import ConfigError
from latephase.models.base import ACTIVATIONS, FeatureHead, apply_init_scale


class FeedForward(nn.Module):
    """Linear(d, ffn) -> act -> Linear(ffn, d); [n, T, d] -> [n, T, d]."""

    def __init__(self, dim: int, hidden: int, activation: str) -> None:
        super().__init__()
        self.up = nn.Linear(dim, hidden)
        self.down = nn.Linear(hidden, dim)
        self._act = ACTIVATIONS[activation]

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.down(self._act(self.up(h)))


class EncoderLayer(nn.Module):
    """Post-LN encoder layer: h = LN1(h + MHA(h)); h = LN2(h + FFN(h)).  No dropout."""

    def __init__(self, dim: int, heads: int, ffn: int, activation: str) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn, activation)
        self.norm2 = nn.LayerNorm(dim)
        # nn.MultiheadAttention's init: xavier-uniform joint in-projection, zero biases
        nn.init.xavier_uniform_(self.qkv.weight)
        nn.init.zeros_(self.qkv.bias)
        nn.init.zeros_(self.proj.bias)

    def forward(self, h: torch.Tensor, keep: torch.Tensor | None = None,
                cls_only: bool = False) -> torch.Tensor:
        """h [n, T, d]; keep [n, 1, 1, T] bool (True = attend to that key) or None.

        Returns [n, T, d], or [n, 1, d] (the CLS position only) when ``cls_only``.
        """
        n, t, d = h.shape
        q, k, v = self.qkv(h).view(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if cls_only:  # only the CLS query is needed: the last layer's other outputs are unused
            h, q = h[:, :1], q[:, :, :1]  # [n, 1, d], [n, heads, 1, d/heads]
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)  # [n, heads, T', d/heads]
        h = self.norm1(h + self.proj(a.transpose(1, 2).reshape(n, -1, d)))  # [n, T', d]
        return self.norm2(h + self.ffn(h))  # [n, T', d]


class Transformer(FeatureHead):
    """CLS + embedded inputs + positions -> encoder layers -> g(x) = CLS output [n, dim]
    -> ``head`` (Linear) -> logits [n, K].

    Images: ``embed`` is a Conv2d(C, dim, patch, stride=patch), T = (H/patch)(W/patch).
    Tokens: ``embed`` is an Embedding(vocab_size, dim), T = L <= the built length.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, *, dim: int,
                 heads: int, ffn: int, layers: int, patch: int, activation: str = "relu",
                 vocab_size: int | None = None, pad_id: int | None = None) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.tokens = vocab_size is not None
        self.pad_id = pad_id
        self.embed: nn.Module
        if vocab_size is not None:
            self.embed = nn.Embedding(vocab_size, dim, padding_idx=pad_id)
            length = input_shape[0]
        else:
            c, h, w = input_shape
            self.embed = nn.Conv2d(c, dim, kernel_size=patch, stride=patch)
            length = (h // patch) * (w // patch)
        self.cls = nn.Parameter(torch.empty(1, 1, dim).normal_(std=0.02))  # [1, 1, d]
        self.pos = nn.Parameter(torch.empty(1, length + 1, dim).normal_(std=0.02))  # [1, T+1, d]
        self.layers = nn.ModuleList(EncoderLayer(dim, heads, ffn, activation)
                                    for _ in range(layers))
        self.head = nn.Linear(dim, num_classes)

    def _embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Inputs -> (embedded [n, T, d], keep [n, 1, 1, T+1] bool or None: no padding)."""
        if self.tokens:
            if x.is_floating_point() or x.dim() != 2 or x.shape[1] > self.pos.shape[1] - 1:
                raise ValueError(f"this transformer expects token ids: an integer tensor "
                                 f"[n, L] with L <= {self.pos.shape[1] - 1}; got {x.dtype} "
                                 f"{tuple(x.shape)}")
            e = self.embed(x)  # [n, L, d]
            if self.pad_id is None:
                return e, None
            keep = torch.cat([torch.ones_like(x[:, :1], dtype=torch.bool),  # CLS: never masked
                              x != self.pad_id], dim=1)  # [n, L+1]
            return e, keep[:, None, None, :]
        if not x.is_floating_point() or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"this transformer expects float images [n, "
                             f"{', '.join(map(str, self.input_shape))}]; got {x.dtype} "
                             f"{tuple(x.shape)}")
        return self.embed(x).flatten(2).transpose(1, 2), None  # [n, T, d]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        e, keep = self._embed(x)  # [n, T, d]
        n, t, d = e.shape
        h = torch.cat([self.cls.expand(n, 1, d), e], dim=1) + self.pos[:, :t + 1]  # [n, T+1, d]
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            h = layer(h, keep, cls_only=i == last)
        return h[:, 0]  # [n, d]


def build_transformer(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int,
                      meta: Mapping[str, Any] | None = None) -> nn.Module:
    """The appendix Transformer for images ``(C, H, W)`` or, when ``meta`` has ``vocab_size``,
    token ids ``(L,)`` (``meta["pad_id"]``: padding id, None or absent = no padding)."""
    meta = meta or {}
    if cfg.dim % cfg.heads:
        raise ConfigError(f"transformer: dim={cfg.dim} is not divisible by heads={cfg.heads}")
    vocab_size = meta.get("vocab_size")
    if vocab_size is not None:
        if len(input_shape) != 1:
            raise ConfigError(f"transformer on tokens needs per-example shape (L,); got "
                              f"{input_shape}")
    elif len(input_shape) != 3:
        raise ConfigError(f"transformer needs images (C, H, W) or token ids (meta with "
                          f"vocab_size); got per-example shape {input_shape} and no vocab_size")
    elif input_shape[1] % cfg.patch or input_shape[2] % cfg.patch:
        raise ConfigError(f"transformer: image size {input_shape[1]}x{input_shape[2]} is not "
                          f"divisible by patch={cfg.patch}; choose a patch size dividing both")
    model = Transformer(input_shape, num_classes, dim=cfg.dim, heads=cfg.heads, ffn=cfg.ffn,
                        layers=cfg.layers, patch=cfg.patch, activation=cfg.activation,
                        vocab_size=None if vocab_size is None else int(vocab_size),
                        pad_id=meta.get("pad_id"))
    apply_init_scale(model, cfg, "transformer")
    return model
