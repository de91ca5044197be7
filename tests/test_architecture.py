"""The layering of docs/architecture.md, checked on the source: no import cycles, and each layer imports only the
layers below it (``elmo`` no Beam and nothing of ours above it; ``transforms`` never ``pipeline``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("elmo", "transforms", "pipeline", "search", "evaluation")
# package -> top-level names it must never import, at module level or inside a function
FORBIDDEN = {
    "elmo": {"apache_beam", "transforms", "pipeline", "search", "evaluation"},
    "transforms": {"pipeline", "search"},
    "pipeline": {"search"},
    "search": {"apache_beam", "transforms", "pipeline"},
    "evaluation": {"apache_beam", "transforms", "pipeline", "search"},  # research tools use the model only
}


# inside elmo: sub-packages built on the core, which the core never imports
ELMO_UPPER = ("elmo.training",)


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for package in PACKAGES for p in sorted((REPO / package).rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The modules an import statement in ``module`` loads (``from pkg import name``: ``pkg.name`` when that is a
    module of ours, else ``pkg``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:  # relative: resolved against the importing module's package
        package = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
        base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]


def imports(module: str, top_level_only: bool) -> set[str]:
    """What ``module`` imports: everything (``top_level_only=False``: function bodies included), or what runs when
    it is imported (module level, not under ``if TYPE_CHECKING``)."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    found: set[str] = set()

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue  # never runs
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, (ast.Import, ast.ImportFrom)) and not (top_level_only and inner):
                found.update(_targets(module, child))
            visit(child, inner)

    visit(tree, False)
    return found


def import_graph() -> dict[str, set[str]]:
    """Our modules -> our modules they import when they are imported."""
    return {m: {t for t in imports(m, top_level_only=True) if t in MODULES and t != m} for m in MODULES}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := walk(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := walk(start)):
            return cycle
    return None


def test_the_modules_are_found():
    assert {"elmo.api", "transforms.embed", "pipeline.run", "search.index"} <= set(MODULES)


def test_there_is_no_import_cycle():
    assert find_cycle(import_graph()) is None, " -> ".join(find_cycle(import_graph()))


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("package", PACKAGES)
def test_each_layer_imports_only_what_is_below_it(package):
    wrong = {
        f"{module} imports {target}"
        for module in MODULES
        if module.split(".")[0] == package
        for target in imports(module, top_level_only=False)
        if target.split(".")[0] in FORBIDDEN[package]
    }
    assert not wrong, sorted(wrong)


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_elmo_core_never_imports_training():
    """Inference (``elmo.api`` and below) loads no training code (research code is in ``evaluation``, above)."""
    wrong = {
        f"{module} imports {target}"
        for module in MODULES
        if _within(module, "elmo")
        for target in imports(module, top_level_only=False)
        for upper in ELMO_UPPER
        if _within(target, upper) and not _within(module, upper)
    }
    assert not wrong, sorted(wrong)
    assert {"elmo.training.train", "evaluation.initial_state", "elmo.state"} <= set(MODULES)
    assert "elmo.api" not in imports("elmo.state", top_level_only=False)
