"""The modular-arithmetic dataset: every pair once, correct labels, seeded split."""

from __future__ import annotations

import pytest
import torch

from latephase.config import DataConfig
from latephase.data import build_modular
from latephase.errors import DataError


@pytest.mark.parametrize("op", ["+", "-", "*", "/"])
def test_pairs_labels_and_split(op: str) -> None:
    p = 7
    d = build_modular(DataConfig(name="modular", modulus=p, operation=op, train_fraction=0.3))
    x = torch.cat([d.x_train, d.x_test])
    y = torch.cat([d.y_train, d.y_test])
    a, b = x[:, :p].argmax(1), x[:, p:].argmax(1)
    assert (x.sum(1) == 2).all()
    pairs = {(int(i), int(j)) for i, j in zip(a, b, strict=True)}
    expected = p * (p - 1) if op == "/" else p * p
    assert len(pairs) == len(y) == expected  # every pair exactly once
    for i, j, c in zip(a.tolist(), b.tolist(), y.tolist(), strict=True):
        want = {"+": i + j, "-": i - j, "*": i * j, "/": i * pow(j, p - 2, p)}[op] % p
        assert c == want
    assert len(d.y_train) == round(0.3 * expected)
    again = build_modular(DataConfig(name="modular", modulus=p, operation=op))
    assert torch.equal(again.x_train, d.x_train)
    other = build_modular(DataConfig(name="modular", modulus=p, operation=op, seed=1))
    assert not torch.equal(other.x_train, d.x_train)


def test_modulus_must_be_prime() -> None:
    with pytest.raises(DataError, match="data.modulus=8 is not prime"):
        build_modular(DataConfig(name="modular", modulus=8))


@pytest.mark.parametrize("op", ["+", "/"])
def test_token_encoding_matches_onehot(op: str) -> None:
    p = 7
    onehot = build_modular(DataConfig(name="modular", modulus=p, operation=op))
    tokens = build_modular(DataConfig(name="modular", modulus=p, operation=op, encoding="tokens"))
    assert tokens.x_train.dtype == torch.long and tokens.x_train.shape == (len(onehot.y_train), 2)
    assert tokens.input_shape == (2,)
    for oh, tok in ((onehot.x_train, tokens.x_train), (onehot.x_test, tokens.x_test)):
        assert torch.equal(tok[:, 0], oh[:, :p].argmax(1))
        assert torch.equal(tok[:, 1], oh[:, p:].argmax(1))
    assert torch.equal(tokens.y_train, onehot.y_train) and torch.equal(tokens.y_test, onehot.y_test)
    assert tokens.meta["vocab_size"] == p and tokens.meta["pad_id"] is None
    assert "vocab_size" not in onehot.meta and onehot.x_train.dtype == torch.float32
