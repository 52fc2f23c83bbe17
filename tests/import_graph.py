"""The import graph of ``src/latephase``, read from the source (AST), and its cycles.

Run ``python tests/import_graph.py`` to print every module's latephase imports (module-level
and inside functions, marked ``*``) and any cycle; exit status 1 if there is one.

Edges: every ``import latephase.a.b`` and ``from latephase.a import b`` (absolute or
relative, at any depth of the file: module level, functions, ``if`` / ``try`` blocks, and
``if TYPE_CHECKING:`` blocks too) is an edge to the module it names: ``latephase.a.b`` when
that is a module or package of the source tree, else the package ``latephase.a`` (its
``__init__``: ``from latephase.models import MLP`` depends on ``models/__init__.py``).  A string
constant that is exactly a latephase module name (``importlib.import_module("latephase.x")``,
a lazy-import table) is an edge too, counted as imported inside a function.
Importing ``latephase.a.b`` also runs the parent packages' ``__init__`` first; those implicit
edges are NOT counted: a parent package finishes loading before its submodule starts unless the
parent itself imports the submodule, which is an explicit edge.  A lazy package init (PEP 562
``__getattr__`` importing a submodule when an attribute is first read) is therefore an edge
from the package to the submodule, and a cycle only if something also imports the package's
own namespace back (``from latephase import X``).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "latephase"
SRC = Path(__file__).resolve().parents[1] / "src" / PACKAGE


@dataclass(frozen=True)
class Edge:
    """``source`` imports ``target`` at ``line``; ``lazy`` when inside a function."""

    source: str
    target: str
    line: int
    lazy: bool


def module_name(path: Path, root: Path = SRC) -> str:
    """``src/latephase/a/b.py`` -> ``latephase.a.b``; ``a/__init__.py`` -> ``latephase.a``."""
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path = SRC) -> dict[str, Path]:
    """Every module of the package tree, by dotted name."""
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def _resolve_from(node: ast.ImportFrom, source: str, is_package: bool) -> str:
    """The absolute module a ``from X import ...`` reads, relative levels resolved."""
    if node.level == 0:
        return node.module or ""
    base = source.split(".") if is_package else source.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _walk(tree: ast.AST) -> Iterator[tuple[ast.AST, bool]]:
    """Every node with whether it sits inside a function (or lambda)."""
    stack: list[tuple[ast.AST, bool]] = [(tree, False)]
    while stack:
        node, lazy = stack.pop()
        yield node, lazy
        inner = lazy or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        stack.extend((child, inner) for child in ast.iter_child_nodes(node))


def imports_of(name: str, path: Path, known: set[str]) -> list[Edge]:
    """The latephase modules that module ``name`` (file ``path``) imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    edges: list[Edge] = []

    def add(target: str, node: ast.stmt | ast.expr, lazy: bool) -> None:
        if target.split(".")[0] != PACKAGE:
            return
        while target not in known and "." in target:  # an attribute of a module, not a module
            target = target.rsplit(".", 1)[0]
        if target != name:
            edges.append(Edge(name, target, node.lineno, lazy))

    for node, lazy in _walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node, lazy)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_from(node, name, is_package)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                add(sub if sub in known else base, node, lazy)
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and "." in node.value and node.value in known):
            add(node.value, node, True)
    return edges


def graph(root: Path = SRC) -> dict[str, list[Edge]]:
    """Module -> its outgoing edges (sorted, one per target: the first by line)."""
    mods = modules(root)
    out: dict[str, list[Edge]] = {}
    for name, path in mods.items():
        first: dict[str, Edge] = {}
        for e in sorted(imports_of(name, path, set(mods)), key=lambda e: e.line):
            first.setdefault(e.target, e)
        out[name] = sorted(first.values(), key=lambda e: e.target)
    return out


def find_cycle(g: dict[str, list[Edge]]) -> list[Edge] | None:
    """One cycle as its list of edges (depth-first search), or None if the graph is acyclic."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[Edge] = []

    def visit(node: str) -> list[Edge] | None:
        state[node] = 1
        for e in g.get(node, []):
            if state.get(e.target) == 1:
                start = next(i for i, p in enumerate(path) if p.source == e.target) \
                    if e.target != node else len(path)
                return [*path[start:], e]
            if e.target not in state:
                path.append(e)
                found = visit(e.target)
                if found:
                    return found
                path.pop()
        state[node] = 2
        return None

    for node in sorted(g):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def format_cycle(cycle: list[Edge]) -> str:
    """``a -> b (a.py:12) -> a (b.py:3*)``; ``*`` marks an import inside a function."""
    parts = [cycle[0].source]
    for e in cycle:
        parts.append(f"{e.target} (line {e.line} of {e.source}{'*' if e.lazy else ''})")
    return " -> ".join(parts)


def main() -> int:
    g = graph()
    for name, edges in g.items():
        targets = ", ".join(e.target.removeprefix(PACKAGE + ".") + ("*" if e.lazy else "")
                            for e in edges)
        print(f"{name:34s} -> {targets or '(nothing)'}")
    cycle = find_cycle(g)
    print("\n(* = imported inside a function)")
    print(f"cycle: {format_cycle(cycle)}" if cycle else "no import cycle")
    return 1 if cycle else 0


if __name__ == "__main__":
    sys.exit(main())
