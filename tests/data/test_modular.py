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
