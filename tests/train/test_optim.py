"""LeanAdamW must update exactly like torch.optim.AdamW(fused=True)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from latephase.train.optim import LeanAdamW


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(7, 16), nn.ReLU(), nn.Linear(16, 3))


@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_bit_identical_to_fused_adamw_including_resume(wd: float) -> None:
    ref, lean = _net(), _net()
    lean.load_state_dict(copy.deepcopy(ref.state_dict()))
    kw = {"lr": 1e-2, "betas": (0.9, 0.99), "eps": 1e-8, "weight_decay": wd, "fused": True}
    o_ref, o_lean = torch.optim.AdamW(ref.parameters(), **kw), LeanAdamW(lean.parameters(), **kw)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 7, generator=g), torch.randint(0, 3, (64,), generator=g)

    def step(model: nn.Module, opt: torch.optim.Optimizer, i: int) -> None:
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[i % 4::4]), y[i % 4::4]).backward()
        opt.step()

    for i in range(25):
        step(ref, o_ref, i)
        step(lean, o_lean, i)
        if i == 10:  # a resume: fresh optimizer from a saved state dict
            state = copy.deepcopy(o_lean.state_dict())
            o_lean = LeanAdamW(lean.parameters(), **kw)
            o_lean.load_state_dict(state)
    for a, b in zip(ref.parameters(), lean.parameters(), strict=True):
        assert torch.equal(a, b)
    assert float(o_lean.state[next(lean.parameters())]["step"]) == 25


def test_rejects_several_groups() -> None:
    net = _net()
    groups = [{"params": net[0].parameters()}, {"params": net[2].parameters()}]
    with pytest.raises(ValueError, match="one parameter group"):
        LeanAdamW(groups, lr=1e-3)
