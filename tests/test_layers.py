"""The package's layers: every import of a spatial_ae module (function-local ones included) points down or across,
never up, and the modules' import graph has no cycle."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "spatial_ae"
# top to bottom; a module may import from its own layer or the ones below it
LAYERS = (
    ("spatial_ae.__main__", "spatial_ae.cli", "spatial_ae.params"),
    ("spatial_ae.runs",),
    ("spatial_ae.steps",),
    ("spatial_ae.method",),
    ("spatial_ae.mlflow_io",),
    ("spatial_ae.data",),
    ("spatial_ae.names", "spatial_ae.settings", "spatial_ae.lifecycle", "spatial_ae.errors"),
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    """The index of the layer that holds `module` (the longest matching prefix wins); the package's __init__ is
    below them all."""
    if module == "spatial_ae":
        return len(LAYERS)
    best = max((prefix for layer in LAYERS for prefix in layer if module == prefix or module.startswith(prefix + ".")),
               key=len)
    return next(index for index, layer in enumerate(LAYERS) if best in layer)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The spatial_ae modules `path` imports (`from spatial_ae.x import y` counts y when y is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("spatial_ae")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("spatial_ae"):
            assert node.level == 0, f"{path}: relative import (the layers read better with absolute ones)"
            for alias in node.names:
                found.add(f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module)
    return found - {"spatial_ae"}


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {module: imports_of(path, set(paths)) - {module} for module, path in paths.items()}


def test_no_module_imports_from_a_layer_above_it():
    upward = [f"{module} -> {target}" for module, targets in import_graph().items() for target in targets
              if layer_of(target) < layer_of(module)]
    assert upward == []


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                return path + [module, target]
            if target not in state and (cycle := visit(target, path + [module])):
                return cycle
        state[module] = 2
        return None

    cycles = [cycle for module in sorted(graph) if module not in state and (cycle := visit(module, []))]
    assert cycles == []


def test_the_layers_name_every_module():
    """A new module or subpackage is placed in a layer on purpose (max() of no prefix fails)."""
    unplaced = []
    for module in import_graph():
        try:
            layer_of(module)
        except ValueError:
            unplaced.append(module)
    assert unplaced == []
