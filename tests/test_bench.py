"""latephase bench: the late-phase state, the floor's parts and the projection.

Ground truths: the stall value of a zero-gradient AdamW moment is what torch's own fused
AdamW kernel produces when run under IEEE until the moment stops changing; a dead unit
outputs exactly 0 on every training row; the projection is the stated sum of its parts.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from latephase import bench
from latephase import tracker as tracker_module
from latephase.config import make_config
from latephase.data import build_dataset
from latephase.runs import RunDir
from latephase.train.grad import make_grad_fn
from latephase.train.loop import Member, run_steps
from latephase.train.runtime import set_flush_denormal, training_runtime
from latephase.train.schedule import eval_steps
from tests.conftest import SMALL

ULP = 2.0**-149  # the smallest subnormal float32


def kernel_stall(beta1: float, beta2: float) -> tuple[float, float]:
    """(exp_avg, exp_avg_sq) of one parameter with gradient 0, after torch's fused AdamW ran
    under IEEE until neither moment changes: started from the smallest normal float32."""
    p = torch.nn.Parameter(torch.ones(1))
    opt = torch.optim.AdamW([p], lr=1e-3, betas=(beta1, beta2), fused=True)
    p.grad = torch.zeros(1)
    opt.step()
    st = opt.state[p]
    tiny = torch.finfo(torch.float32).tiny
    st["exp_avg"].fill_(tiny)
    st["exp_avg_sq"].fill_(tiny)
    before = (-1.0, -1.0)
    while (now := (float(st["exp_avg"]), float(st["exp_avg_sq"]))) != before:
        before = now
        for _ in range(100):
            opt.step()
    return now


@pytest.mark.parametrize(("beta1", "beta2"), [(0.9, 0.999), (0.8, 0.99)])
def test_stall_values_match_torchs_adamw_kernel(beta1: float, beta2: float) -> None:
    with training_runtime(1, False):
        m, v = kernel_stall(beta1, beta2)
    assert m == bench.stall_ulps(beta1) * ULP
    assert v == bench.stall_ulps(beta2) * ULP
    assert 0 < m < torch.finfo(torch.float32).tiny  # subnormal: what the bench is about


def test_stall_ulps_known_values() -> None:
    # 0.9 * 4 = 3.6 rounds back to 4; 0.9 * 5 = 4.5 rounds to the even 4
    assert bench.stall_ulps(0.9) == 4
    # the largest k with round(0.999 k) == k is 500 (499.5 rounds to the even 500)
    assert bench.stall_ulps(0.999) == 500


@pytest.fixture
def member(tmp_path: Path) -> Iterator[Member]:
    cfg = make_config("demo", overrides=[*SMALL, "data.train_size=100", "train.threads=1",
                                         "measures.information=[]"])
    m = Member(cfg, RunDir.create(tmp_path / "r", cfg), build_dataset(cfg.data))
    yield m
    m.run.close()


def test_late_phase_state(member: Member) -> None:
    xs, ys = member.data.x_train, member.data.y_train
    grad_fn = make_grad_fn(member.model, member.loss_fn)
    with training_runtime(1, False):
        run_steps(grad_fn, member.opt, member.sampler, xs, ys, 5)
        state = bench.late_phase_state(member.model, member.opt, member.loss_fn, xs, ys)
        assert state["exp_avg"] >= bench.LATE_SUBNORMAL["exp_avg"]
        # a binomial share of about 0.24 * 6k entries: 5 standard errors are < 0.03
        assert state["exp_avg_sq"] == pytest.approx(bench.LATE_SUBNORMAL["exp_avg_sq"], abs=0.03)
        with torch.no_grad():
            _, g = member.model.forward_with_features(xs)  # type: ignore[operator]
        dead = (g == 0).all(0).float().mean().item()  # units outputting exactly 0
        assert dead == pytest.approx(state["dead"], abs=1 / g.shape[1])  # k rounded
        # stationary under IEEE over as many steps as the bench takes: dead units stay dead;
        # only an entry whose gradient was 0 by coincidence (two live units never active on
        # the same row) may come back, about 1 of these 6k entries in 2000 steps
        run_steps(grad_fn, member.opt, member.sampler, xs, ys, 2000)
        for key in ("exp_avg", "exp_avg_sq"):
            assert bench._subnormal_share(member.opt, key) == pytest.approx(state[key], abs=1e-3)
        with torch.no_grad():
            _, g = member.model.forward_with_features(xs)  # type: ignore[operator]
        assert (g == 0).all(0).float().mean().item() >= dead
    with training_runtime(1, True):  # one flushed step: no subnormal moment left
        run_steps(grad_fn, member.opt, member.sampler, xs, ys, 1)
        assert bench._subnormal_share(member.opt, "exp_avg") == 0.0
        assert bench._subnormal_share(member.opt, "exp_avg_sq") == 0.0


def test_paired_times_enters_each_mode_before_its_burst() -> None:
    mode = ["-"]
    seen: dict[str, set[str]] = {"a": set(), "b": set()}
    bench.paired_times(lambda: seen["a"].add(mode[0]), lambda: seen["b"].add(mode[0]), 3, 2,
                       (lambda: mode.__setitem__(0, "A"), lambda: mode.__setitem__(0, "B")))
    assert seen == {"a": {"A"}, "b": {"B"}}


def test_copy_bandwidth_counts_read_and_write(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench, "best_time", lambda fn, repeats, inner: 0.5)
    assert bench.copy_bandwidth(1000, 1) == 2 * 4 * 1000 / 0.5


def test_measure_main_run_and_projection() -> None:
    cfg = make_config("demo", overrides=[*SMALL, "train.threads=1", "measures.information=[]",
                                         "train.steps=1000", "train.eval_schedule=paper"])
    m = bench.measure_main_run(cfg, quick=True)
    widths = [784, 32, 32, 10]
    assert m.n_params == sum(a * b + b for a, b in zip(widths[:-1], widths[1:], strict=True))
    assert m.evals == len(eval_steps(1000, "paper", cfg.train.eval_points))
    assert m.threads == 1
    assert m.projected == pytest.approx(1000 * m.t_late + m.t_first_eval
                                        + (m.evals - 1) * m.t_eval, rel=1e-12)
    assert m.t_adamw == pytest.approx(7 * 4 * m.n_params / m.bandwidth, rel=1e-12)
    assert m.floor == pytest.approx(m.t_matmul + m.t_adamw, rel=1e-12)
    assert m.state["exp_avg"] >= bench.LATE_SUBNORMAL["exp_avg"]
    rows = dict(bench.main_run_rows(m))
    assert rows["late step / floor  (target <= 1.3)"] == f"{m.t_late / m.floor:.2f}"
    assert any(k.startswith("projected demo run (1000 steps") for k in rows)
    assert rows["evaluation, estimators in sequence / nHSIC on a second thread"] == \
        "- (one thread)"
    assert tracker_module.PROBE_THREADS is True  # the bench leaves the switch as it was
    set_flush_denormal(False, 1)


def test_ensemble_throughput_script_on_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    """benchmarks/ensemble_throughput.py (what benchmarks/gpu.sh runs on CUDA) on the CPU:
    its projection is the sweep's member-steps over the printed rate."""
    import importlib.util

    path = Path(__file__).parents[1] / "benchmarks" / "ensemble_throughput.py"
    spec = importlib.util.spec_from_file_location("ensemble_throughput", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--device", "cpu", "--members", "2", "--steps", "3",
                        "--warmup", "1"]) == 0
    out = capsys.readouterr().out
    assert "2 members x 3 steps" in out
    assert "paper-fig3: 30 runs, 5,000,000 member-steps" in out  # 4 x 5 x 1e5 + 2 x 5 x 3e5
