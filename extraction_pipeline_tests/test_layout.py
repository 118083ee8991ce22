"""The package's import graph: one way from core to the CLI, no cycles, no Dagster in core."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "extraction_pipeline"
# Each layer may import the ones before it, never the ones after.
LAYERS = ["core", "simulator", "instance", "defs", "definitions", "cli"]


def module_imports() -> dict[str, set[str]]:
    """Module name (dotted, under the package) -> the package modules it imports."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        module = module.removesuffix(".__init__")
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            imported.update(n for n in names if n.startswith("extraction_pipeline"))
        graph[module] = imported
    modules = set(graph)
    return {m: {i for i in imports if i in modules and i != m} for m, imports in graph.items()}


def layer(module: str) -> int:
    return LAYERS.index(module.split(".")[1]) if module.count(".") else -1


def test_imports_run_one_way_from_core_to_the_cli() -> None:
    graph = module_imports()
    upward = [
        (module, imported)
        for module, imports in graph.items()
        for imported in imports
        if layer(module) >= 0 and layer(imported) > layer(module)
    ]
    assert upward == []


def test_the_import_graph_has_no_cycle() -> None:
    graph = module_imports()
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            raise AssertionError(" -> ".join([*path[path.index(module) :], module]))
        if module in done:
            return
        for imported in graph[module]:
            visit(imported, [*path, module])
        done.add(module)

    for module in graph:
        visit(module, [])


def imported_roots(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name.split(".")[0] for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        return [(node.module or "").split(".")[0]]
    return []


def test_core_never_imports_dagster() -> None:
    offenders = [
        path.relative_to(PACKAGE)
        for path in (PACKAGE / "core").rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if any(root.startswith("dagster") for root in imported_roots(node))
    ]
    assert offenders == []


def test_private_dagster_names_come_through_one_module() -> None:
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if path.name != "dagster_compat.py" and "dagster._" in path.read_text()
    ]
    assert offenders == []
