"""Vectorized ensembles: several runs of one MLP architecture trained in lockstep in one
process, each with its own seed, learning rate and weight decay.

The members' parameters are stacked (``W[l]``: [M, out, in], ``b[l]``: [M, out]) and every
member's ``nn.Parameter`` becomes a view into its slice, so the batched forward/backward
(``torch.baddbmm``/``torch.bmm``, the hand-derived MLP gradient of
:mod:`latephase.train.grad` with a member axis) writes straight into each member's gradient,
and each member keeps its own optimizer (the same fused AdamW update as a run trained alone),
sampler (same batch order), tracker, checkpoint and run directory.  A member's checkpoint has
the format of a solo run's, so it can be resumed alone or in an ensemble.

A member that diverges stops being updated and is recorded as diverged; the others go on.
On one CPU core the step is compute-bound and an ensemble saves only the per-step overhead
(see ``latephase bench``); on a GPU it fills the device that one small MLP leaves idle.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import torch

from latephase.config import Config
from latephase.data import Dataset, build_dataset
from latephase.errors import ConfigError
from latephase.models import MLP
from latephase.runs import RunDir, RunRecorder
from latephase.train.grad import ACT_BACKWARD
from latephase.train.loop import (
    SSE,
    CrossEntropy,
    EpochSampler,
    Member,
    drive,
    move_dataset,
    resolve_device,
)
from latephase.train.optim import Optimizer
from latephase.train.runtime import in_training_runtime

#: config keys that may differ between the members of one ensemble
MEMBER_KEYS = ("seed", "optim.lr", "optim.weight_decay", "name")


def ensemble_key(cfg: Config) -> str:
    """Runs with equal keys can train as one ensemble (everything but MEMBER_KEYS equal)."""
    d = cfg.to_dict()
    for key in MEMBER_KEYS:
        node = d
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node.pop(leaf)
    return repr(sorted(_flat(d).items()))


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def ensemble_supported(cfg: Config) -> str | None:
    """None when ``cfg`` can train in a vectorized ensemble, else the reason it cannot."""
    if cfg.model.name != "mlp":
        return f"model.name={cfg.model.name!r} (the ensemble vectorizes the MLP only)"
    if cfg.model.activation not in ACT_BACKWARD:
        return f"model.activation={cfg.model.activation!r} has no hand-derived backward"
    if cfg.train.loss not in ("sse", "cross_entropy"):
        return f"train.loss={cfg.train.loss!r}"
    if not cfg.train.fast_mlp:
        return "train.fast_mlp=false asks for autograd"
    return None


class StackedMLP:
    """The members' MLP parameters stacked along a leading member axis.

    After construction each member's parameters are views into the stacks (so updates by a
    member's own optimizer are updates of the stack) and so are their ``.grad`` tensors.
    """

    def __init__(self, models: Sequence[MLP]) -> None:
        self.layers = len(models[0].hidden) + 1
        self.act = models[0]._act
        self.back = ACT_BACKWARD[models[0].activation]
        per_member = [[*m.hidden, m.head] for m in models]
        self.weights: list[torch.Tensor] = []  # [M, out, in] per layer
        self.biases: list[torch.Tensor] = []  # [M, out] per layer
        self.grads_w: list[torch.Tensor] = []
        self.grads_b: list[torch.Tensor] = []
        for li in range(self.layers):
            for attr, store, grads in (("weight", self.weights, self.grads_w),
                                       ("bias", self.biases, self.grads_b)):
                params = [getattr(layers[li], attr) for layers in per_member]
                stack = torch.stack([p.detach() for p in params])
                grad = torch.zeros_like(stack)
                for i, p in enumerate(params):
                    p.data = stack[i]  # the member's parameter now lives in the stack
                    p.grad = grad[i]
                store.append(stack)
                grads.append(grad)

    @torch.no_grad()
    def grad(self, x: torch.Tensor, target: torch.Tensor, sse: bool) -> torch.Tensor:
        """Gradients of each member's batch-mean loss into the stacked grads.

        ``x`` [M, B, d_in], ``target`` [M, B, K] one-hot.  Returns the logits [M, B, K].
        """
        hs = [x]
        h = x
        for li in range(self.layers - 1):
            h = self.act(torch.baddbmm(self.biases[li].unsqueeze(1), h,
                                       self.weights[li].transpose(1, 2)))  # [M, B, out]
            hs.append(h)
        out = torch.baddbmm(self.biases[-1].unsqueeze(1), h, self.weights[-1].transpose(1, 2))
        B = x.shape[1]
        d = (out - target).mul_(2.0 / B) if sse else torch.softmax(out, 2).sub_(target).div_(B)
        for li in range(self.layers - 1, -1, -1):
            torch.bmm(d.transpose(1, 2), hs[li], out=self.grads_w[li])  # [M, out, in]
            torch.sum(d, 1, out=self.grads_b[li])
            if li > 0:
                d = self.back(torch.bmm(d, self.weights[li]), hs[li])
        return out


def ensemble_step(stack: StackedMLP, opts: Sequence[Optimizer],
                  samplers: Sequence[EpochSampler], xs: torch.Tensor, ys: torch.Tensor,
                  eye: torch.Tensor, sse: bool, active: Sequence[bool]) -> None:
    """One optimizer step of every active member, each on its own next minibatch.

    ``xs`` [n, d_in] (flattened inputs), ``ys`` [n], ``eye`` [K, K] for one-hot targets."""
    M, K = len(opts), eye.shape[0]
    idx = torch.stack([s.next() for s in samplers])  # [M, B]
    flat = idx.flatten()
    x = xs.index_select(0, flat).view(M, idx.shape[1], -1)  # [M, B, d_in]
    tgt = eye.index_select(0, ys.index_select(0, flat)).view(M, idx.shape[1], K)
    stack.grad(x, tgt, sse)
    for opt, on in zip(opts, active, strict=True):
        if on:
            opt.step()


@in_training_runtime
def train_ensemble(cfgs: Sequence[Config], runs: Sequence[RunDir], *, resume: bool = False,
                   progress: bool = True, data: Dataset | None = None,
                   stop_after: int | None = None) -> list[dict[str, Any]]:
    """Train the runs ``cfgs`` (into ``runs``) as one vectorized ensemble; their summaries.

    Every config must share everything but :data:`MEMBER_KEYS` and be an MLP with a
    hand-derived backward (:func:`ensemble_supported`); resumed members must stand at the
    same step and evaluation point.  A member that diverges, or whose evaluation raises, is
    recorded as such and stops; the others go on.  ``stop_after`` (tests) interrupts after
    that many steps.
    """
    if not cfgs or len(cfgs) != len(runs):
        raise ValueError("train_ensemble needs one run directory per config")
    keys = {ensemble_key(c) for c in cfgs}
    if len(keys) != 1:
        raise ConfigError("ensemble members must share every setting except "
                          f"{', '.join(MEMBER_KEYS)}")
    reason = ensemble_supported(cfgs[0])
    if reason:
        raise ConfigError(f"cannot train as an ensemble: {reason}")
    cfg0 = cfgs[0]
    device = resolve_device(cfg0.device)
    data = move_dataset(build_dataset(cfg0.data) if data is None else data, device)
    members: list[Member] = []
    try:
        for c, r in zip(cfgs, runs, strict=True):
            members.append(Member(c, r, data, resume=resume))
        if len({(m.step, m.done) for m in members}) != 1:
            raise ConfigError("ensemble members stand at different steps or evaluation "
                              "points; resume them separately (executor local)")
    except BaseException:
        for m in members:
            m.run.close()
        for r in runs:
            if isinstance(r, RunRecorder):
                r.close()
        raise
    stack = StackedMLP([cast(MLP, m.model) for m in members])
    sse = isinstance(members[0].loss_fn, SSE)
    assert sse or isinstance(members[0].loss_fn, CrossEntropy)
    K = data.num_classes
    eye = torch.eye(K, dtype=stack.weights[-1].dtype, device=device)
    xs, ys = data.x_train.flatten(1), data.y_train
    opts, samplers = [m.opt for m in members], [m.sampler for m in members]
    state = {"step": members[0].step}

    def advance(target: int, pause: Callable[[], bool], active: Sequence[bool]) -> int:
        while state["step"] < target and not pause():
            ensemble_step(stack, opts, samplers, xs, ys, eye, sse, active)
            state["step"] += 1
        return state["step"]

    def postfix(ms: Sequence[Member], active: Sequence[bool]) -> str:
        accs = " ".join(f"{m.last.get('test/acc', float('nan')):.2f}"
                        for m, a in zip(ms, active, strict=True) if a)
        return f"{sum(active)}/{len(ms)} members active; held-out acc {accs}"

    return drive(members, advance, progress=progress, stop_after=stop_after, isolate=True,
                 postfix=postfix)
