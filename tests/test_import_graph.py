"""No import cycle inside the ``accelvit`` package, imports inside functions included.

Every module is read with ``ast`` (nothing is imported). An edge ``a -> b`` is any import
statement of ``a`` naming module ``b`` of the package: top-level or inside a function,
relative imports resolved, and ``from . import x`` counted as an edge to submodule ``x``
when ``x`` is one and to the package it is read from (Python runs that package's
``__init__`` first). Importing a package means importing its ``__init__``; a package's
``__init__`` importing its own submodules is the normal way up, but a submodule that
imports its package (``from accelvit.prune import ...`` or ``from . import x`` inside
``accelvit/prune/``) closes a circle through that ``__init__`` and is reported like any
other cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "accelvit"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE


def _modules() -> dict[str, Path]:
    """Dotted name -> file; a package is named by its ``__init__`` (``accelvit.prune.__init__``)."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        out[".".join(rel.parts)] = path
    return out


def _node(name: str, modules: dict[str, Path]) -> str | None:
    """The graph node of an imported dotted name: the module itself or its package's ``__init__``."""
    if name in modules:
        return name
    if f"{name}.__init__" in modules:
        return f"{name}.__init__"
    return None


def _package_of(module: str) -> list[str]:
    """The package a module lives in, as parts (a package's ``__init__`` lives in that package)."""
    return module.split(".")[:-1]


def _resolve(module: str, level: int, target: str | None) -> str:
    """Absolute dotted name of ``from <level dots><target> import ...`` written in ``module``."""
    if level == 0:
        return target or ""
    package = _package_of(module)
    base = package[: len(package) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def _edges(module: str, name: str, modules: dict[str, Path]) -> set[str]:
    """Modules whose import ``module`` waits for when it imports ``name``.

    The packages on the way down run their ``__init__`` first, except the ones ``module`` is
    itself inside (already being imported). ``name`` itself always counts, one of ``module``'s
    own packages included: ``from accelvit.prune import PruneConfig`` and ``from . import
    submodule`` both run that package's ``__init__`` first.
    """
    own = _package_of(module)
    own_prefixes = {".".join(own[:i]) for i in range(1, len(own) + 1)}
    parts = name.split(".")
    out = set()
    for i in range(1, len(parts) + 1):
        prefix = ".".join(parts[:i])
        node = _node(prefix, modules)
        if node is None or node == module:
            continue
        if prefix in own_prefixes and i < len(parts):
            continue
        out.add(node)
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (anywhere in its file)."""
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            wanted: list[str] = []
            if isinstance(node, ast.Import):
                wanted = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(module, node.level, node.module)
                wanted = [base] + [f"{base}.{a.name}" for a in node.names if _node(f"{base}.{a.name}", modules)]
            for name in wanted:
                if name == PACKAGE or name.startswith(PACKAGE + "."):
                    graph[module] |= _edges(module, name, modules)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan), as a path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:  # recursion depth is bounded by the package's size
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_cycle_in(graph, set(c)) for c in components]


def _cycle_in(graph: dict[str, set[str]], comp: set[str]) -> list[str]:
    """A shortest cycle through the component's first module, ``[a, b, ..., a]``."""
    start = min(comp)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & comp):
                if w == start:
                    return paths[v] + [start]
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    nxt.append(w)
        frontier = nxt
    return sorted(comp)  # pragma: no cover - a strongly connected component always has a cycle


def test_the_graph_sees_imports_inside_functions_and_relative_imports(tmp_path) -> None:
    graph = import_graph()
    assert "accelvit.prune.__init__" in graph and "accelvit.metrics" in graph
    # edges the package is known to have, one of each way of writing an import
    assert "accelvit.errors" in graph["accelvit.metrics"]                  # from .errors import ...
    assert "accelvit.prune.config" in graph["accelvit.prune.__init__"]    # a package's own submodule
    # from . import charts: the submodule and the package it is read from
    assert {"accelvit.ui.charts", "accelvit.ui.__init__"} <= graph["accelvit.ui.live"]
    assert not any(e.startswith("accelvit.prune.") for e in graph["accelvit.errors"])


def test_cycle_finder_reports_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_the_package() -> None:
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles in accelvit:\n" + "\n".join(" -> ".join(c) for c in cycles)
