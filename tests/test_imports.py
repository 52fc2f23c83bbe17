"""The dependency picture: no import cycle in src/latephase, one-way layers, a lazy package.

``python tests/import_graph.py`` prints the graph these tests check.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.import_graph import SRC, find_cycle, format_cycle, graph

HEAVY = ("torch", "numpy", "scipy", "sklearn", "matplotlib", "pandas")


def test_no_import_cycle() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, f"import cycle: {format_cycle(cycle)}"


def _package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "latephase" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root / "latephase"


@pytest.mark.parametrize(
    ("files", "cycle"),
    [
        # module level, absolute
        ({"__init__.py": "", "a.py": "import latephase.b\n", "b.py": "from latephase import a\n"},
         ["latephase.a", "latephase.b", "latephase.a"]),
        # inside a function, relative import
        ({"__init__.py": "", "a.py": "def f():\n    from . import b\n",
          "b.py": "from .a import f\n"},
         ["latephase.a", "latephase.b", "latephase.a"]),
        # a package init and its family (the old models/ shape)
        ({"__init__.py": "", "m/__init__.py": "X = 1\nfrom latephase.m.fam import Y\n",
          "m/fam.py": "from latephase.m import X\nY = X\n"},
         ["latephase.m", "latephase.m.fam", "latephase.m"]),
        # a lazy-import table naming a module (PEP 562 __getattr__)
        ({"__init__.py": "_LAZY = {'T': 'latephase.t'}\n", "t.py": "from latephase import v\n"},
         ["latephase", "latephase.t", "latephase"]),
        # TYPE_CHECKING blocks count too; ``..`` resolves to the parent package
        ({"__init__.py": "", "p/__init__.py": "", "p/q.py": "from ..r import z\n",
          "r.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                  "    from latephase.p.q import w\nz = 1\n"},
         ["latephase.p.q", "latephase.r", "latephase.p.q"]),
    ],
)
def test_the_checker_finds_cycles(tmp_path: Path, files: dict[str, str],
                                  cycle: list[str]) -> None:
    found = find_cycle(graph(_package(tmp_path, files)))
    assert found is not None
    names = [found[0].source, *(e.target for e in found)]
    start = names.index(cycle[0])  # the same cycle, from the expected first module
    assert names[start:] + names[1:start + 1] == cycle


def test_the_checker_passes_one_way_packages(tmp_path: Path) -> None:
    # submodules importing siblings, and an init importing its submodules: no cycle (a
    # submodule's implicit load of its parent package is not an edge)
    files = {"__init__.py": "def __getattr__(n):\n    from latephase.b import B\n    return B\n",
             "a.py": "A = 1\n", "b.py": "from latephase.a import A\nB = A\n",
             "m/__init__.py": "from latephase.m.f import F\n",
             "m/f.py": "from latephase.a import A\nF = A\n"}
    assert find_cycle(graph(_package(tmp_path, files))) is None


def _deps(module: str) -> set[str]:
    return {e.target for e in graph()[module]}


def test_layers_import_one_way() -> None:
    # architecture.md: config imports nothing; measures never import training code; model
    # families import only models.base below the registry
    assert _deps("latephase.config") <= {"latephase.errors", "latephase.presets"}
    g = graph()
    upper = ("latephase.train", "latephase.runs", "latephase.sweep", "latephase.cli",
             "latephase.api", "latephase.build", "latephase.report", "latephase.tracker")
    for name, edges in g.items():
        if name.startswith("latephase.measures"):
            bad = [e.target for e in edges if e.target.startswith(upper)]
            assert not bad, f"{name} imports {bad}"
        if name.startswith("latephase.models."):
            assert "latephase.models" not in {e.target for e in edges}, name
    for name in ("latephase.train.losses", "latephase.train.schedule"):
        assert not _deps(name), name


SNIPPET = """
import sys, time
t = time.perf_counter()
import latephase, latephase.cli
print(round(time.perf_counter() - t, 3))
print(latephase.__version__, sorted(m for m in {heavy} if m in sys.modules))
try:
    latephase.cli.main(["--help"])
except SystemExit as exc:
    print("exit", exc.code, sorted(m for m in {heavy} if m in sys.modules))
"""


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120,
                          env=env, check=True)


def test_import_and_help_load_no_torch() -> None:
    out = _python("-c", SNIPPET.format(heavy=HEAVY)).stdout.splitlines()
    from latephase._version import __version__

    assert out[1] == f"{__version__} []"  # nothing heavy after the imports
    assert out[-1] == "exit 0 []"  # nor after printing the help
    # torch alone takes about a second to import: 0.5 s leaves room for a loaded machine
    assert float(out[0]) < 0.5


def test_importtime_shows_no_torch() -> None:
    err = _python("-X", "importtime", "-c", "import latephase.cli").stderr
    names = {line.rsplit("|", 1)[-1].strip() for line in err.splitlines()
             if line.startswith("import time:")}
    assert "latephase.cli" in names  # the report is read right
    assert not {n for n in names if n.split(".")[0] in HEAVY}


def test_lazy_attributes_resolve() -> None:
    import latephase
    from latephase.runs import load_metrics
    from latephase.tracker import Tracker
    from latephase.train.schedule import eval_steps

    assert (latephase.Tracker, latephase.load_metrics, latephase.eval_steps) == (
        Tracker, load_metrics, eval_steps)
    assert set(latephase.__all__) <= set(dir(latephase))
    with pytest.raises(AttributeError, match="module 'latephase' has no attribute 'nope'"):
        latephase.nope  # noqa: B018


def test_graph_script_prints_the_picture() -> None:
    out = _python(str(Path(__file__).with_name("import_graph.py"))).stdout
    assert re.search(r"^latephase\.config +-> errors", out, re.M)
    assert out.rstrip().endswith("no import cycle")
    assert len(re.findall(r"^latephase", out, re.M)) == len(list(SRC.rglob("*.py")))
