"""The exception hierarchy of casaguard (a leaf: imports nothing from the package).

Crash facts live in attributes (``kind``, ``signal``, ``exit_code``,
``stderr_tail``, ``casa_error``, ``task``, ``pid``...) so that callers and tests
branch on data, not on message text::

    CasaguardError                      anything casaguard raises on purpose
    +-- SetupError                      casadata missing, child cannot start CASA
    +-- InvalidInput                    bad path, not an MS, unknown task...
    |   +-- ReadOnlyMs                  a write cannot succeed (also a RuntimeError, as CASA's)
    +-- JournalError                    a crashed write could not be rolled back
    +-- CasaCrash                       a guarded call did not return normally
        +-- HeapCorruption              double-free, corrupted-size, invalid-pointer, heap-...
        +-- Segfault                    SIGSEGV / SIGBUS
        +-- AbortCrash                  cxx-terminate, other SIGABRT
        +-- Killed                      SIGKILL we did not send (OOM when the cgroup says so)
        +-- TaskTimeout                 our timeout fired; the child tree was killed
        +-- MsLocked                    another live process holds the MS's lock
        +-- UnexpectedExit              no-result, or a non-zero exit without a signal
        +-- ChildError                  a Python exception in the child (traceback: __cause__)
            +-- CasaTaskError           a casatask raised (casa-error)
            +-- CasaSevereError         a casatask returned but logged SEVERE (casa-severe)

A ``ChildError`` whose remote exception was a built-in ``X`` (``RuntimeError``,
``ValueError``, ``AssertionError``, ``TypeError``, ``KeyError``...) is raised as an
instance of a cached subclass of both (``child_error_class``), so a drop-in's
callers keep catching ``except RuntimeError:`` as they did around plain casatasks.
"""

from __future__ import annotations

import builtins
import threading
from typing import Any

# Message formats are module constants so that tests match the very same text.
CRASH_MESSAGE = "{task} (pid {pid}) {how}: {what}"
CASA_ERROR_SUFFIX = ', after CASA error "{casa_error}"'
LOG_SUFFIX = "; CASA log: {log_path}"
EVIDENCE_SUFFIX = "; evidence: {folder}"
LOCKED_MESSAGE = "{vis} is locked by pid {holder_pid} ({holder_cmdline}); waited {waited_s:.1f} s"
SELF_LOCKED_MESSAGE = (
    "{task}: this process (pid {pid}) holds a {lock_type} lock on {table}: a "
    "casacore.tables.table object is still open; close it or call .unlock() first"
)
LOCK_WAIT_KILLED = (
    "; {task} (pid {child_pid}) was blocked on it for {waited_s:.1f} s and was killed"
)


class CasaguardError(Exception):
    """Base class of every error casaguard raises on purpose."""


class SetupError(CasaguardError):
    """The sandbox cannot start CASA (for example casadata is not installed)."""


class InvalidInput(CasaguardError, ValueError):
    """The caller's input cannot be used: missing path, not an MS, unknown task."""


class ReadOnlyMs(InvalidInput, RuntimeError):
    """A guarded write refused before anything was touched: the MS cannot be written.

    Also a ``RuntimeError`` because plain CASA refuses the same MS with one, so a
    drop-in's ``except RuntimeError:`` keeps catching it.
    """


class JournalError(CasaguardError):
    """A restore after a crash could not be completed; the journal is kept for a manual restore."""


class RemoteTraceback(Exception):
    """The formatted traceback of an exception raised in the child process."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'


class CasaCrash(CasaguardError):
    """A guarded call that did not return normally, with every fact we know.

    Attributes:
        kind: stable crash kind, e.g. ``"double-free"``, ``"segfault"``, ``"casa-error"``.
        task: task or callable name.
        pid: the child's pid (None if it never started).
        exit_code: raw exit status (negative = killed by that signal), or None.
        signal: signal name such as ``"SIGABRT"``, or None.
        detail: the one-line cause (the glibc message, the ``what():`` text...).
        stderr_tail: the last bytes the child wrote to fd 1/2, decoded.
        casa_error: the CASA exception text raised before the crash, if any.
        casa_log_tail: the last lines of the child's CASA log.
        severe_lines: CASA ``SEVERE`` log lines that are not known noise.
        log_path: where the CASA log of this call was kept.
        elapsed_s: wall time of the call.
        signature: short stable hash of kind + normalised detail.
        vis: the MS the task was given, if any.
        result: for a teardown-only crash, the task's return value.
        restored: True when a journal snapshot was restored after the crash.
        restored_paths: what the journal restored.
    """

    kind: str = "crash"

    def __init__(
        self,
        message: str,
        *,
        kind: str | None = None,
        task: str = "",
        pid: int | None = None,
        exit_code: int | None = None,
        signal: str | None = None,
        detail: str = "",
        stderr_tail: str = "",
        casa_error: str | None = None,
        casa_log_tail: str = "",
        severe_lines: tuple[str, ...] = (),
        log_path: str | None = None,
        elapsed_s: float | None = None,
        signature: str = "",
        vis: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        if kind is not None:
            self.kind = kind
        self.task = task
        self.pid = pid
        self.exit_code = exit_code
        self.signal = signal
        self.detail = detail
        self.stderr_tail = stderr_tail
        self.casa_error = casa_error
        self.casa_log_tail = casa_log_tail
        self.severe_lines = severe_lines
        self.log_path = log_path
        self.elapsed_s = elapsed_s
        self.signature = signature
        self.vis = vis
        self.restored = False
        self.restored_paths: tuple[str, ...] = ()
        self.extra: dict[str, Any] = dict(extra or {})

    def facts(self) -> dict[str, Any]:
        """Return the crash facts as a JSON-ready dict (for logs, reports, ``--json``)."""
        return {
            "kind": self.kind,
            "task": self.task,
            "pid": self.pid,
            "exit_code": self.exit_code,
            "signal": self.signal,
            "detail": self.detail,
            "casa_error": self.casa_error,
            "severe_lines": list(self.severe_lines),
            "log_path": self.log_path,
            "elapsed_s": self.elapsed_s,
            "signature": self.signature,
            "vis": self.vis,
            "restored": self.restored,
            "restored_paths": list(self.restored_paths),
            "message": str(self),
            **self.extra,
        }


class HeapCorruption(CasaCrash):
    """glibc detected heap corruption and aborted the child (SIGABRT)."""

    kind = "heap-corruption"


class Segfault(CasaCrash):
    """The child died of SIGSEGV or SIGBUS."""

    kind = "segfault"


class AbortCrash(CasaCrash):
    """The child aborted: an uncaught C++ exception (``cxx-terminate``) or another SIGABRT."""

    kind = "abort"


class Killed(CasaCrash):
    """The child was killed by SIGKILL that casaguard did not send (often the OOM killer)."""

    kind = "killed"


class TaskTimeout(CasaCrash, TimeoutError):
    """The call ran past its timeout; the child's process tree was killed."""

    kind = "timeout"


class MsLocked(CasaCrash):
    """Another live process holds the MS's table lock; CASA would wait forever.

    Attributes (besides CasaCrash's): ``holder_pid``, ``holder_cmdline``, ``lock_type``.
    """

    kind = "locked"

    def __init__(
        self,
        message: str,
        *,
        holder_pid: int | None = None,
        holder_cmdline: str = "",
        lock_type: str = "",
        **facts: Any,
    ) -> None:
        super().__init__(message, **facts)
        self.holder_pid = holder_pid
        self.holder_cmdline = holder_cmdline
        self.lock_type = lock_type
        self.extra.update(holder_pid=holder_pid, holder_cmdline=holder_cmdline, lock_type=lock_type)


class UnexpectedExit(CasaCrash):
    """The child exited without a signal but also without a reply (``no-result``/``exit``)."""

    kind = "no-result"


class ChildError(CasaCrash):
    """A Python exception raised in the child; the remote traceback is ``__cause__``.

    Attributes (besides CasaCrash's): ``exc_type`` (qualified name of the remote
    exception class), ``exc_message``, and ``original`` (the remote exception
    object when it could be sent back, else None).
    """

    kind = "python-error"

    def __init__(
        self,
        message: str,
        *,
        exc_type: str = "",
        exc_message: str = "",
        original: BaseException | None = None,
        **facts: Any,
    ) -> None:
        super().__init__(message, **facts)
        self.exc_type = exc_type
        self.exc_message = exc_message
        self.original = original
        self.extra.update(exc_type=exc_type)


class CasaTaskError(ChildError):
    """A CASA task raised an exception (kind ``casa-error``)."""

    kind = "casa-error"


class CasaSevereError(ChildError):
    """A CASA task returned normally but logged SEVERE errors: it silently failed.

    Raised only with ``strict=True`` (the default); ``severe_lines`` holds the lines.
    """

    kind = "casa-severe"


#: Crash kind -> exception class. Kinds not listed map to CasaCrash itself.
EXCEPTION_FOR_KIND: dict[str, type[CasaCrash]] = {
    "double-free": HeapCorruption,
    "corrupted-size": HeapCorruption,
    "invalid-pointer": HeapCorruption,
    "heap-corruption": HeapCorruption,
    "segfault": Segfault,
    "cxx-terminate": AbortCrash,
    "abort": AbortCrash,
    "killed": Killed,
    "timeout": TaskTimeout,
    "locked": MsLocked,
    "no-result": UnexpectedExit,
    "exit": UnexpectedExit,
    "python-error": ChildError,
    "casa-error": CasaTaskError,
    "casa-severe": CasaSevereError,
}


_dual_classes: dict[tuple[type[ChildError], type[BaseException]], type[ChildError]] = {}
_dual_lock = threading.Lock()


def child_error_class(cls: type[ChildError], exc_type: str) -> type[ChildError]:
    """``cls``, or a cached subclass of ``cls`` and the built-in exception ``exc_type``.

    Args:
        cls: ``ChildError`` or one of its subclasses (``CasaTaskError``).
        exc_type: the remote exception's qualified name, e.g. ``builtins.RuntimeError``.

    Returns:
        A class whose instances are both ``cls`` and the built-in (e.g.
        ``CasaTaskError`` + ``RuntimeError``), or ``cls`` when ``exc_type`` is not a
        built-in ``Exception`` that can be mixed in.
    """
    module, _, name = exc_type.rpartition(".")
    base = getattr(builtins, name, None) if module == "builtins" else None
    if not isinstance(base, type) or not issubclass(base, Exception) or issubclass(cls, base):
        return cls
    key = (cls, base)
    with _dual_lock:
        if key not in _dual_classes:
            try:
                base("probe")  # UnicodeDecodeError & co. need more than a message
                dual = type(
                    f"{cls.__name__}[{base.__name__}]",
                    (cls, base),
                    # KeyError would quote the message; every casaguard error reads alike.
                    {"__module__": __name__, "__reduce__": _reduce_dual, "__str__": _str},
                )
            except TypeError:  # a base with an incompatible C layout or signature
                dual = cls
            _dual_classes[key] = dual
        return _dual_classes[key]


def _str(self: BaseException) -> str:
    return Exception.__str__(self)


def _reduce_dual(self: ChildError) -> tuple[Any, ...]:
    # A dynamic class cannot be pickled by name: rebuild it by its two bases.
    base = next(b for b in type(self).__bases__ if b.__module__ == "builtins")
    parent = next(b for b in type(self).__bases__ if issubclass(b, ChildError))
    return (_rebuild_dual, (parent, f"builtins.{base.__name__}", self.args), self.__dict__)


def _rebuild_dual(parent: type[ChildError], exc_type: str, args: tuple[Any, ...]) -> ChildError:
    return child_error_class(parent, exc_type)(*args)
