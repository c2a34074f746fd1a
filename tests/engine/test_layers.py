"""The engine's import graph, read from the source (function-level imports included): no cycle,
and every import goes down the layers or stays in its own package.

Layers, bottom up (``docs/engine.md``)::

    base       errors, atomic, safe_paths, config, model_dir (and the package itself)
    data, networks
    eks, multicam
    training
    inference
    labeling

A package of one layer never imports a package of the same layer (data and networks, eks and
multicam stay apart), and nothing in the engine imports the rest of the element (schemas,
command line, exporters, synthetic data) except its version.
"""

from __future__ import annotations

import ast
from pathlib import Path

import element_lightning_pose

PACKAGE = Path(element_lightning_pose.__file__).parent
ENGINE = "element_lightning_pose.engine"
LAYERS = {
    "base": 0,
    "data": 1,
    "networks": 1,
    "eks": 2,
    "multicam": 2,
    "training": 3,
    "inference": 4,
    "labeling": 5,
}
ALLOWED_OUTSIDE = {"element_lightning_pose.version"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def engine_imports(path: Path) -> set[str]:
    """Every element_lightning_pose module ``path`` imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("element_lightning_pose"):
                for alias in node.names:  # `from pkg import module` names a module
                    candidate = f"{node.module}.{alias.name}"
                    found.add(candidate if _is_module(candidate) else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("element_lightning_pose"))
        assert not (isinstance(node, ast.ImportFrom) and node.level), f"{path}: relative import"
    return found


def _is_module(name: str) -> bool:
    relative = Path(*name.split(".")[1:])
    return (PACKAGE / relative).with_suffix(".py").is_file() or (PACKAGE / relative / "__init__.py").is_file()


def layer_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 3 and parts[2] in LAYERS:  # element_lightning_pose.engine.<package>.<module>
        return parts[2]
    if len(parts) == 3 and parts[2] in LAYERS:  # a package itself
        return parts[2]
    return "base"


def engine_graph() -> dict[str, set[str]]:
    return {module_name(p): engine_imports(p) for p in sorted((PACKAGE / "engine").rglob("*.py"))}


def test_the_graph_is_read_from_every_engine_module():
    graph = engine_graph()
    assert len(graph) > 40
    # a function-level import is seen (the optional TensorBoard import is not an engine edge,
    # but the lazy entry of training/__init__ is)
    assert f"{ENGINE}.training.entry" in graph[f"{ENGINE}.training"]


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of ``graph`` (the modules, the first repeated at the end), or []."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt in graph and state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt in graph and nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return []

    for node in graph:
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """Every import of ``graph`` that goes up or across the layers, or leaves the engine."""
    wrong = []
    for module, imported in graph.items():
        here = layer_of(module)
        for target in imported:
            if not target.startswith(ENGINE):
                if target not in ALLOWED_OUTSIDE:
                    wrong.append(f"{module} imports {target} (outside the engine)")
                continue
            there = layer_of(target)
            if there != here and LAYERS[there] >= LAYERS[here]:
                wrong.append(f"{module} ({here}) imports {target} ({there})")
    return sorted(wrong)


def test_the_engine_has_no_import_cycle():
    cycle = find_cycle(engine_graph())
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_imports_go_down_the_layers():
    wrong = layer_violations(engine_graph())
    assert not wrong, "\n".join(wrong)


def test_the_checks_see_a_cycle_and_a_wrong_import():
    """The rules above are real: a cycle, an import up or across the layers and one out of the
    engine are reported."""
    e = ENGINE
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []
    fake = {
        f"{e}.data.labels": {f"{e}.training.single", f"{e}.networks.heads", f"{e}.errors"},
        f"{e}.model_dir": {"element_lightning_pose.train", "element_lightning_pose.version"},
        f"{e}.inference.predict": {f"{e}.training.pca", f"{e}.data.video"},
    }
    assert layer_violations(fake) == sorted(
        [
            f"{e}.data.labels (data) imports {e}.training.single (training)",
            f"{e}.data.labels (data) imports {e}.networks.heads (networks)",
            f"{e}.model_dir imports element_lightning_pose.train (outside the engine)",
        ]
    )
