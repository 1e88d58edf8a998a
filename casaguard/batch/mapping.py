"""Many inputs at once: one guarded call per input, one ``ItemOutcome`` per input, in order.

::

    caller: map_task / map_call / map_probe          (never imports CASA)
     |- engine: local threads (default) | any concurrent.futures.Executor
     |          | Dask: a distributed.Client, or a scheduler address
     |- per item, on a thread or a Dask worker: _execute(run, index, item)
     |     '- run(item) = casaguard.run_task / call / probe --> sandbox child(ren)
     |          child dies of SIGABRT, SIGSEGV...   --> CasaCrash caught here
     |          returns                             --> value
     |     -> ItemOutcome(ok, value | error, input, elapsed_s, where)
     |- outcomes gathered as they finish (progress callback), returned by index
     '- Ctrl-C (local engine): pending items dropped, running children killed

The children are the isolation, so the local engine needs only threads: each
thread drives one guarded child and waits on it, the GIL is idle meanwhile, and a
crash kills a child, never a thread. On Dask the same ``_execute`` runs inside
the worker: a CASA crash kills a sandbox child of the worker, never the worker.

Errors of one item never abort the batch: every ``Exception`` raised by one
item's call becomes that item's outcome (``CasaCrash`` and ``InvalidInput`` are
the expected ones). Only an interrupt (Ctrl-C) stops the batch.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from casaguard.api.tasks import call, callable_name, check_task, run_task
from casaguard.batch.engines import Progress, run_batch
from casaguard.batch.item import ItemOutcome
from casaguard.errors import InvalidInput
from casaguard.sandbox import callspec

__all__ = ["ItemOutcome", "map_call", "map_probe", "map_repair", "map_task"]


def map_task(
    name: str,
    params: Iterable[Mapping[str, Any]],
    *,
    executor: Any = None,
    jobs: int | None = None,
    timeout: float | None = None,
    lock_timeout: float = callspec.DEFAULT_LOCK_TIMEOUT_S,
    strict: bool = True,
    mode: str | None = None,
    progress: Progress | None = None,
    probe_first: bool = False,
) -> list[ItemOutcome]:
    """Run ``casaguard.run_task(name, **p)`` for every ``p`` in ``params``, concurrently.

    Example::

        outcomes = casaguard.map_task("ft", [{"vis": ms, "complist": cl} for ms in paths])
        failed = [o for o in outcomes if not o.ok]

    Args:
        name: the casatask, e.g. ``"ft"``.
        params: one parameter dict per call (usually differing in ``vis``).
        executor: the engine: None for local threads; a
            ``concurrent.futures.Executor``; a ``distributed.Client``; or a Dask
            scheduler address (a client is opened and closed for this batch).
        jobs: local engine only: calls at once (default: the usable CPUs).
        timeout, lock_timeout, strict, mode: as for ``casaguard.run_task``, per call.
        progress: called as ``progress(outcome, done, total)`` when an item finishes.
        probe_first: probe each ``vis`` first (``casaguard.probe``, static, read-only)
            and skip the MSs it calls unsafe: their outcome's error is a
            ``casaguard.preflight.findings.MsUnsafe`` carrying the probe's report.

    Returns:
        One ItemOutcome per parameter dict, in input order. A crash never aborts the batch.

    Raises:
        InvalidInput: before any child starts, for the whole batch: a bad or
            unknown task name, a parameter the task does not take, a bad
            timeout; ``jobs`` < 1, an unreachable scheduler. (A missing or
            read-only MS is that item's outcome.)
        SetupError: a Dask engine was asked for but ``distributed`` is not installed.
        KeyboardInterrupt: after the running children were killed (local engine).
    """
    items: list[dict[str, Any]] = []
    for item in params:
        if not isinstance(item, Mapping):
            raise InvalidInput(f"each item of params must be a mapping, got {item!r}")
        items.append(dict(item))
    # Once for the whole batch, before any child: a misspelt parameter is one
    # error, not one per MS after paying for CASA each time.
    check_task(
        name,
        [key for item in items for key in item],
        timeout=timeout,
        lock_timeout=lock_timeout,
    )
    run = _TaskCall(
        name,
        timeout=timeout,
        lock_timeout=lock_timeout,
        strict=strict,
        mode=mode,
        probe_first=probe_first,
    )
    return run_batch(run, items, name=name, executor=executor, jobs=jobs, progress=progress)


def map_call(
    func: Callable[[Any], Any],
    items: Iterable[Any],
    *,
    sandbox: bool = True,
    executor: Any = None,
    jobs: int | None = None,
    timeout: float | None = None,
    casa: bool = True,
    mode: str | None = None,
    progress: Progress | None = None,
) -> list[ItemOutcome]:
    """Run ``func(item)`` for every item, concurrently; one ItemOutcome per item, in order.

    With ``sandbox=True`` (the default) each ``func(item)`` runs in its own
    sandbox child, exactly as ``casaguard.call(func, item)``. With
    ``sandbox=False``, ``func(item)`` runs directly on the engine's thread or
    Dask worker: use it for functions that make their own guarded calls
    (``casaguard.ft``, ``casaguard.probe``...), which then need no second sandbox.

    Args:
        func: a one-argument callable (closures are fine: they travel by value).
        items: the inputs.
        sandbox: run each call in a sandbox child (see above).
        executor, jobs, progress: as for ``map_task``.
        timeout, casa, mode: as for ``casaguard.call`` (sandbox=True only).

    Returns:
        One ItemOutcome per item, in input order.

    Raises:
        InvalidInput: ``func`` is not callable, ``jobs`` < 1, an unreachable scheduler.
        SetupError: a Dask engine was asked for but ``distributed`` is not installed.
        KeyboardInterrupt: after the running children were killed (local engine).
    """
    if not callable(func):
        raise InvalidInput(f"map_call() needs a callable, got {type(func).__name__}")
    run: Callable[[Any], Any] = (
        _SandboxCall(func, timeout=timeout, casa=casa, mode=mode) if sandbox else func
    )
    return run_batch(
        run,
        list(items),
        name=callable_name(func),
        executor=executor,
        jobs=jobs,
        progress=progress,
    )


def map_probe(
    paths: Iterable[str | os.PathLike[str]],
    *,
    executor: Any = None,
    jobs: int | None = None,
    progress: Progress | None = None,
    **probe_options: Any,
) -> list[ItemOutcome]:
    """Probe many MSs concurrently with ``casaguard.probe``; one ItemOutcome per path, in order.

    Unlike a thread-only loop over ``probe``, this runs on any engine,
    a Dask cluster included (the workers must have casaguard installed).

    Each ``casaguard.probe(path, **probe_options)`` opens the MS in its own
    throwaway children, so it runs unsandboxed on the engine (``map_call`` with
    ``sandbox=False``); an ok outcome's ``value`` is the ProbeReport.

    Args:
        paths: the MSs.
        executor, jobs, progress: as for ``map_task``.
        **probe_options: passed to ``casaguard.probe`` (e.g. ``canary=True``, ``timeout=60``).

    Returns:
        One ItemOutcome per path, in input order.
    """
    from casaguard.preflight.probe import probe  # loaded on first use: importing batch stays cheap

    run = functools.partial(probe, **probe_options) if probe_options else probe
    return run_batch(
        run,
        [os.fspath(p) for p in paths],
        name="probe",
        executor=executor,
        jobs=jobs,
        progress=progress,
    )


def map_repair(
    paths: Iterable[str | os.PathLike[str]],
    *,
    executor: Any = None,
    jobs: int | None = None,
    progress: Progress | None = None,
    **repair_options: Any,
) -> list[ItemOutcome]:
    """Repair many MSs with ``casaguard.repair`` (as ``map_probe`` probes them).

    Args:
        paths: the MSs.
        executor, jobs, progress: as for ``map_task``.
        **repair_options: passed to ``casaguard.repair`` (``apply=True``, ``verify``...).

    Returns:
        One ItemOutcome per path, in input order; an ok outcome's ``value`` is the RepairReport.
    """
    from casaguard.repairs.run import repair

    run = functools.partial(repair, **repair_options)
    return run_batch(
        run,
        [os.fspath(p) for p in paths],
        name="repair",
        executor=executor,
        jobs=jobs,
        progress=progress,
    )


# ----------------------------------------------------------------------------- per item


@dataclass(frozen=True)
class _TaskCall:
    """``run_task(name, **params)`` with fixed options; a module-level class so Dask pickles it."""

    name: str
    timeout: float | None = None
    lock_timeout: float = callspec.DEFAULT_LOCK_TIMEOUT_S
    strict: bool = True
    mode: str | None = None
    probe_first: bool = False

    def __call__(self, params: Mapping[str, Any]) -> Any:
        if self.probe_first and params.get("vis"):
            # A pipeline never writes to an MS the probe knows is bad.
            from casaguard.preflight.findings import MsUnsafe
            from casaguard.preflight.probe import probe

            report = probe(params["vis"])
            if report.verdict == "unsafe":
                raise MsUnsafe(report)
        return run_task(
            self.name,
            timeout=self.timeout,
            lock_timeout=self.lock_timeout,
            strict=self.strict,
            mode=self.mode,
            **params,
        )


@dataclass(frozen=True)
class _SandboxCall:
    """``casaguard.call(func, item)`` with fixed options."""

    func: Callable[[Any], Any]
    timeout: float | None = None
    casa: bool = True
    mode: str | None = None

    def __call__(self, item: Any) -> Any:
        return call(self.func, item, timeout=self.timeout, casa=self.casa, mode=self.mode)
