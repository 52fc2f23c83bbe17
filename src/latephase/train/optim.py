"""Optimizers.

:class:`LeanAdamW` is AdamW with the hyper-parameters, state and state-dict format of
``torch.optim.AdamW(fused=True)`` and bit-identical updates: it calls the fused kernel
``torch._fused_adamw_`` (the op ``AdamW(fused=True)`` itself calls) on parameter and state
lists gathered once.  It does not derive from ``torch.optim.Optimizer``, for two measured
reasons: that class's per-step bookkeeping costs about as much as the fused update itself for
the paper's 0.24M-parameter MLP (~0.1-0.15 ms per step on one core), and its first
``add_param_group`` imports ``torch._dynamo`` (and sympy): about 40 MB of resident memory and
1 s of start-up that a training run never uses.  Where the fused op is missing or the
parameters are on another device, :func:`_adamw` returns ``torch.optim.AdamW`` itself.  A
test checks the updates and state dicts stay identical to ``torch.optim.AdamW(fused=True)``
both ways (save with one, resume with the other), so a change of the private op cannot pass
unnoticed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

import torch
from torch import nn

from latephase.config import OptimConfig

_FUSED: Callable[..., None] | None = getattr(torch, "_fused_adamw_", None)


class Optimizer(Protocol):
    """What the training loop needs of an optimizer (``torch.optim.Optimizer`` has it)."""

    state: Any
    param_groups: list[dict[str, Any]]

    def step(self) -> Any: ...
    def zero_grad(self, set_to_none: bool = True) -> None: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state_dict: dict[str, Any]) -> None: ...


#: the hyper-parameters torch.optim.AdamW(fused=True) stores in its one parameter group
_GROUP_DEFAULTS = {"amsgrad": False, "maximize": False, "foreach": None, "capturable": False,
                   "differentiable": False, "fused": True, "decoupled_weight_decay": True}


class LeanAdamW:
    """AdamW with decoupled weight decay; one parameter group, no closure, no AMSGrad; the
    update of torch's fused kernel, p <- p (1 - lr wd) - lr m_hat / (sqrt(v_hat) + eps)."""

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False,
                 fused: bool = True) -> None:
        items = list(params)
        if any(isinstance(g, dict) for g in items):
            if len(items) != 1:
                raise ValueError("LeanAdamW supports one parameter group without amsgrad")
            items = list(items[0]["params"])
        if amsgrad or not fused or _FUSED is None:
            raise ValueError("LeanAdamW needs the fused kernel and no amsgrad; use "
                             "torch.optim.AdamW")
        self.param_groups: list[dict[str, Any]] = [{"lr": lr, "betas": tuple(betas), "eps": eps,
                              "weight_decay": weight_decay, **_GROUP_DEFAULTS,
                              "params": items}]
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}
        self._lists: tuple[list[torch.Tensor], ...] | None = None

    @property
    def _params(self) -> list[torch.Tensor]:
        params: list[torch.Tensor] = self.param_groups[0]["params"]
        return params

    def _init_state(self) -> None:
        """The state torch.optim.AdamW(fused=True) creates on its first step."""
        for p in self._params:
            if p not in self.state:
                self.state[p] = {
                    "step": torch.zeros((), dtype=torch.float32, device=p.device),
                    "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                    "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}
        states = [self.state[p] for p in self._params]
        self._lists = tuple([s[k] for s in states] for k in ("exp_avg", "exp_avg_sq", "step"))

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self._params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        """One AdamW update of every parameter that has a gradient."""
        group = self.param_groups[0]
        if self._lists is None:
            self._init_state()
        assert self._lists is not None
        exp_avgs, exp_avg_sqs, steps = self._lists
        params, grads = self._params, [p.grad for p in self._params]
        if any(g is None for g in grads):  # skip parameters without a gradient, as torch does
            keep = [i for i, g in enumerate(grads) if g is not None]
            params, grads = [params[i] for i in keep], [grads[i] for i in keep]
            exp_avgs, exp_avg_sqs = [exp_avgs[i] for i in keep], [exp_avg_sqs[i] for i in keep]
            steps = [steps[i] for i in keep]
            if not keep:
                return
        b1, b2 = group["betas"]
        torch._foreach_add_(steps, 1)
        assert _FUSED is not None
        _FUSED(params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False,
               lr=group["lr"], beta1=b1, beta2=b2, weight_decay=group["weight_decay"],
               eps=group["eps"], maximize=False)

    def state_dict(self) -> dict[str, Any]:
        """torch.optim.Optimizer's format: state by parameter index, the group with indices."""
        index = {id(p): i for i, p in enumerate(self._params)}
        group = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        return {"state": {index[id(p)]: dict(st) for p, st in self.state.items()},
                "param_groups": [{**group, "params": list(range(len(self._params)))}]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict of this class or of ``torch.optim.AdamW`` (one group, same number
        of parameters, same shapes); the tensors are copied to each parameter's device."""
        groups, state = state_dict["param_groups"], state_dict["state"]
        params = self._params
        if len(groups) != 1 or len(groups[0]["params"]) != len(params):
            raise ValueError(f"optimizer state: expected one group of {len(params)} parameters, "
                             f"got {[len(g['params']) for g in groups]}")
        if groups[0].get("amsgrad"):
            raise ValueError("optimizer state: amsgrad is not supported by LeanAdamW")
        new: dict[torch.Tensor, dict[str, torch.Tensor]] = {}
        for i, p in zip(groups[0]["params"], params, strict=True):
            if i not in state:
                continue
            st = state[i]
            for k in ("exp_avg", "exp_avg_sq"):
                if st[k].shape != p.shape:
                    raise ValueError(f"optimizer state: {k} of parameter {i} has shape "
                                     f"{tuple(st[k].shape)}, the parameter {tuple(p.shape)}")
            new[p] = {"step": st["step"].to(dtype=torch.float32, device=p.device).clone(),
                      "exp_avg": st["exp_avg"].to(dtype=p.dtype, device=p.device).clone(),
                      "exp_avg_sq": st["exp_avg_sq"].to(dtype=p.dtype, device=p.device).clone()}
        self.state = new
        group = self.param_groups[0]
        group.update({k: groups[0][k] for k in ("lr", "eps", "weight_decay") if k in groups[0]})
        group["betas"] = tuple(groups[0].get("betas", group["betas"]))
        self._lists = None  # gathered again (and any missing state created) on the next step


def _adamw(params: Iterable[nn.Parameter], c: OptimConfig) -> Optimizer:
    """AdamW with decoupled weight decay on every parameter; the fused kernel (one pass over
    the parameters instead of several) when the parameters are on CPU or CUDA, driven by
    :class:`LeanAdamW` (identical updates, less per-step overhead), else torch's AdamW."""
    if len(c.betas) != 2:
        raise ValueError(f"optim.betas: expected 2 values (beta1, beta2), got {list(c.betas)}")
    b1, b2 = c.betas
    params = list(params)
    kw = {"lr": c.lr, "betas": (b1, b2), "eps": c.eps, "weight_decay": c.weight_decay}
    if _FUSED is not None and all(p.device.type in ("cpu", "cuda") for p in params):
        return LeanAdamW(params, **kw)  # type: ignore[arg-type]
    return torch.optim.AdamW(params, **kw)  # type: ignore[arg-type]


def _sgd(params: Iterable[nn.Parameter], c: OptimConfig) -> Optimizer:
    return torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)


OPTIMIZERS: dict[str, Callable[[Iterable[nn.Parameter], OptimConfig], Optimizer]] = {
    "adamw": _adamw,
    "sgd": _sgd,
}
