"""One guarded call (``CallSpec``) and the seams the runner drives (``Launcher``, ``ChildHandle``).

Shared by the runner and both launchers (spawn, template), so neither
launcher imports the runner.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

from casaguard.errors import (
    InvalidInput,
)
from casaguard.sandbox import jobdir as _job

DEFAULT_LOCK_TIMEOUT_S = 60.0


KILL_GRACE_S = 2.0


MODE_ENV = "CASAGUARD_MODE"


#: Set by a batch engine (``casaguard.batch.mapping``) in the thread that drives a call:
#: once the event is set, the call kills its child tree and raises
#: KeyboardInterrupt, as on Ctrl-C. Only the main thread ever sees a real Ctrl-C.
CANCEL: ContextVar[threading.Event | None] = ContextVar("casaguard_cancel", default=None)


@dataclass
class CallSpec:
    """One guarded call.

    Attributes:
        func: callable run in the child; args / kwargs its arguments. None for a
            launcher that runs a program, not Python (``casaguard.sandbox.command``):
            then no request is written.
        name: task name (``ft``) or callable name, for messages and logs.
        is_casa_task: exceptions are CASA errors, and SEVERE lines count.
        setup_casa_log: import casatools in the child and capture the CASA log.
        vis: the MS the call uses, for lock checks and logs.
        may_write: the call may write to ``vis``: a READ lock on it (or on a
            subtable in ``written``) blocks it too, not only a WRITE lock.
        written: subtables of ``vis`` the call writes (``SOURCE``, ``HISTORY``...).
        timeout: seconds before the child's tree is killed (None: no limit).
        lock_timeout: seconds to wait for another process's lock on ``vis``.
        strict: a normal return with SEVERE lines raises CasaSevereError.
        mode: ``"spawn"``, ``"template"`` or None (``$CASAGUARD_MODE``, then the fastest).
        journal: the journal around the call (``CallJournal``; made by
            ``casaguard.journal.hook.journaled``), or None.
        casalog: append the call's CASA log to this file, success or failure
            (None: ``$CASAGUARD_CASALOG``, else only a failure's log is kept; see
            ``casaguard.sandbox.casalog``).
        launcher: start the child with this launcher instead of ``mode``'s
            (e.g. ``SpawnLauncher(prefix=[...setpriv...])``, or a plain command's
            launcher from ``casaguard.sandbox.command``).
    """

    func: Callable[..., Any] | None
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    is_casa_task: bool = False
    setup_casa_log: bool = True
    vis: str | None = None
    may_write: bool = False
    written: tuple[str, ...] = ()
    timeout: float | None = None
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S
    strict: bool = True
    mode: str | None = None
    flavor: str = "casa"
    journal: CallJournal | None = None
    casalog: str | None = None
    launcher: Launcher | None = None


class CallJournal(Protocol):
    """What the runner asks of a journal: the sandbox knows no more of journals than this.

    ``before`` runs in the parent before the child starts and returns an opaque
    snapshot handle; ``restore`` undoes a dead child's writes and returns the
    paths it put back; ``discard`` runs on every path at the end.
    """

    def before(self) -> Any:
        """Take the MS's writer lock and prepare the journal the child fills."""

    def restore(self, snapshot: Any) -> list[str]:
        """Put back what the dead child may have changed; return the restored paths."""

    def discard(self, snapshot: Any) -> None:
        """Remove the journal (kept if a restore failed) and drop the writer lock."""


class ChildHandle(Protocol):
    """A started child, as a launcher hands it to the runner.

    ``replies`` is False for a plain command (WSClean): it writes no reply and
    no progress markers, so its exit status is all there is.
    """

    pid: int
    mode: str
    replies: bool

    def exit_status(self) -> int | None:
        """Return the exit status once the child is gone (blocking briefly), else None."""

    def kill_tree(self) -> None:
        """Kill the child and every process below it, SIGTERM then SIGKILL."""

    def detach(self) -> bool:
        """The child said it is done (only exiting is left): stop tracking it, if this
        launcher can (its exit is then someone else's to reap). False: wait for the exit."""


class Launcher(Protocol):
    mode: str

    def start(self, job: _job.JobDir) -> ChildHandle:
        """Start a child that runs ``job``'s request."""


def check_timeouts(timeout: Any, lock_timeout: Any) -> None:
    """Reject a ``timeout`` / ``lock_timeout`` that is not a positive, finite number of seconds.

    Raises:
        InvalidInput: zero, negative, NaN, infinite (``timeout`` may be None), or not a number.
    """
    for name, value, optional in (
        ("timeout", timeout, True),
        ("lock_timeout", lock_timeout, False),
    ):
        if value is None and optional:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidInput(
                f"{name} must be a number of seconds, got {type(value).__name__} {value!r}"
            )
        if not math.isfinite(value) or value <= 0:
            raise InvalidInput(
                f"{name} must be a positive, finite number of seconds, got {value!r}"
            )
