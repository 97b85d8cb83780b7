"""flowsched's import graph: no cycles, except the authoring API's.

A cycle between modules means neither can be read, tested or moved alone, and
one day breaks an import order. The only one allowed is the authoring API's
(``dag`` <-> ``operators``): a DAG holds operators and an operator belongs to
a DAG, as in Airflow. The graph is read from the source with :mod:`ast`, not
by importing, so the test sees every module, also those nothing imports yet.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import flowsched

PACKAGE_DIR = Path(flowsched.__file__).parent

# The one cycle allowed: the authoring API's DAG and its operators.
AUTHORING_API = ("flowsched.dag", "flowsched.operators")

# Packages that are one home each (issue 14): not even a function-level import
# of theirs closes a cycle.
ONE_HOME = (
    "flowsched.celery",
    "flowsched.task_logs",
    "flowsched.cli",
    "flowsched.executors",
    "flowsched.supervisor",
    "flowsched.task_runner",
)


def module_files(package_dir: Path) -> dict[str, Path]:
    """Module name -> file, for every module of the package (packages by ``__init__``)."""
    found = {}
    for path in package_dir.rglob("*.py"):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _runtime_imports(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Imports run on load: top level, in ``if``/``try``, not under ``TYPE_CHECKING``."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if "TYPE_CHECKING" not in ast.unparse(node.test):
                yield from _runtime_imports(node.body)
            yield from _runtime_imports(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody):
                yield from _runtime_imports(block)
            for handler in node.handlers:
                yield from _runtime_imports(handler.body)


def _all_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node


def _imported_names(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        parts = module.split(".") if is_package else module.split(".")[:-1]
        parts = parts[: len(parts) - node.level + 1]
        base = ".".join([*parts, *([node.module] if node.module else [])])
    # ``from pkg import sub`` imports the submodule ``pkg.sub`` when there is one.
    return [f"{base}.{alias.name}" for alias in node.names]


def import_graph(package_dir: Path, *, lazy: bool) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (``lazy``: also inside functions)."""
    files = module_files(package_dir)
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        nodes = _all_imports(tree) if lazy else _runtime_imports(tree.body)
        targets = set()
        for node in nodes:
            for name in _imported_names(node, module, path.name == "__init__.py"):
                while name and name not in files:
                    name = name.rpartition(".")[0]
                if name and name != module:
                    targets.add(name)
        graph[module] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            step = next(successors, None)
            if step is not None:
                if step not in index:
                    index[step] = low[step] = len(index)
                    stack.append(step)
                    on_stack.add(step)
                    work.append((step, iter(sorted(graph.get(step, ())))))
                elif step in on_stack:
                    low[node] = min(low[node], index[step])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


def test_module_level_imports_have_no_cycle_but_the_authoring_apis() -> None:
    graph = import_graph(PACKAGE_DIR, lazy=False)
    assert "flowsched.celery.app" in graph["flowsched.celery.executor"]
    unexpected = [
        component
        for component in cycles(graph)
        if not all(_within(module, AUTHORING_API) for module in component)
    ]
    assert unexpected == [], f"import cycles: {unexpected}"


def test_the_one_home_packages_close_no_cycle_even_through_function_level_imports() -> None:
    graph = import_graph(PACKAGE_DIR, lazy=True)
    involved = [
        component
        for component in cycles(graph)
        if any(_within(module, ONE_HOME) for module in component)
    ]
    assert involved == [], f"import cycles through {ONE_HOME}: {involved}"


def test_the_graph_finds_a_cycle_and_ignores_type_checking_imports(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.sub import b\n")
    (package / "sub" / "b.py").write_text("from .. import a\n")
    (package / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.d\n"
        "def f():\n    import pkg.d\n"
    )
    (package / "d.py").write_text("import pkg.c\n")

    assert sorted(cycles(import_graph(package, lazy=False))) == [["pkg.a", "pkg.sub.b"]]
    assert sorted(cycles(import_graph(package, lazy=True))) == [
        ["pkg.a", "pkg.sub.b"],
        ["pkg.c", "pkg.d"],
    ]
