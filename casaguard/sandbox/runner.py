"""Parent side of a guarded call: start the child, wait, kill, classify, raise.

::

    caller (never imports CASA)                 child: fresh interpreter, or fork
    ---------------------------                 of the warm template (_template)
    run(spec)       timeout / lock_timeout checked; SIGTERM/SIGHUP -> like Ctrl-C
     |- MS or a subtable locked by THIS pid? MsLocked at once
     |- ... by another pid? wait up to lock_timeout, or MsLocked
     |- JobDir: request.pkl ------------------> dup2 fd 1/2 -> output.log
     |- launcher.start(job) ---spawn / fork---> read request, casalog -> casa.log
     |- wait on the child's pidfd               func(*args, **kwargs)
     |     timeout / Ctrl-C: kill the tree      reply.pkl, then os._exit(0)
     |     lock wait > lock_timeout: kill       ... or dies: SIGABRT, SIGSEGV...
     |- reply + output tail + casa.log <------
     |- classify -> value, or a CasaCrash subclass (evidence kept in crash dir)
     '- JobDir removed on every path

The runner owns process lifetime. Launchers (``SpawnLauncher`` here, the warm
template in ``_template``) only start a child and report its exit status.
Every kill the runner performs is reported as its reason (``TaskTimeout``,
``MsLocked``, ``KeyboardInterrupt`` for a cancel), never as a bare signal.
``timeout`` counts from the moment the child exists: starting the warm template
is not the task's time.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import psutil

from casaguard import casaenv, events
from casaguard.crash import classify, oom
from casaguard.crash import evidence as crashdir
from casaguard.errors import (
    EXCEPTION_FOR_KIND,
    LOCK_WAIT_KILLED,
    LOCKED_MESSAGE,
    SELF_LOCKED_MESSAGE,
    CasaCrash,
    CasaguardError,
    ChildError,
    InvalidInput,
    MsLocked,
    RemoteTraceback,
    SetupError,
    child_error_class,
)
from casaguard.ms import locks
from casaguard.sandbox import casalog
from casaguard.sandbox import jobdir as _job

log = events.get_logger()

DEFAULT_LOCK_TIMEOUT_S = 60.0
KILL_GRACE_S = 2.0
_POLL_S = 0.25
MODE_ENV = "CASAGUARD_MODE"
#: The child's reply type for "CASA could not start" (``casaguard.sandbox.child.SETUP_ERROR_TYPE``).
_SETUP_ERROR_TYPE = "casaguard.errors.SetupError"

#: Set by a batch engine (``casaguard.batch.mapping``) in the thread that drives a call:
#: once the event is set, the call kills its child tree and raises
#: KeyboardInterrupt, as on Ctrl-C. Only the main thread ever sees a real Ctrl-C.
CANCEL: ContextVar[threading.Event | None] = ContextVar("casaguard_cancel", default=None)


@dataclass
class CallSpec:
    """One guarded call.

    Attributes:
        func: callable run in the child; args / kwargs its arguments.
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
        journal: callbacks around the call (see ``casaguard.journal.hook``).
        casalog: append the call's CASA log to this file, success or failure
            (None: ``$CASAGUARD_CASALOG``, else only a failure's log is kept; see
            ``casaguard.sandbox.casalog``).
        launcher: start the child with this launcher instead of ``mode``'s
            (e.g. ``SpawnLauncher(prefix=[...setpriv...])``, or a plain command's
            launcher from ``casaguard.sandbox.command``).
    """

    func: Callable[..., Any]
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
    journal: Any = None
    casalog: str | None = None
    launcher: Launcher | None = None


class ChildHandle(Protocol):
    """A started child, as a launcher hands it to the runner."""

    pid: int
    mode: str

    def exit_status(self) -> int | None:
        """Return the exit status once the child is gone (blocking briefly), else None."""

    def kill_tree(self) -> None:
        """Kill the child and every process below it, SIGTERM then SIGKILL."""


class Launcher(Protocol):
    mode: str

    def start(self, job: _job.JobDir) -> ChildHandle:
        """Start a child that runs ``job``'s request."""


class SpawnHandle:
    """A child started as a fresh interpreter (``python -m casaguard.sandbox.child``)."""

    mode = "spawn"

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self.pid = process.pid

    def exit_status(self) -> int | None:
        try:
            return self.process.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            return None

    def kill_tree(self) -> None:
        # The root is reaped through Popen (psutil would reap it and lose the
        # status); its descendants go through psutil.
        descendants = _descendants(self.pid)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        _terminate(descendants)
        try:
            self.process.wait(timeout=KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        _reap(descendants)
        # The child led its own session: take any straggler of its group with it.
        _kill_group(self.pid)


class SpawnLauncher:
    """Start every call in a fresh interpreter: slow (~1.2 s to import CASA), simplest.

    ``prefix`` wraps the interpreter in a command that execs it (``setpriv ...``,
    ``nice``): the child keeps its pid, so waiting and killing are unchanged.
    """

    mode = "spawn"

    def __init__(self, prefix: Sequence[str] = ()) -> None:
        self.prefix = list(prefix)

    def start(self, job: _job.JobDir) -> SpawnHandle:
        command = [*self.prefix, sys.executable]
        if sys.version_info >= (3, 11):
            command.append("-P")  # never put the caller's cwd on the child's sys.path
        command += ["-m", "casaguard.sandbox.child", str(job.path), str(os.getpid())]
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=child_environment(),
            # Own session: the terminal's Ctrl-C reaches only the parent, which
            # then kills the child's whole group itself.
            start_new_session=True,
        )
        return SpawnHandle(process)


def child_environment() -> dict[str, str]:
    """The environment of a CASA child: offline CASA, and the caller's import path."""
    env = casaenv.child_environment()
    package_root = str(Path(__file__).resolve().parent.parent)
    paths = [package_root] + [p for p in sys.path if p and os.path.isdir(p)]
    existing = env.get("PYTHONPATH")
    if existing:
        paths.append(existing)
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def choose_launcher(mode: str | None, flavor: str = "casa") -> Launcher:
    """Pick the launcher for ``mode`` (argument, then ``$CASAGUARD_MODE``, then fastest).

    ``flavor`` names the warm template: ``"casa"`` (casatools) or ``"casacore"``
    (python-casacore only), for code that must never share a process with the other.
    """
    chosen = (mode or os.environ.get(MODE_ENV) or "auto").lower()
    if chosen not in ("auto", "spawn", "template"):
        raise InvalidInput(f"unknown mode {chosen!r}: use 'spawn' or 'template'")
    if chosen == "spawn":
        return SpawnLauncher()
    try:
        template = importlib.import_module("casaguard.sandbox.template")
    except ImportError:
        return SpawnLauncher()
    launcher: Launcher = template.launcher(
        fallback=SpawnLauncher(), required=chosen == "template", flavor=flavor
    )
    return launcher


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


@dataclass
class _Kill:
    """Why ``_wait`` killed the child (None of these: it exited by itself)."""

    timed_out: bool = False
    lock: locks.TableConflict | None = None
    lock_waited_s: float = 0.0
    lock_unknown: bool = False


def run(spec: CallSpec) -> Any:
    """Run ``spec`` in a child and return its value, or raise a classified CasaCrash.

    SIGTERM and SIGHUP to this process are handled like Ctrl-C while the call
    runs (from the main thread only): the child's tree is killed, a journal
    restores the MS, the job dir is removed, and then the signal's default
    action ends the process.

    Raises:
        CasaCrash: a subclass naming the crash kind (see ``casaguard.errors``).
        MsLocked: this process itself, or another one past ``lock_timeout``, holds
            a lock on ``vis`` or one of its subtables.
        InvalidInput: a bad timeout; the child rejected the input.
        KeyboardInterrupt: after the child's tree was killed and cleaned up.
    """
    check_timeouts(spec.timeout, spec.lock_timeout)
    with signals_as_interrupts():
        return _run(spec)


def _run(spec: CallSpec) -> Any:
    keep_log = casalog.target(spec.casalog) if spec.setup_casa_log else None
    if spec.vis:
        _wait_for_lock(spec)
    launcher = spec.launcher or choose_launcher(spec.mode, spec.flavor)
    job = _job.JobDir()
    snapshot = None
    try:
        job.write_request(
            _job.Request(
                func=spec.func,
                args=spec.args,
                kwargs=spec.kwargs,
                name=spec.name,
                is_casa_task=spec.is_casa_task,
                setup_casa_log=spec.setup_casa_log,
                cwd=os.getcwd(),
            )
        )
        if spec.journal is not None:
            # An unsafe CASA configuration is refused before the MS is touched
            # (the writer lock and journal), so a refused call changes nothing.
            casaenv.child_environment()
            snapshot = spec.journal.before()
        oom_before = oom.oom_kill_count()
        handle = launcher.start(job)
        # The clock starts once the child exists: a template's start-up is not the task's time.
        started = time.monotonic()
        try:
            log.info("task_started", task=spec.name, vis=spec.vis, pid=handle.pid, mode=handle.mode)
            exit_code, kill = _wait(handle, spec, started)
        except BaseException:
            # Ctrl-C can land between start() and _wait's own guard.
            handle.kill_tree()
            # The child is dead: undo its half-write before re-raising.
            if snapshot is not None:
                _restore(spec, snapshot, None)
            raise
        elapsed = time.monotonic() - started
        oom_after = oom.oom_kill_count()
        return _finish(
            spec,
            job,
            handle,
            exit_code=exit_code,
            kill=kill,
            elapsed=elapsed,
            oom_killed=bool(oom_before is not None and oom_after and oom_after > oom_before),
            snapshot=snapshot,
        )
    finally:
        if snapshot is not None:
            spec.journal.discard(snapshot)
        if keep_log is not None:
            try:
                casalog.append(keep_log, job.file(_job.CASA_LOG))
            except OSError as error:
                log.warning("casalog_not_kept", task=spec.name, casalog=keep_log, reason=str(error))
        job.close()


def _wait(handle: ChildHandle, spec: CallSpec, started: float) -> tuple[int | None, _Kill]:
    """Wait for the child; kill it on timeout, on a lock it waits for too long, or on Ctrl-C."""
    try:
        pidfd: int | None = os.pidfd_open(handle.pid)
    except (OSError, AttributeError):
        pidfd = None
    blocked_since: float | None = None
    cancel = CANCEL.get()
    try:
        while True:
            if pidfd is not None:
                wait_s = _POLL_S
                if spec.timeout is not None:
                    # Wake exactly at the deadline: a short timeout must not round up to a poll.
                    wait_s = max(0.0, min(wait_s, started + spec.timeout - time.monotonic()))
                select.select([pidfd], [], [], wait_s)
            status = handle.exit_status() if _gone(handle, pidfd) else None
            if status is not None:
                return status, _Kill()
            if cancel is not None and cancel.is_set():
                raise KeyboardInterrupt("guarded call cancelled")
            now = time.monotonic()
            if spec.timeout is not None and now - started > spec.timeout:
                handle.kill_tree()
                return handle.exit_status(), _Kill(timed_out=True)
            conflict, waiting = _lock_wait(handle, spec)
            if conflict is None and not waiting:
                blocked_since = None
                continue
            blocked_since = blocked_since or now
            if now - blocked_since > spec.lock_timeout:
                handle.kill_tree()
                kill = _Kill(lock=conflict, lock_waited_s=now - blocked_since)
                kill.lock_unknown = conflict is None
                return handle.exit_status(), kill
    except BaseException:
        # Ctrl-C or any error in the parent: the child must not outlive the call.
        handle.kill_tree()
        raise
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _lock_wait(handle: ChildHandle, spec: CallSpec) -> tuple[locks.TableConflict | None, bool]:
    """Is the child waiting for a table lock? (the conflicting lock, blocked in the kernel).

    casacore first polls for a lock without blocking (about 30 s, invisible to
    the kernel), then blocks in ``fcntl``: a conflicting lock held by anyone
    outside the child's tree counts from the first poll, so ``lock_timeout``
    holds on both phases.
    """
    if not spec.vis:
        return None, False
    child_tree = {handle.pid, *(p.pid for p in _descendants(handle.pid))}
    conflicts = locks.table_conflicts(
        spec.vis, writes=spec.may_write, written=spec.written, exclude=child_tree
    )
    waiting = bool(child_tree & locks.waiting_pids(spec.vis, subtables=True))
    return (conflicts[0] if conflicts else None), waiting


def _gone(handle: ChildHandle, pidfd: int | None) -> bool:
    if pidfd is None:
        return True  # exit_status() waits up to a second itself
    readable, _, _ = select.select([pidfd], [], [], 0)
    return bool(readable)


def _finish(
    spec: CallSpec,
    job: _job.JobDir,
    handle: ChildHandle,
    *,
    exit_code: int | None,
    kill: _Kill,
    elapsed: float,
    oom_killed: bool,
    snapshot: Any,
) -> Any:
    reply = job.read_reply()
    output = job.output_tail()
    if reply is None and exit_code == 0 and not getattr(handle, "replies", True):
        # A plain command (WSClean) writes no reply: exit 0 is its success and
        # the tail of its output its value.
        reply = _job.Reply(ok=True, value=output)
    casa_log = job.casa_log_tail()
    verdict = classify.classify(
        exit_code,
        output,
        casa_log,
        replied_ok=None if reply is None else reply.ok,
        error_text=None if reply is None or reply.ok else reply.exc_message,
        error_is_casa=spec.is_casa_task,
        timed_out=kill.timed_out,
        oom_killed=oom_killed,
        strict=spec.strict and spec.is_casa_task,
    )
    fields = {"task": spec.name, "vis": spec.vis, "pid": handle.pid, "elapsed_s": round(elapsed, 4)}
    killed_for_lock = kill.lock is not None or kill.lock_unknown
    if verdict.ok and not killed_for_lock:
        if verdict.teardown_crash:
            log.warning(
                "teardown_crash",
                **fields,
                kind=verdict.extra.get("teardown_kind"),
                signal=verdict.signal,
                detail=verdict.detail,
            )
        log.info("task_finished", **fields, outcome="ok")
        assert reply is not None
        return reply.value
    if reply is not None and not reply.ok and reply.exc_type == "casaguard.errors.InvalidInput":
        log.info("task_finished", **fields, outcome="invalid-input")
        raise InvalidInput(reply.exc_message)
    setup_failed = "setup-failed" in job.progress()
    if reply is not None and not reply.ok and reply.exc_type == _SETUP_ERROR_TYPE and setup_failed:
        # CASA never started in the child, so the task wrote nothing: no restore.
        log.info("task_finished", **fields, outcome="setup-error")
        raise SetupError(reply.exc_message)
    error = _exception(
        spec, job, handle, exit_code, verdict, reply, output, casa_log, elapsed, kill
    )
    if snapshot is not None and verdict.kind not in ("casa-severe",) and _task_started(job, handle):
        _restore(spec, snapshot, error)
    log.warning(
        "crash_classified",
        **fields,
        # "error": the task raised or logged SEVERE (a missing complist), the child lived on;
        # "crash": the child died, was killed or timed out.
        outcome="error" if isinstance(error, ChildError) else "crash",
        kind=error.kind,
        signal=error.signal,
        signature=error.signature,
        restored=error.restored,
    )
    if reply is not None and not reply.ok and reply.traceback:
        raise error from RemoteTraceback(reply.traceback)
    raise error


def _task_started(job: _job.JobDir, handle: ChildHandle) -> bool:
    """False when the child provably never ran the task (so it wrote nothing to restore).

    A plain command (WSClean) writes no progress markers: it may always have written.
    """
    if not getattr(handle, "replies", True):
        return True
    return "started" in job.progress()


def _restore(spec: CallSpec, snapshot: Any, error: CasaCrash | None) -> None:
    """Undo the dead child's writes; a failed restore raises its JournalError from the crash."""
    try:
        paths = spec.journal.restore(snapshot)
    except CasaguardError as failure:
        log.error("journal_restore_failed", task=spec.name, vis=spec.vis, reason=str(failure))
        if error is not None:
            error.extra["restore_error"] = str(failure)
            # The MS is not back: the caller must hear that first (the crash is the cause).
            raise failure from error
        return
    if error is not None:
        error.restored = True
        error.restored_paths = tuple(paths)


def _exception(
    spec: CallSpec,
    job: _job.JobDir,
    handle: ChildHandle,
    exit_code: int | None,
    verdict: classify.Verdict,
    reply: _job.Reply | None,
    output: str,
    casa_log: str,
    elapsed: float,
    kill: _Kill,
) -> CasaCrash:
    kind = "locked" if kill.lock is not None or kill.lock_unknown else verdict.kind
    facts: dict[str, Any] = {
        "kind": kind,
        "task": spec.name,
        "pid": handle.pid,
        "exit_code": exit_code,
        "signal": verdict.signal,
        "detail": verdict.detail,
        "casa_error": verdict.casa_error,
        "severe_lines": verdict.severe_lines,
        "elapsed_s": round(elapsed, 4),
        "signature": verdict.signature,
        "vis": spec.vis,
    }
    kept = crashdir.keep_evidence(
        task=spec.name,
        pid=handle.pid,
        casa_log=job.file(_job.CASA_LOG),
        output_tail=output,
        facts=facts,
    )
    facts["log_path"] = str(kept) if kept else None
    facts["stderr_tail"] = output[-8192:]
    facts["casa_log_tail"] = "\n".join(casa_log.splitlines()[-40:])
    if kind == "locked":
        return _lock_kill_error(spec, handle, kill, facts)
    exc_type = reply.exc_type if reply is not None and not reply.ok else None
    message = classify.crash_message(
        task=spec.name,
        pid=handle.pid,
        exit_code=exit_code,
        verdict=verdict,
        log_path=facts["log_path"],
        casa_log_empty=not casa_log.strip(),
        timeout_s=spec.timeout,
        exc_type=exc_type,
    )
    cls = EXCEPTION_FOR_KIND.get(kind, CasaCrash)
    if issubclass(cls, ChildError):
        if kind in ("casa-error", "python-error") and exc_type:
            # Also the remote built-in (RuntimeError...): callers' `except` clauses keep working.
            cls = child_error_class(cls, exc_type)
        return cls(
            message,
            exc_type=exc_type or "",
            exc_message=(reply.exc_message if reply is not None else "") or verdict.detail,
            original=_original_exception(reply),
            **facts,
        )
    return cls(message, **facts)


def _original_exception(reply: _job.Reply | None) -> BaseException | None:
    """Rebuild the child's exception only when that imports nothing new here.

    Unpickling a casatools exception class would import casatools into the
    caller, which is exactly what casaguard exists to prevent.
    """
    if reply is None or reply.ok or reply.exc_pickle is None:
        return None
    module = reply.exc_type.rpartition(".")[0]
    if module not in ("builtins", "__main__") and module not in sys.modules:
        return None
    try:
        import dill

        original = dill.loads(reply.exc_pickle)
    except Exception:  # noqa: BLE001 - the text and traceback are still there
        return None
    return original if isinstance(original, BaseException) else None


def _lock_kill_error(
    spec: CallSpec, handle: ChildHandle, kill: _Kill, facts: dict[str, Any]
) -> MsLocked:
    """The MsLocked for a child that was killed because it waited too long for a lock."""
    suffix = LOCK_WAIT_KILLED.format(
        task=spec.name, child_pid=handle.pid, waited_s=kill.lock_waited_s
    )
    facts["signature"] = classify.signature("locked", "lock held by another process")
    conflict = kill.lock
    if conflict is None:
        facts["detail"] = "blocked on a table lock whose holder is gone"
        return MsLocked(f"{spec.vis}: a table lock blocked the call" + suffix, **facts)
    holder = conflict.holder
    facts["detail"] = f"{holder.describe()} on {conflict.table}"
    if conflict.is_self:
        message = _self_locked_message(spec, conflict)
    else:
        message = LOCKED_MESSAGE.format(
            vis=conflict.table,
            holder_pid=holder.pid,
            holder_cmdline=holder.cmdline,
            waited_s=kill.lock_waited_s,
        )
    return MsLocked(
        message + suffix,
        holder_pid=holder.pid,
        holder_cmdline=holder.cmdline,
        lock_type=holder.lock_type,
        **facts,
    )


def _self_locked_message(spec: CallSpec, conflict: locks.TableConflict) -> str:
    return SELF_LOCKED_MESSAGE.format(
        task=spec.name or "call",
        pid=conflict.holder.pid,
        lock_type=conflict.holder.lock_type.upper(),
        table=conflict.table,
    )


def _wait_for_lock(spec: CallSpec) -> None:
    """Refuse at once a lock this process holds; wait up to lock_timeout for another's.

    A lock held by this very process (a ``casacore.tables.table`` it still has
    open) would block the child forever, since the caller waits for the child:
    it is reported before any child starts.

    Raises:
        MsLocked: this process holds a conflicting lock on the MS or a subtable,
            or another process still does after ``lock_timeout``.
    """
    assert spec.vis is not None
    deadline = time.monotonic() + spec.lock_timeout
    started = time.monotonic()
    announced = False
    while True:
        conflicts = locks.table_conflicts(spec.vis, writes=spec.may_write, written=spec.written)
        if not conflicts:
            return
        conflict = conflicts[0]
        holder = conflict.holder
        signature = classify.signature("locked", "lock held by another process")
        if conflict.is_self:
            raise MsLocked(
                _self_locked_message(spec, conflict),
                holder_pid=holder.pid,
                holder_cmdline=holder.cmdline,
                lock_type=holder.lock_type,
                task=spec.name,
                vis=spec.vis,
                detail=f"{holder.describe()} on {conflict.table} (this process)",
                elapsed_s=0.0,
                signature=classify.signature("locked", "lock held by this process"),
            )
        if not announced:
            log.warning(
                "lock_wait",
                task=spec.name,
                vis=spec.vis,
                table=str(conflict.table),
                holder_pid=holder.pid,
                holder_cmdline=holder.cmdline,
                lock_type=holder.lock_type,
                lock_timeout_s=spec.lock_timeout,
            )
            announced = True
        if time.monotonic() >= deadline:
            waited = time.monotonic() - started
            raise MsLocked(
                LOCKED_MESSAGE.format(
                    vis=conflict.table,
                    holder_pid=holder.pid,
                    holder_cmdline=holder.cmdline,
                    waited_s=waited,
                ),
                holder_pid=holder.pid,
                holder_cmdline=holder.cmdline,
                lock_type=holder.lock_type,
                task=spec.name,
                vis=spec.vis,
                detail=f"{holder.describe()} on {conflict.table}",
                elapsed_s=round(waited, 4),
                signature=signature,
            )
        time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))


#: The signals a batch scheduler or a terminal sends to stop a job (``timeout(1)``,
#: Slurm, Kubernetes: SIGTERM; a closed terminal or ssh session: SIGHUP).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class CallerSignalled(BaseException):
    """Raised in the main thread when SIGTERM/SIGHUP arrives during a guarded call.

    A ``BaseException``, like KeyboardInterrupt, so that ``except Exception``
    in between cannot swallow it; ``signals_as_interrupts`` turns it back into
    the signal's default action once the call has cleaned up.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(f"guarded call interrupted by {signal.Signals(signum).name}")
        self.signum = signum


_signal_depth = 0


@contextlib.contextmanager
def signals_as_interrupts() -> Iterator[None]:
    """While the block runs, SIGTERM and SIGHUP stop it the way Ctrl-C does.

    Only in the main thread (the only one Python delivers signals to) and only
    for a signal whose handler is the default: a handler the application
    installed (or SIG_IGN, e.g. under ``nohup``) is left alone -- if it raises,
    the call cleans up as on Ctrl-C. On the first such signal the block gets
    ``CallerSignalled`` (the child tree is killed, the journal restores the MS,
    the job dir is removed by the block's own cleanup); then the previous
    handlers are back and the signal is re-sent, so the process ends with the
    signal's status, as it would have without casaguard. Re-entrant: an inner
    call inside an outer block (a batch) installs nothing.
    """
    global _signal_depth
    if threading.current_thread() is not threading.main_thread() or _signal_depth:
        yield
        return
    previous: dict[int, Any] = {}
    received: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        received.append(signum)
        if len(received) == 1:  # a second signal must not interrupt the cleanup
            raise CallerSignalled(signum)

    for signum in STOP_SIGNALS:
        current = signal.getsignal(signum)
        if current == signal.SIG_DFL:
            previous[signum] = current
            signal.signal(signum, handler)
    _signal_depth += 1
    try:
        yield
    except CallerSignalled as caught:
        _restore_handlers(previous)
        log.warning("caller_signalled", signal=signal.Signals(caught.signum).name)
        os.kill(os.getpid(), caught.signum)  # default action: the process ends here
        raise  # only if the signal did not end the process
    finally:
        _signal_depth -= 1
        _restore_handlers(previous)
        if received and not isinstance(sys.exc_info()[1], CallerSignalled):
            # A signal that landed after the block had finished its work still ends the process.
            os.kill(os.getpid(), received[0])


def _restore_handlers(previous: dict[int, Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def kill_tree(pid: int, grace: float = KILL_GRACE_S) -> None:
    """SIGTERM ``pid`` and all its descendants, then SIGKILL what is left after ``grace``."""
    try:
        root = psutil.Process(pid)
    except psutil.Error:
        return
    procs = [root, *_descendants(pid)]
    _terminate(procs)
    _reap(procs, grace)


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return list(psutil.Process(pid).children(recursive=True))
    except psutil.Error:
        return []


def _terminate(procs: list[psutil.Process]) -> None:
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGTERM)


def _reap(procs: list[psutil.Process], grace: float = KILL_GRACE_S) -> None:
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=grace)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
