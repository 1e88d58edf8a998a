"""The package's shape is the design: imports point one way, no circle, small modules.

Walks every module's imports with ``ast`` (function-level imports included,
``TYPE_CHECKING`` blocks excluded) and checks the rules the package docstring
states. The import rule of ``remote/`` is its name: code there runs only in a
sandbox child, so no parent-side module imports it (the child reaches it by a
``Ref`` string).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "casaguard"

#: Layers, lowest first: a module may import only its own layer or lower ones.
LAYERS: dict[str, int] = {
    "errors": 0,
    "events": 0,
    "exits": 0,
    "version": 0,
    "casaenv": 1,
    "crash": 1,
    "ms": 1,
    "sandbox": 2,
    "journal": 3,
    "api": 4,
    "corpus": 5,
    "preflight": 5,
    "batch": 6,
    "repairs": 6,
    "testing": 6,
    "cli": 7,
    "__main__": 8,
    # The package face (casaguard/__init__.py): lazily reaches every module.
    "": 8,
}
#: Child-side code may use leaf modules of the parent side, never the reverse.
CHILD_ONLY = "remote"
#: Child-side code outside remote/ (the child's entry point, the warm template's warm-up,
#: which runs CASA tasks in the template): it may import child-only code.
CHILD_ENTRIES = {"casaguard.sandbox.child", "casaguard.sandbox.template.warm"}
MAX_LINES = 400
#: The only modules that may import the package face ``casaguard`` itself.
FACE_USERS = {"cli", "__main__"}
#: Parent-side modules that child-only code may import: leaves a child needs (the error
#: types, the journal's file layout and snapshot, the probe's table of required subtables,
#: the crash primitives), none of which imports upward.
CHILD_MAY_IMPORT = {
    "casaguard.errors",
    "casaguard.journal.layout",
    "casaguard.journal.snapshot",
    "casaguard.preflight.table_rules",
    "casaguard.corpus.crashers",
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path) -> set[str]:
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name.startswith("casaguard"))
            elif (
                isinstance(child, ast.ImportFrom)
                and child.module
                and child.level == 0
                and child.module.startswith("casaguard")
            ):
                for alias in child.names:
                    candidate = f"{child.module}.{alias.name}"
                    found.add(candidate if candidate in MODULES else child.module)
            visit(child)

    visit(ast.parse(path.read_text()))
    return found - {_module_name(path)}


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
GRAPH: dict[str, set[str]] = {name: _imports(path) for name, path in MODULES.items()}


def _top(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_import_circle() -> None:
    """No module reaches itself through the package's own imports."""
    done: set[str] = set()

    def walk(name: str, stack: list[str]) -> None:
        if name in stack:
            pytest.fail("import circle: " + " -> ".join([*stack[stack.index(name) :], name]))
        if name in done:
            return
        for target in sorted(GRAPH.get(name, ())):
            if target != "casaguard":
                walk(target, [*stack, name])
        done.add(name)

    for name in GRAPH:
        walk(name, [])


@pytest.mark.parametrize("name", sorted(GRAPH))
def test_imports_point_down(name: str) -> None:
    """A module imports only its own layer or lower ones, and never child-only code."""
    top = _top(name)
    for target in GRAPH[name]:
        there = _top(target)
        if target == "casaguard":
            # The face lazily reaches every module: importing it from inside is an upward arrow.
            assert top in FACE_USERS, f"{name} imports the package face; import the module"
            continue
        if there == top:
            continue
        if there == CHILD_ONLY:
            assert top == CHILD_ONLY or name in CHILD_ENTRIES, f"{name} imports child-only {target}"
            continue
        if top == CHILD_ONLY:
            continue
        assert top in LAYERS and there in LAYERS, f"{name} -> {target}: layer not declared"
        assert LAYERS[there] <= LAYERS[top], f"{name} ({top}) imports upward: {target} ({there})"


@pytest.mark.parametrize("name", sorted(n for n in GRAPH if _top(n) == CHILD_ONLY))
def test_child_only_code_imports_only_listed_parent_modules(name: str) -> None:
    """Code under remote/ imports other remote/ code and the listed leaves, nothing else."""
    foreign = {t for t in GRAPH[name] if _top(t) != CHILD_ONLY} - CHILD_MAY_IMPORT
    assert not foreign, f"{name} imports {sorted(foreign)}"


def test_no_importlib_between_own_modules() -> None:
    """Only the lazy public face uses importlib on the package's own modules."""
    for name, path in MODULES.items():
        if name == "casaguard":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module":
                arg = node.args[0] if node.args else None
                assert not (
                    isinstance(arg, ast.Constant) and str(arg.value).startswith("casaguard")
                ), f"{name} imports {arg.value!r} through importlib"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_are_small(name: str) -> None:
    """No module is over MAX_LINES (400) lines: each owns one thing, and reads in one sitting."""
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines (limit {MAX_LINES})"
