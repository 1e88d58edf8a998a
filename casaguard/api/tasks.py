"""Guarded drop-ins for casatasks: ``ft``, ``clearcal``, ``run_task`` and ``call``.

``ft`` and ``clearcal`` take exactly the parameters of ``casatasks.ft`` and
``casatasks.clearcal`` (names, order, defaults; a test compares them with the
real task objects), followed by casaguard's own keyword-only options:

* ``timeout``: seconds before the child's process tree is killed (default: none).
* ``lock_timeout``: seconds to wait while another process holds the MS's lock
  (default 60); then ``MsLocked`` names the holder's pid and command line.
* ``strict``: a task that returns normally but logged a SEVERE line (other than
  CASA's leap-second noise) raises ``CasaSevereError`` (default True), because
  ``ft`` reports some failures -- e.g. a MODEL_DATA shape mismatch -- only so.
* ``mode``: ``"spawn"`` or ``"template"``; default ``$CASAGUARD_MODE`` or the fastest.
* ``casalog``: append the call's CASA log to this file, success or failure
  (default: ``$CASAGUARD_CASALOG``; unset, only a failed call's log is kept, in
  its crash-evidence folder -- see ``casaguard.sandbox.casalog``).
* ``journal``: check the MS first (exists, is an MS, is writable, room for the
  journal), snapshot what the task writes, and restore it if the child
  crashes, times out or is killed (default True; see ``casaguard.journal.hook``).
  ``journal=False`` skips both: CASA meets the MS as it is.
* ``discard_orphan_journal``: an MS with a pending journal (an earlier guarded
  write died mid-write) is refused with ``JournalError`` naming it and the
  ``casaguard restore-journal`` command; True deletes that journal instead and
  writes to the MS as the dead call left it (default False).

Every entry point -- ``ft``, ``clearcal``, ``run_task``, ``map_task``, and the
CLI's ``ft``, ``clearcal``, ``task`` and ``run`` -- goes through ``run_task``,
so all get the same checks before any child starts: the task name and its
parameter names against the installed casatasks (read from its source, see
``casaguard.api.params``), ``timeout`` / ``lock_timeout``, and for a task that
writes (``journal.task_writes`` knows ``ft`` and ``clearcal``; ``writes=``
declares others) the MS pre-flight and the journal. A lock on the MS or a
subtable held by the calling process itself is an immediate ``MsLocked``.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable, Sequence
from typing import Any, ParamSpec

from casaguard.api import params as task_params
from casaguard.errors import InvalidInput
from casaguard.journal import hook as _journal
from casaguard.journal import layout as _journal_layout
from casaguard.ms.checks import require_ms
from casaguard.sandbox import callspec, runner
from casaguard.sandbox.jobdir import Ref

P = ParamSpec("P")

#: casatasks that only read the MS: a READ lock held elsewhere does not block them.
READ_ONLY_TASKS = frozenset({"listobs", "listhistory", "listpartition", "listvis", "visstat"})


def _vis_path(vis: Any) -> str | None:
    if isinstance(vis, (str, os.PathLike)) and os.fspath(vis):
        return os.path.abspath(os.fspath(vis))
    return None


def check_task(name: Any, params: Any, *, timeout: Any = None, lock_timeout: Any = 1.0) -> None:
    """Everything about a task call that can be rejected before any child starts.

    Args:
        name: the casatask's name.
        params: its parameter names (a dict's keys will do).
        timeout, lock_timeout: casaguard's options for the call.

    Raises:
        InvalidInput: a bad task name, unknown task or parameter (with a "did
            you mean" for near misses), or a bad timeout -- one line.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise InvalidInput(f"task name must be an identifier, got {name!r}")
    callspec.check_timeouts(timeout, lock_timeout)
    task_params.check_parameters(name, params)


def _casa_value(value: Any) -> Any:
    """CASA takes paths only as ``str``: an ``os.PathLike`` (alone or in a list) becomes one."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)) and any(isinstance(v, os.PathLike) for v in value):
        return [os.fspath(v) if isinstance(v, os.PathLike) else v for v in value]
    return value


def run_task(
    name: str,
    /,
    *,
    timeout: float | None = None,
    lock_timeout: float = callspec.DEFAULT_LOCK_TIMEOUT_S,
    strict: bool = True,
    mode: str | None = None,
    writes: Sequence[str] | None = None,
    journal: bool = True,
    discard_orphan_journal: bool = False,
    casalog: str | os.PathLike[str] | None = None,
    **params: Any,
) -> Any:
    """Run ``casatasks.<name>(**params)`` in a sandbox child and return its result.

    Args:
        name: the casatask's name, e.g. ``"flagdata"``.
        timeout, lock_timeout, strict, mode, journal, discard_orphan_journal,
            casalog: see the module docstring.
        writes: main-table columns and/or subtables of ``vis`` the task may
            change (e.g. ``["FLAG", "FLAG_ROW"]``): ``vis`` is checked first and
            they are journaled. Default: what ``journal.task_writes`` knows of
            the task (``ft``, ``clearcal``); for other tasks nothing is journaled.
        **params: the task's own parameters.

    Returns:
        Whatever the task returns (it must be picklable).

    Raises:
        InvalidInput: no such task, or a parameter it does not take; a bad
            ``timeout`` / ``lock_timeout``; for a task that writes: ``vis``
            missing, not an MS, read-only, or too little free space for the
            journal (nothing was changed; no child was started).
        MsLocked: this process holds a lock on ``vis`` or a subtable (an open
            ``casacore.tables.table``), or another process past ``lock_timeout``.
        CasaCrash: a subclass naming how the child failed; ``restored`` says
            whether the journal put the MS back. A CASA exception ``X``
            (RuntimeError...) gives a ``CasaTaskError`` that is also an ``X``.
    """
    check_task(name, params, timeout=timeout, lock_timeout=lock_timeout)
    if isinstance(writes, str):
        writes = [writes]
    declared = tuple(writes) if writes is not None else _journal_layout.task_writes(name, params)
    params = {key: _casa_value(value) for key, value in params.items()}
    if declared is not None:
        # A writer's vis must be an MS, journal or not: a missing path is one
        # line here, not a CASA AssertionError after paying for a child. This
        # is the one such check on the write path; the journal's pre-flight
        # below relies on it.
        require_ms(params.get("vis"))
    vis = _vis_path(params.get("vis"))
    spec = callspec.CallSpec(
        func=Ref("casaguard.remote.casa.tasks", "run_casatask"),
        args=(name, params),
        name=name,
        is_casa_task=True,
        vis=vis,
        may_write=declared is not None or name not in READ_ONLY_TASKS,
        written=(*(declared or ()), *_journal_layout.ALWAYS_SUBTABLES),
        timeout=timeout,
        lock_timeout=lock_timeout,
        strict=strict,
        mode=mode,
        casalog=None if casalog is None else os.fspath(casalog),
    )
    if declared is not None and journal:
        # journal=False is the escape hatch: no snapshot and no pre-flight, CASA
        # meets the MS as it is (and reports a read-only MS its own way).
        assert vis is not None  # require_ms accepted it
        _journal.check_writable_ms(vis, task=name, writes=declared)
        spec = _journal.journaled(spec, declared, discard_orphan_journal=discard_orphan_journal)
    return runner.run(spec)


def _drop_in(stub: Callable[P, Any]) -> Callable[P, Any]:
    """Make a stub's signature the guarded task's: its parameters are written once, there.

    The stub's signature is the one source of a drop-in's parameters: the call
    binds to it (so positional use, defaults and a misspelt keyword behave as
    for any Python function), ``run_task`` receives every parameter by name,
    a test compares the CASA part with the real task objects, and the CLI
    builds its options from it (``casaguard.cli.options``).
    """

    task = stub.__name__  # the drop-in is named after its casatask
    signature = inspect.signature(stub)

    @functools.wraps(stub)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> Any:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as error:
            # Python's own wording for a bad call: "ft() got an unexpected ...".
            raise TypeError(f"{task}() {error}") from None
        bound.apply_defaults()
        return run_task(task, **bound.arguments)

    return guarded


@_drop_in
def ft(
    vis: str | os.PathLike[str] = "",
    field: str = "",
    spw: str = "",
    model: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] = "",
    nterms: int = 1,
    reffreq: str = "",
    complist: str | os.PathLike[str] = "",
    incremental: bool = False,
    usescratch: bool = False,
    *,
    timeout: float | None = None,
    lock_timeout: float = callspec.DEFAULT_LOCK_TIMEOUT_S,
    strict: bool = True,
    mode: str | None = None,
    journal: bool = True,
    discard_orphan_journal: bool = False,
    casalog: str | os.PathLike[str] | None = None,
) -> Any:
    """Guarded ``casatasks.ft``: insert a source model into MODEL_DATA (or the virtual model).

    The CASA parameters mean exactly what they mean to ``casatasks.ft``.

    Returns:
        What ``casatasks.ft`` returns (None).

    Raises:
        InvalidInput: ``vis`` missing, not an MS, read-only, or no room for the journal.
        CasaCrash: a subclass naming how the child failed; ``casa_error`` holds
            CASA's message (e.g. ``Please make sure MS is writable ...``);
            ``restored`` is True when the journal put the MS back.
    """


@_drop_in
def clearcal(
    vis: str | os.PathLike[str] = "",
    field: str = "",
    spw: str = "",
    intent: str = "",
    addmodel: bool = False,
    *,
    timeout: float | None = None,
    lock_timeout: float = callspec.DEFAULT_LOCK_TIMEOUT_S,
    strict: bool = True,
    mode: str | None = None,
    journal: bool = True,
    discard_orphan_journal: bool = False,
    casalog: str | os.PathLike[str] | None = None,
) -> Any:
    """Guarded ``casatasks.clearcal``: reset CORRECTED_DATA (and MODEL_DATA with addmodel).

    Returns:
        What ``casatasks.clearcal`` returns (None).

    Raises:
        InvalidInput: ``vis`` missing, not an MS, read-only, or no room for the journal.
        CasaCrash: a subclass naming how the child failed (``restored``: see ``ft``).
    """


def callable_name(func: Callable[..., Any]) -> str:
    """A readable name for messages: ``double_free_out``, ``Ref`` targets by attribute."""
    if isinstance(func, Ref):
        return func.attribute
    return str(getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or "call")


def call(
    func: Callable[..., Any],
    /,
    *args: Any,
    timeout: float | None = None,
    casa: bool = True,
    mode: str | None = None,
    flavor: str = "casa",
    casalog: str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> Any:
    """Run ``func(*args, **kwargs)`` in a sandbox child and return its result.

    ``func`` may be a closure or a function of your ``__main__``: it travels by
    value (dill), and your script is never re-run in the child.

    Args:
        func: any callable; its result must be picklable.
        timeout: seconds before the child's tree is killed.
        casa: capture a CASA log for the call (imports casatools in the child).
        mode: ``"spawn"`` or ``"template"``.
        casalog: append the call's CASA log to this file (see ``casaguard.sandbox.casalog``).
        flavor: which warm template forks the child: ``"casa"`` (casatools loaded;
            python-casacore refused) or ``"casacore"`` (python-casacore loaded;
            casatools refused). Use ``"casacore"`` with ``casa=False`` for
            python-casacore code.

    Raises:
        ChildError: ``func`` raised; the remote traceback is ``__cause__``.
        CasaCrash: a subclass naming how the child died.
    """
    if not callable(func):
        raise InvalidInput(f"call() needs a callable, got {type(func).__name__}")
    return runner.run(
        callspec.CallSpec(
            func=func,
            args=args,
            kwargs=kwargs,
            name=callable_name(func),
            setup_casa_log=casa,
            timeout=timeout,
            mode=mode,
            flavor=flavor,
            casalog=None if casalog is None else os.fspath(casalog),
        )
    )
