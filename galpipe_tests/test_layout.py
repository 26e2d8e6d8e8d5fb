"""The shape of the library: no import cycles between its modules, thin assets, and every
registered architecture, strategy and selection usable by name."""

import ast
import inspect
from pathlib import Path

import galpipe
from galpipe.definitions import all_assets

ALL_ASSETS = all_assets("tiny")

PACKAGE = Path(galpipe.__file__).parent


def _imports() -> dict[str, set[str]]:
    """module -> the galpipe modules it imports (at any depth of the file, lazy imports too)."""
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(("galpipe", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("galpipe"):
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names if alias.name.startswith("galpipe")}
        graph[module] = found - {module}
    return graph


def test_no_module_imports_one_that_imports_it_back():
    graph = _imports()
    cycles = []

    def visit(module, path):
        for nxt in sorted(graph.get(module, ())):
            if nxt in path:
                cycles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt in graph:
                visit(nxt, path + [nxt])

    for module in graph:
        visit(module, [module])
    assert not cycles, cycles[:5]


def test_assets_are_thin():
    """An asset reads its inputs, calls the library and records metadata: the protocol lives in
    galpipe.experiment, where the benchmarks call it too."""
    lines = {a.key.to_user_string(): len(inspect.getsource(a.op.compute_fn.decorated_fn).splitlines())
             for a in ALL_ASSETS}
    assert len(lines) == len(ALL_ASSETS) and max(lines.values()) <= 30, lines
