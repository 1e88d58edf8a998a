"""Parent side of a guarded call: start the child, wait, kill, classify, raise.

::

    caller (never imports CASA)                 child: fresh interpreter, or fork
    ---------------------------                 of the warm template (_template)
    run(spec)
     |- MS locked by another pid? wait, or MsLocked
     |- JobDir: request.pkl ------------------> dup2 fd 1/2 -> output.log
     |- launcher.start(job) ---spawn / fork---> read request, casalog -> casa.log
     |- wait on the child's pidfd               func(*args, **kwargs)
     |     timeout / Ctrl-C: kill the tree      reply.pkl, then os._exit(0)
     |     child blocked on a lock: kill        ... or dies: SIGABRT, SIGSEGV...
     |- reply + output tail + casa.log <------
     |- classify -> value, or a CasaCrash subclass (evidence kept in crash dir)
     '- JobDir removed on every path

The runner owns process lifetime. Launchers (``SpawnLauncher`` here, the warm
template in ``_template``) only start a child and report its exit status.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import psutil

from casaguard import _job, casaenv, casalog, classify, crashdir, events, locks, oom
from casaguard.errors import (
    EXCEPTION_FOR_KIND,
    LOCKED_MESSAGE,
    CasaCrash,
    CasaguardError,
    ChildError,
    InvalidInput,
    MsLocked,
    RemoteTraceback,
)

log = events.get_logger()

DEFAULT_LOCK_TIMEOUT_S = 60.0
KILL_GRACE_S = 2.0
_POLL_S = 0.25
MODE_ENV = "CASAGUARD_MODE"

#: Set by a batch engine (``casaguard.batch``) in the thread that drives a call:
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
        timeout: seconds before the child's tree is killed (None: no limit).
        lock_timeout: seconds to wait for another process's lock on ``vis``.
        strict: a normal return with SEVERE lines raises CasaSevereError.
        mode: ``"spawn"``, ``"template"`` or None (``$CASAGUARD_MODE``, then the fastest).
        journal: callbacks around the call (see ``casaguard.journal``).
        casalog: append the call's CASA log to this file, success or failure
            (None: ``$CASAGUARD_CASALOG``, else only a failure's log is kept; see
            ``casaguard.casalog``).
        launcher: start the child with this launcher instead of ``mode``'s
            (e.g. ``SpawnLauncher(prefix=[...setpriv...])``, or a plain command's
            launcher from ``casaguard.command``).
    """

    func: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    is_casa_task: bool = False
    setup_casa_log: bool = True
    vis: str | None = None
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
    """A child started as a fresh interpreter (``python -m casaguard._child``)."""

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
        command += ["-m", "casaguard._child", str(job.path), str(os.getpid())]
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
        template = importlib.import_module("casaguard._template")
    except ImportError:
        return SpawnLauncher()
    launcher: Launcher = template.launcher(
        fallback=SpawnLauncher(), required=chosen == "template", flavor=flavor
    )
    return launcher


def run(spec: CallSpec) -> Any:
    """Run ``spec`` in a child and return its value, or raise a classified CasaCrash.

    Raises:
        CasaCrash: a subclass naming the crash kind (see ``casaguard.errors``).
        InvalidInput: the child rejected the input (unknown task, bad parameter).
        KeyboardInterrupt: after the child's tree was killed and cleaned up.
    """
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
            snapshot = spec.journal.before()
        oom_before = oom.oom_kill_count()
        started = time.monotonic()
        handle = launcher.start(job)
        try:
            log.info("task_started", task=spec.name, vis=spec.vis, pid=handle.pid, mode=handle.mode)
            exit_code, timed_out, lock_holder = _wait(handle, spec, started)
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
            timed_out=timed_out,
            lock_holder=lock_holder,
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


def _wait(
    handle: ChildHandle, spec: CallSpec, started: float
) -> tuple[int | None, bool, locks.LockHolder | None]:
    """Wait for the child; kill it on timeout, on a lock it cannot get, or on Ctrl-C."""
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
                return status, False, None
            if cancel is not None and cancel.is_set():
                raise KeyboardInterrupt("guarded call cancelled")
            now = time.monotonic()
            if spec.timeout is not None and now - started > spec.timeout:
                handle.kill_tree()
                return handle.exit_status(), True, None
            if spec.vis and handle.pid in locks.waiting_pids(spec.vis):
                blocked_since = blocked_since or now
                if now - blocked_since > spec.lock_timeout:
                    holder = locks.blocking_holder(spec.vis)
                    handle.kill_tree()
                    return handle.exit_status(), False, holder
            else:
                blocked_since = None
    except BaseException:
        # Ctrl-C or any error in the parent: the child must not outlive the call.
        handle.kill_tree()
        raise
    finally:
        if pidfd is not None:
            os.close(pidfd)


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
    timed_out: bool,
    lock_holder: locks.LockHolder | None,
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
        timed_out=timed_out,
        oom_killed=oom_killed,
        strict=spec.strict and spec.is_casa_task,
    )
    fields = {"task": spec.name, "vis": spec.vis, "pid": handle.pid, "elapsed_s": round(elapsed, 4)}
    if verdict.ok and lock_holder is None:
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
    error = _exception(
        spec, job, handle, exit_code, verdict, reply, output, casa_log, elapsed, lock_holder
    )
    if snapshot is not None and verdict.kind not in ("casa-severe",):
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


def _restore(spec: CallSpec, snapshot: Any, error: CasaCrash | None) -> None:
    """Undo the dead child's writes; a failed restore is reported, never raised over the crash."""
    try:
        paths = spec.journal.restore(snapshot)
    except CasaguardError as failure:
        log.error("journal_restore_failed", task=spec.name, vis=spec.vis, reason=str(failure))
        if error is not None:
            error.extra["restore_error"] = str(failure)
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
    lock_holder: locks.LockHolder | None,
) -> CasaCrash:
    kind = "locked" if lock_holder is not None else verdict.kind
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
    if lock_holder is not None:
        message = (
            LOCKED_MESSAGE.format(
                vis=spec.vis,
                holder_pid=lock_holder.pid,
                holder_cmdline=lock_holder.cmdline,
                waited_s=spec.lock_timeout,
            )
            + f"; {spec.name} (pid {handle.pid}) was blocked on it and was killed"
        )
        facts["detail"] = lock_holder.describe()
        facts["signature"] = classify.signature("locked", "lock held by another process")
        return MsLocked(
            message,
            holder_pid=lock_holder.pid,
            holder_cmdline=lock_holder.cmdline,
            lock_type=lock_holder.lock_type,
            **facts,
        )
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


def _wait_for_lock(spec: CallSpec) -> None:
    """Wait while another process holds the MS's lock; raise MsLocked past lock_timeout."""
    assert spec.vis is not None
    deadline = time.monotonic() + spec.lock_timeout
    started = time.monotonic()
    announced = False
    while True:
        holder = locks.blocking_holder(spec.vis)
        if holder is None:
            return
        if not announced:
            log.warning(
                "lock_wait",
                task=spec.name,
                vis=spec.vis,
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
                    vis=spec.vis,
                    holder_pid=holder.pid,
                    holder_cmdline=holder.cmdline,
                    waited_s=waited,
                ),
                holder_pid=holder.pid,
                holder_cmdline=holder.cmdline,
                lock_type=holder.lock_type,
                task=spec.name,
                vis=spec.vis,
                detail=holder.describe(),
                elapsed_s=round(waited, 4),
                signature=classify.signature("locked", "lock held by another process"),
            )
        time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))


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
