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
