"""LeanAdamW must update exactly like torch.optim.AdamW(fused=True), and their state dicts
must load into each other (a checkpoint written by either resumes with the other)."""

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


def _train(model: nn.Module, opt: object, steps: range) -> None:
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 7, generator=g), torch.randint(0, 3, (64,), generator=g)
    for i in steps:
        opt.zero_grad()  # type: ignore[attr-defined]
        nn.functional.cross_entropy(model(x[i % 4::4]), y[i % 4::4]).backward()
        opt.step()  # type: ignore[attr-defined]


@pytest.mark.parametrize("lean_first", [True, False])
def test_state_dicts_load_into_each_other(lean_first: bool) -> None:
    """10 steps with one class, save, 10 more with the other from that state: the same
    weights, bit for bit, as 20 steps of torch's AdamW; the saved dicts have torch's layout."""
    kw = {"lr": 1e-2, "betas": (0.9, 0.99), "eps": 1e-8, "weight_decay": 0.1}
    ref = _net()
    o_ref = torch.optim.AdamW(ref.parameters(), fused=True, **kw)
    _train(ref, o_ref, range(20))
    net = _net()
    first = (LeanAdamW(net.parameters(), **kw) if lean_first
             else torch.optim.AdamW(net.parameters(), fused=True, **kw))
    _train(net, first, range(10))
    saved = copy.deepcopy(first.state_dict())
    net2 = _net()
    torch_layout = torch.optim.AdamW(net2.parameters(), fused=True, **kw)
    _train(net2, torch_layout, range(1))
    layout = torch_layout.state_dict()
    assert saved["param_groups"][0].keys() == layout["param_groups"][0].keys()
    assert saved["state"].keys() == layout["state"].keys()
    assert {k: v.dtype for k, v in saved["state"][0].items()} == \
        {k: v.dtype for k, v in layout["state"][0].items()}
    second = (torch.optim.AdamW(net.parameters(), fused=True, **kw) if lean_first
              else LeanAdamW(net.parameters(), **kw))
    second.load_state_dict(saved)
    _train(net, second, range(10, 20))
    for a, b in zip(ref.parameters(), net.parameters(), strict=True):
        assert torch.equal(a, b)


def test_bad_state_dict_is_refused_whole() -> None:
    """A state dict of another model is refused with a one-line reason; the optimizer keeps
    its own state."""
    net = _net()
    opt = LeanAdamW(net.parameters(), lr=1e-2)
    _train(net, opt, range(3))
    before = copy.deepcopy(opt.state_dict())
    other = torch.optim.AdamW(nn.Linear(7, 2).parameters(), lr=1e-2)
    with pytest.raises(ValueError, match="expected one group of 4 parameters, got \\[2\\]"):
        opt.load_state_dict(other.state_dict())
    wrong = copy.deepcopy(before)
    wrong["state"][0]["exp_avg"] = torch.zeros(3)
    with pytest.raises(ValueError, match="exp_avg of parameter 0 has shape"):
        opt.load_state_dict(wrong)
    after = opt.state_dict()
    for i, st in before["state"].items():
        for k, v in st.items():
            assert torch.equal(v, after["state"][i][k])


def test_training_run_does_not_import_dynamo() -> None:
    """Building the paper's model and optimizer and stepping it imports no torch._dynamo
    (its import, through torch.optim.Optimizer.add_param_group, cost ~40 MB resident)."""
    import subprocess
    import sys

    code = ("import sys, torch\n"
            "from torch import nn\n"
            "from latephase.config import make_config\n"
            "from latephase.train.optim import OPTIMIZERS\n"
            "cfg = make_config('paper-mnist')\n"
            "m = nn.Linear(4, 3)\n"
            "opt = OPTIMIZERS['adamw'](m.parameters(), cfg.optim)\n"
            "m(torch.randn(2, 4)).sum().backward(); opt.step(); opt.state_dict()\n"
            "print('torch._dynamo' in sys.modules, type(opt).__name__)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "LeanAdamW"]
