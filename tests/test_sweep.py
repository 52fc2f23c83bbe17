"""Sweeps: spec parsing, skip/resume, fault isolation, SIGKILL, analysis."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from latephase.cli import main
from latephase.errors import ConfigError
from latephase.sweep import load_spec, loglog_fit, mean_ci, predictions, run_sweep

from .conftest import SWEEP_BASE

BASE = SWEEP_BASE


def _spec(tmp_path: Path, text: str = BASE) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(text)
    return path


def test_spec_runs_and_when_rules(tmp_path) -> None:
    spec = load_spec(_spec(tmp_path, BASE + '[when."optim.weight_decay=0.1"]\n'
                                            '"train.steps" = 80\n'))
    runs = spec.runs()
    assert [r.name for r in runs] == ["wd0.3-seed0", "wd0.3-seed1", "wd0.1-seed0", "wd0.1-seed1"]
    steps = {r.name: spec.run_config(r).train.steps for r in runs}
    assert steps == {"wd0.3-seed0": 60, "wd0.3-seed1": 60, "wd0.1-seed0": 80, "wd0.1-seed1": 80}
    assert spec.run_config(runs[1]).seed == 1


def test_presets_parse() -> None:
    small = load_spec(preset="fig3-small")
    assert len(small.runs()) == 6
    assert {small.run_config(r).train.steps for r in small.runs()} == {60_000}
    full = load_spec(preset="paper-fig3")
    assert len(full.runs()) == 30
    steps = {r.point["optim.weight_decay"]: full.run_config(r).train.steps for r in full.runs()}
    assert steps[0.3] == 100_000 and steps[0.003] == 300_000 and steps[0.001] == 300_000


@pytest.mark.parametrize(("text", "pattern"), [
    (BASE.replace('"train.steps" = 60', '"train.stps" = 60'), "unknown config key 'train.stps'"),
    ("foo = 1\n" + BASE, "unknown sweep key 'foo'"),
    (BASE.replace("seeds = [0, 1]", "seeds = 3"), "seeds: expected a non-empty list"),
])
def test_bad_specs(tmp_path, text, pattern) -> None:
    with pytest.raises(ConfigError, match=pattern):
        load_spec(_spec(tmp_path, text))


def test_bad_spec_cli_exit_2(tmp_path, capsys) -> None:
    code = main(["sweep", str(_spec(tmp_path, "foo = 1\n" + BASE)), "--out", str(tmp_path)])
    assert code == 2 and "unknown sweep key" in capsys.readouterr().err
    code = main(["sweep", "--preset", "nope", "--out", str(tmp_path)])
    assert code == 2
    code = main(["sweep", str(_spec(tmp_path)), "--executor", "mpi", "--out", str(tmp_path)])
    assert code == 2 and "unknown executor 'mpi'" in capsys.readouterr().err


@pytest.mark.parametrize("executor", ["local", "ensemble"])
def test_sweep_skips_finished_and_isolates_divergence(tmp_path, executor) -> None:
    text = BASE.replace('"optim.weight_decay" = [0.3, 0.1]',
                        '"optim.weight_decay" = [0.3]\n"optim.lr" = [1e-3, 1e6]')
    text = text.replace('preset = "demo"', 'preset = "demo"').replace(
        '"measures.information" = []', '"measures.information" = []\n"optim.name" = "sgd"')
    spec = load_spec(_spec(tmp_path, text))
    summary = run_sweep(spec, tmp_path, workers=1, progress=False, executor=executor)
    status = {r["run"]: r["status"] for r in summary["runs"]}
    assert status == {"wd0.3-lr0.001-seed0": "finished", "wd0.3-lr0.001-seed1": "finished",
                      "wd0.3-lr1e+06-seed0": "diverged", "wd0.3-lr1e+06-seed1": "diverged"}
    before = (tmp_path / "t" / "wd0.3-lr0.001-seed0" / "metrics.jsonl").read_bytes()
    again = run_sweep(spec, tmp_path, workers=1, progress=False, executor=executor)
    assert again["counts"] == {"diverged": 2, "finished": 2}
    assert (tmp_path / "t" / "wd0.3-lr0.001-seed0" / "metrics.jsonl").read_bytes() == before


@pytest.mark.parametrize("executor", ["local", "ensemble"])
def test_sigkill_mid_sweep_then_rerun(tmp_path, executor) -> None:
    spec_path = _spec(tmp_path, BASE.replace('"train.steps" = 60', '"train.steps" = 400')
                      .replace('"train.eval_points" = 8', '"train.eval_points" = 60'))
    cmd = [sys.executable, "-m", "latephase.cli", "sweep", str(spec_path), "--executor",
           executor, "--out", str(tmp_path), "--workers", "1", "--no-progress"]
    ref_dir = tmp_path / "ref"
    ref = subprocess.run([*cmd[:-5], "--out", str(ref_dir), "--workers", "1", "--no-progress"],
                         capture_output=True, timeout=600)
    assert ref.returncode == 0, ref.stderr
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = tmp_path / "t" / "wd0.3-seed1" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (target.exists()
                                          and target.read_bytes().count(b"\n") >= 20):
        time.sleep(0.02)  # mid-run: 20 of the 61 evaluation points written
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = target.read_bytes().count(b"\n")  # the kill must land mid-run
    assert killed_at < len((ref_dir / "t" / "wd0.3-seed1" / "metrics.jsonl").read_bytes()
                           .splitlines())
    res = subprocess.run(cmd, capture_output=True, timeout=600)
    assert res.returncode == 0, res.stderr
    for run in ("wd0.3-seed0", "wd0.3-seed1", "wd0.1-seed0", "wd0.1-seed1"):
        got = (tmp_path / "t" / run / "metrics.jsonl").read_bytes()
        assert got == (ref_dir / "t" / run / "metrics.jsonl").read_bytes(), run
        steps = [json.loads(line)["step"] for line in got.splitlines()]
        assert steps == sorted(set(steps))  # no duplicate, none missing vs the reference
    summary = json.loads((tmp_path / "t" / "sweep_summary.json").read_text())
    assert summary["counts"] == {"finished": 4}


def _values(path: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _assert_same_metrics(got: Path, want: Path) -> None:
    """Same steps and keys; floats equal to rel 1e-6 (see the member = solo test), NaN and
    inf where the reference has them."""
    ens, solo = _values(got / "metrics.jsonl"), _values(want / "metrics.jsonl")
    assert [r["step"] for r in ens] == [r["step"] for r in solo]
    for a, b in zip(ens, solo, strict=True):
        assert a.keys() == b.keys()
        for key, value in b.items():
            if isinstance(value, float) and math.isfinite(value):
                assert a[key] == pytest.approx(value, rel=1e-6, abs=1e-9), (got, key)
            elif isinstance(value, float):
                assert str(a[key]) == str(value), (got, key)


def test_ensemble_member_equals_solo_run(tmp_path) -> None:
    """Each member of a vectorized ensemble (own seed, lr, weight decay) gives the metrics of
    the same run trained alone.  Tolerance rel 1e-6: the batched GEMM may block its sums
    differently from the solo GEMM (float32, ~6e-8 per rounding), and 120 steps of training
    amplify such differences only modestly; here they are in fact bit-identical."""
    from latephase.config import make_config
    from latephase.runs import RunDir
    from latephase.train import train
    from latephase.train.ensemble import train_ensemble
    from tests.conftest import SMALL

    members = [(0.1, 0, 1e-3), (0.03, 1, 2e-3), (0.01, 0, 5e-4)]
    cfgs = [make_config("demo", overrides=[*SMALL, f"optim.weight_decay={wd}", f"seed={seed}",
                                           f"optim.lr={lr}"]) for wd, seed, lr in members]
    runs = [RunDir.create(tmp_path / f"member{i}", c) for i, c in enumerate(cfgs)]
    train_ensemble(cfgs, runs, progress=False)
    for i, cfg in enumerate(cfgs):
        train(cfg, RunDir.create(tmp_path / f"solo{i}", cfg), progress=False)
        _assert_same_metrics(tmp_path / f"member{i}", tmp_path / f"solo{i}")
    assert len({json.dumps(_values(tmp_path / f"member{i}" / "metrics.jsonl")[-1])
                for i in range(3)}) == 3  # the members really differ


def test_ensemble_interrupted_and_resumed_equals_uninterrupted(tmp_path, small_cfg) -> None:
    from latephase.config import make_config
    from latephase.runs import RunDir
    from latephase.train.ensemble import train_ensemble
    from tests.conftest import SMALL

    cfgs = [make_config("demo", overrides=[*SMALL, f"seed={s}"]) for s in (0, 1)]
    ref = [RunDir.create(tmp_path / f"ref{i}", c) for i, c in enumerate(cfgs)]
    train_ensemble(cfgs, ref, progress=False)
    cut = [RunDir.create(tmp_path / f"cut{i}", c) for i, c in enumerate(cfgs)]
    with pytest.raises(KeyboardInterrupt):
        train_ensemble(cfgs, cut, progress=False, stop_after=50)
    assert RunDir(tmp_path / "cut0").summary()["status"] == "interrupted"
    train_ensemble(cfgs, [RunDir.open(tmp_path / f"cut{i}") for i in range(2)], resume=True,
                   progress=False)
    for i in range(2):
        assert ((tmp_path / f"cut{i}" / "metrics.jsonl").read_bytes()
                == (tmp_path / f"ref{i}" / "metrics.jsonl").read_bytes())


def test_ensemble_rejects_mixed_settings(small_cfg, tmp_path) -> None:
    from latephase.config import make_config
    from latephase.runs import RunDir
    from latephase.train.ensemble import train_ensemble
    from tests.conftest import SMALL

    other = make_config("demo", overrides=[*SMALL, "train.batch_size=50"])
    runs = [RunDir.create(tmp_path / n, c) for n, c in (("a", small_cfg), ("b", other))]
    with pytest.raises(ConfigError, match="must share every setting except seed"):
        train_ensemble([small_cfg, other], runs, progress=False)


def test_ray_executor_without_ray_is_a_clear_error(tmp_path, capsys) -> None:
    try:
        import ray  # noqa: F401
        pytest.skip("ray is installed")
    except ImportError:
        pass
    code = main(["sweep", str(_spec(tmp_path)), "--executor", "ray", "--out", str(tmp_path),
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "pip install 'latephase[ray]'" in err and err.count("\n") == 1


def test_statistics() -> None:
    m, lo, hi = mean_ci([1.0, 2.0, 3.0])
    assert m == 2.0 and lo == pytest.approx(2 - 4.303 * 1 / math.sqrt(3), rel=1e-3)
    fit = loglog_fit([0.1, 0.01, 0.001], [10.0, 100.0, 1000.0])
    assert fit is not None and fit["slope"] == pytest.approx(-1.0)
    rows = [{"optim.weight_decay": wd, "status": "finished", "t_fit": 100.0,
             "t_grok": 1e3 / wd * f, "t_collapse": 2e3 / wd * f}
            for wd in (0.3, 0.1, 0.03) for f in (0.9, 1.1)]
    verdicts = [p["verdict"].split()[0] for p in predictions(rows)]
    assert verdicts == ["consistent"] * 4  # t_fit flat, both slopes -1, the gap shrinks
    rows = [{**r, "t_grok": 1e3 / r["optim.weight_decay"] ** 0.5} for r in rows]
    fit = predictions(rows)[2]
    assert fit["fit"]["slope"] == pytest.approx(-0.5)
    assert fit["verdict"] == "not supported (interval excludes -1)"


def test_ray_executor_two_runs(tmp_path) -> None:
    pytest.importorskip("ray")
    text = BASE.replace('"optim.weight_decay" = [0.3, 0.1]', '"optim.weight_decay" = [0.3]')
    spec = load_spec(_spec(tmp_path, text))
    summary = run_sweep(spec, tmp_path, executor="ray", workers=2, progress=False)
    import ray

    ray.shutdown()
    assert summary["counts"] == {"finished": 2}
    for run in ("wd0.3-seed0", "wd0.3-seed1"):
        assert (tmp_path / "t" / run / "metrics.jsonl").exists()


def test_ensemble_executor_falls_back_to_local_for_other_models(tmp_path, capsys) -> None:
    text = (BASE.replace('"optim.weight_decay" = [0.3, 0.1]', '"optim.weight_decay" = [0.3]')
            .replace('"model.widths" = [16]', '"model.name" = "cnn"\n"model.channels" = [2, 2]\n'
                                              '"model.fc_width" = 8\n"train.batch_size" = 20')
            .replace('"train.steps" = 60', '"train.steps" = 10'))
    spec = load_spec(_spec(tmp_path, text))
    summary = run_sweep(spec, tmp_path, executor="ensemble", workers=1, progress=False)
    assert summary["counts"] == {"finished": 2}
    err = capsys.readouterr().err
    assert "2 run(s) cannot be vectorized (model.name='cnn'" in err


def test_step_progress_polls_run_directories(tmp_path, capsys) -> None:
    from latephase.sweep import _StepProgress

    jobs = []
    for name, steps in (("a", [0, 10]), ("b", [0, 5, 20])):
        (tmp_path / name).mkdir()
        lines = [json.dumps({"step": s}) for s in steps]
        (tmp_path / name / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 9')
        jobs.append((str(tmp_path / name), {"train": {"steps": 30}}))
    with _StepProgress(jobs, {"a": "finished"}, enabled=True, every=0.01):
        time.sleep(0.05)
    err = capsys.readouterr().err
    assert "30/60" in err and "runs: 1 finished of 2" in err  # the torn last line is ignored


def _interrupt(spec_path: Path, out: Path, stops: dict[str, int]) -> None:
    """Start the named runs of a sweep alone and interrupt each after its number of steps
    (as a Ctrl-C of the local executor would: every run at its own step)."""
    from latephase.runs import RunDir
    from latephase.train import train

    spec = load_spec(spec_path)
    for r in spec.runs():
        if r.name in stops:
            run = RunDir.create(out / spec.name / r.name, spec.run_config(r))
            with pytest.raises(KeyboardInterrupt):
                train(spec.run_config(r), run, progress=False, stop_after=stops[r.name])


def test_ensemble_resumes_runs_interrupted_at_different_steps(tmp_path) -> None:
    """Runs interrupted at steps 40 and 50 hold the same number of evaluations (the log
    schedule has none between 33 and 60); an ensemble must not put them in one lockstep."""
    spec_path = _spec(tmp_path, BASE.replace('"optim.weight_decay" = [0.3, 0.1]',
                                             '"optim.weight_decay" = [0.3]'))
    ref = run_sweep(load_spec(spec_path), tmp_path / "ref", workers=1, progress=False)
    assert ref["counts"] == {"finished": 2}
    _interrupt(spec_path, tmp_path, {"wd0.3-seed0": 40, "wd0.3-seed1": 50})
    summary = run_sweep(load_spec(spec_path), tmp_path, executor="ensemble", workers=1,
                        progress=False)
    assert summary["counts"] == {"finished": 2}
    for run in ("wd0.3-seed0", "wd0.3-seed1"):
        assert ((tmp_path / "t" / run / "metrics.jsonl").read_bytes()
                == (tmp_path / "ref" / "t" / run / "metrics.jsonl").read_bytes()), run


def test_ensemble_resumes_with_the_run_directory_config(tmp_path) -> None:
    """Like the local executor, the ensemble continues a run with the config it was started
    with (config.json), not with an edited spec."""
    spec_path = _spec(tmp_path, BASE.replace('"optim.weight_decay" = [0.3, 0.1]',
                                             '"optim.weight_decay" = [0.3]'))
    ref = run_sweep(load_spec(spec_path), tmp_path / "ref", workers=1, progress=False)
    assert ref["counts"] == {"finished": 2}
    _interrupt(spec_path, tmp_path, {"wd0.3-seed0": 20})
    spec_path.write_text(spec_path.read_text().replace('"train.steps" = 60',
                                                       '"train.steps" = 80'))
    summary = run_sweep(load_spec(spec_path), tmp_path, executor="ensemble", workers=1,
                        progress=False)
    assert summary["counts"] == {"finished": 2}
    assert ((tmp_path / "t" / "wd0.3-seed0" / "metrics.jsonl").read_bytes()
            == (tmp_path / "ref" / "t" / "wd0.3-seed0" / "metrics.jsonl").read_bytes())
    assert json.loads((tmp_path / "t" / "wd0.3-seed1" / "metrics.jsonl").read_text()
                      .splitlines()[-1])["step"] == 80  # the new run follows the new spec


def test_ensemble_member_failing_in_evaluation_is_isolated(tmp_path, monkeypatch) -> None:
    """An exception while measuring one member fails that member only."""
    from latephase.train.loop import Member

    spec_path = _spec(tmp_path, BASE.replace('"optim.weight_decay" = [0.3, 0.1]',
                                             '"optim.weight_decay" = [0.3]'))
    run_sweep(load_spec(spec_path), tmp_path / "ref", workers=1, progress=False)
    evaluate = Member.evaluate

    def flaky(self: Member, *args: object, **kwargs: object) -> dict:
        if self.cfg.seed == 1 and self.step >= 10:
            raise FloatingPointError("estimator blew up")
        return evaluate(self, *args, **kwargs)

    monkeypatch.setattr(Member, "evaluate", flaky)
    summary = run_sweep(load_spec(spec_path), tmp_path, executor="ensemble", workers=1,
                        progress=False)
    status = {r["run"]: (r["status"], r["error"]) for r in summary["runs"]}
    assert status == {"wd0.3-seed0": ("finished", None),
                      "wd0.3-seed1": ("failed", "FloatingPointError: estimator blew up")}
    assert ((tmp_path / "t" / "wd0.3-seed0" / "metrics.jsonl").read_bytes()
            == (tmp_path / "ref" / "t" / "wd0.3-seed0" / "metrics.jsonl").read_bytes())


def test_ensemble_checkpoints_members_together(tmp_path, monkeypatch) -> None:
    """Time-based checkpoints of an ensemble are taken for every member at the same step
    (else a killed ensemble resumes as several smaller ones); a member's checkpoint holds
    its own parameters only, not the stacked tensors its parameters are views into."""
    import types

    import latephase.train.loop as loop_mod
    from latephase.config import make_config
    from latephase.runs import RunDir
    from latephase.train import train
    from latephase.train.ensemble import train_ensemble
    from latephase.train.loop import Member
    from tests.conftest import SMALL

    clock = types.SimpleNamespace(t=0.0)

    def tick() -> float:
        clock.t += 1.0
        return clock.t

    fake = types.SimpleNamespace(perf_counter=tick)
    monkeypatch.setattr(loop_mod, "time", fake)
    taken: dict[str, list[int]] = {}
    save = Member.checkpoint

    def logged(self: Member) -> None:
        taken.setdefault(self.run.path.name, []).append(self.step)
        save(self)

    monkeypatch.setattr(Member, "checkpoint", logged)
    cfgs = [make_config("demo", overrides=[*SMALL, f"seed={s}", "train.checkpoint_every_s=20"])
            for s in (0, 1, 2)]
    train_ensemble(cfgs, [RunDir.create(tmp_path / f"m{i}", c) for i, c in enumerate(cfgs)],
                   progress=False)
    assert len(taken["m0"]) > 2 and taken["m0"] == taken["m1"] == taken["m2"], taken
    train(cfgs[0], RunDir.create(tmp_path / "solo", cfgs[0]), progress=False)
    size = (tmp_path / "solo" / "checkpoints" / "last.pt").stat().st_size
    assert (tmp_path / "m0" / "checkpoints" / "last.pt").stat().st_size == size


def test_ensemble_checkpoint_resumes_alone(tmp_path) -> None:
    """A member's checkpoint has a solo run's format: an interrupted ensemble member
    continued alone ends as the run trained alone from the start."""
    from latephase.config import make_config
    from latephase.runs import RunDir
    from latephase.train import train
    from latephase.train.ensemble import train_ensemble
    from tests.conftest import SMALL

    cfgs = [make_config("demo", overrides=[*SMALL, f"seed={s}", f"optim.lr={lr}"])
            for s, lr in ((0, 1e-3), (1, 2e-3))]
    runs = [RunDir.create(tmp_path / f"m{i}", c) for i, c in enumerate(cfgs)]
    with pytest.raises(KeyboardInterrupt):
        train_ensemble(cfgs, runs, progress=False, stop_after=55)
    summary = train(cfgs[1], RunDir.open(tmp_path / "m1"), resume=True, progress=False)
    assert summary["status"] == "finished"
    train(cfgs[1], RunDir.create(tmp_path / "solo", cfgs[1]), progress=False)
    _assert_same_metrics(tmp_path / "m1", tmp_path / "solo")


def test_ensemble_supported_respects_autograd_choice(small_cfg) -> None:
    from latephase.config import make_config
    from latephase.train.ensemble import ensemble_supported
    from tests.conftest import SMALL

    assert ensemble_supported(small_cfg) is None
    slow = make_config("demo", overrides=[*SMALL, "train.fast_mlp=false"])
    assert "train.fast_mlp=false" in str(ensemble_supported(slow))


def test_run_ensemble_never_raises(tmp_path) -> None:
    """A member whose run directory cannot be created fails the group; the failure is
    recorded where there is a run directory and returned for every run."""
    from latephase.config import make_config
    from latephase.sweep import run_ensemble
    from tests.conftest import SMALL

    (tmp_path / "file").write_text("")
    cfg = make_config("demo", overrides=list(SMALL)).to_dict()
    paths = [str(tmp_path / "ok"), str(tmp_path / "file" / "bad")]
    out = run_ensemble(paths, [cfg, cfg])
    assert [r["status"] for r in out] == ["failed", "failed"]
    summary = json.loads((tmp_path / "ok" / "summary.json").read_text())
    assert summary["status"] == "failed" and "Error" in summary["error"]


def _die_or_succeed(path: str) -> dict[str, str]:
    """A pool task: the worker process dies abruptly for a run named 'doomed'."""
    if Path(path).name == "doomed":
        os._exit(1)
    time.sleep(0.2)
    return {"run": Path(path).name, "status": "finished"}


def test_worker_process_death_fails_only_its_run(tmp_path) -> None:
    from latephase.sweep import run_in_pool

    names = ["a", "doomed", "b", "c"]
    got: dict[str, str] = {}
    run_in_pool([(_die_or_succeed, (str(tmp_path / n),), [str(tmp_path / n)]) for n in names],
                2, lambda res: got.__setitem__(res["run"], res["status"]))
    assert got == {"a": "finished", "doomed": "failed", "b": "finished", "c": "finished"}
