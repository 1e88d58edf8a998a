"""Parent side of a guarded call: start the child, wait, kill, classify, raise.

::

    caller (never imports CASA)                 child: fresh interpreter, or fork
    ---------------------------                 of the warm template (template/)
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

The runner owns process lifetime. Launchers (``spawn.SpawnLauncher``, the warm
template's ``template.client``; ``launchers`` picks one) only start a child and
report its exit status.
Every kill the runner performs is reported as its reason (``TaskTimeout``,
``MsLocked``, ``KeyboardInterrupt`` for a cancel), never as a bare signal.
``timeout`` counts from the moment the child exists: starting the warm template
is not the task's time.
"""

from __future__ import annotations

import os
import select
import time
from typing import Any

from casaguard import casaenv, events
from casaguard.crash import classify, oom
from casaguard.errors import (
    CasaCrash,
    CasaguardError,
    ChildError,
    InvalidInput,
    RemoteTraceback,
    SetupError,
)
from casaguard.sandbox import casalog
from casaguard.sandbox import jobdir as _job
from casaguard.sandbox.callspec import (
    CANCEL,
    CallSpec,
    ChildHandle,
    check_timeouts,
)
from casaguard.sandbox.failure import failure_exception
from casaguard.sandbox.launchers import choose_launcher
from casaguard.sandbox.lockwait import _Kill, _lock_wait, _wait_for_lock
from casaguard.sandbox.signals import signals_as_interrupts

log = events.get_logger()

_POLL_S = 0.25


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
        if spec.func is not None:
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
        done = job.open_done()
        try:
            handle = launcher.start(job)
        except BaseException:
            os.close(done)
            raise
        # The clock starts once the child exists: a template's start-up is not the task's time.
        started = time.monotonic()
        try:
            log.info("task_started", task=spec.name, vis=spec.vis, pid=handle.pid, mode=handle.mode)
            exit_code, kill = _wait(handle, spec, started, done)
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
        if snapshot is not None and spec.journal is not None:
            spec.journal.discard(snapshot)
        if keep_log is not None:
            try:
                casalog.append(keep_log, job.file(_job.CASA_LOG))
            except OSError as error:
                log.warning("casalog_not_kept", task=spec.name, casalog=keep_log, reason=str(error))
        job.close()


def _wait(
    handle: ChildHandle, spec: CallSpec, started: float, done: int
) -> tuple[int | None, _Kill]:
    """Wait for the child; kill it on timeout, on a lock it waits for too long, or on Ctrl-C.

    ``done`` is the job's FIFO (owned, and closed, here): a child that replied,
    tore down and holds no table lock says so on it, and a handle that can let
    go of its child (a template fork) counts as a clean exit then.
    """
    try:
        pidfd: int | None = os.pidfd_open(handle.pid)
    except (OSError, AttributeError):
        pidfd = None
    listening: list[int] = [done] if pidfd is not None else []
    blocked_since: float | None = None
    cancel = CANCEL.get()
    try:
        while True:
            if pidfd is not None:
                wait_s = _POLL_S
                if spec.timeout is not None:
                    # Wake exactly at the deadline: a short timeout must not round up to a poll.
                    wait_s = max(0.0, min(wait_s, started + spec.timeout - time.monotonic()))
                readable, _, _ = select.select([pidfd, *listening], [], [], wait_s)
                if done in readable:
                    said_done = _read_done(done)
                    listening = []  # said it, or closed without saying: either way, once
                    if said_done and handle.detach():
                        return _job.EXIT_REPLIED, _Kill()
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
        os.close(done)
        if pidfd is not None:
            os.close(pidfd)


def _read_done(done: int) -> bool:
    try:
        return os.read(done, 1) == b"d"
    except BlockingIOError:
        return False


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
    if reply is None and exit_code == 0 and not handle.replies:
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
    if (
        reply is not None
        and not reply.ok
        and reply.exc_type == _job.SETUP_ERROR_TYPE
        and setup_failed
    ):
        # CASA never started in the child, so the task wrote nothing: no restore.
        log.info("task_finished", **fields, outcome="setup-error")
        raise SetupError(reply.exc_message)
    error = failure_exception(
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
    if not handle.replies:
        return True
    return "started" in job.progress()


def _restore(spec: CallSpec, snapshot: Any, error: CasaCrash | None) -> None:
    """Undo the dead child's writes; a failed restore raises its JournalError from the crash."""
    assert spec.journal is not None  # only a journal takes a snapshot
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
