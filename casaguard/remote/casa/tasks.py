"""Run a casatask by name, and describe casatasks' own signatures."""

from __future__ import annotations

import inspect
from typing import Any

from casaguard.errors import InvalidInput


def _task(name: str) -> Any:
    import casatasks

    task = getattr(casatasks, name, None)
    if task is None or name.startswith("_") or not callable(task) or inspect.ismodule(task):
        raise InvalidInput(f"casatasks has no task named {name!r}")
    return task


def run_casatask(name: str, params: dict[str, Any]) -> Any:
    """Call ``casatasks.<name>(**params)`` after checking the parameter names.

    Raises:
        InvalidInput: no such task, or a parameter the task does not take.
    """
    task = _task(name)
    try:
        inspect.signature(task).bind(**params)
    except TypeError as error:
        raise InvalidInput(f"{name}: {error}") from None
    return task(**params)


def task_parameters(name: str) -> list[tuple[str, Any]]:
    """Return ``[(parameter, default), ...]`` of a casatask, in order."""
    task = _task(name)
    return [(p.name, p.default) for p in inspect.signature(task).parameters.values()]


def all_task_parameter_names() -> dict[str, tuple[list[str], bool]]:
    """``{task: ([parameter, ...], takes **kwargs)}`` for every task of casatasks."""
    import casatasks

    found = {}
    for name in casatasks.__all__:
        task = getattr(casatasks, name, None)
        defined_in = getattr(task, "__module__", None) or type(task).__module__
        if task is None or not callable(task) or not defined_in.startswith("casatasks."):
            continue
        params = inspect.signature(task).parameters.values()
        names = [p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
        found[name] = (names, any(p.kind is p.VAR_KEYWORD for p in params))
    return found
