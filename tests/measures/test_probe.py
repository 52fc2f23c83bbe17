"""InfoProbe: the cached fast paths equal the pure estimators on the same subsample, and the
probe refuses bad parameters and inputs with the same one-line errors as the pure functions
(issue 10 point 2, issue 11 point 7)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

from latephase.config import make_config
from latephase.errors import ConfigError
from latephase.measures import information as info
from latephase.measures.probe import InfoProbe, estimator_params


@pytest.fixture(autouse=True)
def _one_blas_thread():
    with threadpool_limits(1):
        yield


def split(n: int = 400, k_classes: int = 4, seed: int = 0):
    """x [n, 30] with class structure, float32 features z [n, 12] = relu(x W), labels."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k_classes, n)
    x = rng.standard_normal((n, 30)) + 2.0 * rng.standard_normal((k_classes, 30))[y]
    z = np.maximum(x @ rng.standard_normal((30, 12)), 0.0).astype(np.float32)
    return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(z), torch.from_numpy(y)


@pytest.mark.parametrize("name", ["cmi_ksg", "ksg", "kl_knn", "nhsic", "binning",
                                  "noise_channel"])
def test_probe_equals_pure_estimator_on_its_subsample(name: str) -> None:
    # The probe caches the X side; the numbers must be those of the registry call on the same
    # rows (same float64 arithmetic on the same inputs: exact, except nHSIC whose cached R_X
    # is the same computation done once: exact too).
    x, z, y = split()
    probe = InfoProbe(x, y, 4, [name], n=300, seed=3)
    got = probe(z)
    rows = probe.idx
    res = info.ESTIMATORS[name](x[rows], z[rows], y[rows], num_classes=4, seed=3)
    assert got == res.flat(f"{name}/")


def test_probe_refuses_bad_parameters_like_the_pure_function() -> None:
    x, z, y = split(100)
    with pytest.raises(ConfigError, match="nhsic: unknown bandwidth 'medain'; valid choices"):
        InfoProbe(x, y, 4, {"nhsic": {"bandwidth": "medain"}})
    with pytest.raises(ConfigError, match="nhsic: sigma=-1 is invalid; valid: a positive"):
        InfoProbe(x, y, 4, {"nhsic": {"sigma": -1}})
    with pytest.raises(ConfigError, match="cmi_ksg: se_groups=1 is invalid"):
        InfoProbe(x, y, 4, {"cmi_ksg": {"se_groups": 1}})
    with pytest.raises(ConfigError, match="kl_knn: unknown parameter 'kk'; valid: dim_x"):
        InfoProbe(x, y, 4, {"kl_knn": {"kk": 2}})
    with pytest.raises(ConfigError, match="cmi_ksg: parameter 'seed' is set by the probe"):
        InfoProbe(x, y, 4, {"cmi_ksg": {"seed": 2}})
    with pytest.raises(ConfigError, match="unknown estimator 'mine'; valid choices: binning"):
        InfoProbe(x, y, 4, ["mine"])


def test_probe_refuses_bad_inputs() -> None:
    x, z, y = split(100)
    with pytest.raises(ConfigError, match=r"information_n=1 is invalid; valid: None \(every "
                                          r"row\) or an int >= 2"):
        InfoProbe(x, y, 4, ["cmi_ksg"], n=1)
    with pytest.raises(ConfigError, match=r"y has non-integer values .* not truncated"):
        InfoProbe(x, y.double() + 0.25, 4, ["cmi_ksg"])
    with pytest.raises(ConfigError, match=r"y must have shape \[n\], got \(100, 2\)"):
        InfoProbe(x, torch.stack([y, y], 1), 4, ["cmi_ksg"])
    with pytest.raises(ConfigError, match=r"mismatched sample counts \(x=90, y=100\)"):
        InfoProbe(x[:90], y, 4, ["cmi_ksg"])
    with pytest.raises(ConfigError, match=r"y has labels in \[0, 3\]; valid: int labels in "
                                          r"\[0, 3\)"):
        InfoProbe(x, y, 3, ["cmi_ksg"])
    probe = InfoProbe(x, y, 4, ["cmi_ksg"], n=None)
    with pytest.raises(ConfigError, match=r"z has 99 rows; valid: one row per row of the "
                                          r"probe's split \(N=100\)"):
        probe(z[:99])


def test_probe_low_precision_inputs_are_upcast() -> None:
    # bfloat16 / float16 inputs and features: upcast to float64, the dtype's resolution goes
    # to cmi_ksg's rounding clamp; the result equals the pure function on the upcast values.
    x, z, y = split(200)
    for dtype in (torch.bfloat16, torch.float16):
        probe = InfoProbe(x.to(dtype), y, 4, ["cmi_ksg", "nhsic"], n=None)
        got = probe(z.to(dtype))
        res = info.cmi_ksg(x.to(dtype), z.to(dtype), y, num_classes=4)
        assert probe.params["cmi_ksg"]["resolution_z"] == info._TORCH_EPS[str(dtype)]
        assert {k: v for k, v in got.items() if k.startswith("cmi_ksg/")} == res.flat(
            "cmi_ksg/")


def test_probe_says_kl_knn_null_warning_once() -> None:
    # Tight clusters (collapse): kl_knn's null is far from 0 at every call; the probe repeats
    # the same warning text, so it is shown once however often the probe is called.
    rng = np.random.default_rng(0)
    y = np.arange(600) % 6
    mu = rng.standard_normal((6, 40))
    z = mu[y] + 1e-3 * rng.standard_normal((600, 40))
    x = mu[y] @ rng.standard_normal((40, 50)) + rng.standard_normal((600, 50))
    probe = InfoProbe(x, y, 6, ["kl_knn"], n=None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            probe(z)
    texts = [str(w.message) for w in caught]
    assert texts.count(info.KL_NULL_WARNING) == 1, texts


def test_estimator_params_from_config_are_checked_once() -> None:
    cfg = make_config("demo")
    params = estimator_params(cfg.measures)
    assert set(params) == {"nhsic", "kl_knn", "cmi_ksg"}
    assert params["cmi_ksg"] == info.check_params("cmi_ksg", params["cmi_ksg"])
    bad = make_config("demo", overrides=["measures.knn_se_groups=1"])
    with pytest.raises(ConfigError, match="(kl_knn|cmi_ksg): se_groups=1 is invalid"):
        estimator_params(bad.measures)


def _collapsed(n: int = 600, k_classes: int = 6, spread: float = 1e-3, seed: int = 1):
    """Tight class clusters (the collapsed regime) with inputs that carry the class."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k_classes
    mu = rng.standard_normal((k_classes, 40))
    z = (mu[y] + spread * rng.standard_normal((n, 40))).astype(np.float32)
    x = mu[y] @ rng.standard_normal((40, 50)) + rng.standard_normal((n, 50))
    return x, z, y


def _same(a: dict[str, float], b: dict[str, float]) -> bool:
    """Same keys in the same order and the same floats (NaN equal to NaN)."""
    return list(a) == list(b) and all(
        (x != x and y != y) or x == y for x, y in zip(a.values(), b.values(), strict=True))


@pytest.mark.parametrize("data", ["clustered", "collapsed"])
def test_probe_with_two_workers_gives_the_same_floats(data: str) -> None:
    # nHSIC on a second thread does the same single-threaded arithmetic (BLAS at one thread,
    # the fixture): the record must be identical, key order included, at every call.
    x, z, y = split(n=500) if data == "clustered" else _collapsed()
    k = 4 if data == "clustered" else 6
    names = ["nhsic", "kl_knn", "cmi_ksg"]
    seq, par = InfoProbe(x, y, k, names, n=300), InfoProbe(x, y, k, names, n=300)
    for shift in (0.0, 0.5):  # two evaluation points
        zz = z + shift
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a, b = seq(zz), par(zz, workers=2)
        assert _same(a, b)
        assert seq.params == par.params


def test_probe_runs_nhsic_on_a_second_thread_and_says_its_warnings_once() -> None:
    import threading

    x, z, y = _collapsed()
    probe = InfoProbe(x, y, 6, ["nhsic", "kl_knn"], n=None)
    inner = probe.computers["nhsic"]
    seen: list[str] = []

    def spy(zs):
        seen.append(threading.current_thread().name)
        warnings.warn("nhsic: a test warning", RuntimeWarning, stacklevel=1)
        return inner(zs)

    probe.computers["nhsic"] = spy
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            probe(z, workers=2)
        probe(z)  # workers=1: the caller's thread
    texts = [str(w.message) for w in caught]
    assert texts.count("nhsic: a test warning") == 1, texts
    assert texts.count(info.KL_NULL_WARNING) == 1, texts
    main = threading.current_thread().name
    assert seen[:3] == ["latephase-nhsic"] * 3 and seen[3] == main


@pytest.mark.parametrize("where", ["worker", "caller"])
def test_probe_error_on_either_thread_is_raised_and_leaves_no_thread(where: str) -> None:
    import threading

    x, z, y = split()
    probe = InfoProbe(x, y, 4, ["nhsic", "kl_knn"], n=200)
    name = "nhsic" if where == "worker" else "kl_knn"

    def fail(zs):
        raise FloatingPointError(f"{name} failed")

    probe.computers[name] = fail
    with pytest.raises(FloatingPointError, match=f"{name} failed"):
        probe(z, workers=2)
    assert not [t for t in threading.enumerate() if t.name == "latephase-nhsic"]


def test_probe_second_thread_computes_under_the_callers_numpy_error_settings() -> None:
    # NumPy's error settings are per thread: under errstate(all="raise") nHSIC's exp underflow
    # must raise on the second thread exactly as it does on the caller's
    rng = np.random.default_rng(0)
    y = np.arange(300) % 3
    x = rng.standard_normal((300, 5))
    z = 1e3 * rng.standard_normal((300, 4))  # far-apart rows: exp(-d2/w) underflows
    probe = InfoProbe(x, y, 3, {"nhsic": {"sigma": 0.01}, "kl_knn": {}}, n=None)
    with np.errstate(all="raise"):
        with pytest.raises(FloatingPointError):
            probe(z)
        with pytest.raises(FloatingPointError):
            probe(z, workers=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert _same(probe(z), probe(z, workers=2))
