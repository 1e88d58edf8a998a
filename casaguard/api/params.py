"""casatasks' parameters, read from its source without importing it.

The parent never imports casatasks or casatools (that is what the sandbox is
for), yet a misspelt parameter must be rejected before a child -- and CASA's
~1-2 s import -- is paid for, and once per batch rather than once per MS. So
the installed casatasks is located with ``importlib.util.find_spec`` (which
does not import a top-level package) and read with ``ast``:

* ``casatasks/__init__.py`` binds every task by ``from .<module> import <task>``;
* each ``casatasks/<module>.py`` defines ``class _<task>`` whose
  ``def __call__(self, vis='', ...)`` is the task's signature, and binds
  ``<task> = _<task>()``.

Parsing costs a few milliseconds per task (``flagdata``'s module is ~1,200
lines) and is cached per task and file modification time. A test compares the
result with ``inspect.signature`` on the real task objects in a child. When
casatasks cannot be found or read this way, nothing is rejected here: the
child checks the parameters itself (``casaguard.remote.casa.tasks``).
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import threading
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from casaguard.errors import InvalidInput

UNKNOWN_TASK = "casatasks has no task named {name!r}{hint}"
UNKNOWN_PARAMETER = "{task}: unknown parameter{s} {names}{hint}"
#: Short parameter lists are spelled out when no near miss is found.
LIST_KNOWN_UP_TO = 12
DID_YOU_MEAN = " (did you mean {match!r}?)"


@dataclass(frozen=True)
class TaskSignature:
    """One casatask's parameters, in order.

    Attributes:
        name: the task.
        parameters: parameter names, in order.
        any_keyword: the task also takes ``**kwargs`` (then no name is unknown).
    """

    name: str
    parameters: tuple[str, ...]
    any_keyword: bool = False


_lock = threading.Lock()
_index: dict[str, tuple[float, dict[str, str]]] = {}
_signatures: dict[tuple[str, str, float], TaskSignature | None] = {}


def casatasks_dir() -> Path | None:
    """The installed casatasks package directory, found without importing it."""
    try:
        spec = importlib.util.find_spec("casatasks")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def task_modules() -> dict[str, str] | None:
    """``{task: module}`` from casatasks' ``__init__.py``; None when it cannot be read."""
    root = casatasks_dir()
    if root is None:
        return None
    init = root / "__init__.py"
    try:
        mtime = init.stat().st_mtime
    except OSError:
        return None
    with _lock:
        cached = _index.get(str(init))
        if cached is not None and cached[0] == mtime:
            return cached[1]
    tree = _parse(init)
    if tree is None:
        return None
    modules = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            for alias in node.names:
                name = alias.asname or alias.name
                if not name.startswith("_"):
                    modules[name] = node.module
    with _lock:
        _index[str(init)] = (mtime, modules)
    return modules


def signature(name: str) -> TaskSignature | None:
    """The parameters of casatask ``name``.

    Returns:
        The signature, or None when casatasks (or this task's source) cannot be
        read as expected -- then only the child can tell.

    Raises:
        InvalidInput: casatasks is readable and has no task ``name``.
    """
    modules = task_modules()
    if modules is None:
        return None
    if name not in modules:
        raise InvalidInput(UNKNOWN_TASK.format(name=name, hint=_hint(name, modules)))
    root = casatasks_dir()
    assert root is not None
    source = root / f"{modules[name].replace('.', '/')}.py"
    try:
        mtime = source.stat().st_mtime
    except OSError:
        return None
    key = (name, str(source), mtime)
    with _lock:
        if key in _signatures:
            return _signatures[key]
    found = _parse_task(name, source)
    with _lock:
        _signatures[key] = found
    return found


def check_parameters(name: str, params: Iterable[str]) -> None:
    """Reject an unknown task or a parameter it does not take, with a "did you mean".

    Raises:
        InvalidInput: one line naming the task or the unknown parameters.
    """
    found = signature(name)
    if found is None or found.any_keyword:
        return
    unknown = [p for p in dict.fromkeys(params) if p not in found.parameters]
    if not unknown:
        return
    hints = [_hint(p, found.parameters) for p in unknown]
    hint = "".join(hints) if len(unknown) == 1 else ""
    if not any(hints) and len(found.parameters) <= LIST_KNOWN_UP_TO:
        hint = f" (it takes: {', '.join(found.parameters)})"
    raise InvalidInput(
        UNKNOWN_PARAMETER.format(
            task=name,
            s="s" if len(unknown) > 1 else "",
            names=", ".join(repr(p) for p in unknown),
            hint=hint,
        )
    )


def _hint(word: str, choices: Iterable[str]) -> str:
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return DID_YOU_MEAN.format(match=matches[0]) if matches else ""


def _parse(path: Path) -> ast.Module | None:
    try:
        with warnings.catch_warnings():
            # casatasks' generated docstrings hold invalid escapes ("\*"): not our warning.
            warnings.simplefilter("ignore", SyntaxWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            return ast.parse(path.read_bytes(), filename=str(path))
    except (OSError, SyntaxError, ValueError):
        return None


def _parse_task(name: str, source: Path) -> TaskSignature | None:
    tree = _parse(source)
    if tree is None:
        return None
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    target: ast.ClassDef | ast.FunctionDef | None = functions.get(name)
    for node in tree.body:
        # ``ft = _ft( )``: the task is an instance; its __call__ is the signature.
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == name for t in node.targets)
            and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Name)
            and node.value.func.id in classes
        ):
            target = classes[node.value.func.id]
    if isinstance(target, ast.ClassDef):
        calls = [n for n in target.body if isinstance(n, ast.FunctionDef) and n.name == "__call__"]
        if not calls:
            return None
        args = calls[0].args
        positional = [a.arg for a in (*args.posonlyargs, *args.args)][1:]  # drop self
    elif isinstance(target, ast.FunctionDef):
        args = target.args
        positional = [a.arg for a in (*args.posonlyargs, *args.args)]
    else:
        return None
    names = (*positional, *(a.arg for a in args.kwonlyargs))
    return TaskSignature(name, tuple(names), any_keyword=args.kwarg is not None)
