"""The warm template: one process that imported CASA once and forks a fresh child per call.

A fresh interpreter pays ~1.2-1.9 s to import casatools and casatasks; ``ft``
on a small MS takes ~20 ms. The template pays the import once, never runs a
task itself, and ``fork``s a child per guarded call, so every call still
starts from the template's pristine heap and dies alone::

    caller process                      template                        fork (one per call)
    (never imports CASA)                python -P -c casaguard.sandbox.template
    --------------------                ---------------------------     -------------------
    keeper thread: Popen ------------>  pdeathsig; import casatools,
      (own session)                     casatasks; OpenMP -> 1 thread;
                                        gc.freeze()
      <--------------------- {"ready"}  fork the spare ahead of time -->  setsid, name, pdeathsig,
                                        (first idle 0.5 s: warm-up,        "!", then waits for a job
                                         a warm spare replaces it)
    run(): JobDir request.pkl
    {"op":"fork", job, env} -------->   job -> the spare's pipe ------->  environ = caller's, dup2
                                        wait "!" <=5 s <-------- "!" --  fd 1/2 -> output.log,
      <------------ {"id", pid, alive}  (silent? SIGKILL it,             OpenMP threads = caller's;
    wait on pidfd_open(pid)              answer alive=false: the          run_job(): reply.pkl,
                                         caller spawns instead)           os._exit / or crashes
                                        fork the next spare (the caller
                                        no longer waits on it)
                                        SIGCHLD: waitpid
      <-------------- {"exit", status}
    statuses routed by pid to the waiting thread

The spare takes the fork itself (~12-40 ms for a 300 MB template) off the
call's critical path; with no spare ready (a second call at once, a spare that
died idle) the template forks on the spot, as the diagram's right column does
after the fork. The warm-up (``_warm``) takes CASA's first-use work off every
fork's first task; OpenMP is why the template runs it single-threaded (see
``_settle_openmp_in_template``).

Fork safety. casatools starts gRPC threads at import (``default-executo``,
``resolver-execut``, ``grpc_global_tim``, ``grpcpp_sync_ser``), and forking a
multi-threaded process copies any lock another thread held at that instant,
held forever. We fork anyway, because in practice the fork never touches what
those threads lock: glibc's ``fork`` takes and re-initialises every malloc
arena lock (so the heap is consistent in the child), CPython re-initialises
the GIL, import lock and threading state after ``os.fork``, and the child
never calls into gRPC; it runs one task and leaves through ``os._exit``
without running a single C++ destructor. ``bench/bench_isolation.py`` shows
it: 1,000 consecutive guarded calls through the template, each under a
timeout, none hung. The residual risk is bounded, not ignored: the fork must
say "alive" on a pipe within ``HANDSHAKE_S`` (after its output is redirected
and its parent-death signal armed); a fork that does not is SIGKILLed and
that call runs in a fresh spawned interpreter instead, with a
``template_fork_unresponsive`` event; a stall after the handshake is a hang
like any other, ended by the call's ``timeout``. The alternatives cost more than they
save: forking before the threads start means forking before CASA is imported
(no speed-up), and a template that re-execs is a spawn.

Lifetime. The template starts lazily on the first call in template mode (or
``warmup()``), from a dedicated keeper thread, so its parent-death signal is
tied to a thread that lives as long as the caller process (PR_SET_PDEATHSIG
fires when the *thread* that forked a process exits). It exits when its
control socket reaches EOF or its parent dies, and its forks die with it. If
it dies, the next call starts a new one; while it cannot be started, calls
fall back to spawn mode with a ``template_fallback`` event (or raise
``SetupError`` when ``mode="template"`` was asked for explicitly).

What the template holds of the caller: nothing. It is started with
``python -P -c "import casaguard.sandbox.template ..."`` (no caller cwd on
``sys.path``, no ``__main__`` re-run) and imports only casatools, casatasks
and casaguard's child modules. It never imports python-casacore, and its
forks refuse to (``ImportError``, ``CASACORE_IN_TEMPLATE``): they hold
casatools, and the two must never share a process -- such calls use the
second flavor of template, ``flavor="casacore"`` (``FLAVORS``): a process that
imported python-casacore and refuses casatools, which serves the probe's static
child (a fork instead of a fresh interpreter importing numpy and casacore), or
``mode="spawn"``. Each fork takes the caller's current environment and import
path from the fork request and the caller's cwd from the job's request, so a
call sees what a spawned child would (except variables CASA read at import).
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

import psutil

from casaguard import casaenv, events
from casaguard.errors import SetupError
from casaguard.sandbox import callspec, procs, spawn
from casaguard.sandbox import jobdir as _job
from casaguard.sandbox.flavors import (
    FLAVORS,
    HANDSHAKE_S,
    RETRY_AFTER_S,
    SCRATCH_PREFIX,
    START_TIMEOUT_S,
)

log = events.get_logger()


#: What the template's interpreter runs (``python -P -c TEMPLATE_CODE FD PID``).
TEMPLATE_CODE = "import casaguard.sandbox.template_server as t; t.main()"

TEMPLATE_UNAVAILABLE = "the warm template cannot serve calls: {reason}"


class TemplateUnavailable(Exception):
    """The template cannot serve this call; the reason is the message."""


class TemplateSetupFailed(TemplateUnavailable):
    """CASA could not start with this configuration: a spawned child would fail alike."""


# ---------------------------------------------------------------- caller side


class _Template:
    """One running template process, seen from the caller; thread-safe."""

    def __init__(self, env: dict[str, str], flavor: str = "casa") -> None:
        self.env = env
        self.flavor = flavor
        self.site_config = env.get(casaenv.SITE_CONFIG_ENV, "")
        self.pid = 0
        self.failure = ""
        self.exit_code: int | None = None
        #: The one-line cause when CASA could not start with this configuration.
        self.setup_error = ""
        self._ready = False
        self._warm = False
        self.announced = False
        self._dead = False
        self._closing = False
        self._sock: socket.socket | None = None
        self._process: subprocess.Popen[bytes] | None = None
        # The template's stderr: anonymous, so it cannot leak a temp file.
        self._stderr: IO[bytes] = tempfile.TemporaryFile(prefix="casaguard-template-")  # noqa: SIM115
        self._send_lock = threading.Lock()
        self._cond = threading.Condition()
        self._ids = itertools.count(1)
        self._replies: dict[int, dict[str, Any]] = {}
        self._statuses: dict[int, int] = {}
        self._thread = threading.Thread(target=self._keep, name="casaguard-template", daemon=True)
        self._thread.start()

    @property
    def dead(self) -> bool:
        process = self._process
        return self._dead or (process is not None and process.poll() is not None)

    def await_death(self, timeout: float) -> None:
        """Give the keeper thread ``timeout`` s to notice an exit, then stop the template."""
        with self._cond:
            self._cond.wait_for(lambda: self._dead, timeout)
        if not self._dead:
            self.close()

    def wait_ready(self, timeout: float) -> bool:
        """Block until the template has imported CASA (True), or died / timed out (False)."""
        with self._cond:
            self._cond.wait_for(lambda: self._ready or self._dead, timeout)
            if not self._ready and not self._dead:
                self.failure = f"not ready after {timeout:.0f} s"
            return self._ready and not self._dead

    def wait_warm(self, timeout: float) -> bool:
        """Block until the template has warmed itself (True), or died / timed out (False)."""
        with self._cond:
            self._cond.wait_for(lambda: self._warm or self._dead, timeout)
            return self._warm and not self._dead

    def fork(self, job: Path, env: dict[str, str]) -> tuple[int, bool]:
        """Ask for a fork running ``job``; return (pid, alive).

        Raises:
            TemplateUnavailable: the template is gone or did not answer.
        """
        request_id = next(self._ids)
        message = {"op": "fork", "id": request_id, "job": str(job), "env": env}
        self._send(message)
        with self._cond:
            answered = self._cond.wait_for(
                lambda: request_id in self._replies or self._dead, HANDSHAKE_S + 10.0
            )
            reply = self._replies.pop(request_id, None)
        if reply is None:
            reason = self.failure or ("no answer to a fork request" if not answered else "exited")
            if not self._dead:
                self.close()  # wedged: the next call starts a new template
            raise TemplateUnavailable(reason)
        return int(reply["pid"]), bool(reply["alive"])

    def exit_status(self, pid: int, timeout: float) -> int | None:
        """The raw exit status of fork ``pid`` (negative: signal), once the template reaped it."""
        with self._cond:
            self._cond.wait_for(lambda: pid in self._statuses or self._dead, timeout)
            if pid in self._statuses:
                return self._statuses.pop(pid)
        # The template died: its forks got SIGKILL from their parent-death signal,
        # and someone else (init) reaps them.
        return None if _running(pid) else -signal.SIGKILL

    def close(self) -> None:
        """Stop the template: EOF on its control socket, then SIGKILL if it lingers."""
        self._closing = True
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        process = self._process
        if process is not None:
            try:
                process.wait(timeout=callspec.KILL_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._thread.join(timeout=callspec.KILL_GRACE_S)

    def stderr_tail(self, limit: int = 2000) -> str:
        with contextlib.suppress(OSError, ValueError):
            self._stderr.seek(0, os.SEEK_END)
            size = self._stderr.tell()
            self._stderr.seek(max(0, size - limit))
            return self._stderr.read().decode("utf-8", errors="replace").strip()
        return ""

    def _send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message).encode() + b"\n"
        with self._send_lock:
            if self._sock is None or self._dead:
                raise TemplateUnavailable(self.failure or "exited")
            try:
                self._sock.sendall(data)
            except OSError as error:
                raise TemplateUnavailable(f"control socket: {error}") from None

    def _keep(self) -> None:
        """Start the template from this thread and read its messages until EOF."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # -c rather than -m: the package __init__ imports this module, and runpy
        # would then run a second copy of it as __main__.
        command = [sys.executable, "-P", "-c", TEMPLATE_CODE]
        command += [str(theirs.fileno()), str(os.getpid()), self.flavor]
        # casatools writes casa-<date>.log into its cwd at import, whatever the
        # site config says: give it a scratch dir (the template removes it once
        # warm), never the caller's cwd.
        scratch = tempfile.mkdtemp(prefix=SCRATCH_PREFIX)
        try:
            self._process = subprocess.Popen(
                command,
                cwd=scratch,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=self._stderr,
                env=self.env,
                pass_fds=(theirs.fileno(),),
                # Own session: the terminal's Ctrl-C goes to the caller only.
                start_new_session=True,
            )
        except OSError as error:
            ours.close()
            shutil.rmtree(scratch, ignore_errors=True)
            self._set_dead(f"cannot start: {error}")
            return
        finally:
            theirs.close()
        self.pid = self._process.pid
        self._sock = ours
        try:
            with ours.makefile("rb") as lines:
                for line in lines:
                    self._dispatch(json.loads(line))
        except (OSError, ValueError):
            pass
        try:
            code = self._process.wait(timeout=callspec.KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            self._process.kill()
            code = self._process.wait()
        self.exit_code = code
        ours.close()
        shutil.rmtree(scratch, ignore_errors=True)
        tail = self.stderr_tail()
        self._stderr.close()
        self._set_dead(f"exited with status {code}" + (f": {tail}" if tail else ""))
        event = log.info if self._closing or self.setup_error else log.warning
        event("template_exited", pid=self.pid, exit_code=code, stderr_tail=tail[-500:] or None)

    def _dispatch(self, message: dict[str, Any]) -> None:
        with self._cond:
            if "exit" in message:
                self._statuses[int(message["exit"])] = int(message["status"])
            elif "id" in message:
                # A fork reply for pid P comes after the exit of any earlier P: drop
                # a status nobody collected, so a reused pid never reads it.
                self._statuses.pop(int(message["pid"]), None)
                self._replies[int(message["id"])] = message
            elif "ready" in message:
                self._ready = True
            elif "setup_error" in message:
                self.failure = self.setup_error = str(message["setup_error"])
            elif "warm" in message:
                self._warm = True
                log.debug("template_warm", pid=self.pid, warm_s=message.get("warm_s"))
            self._cond.notify_all()

    def _set_dead(self, reason: str) -> None:
        with self._cond:
            self._dead = True
            self.failure = self.failure or reason
            self._cond.notify_all()


class TemplateHandle:
    """A fork of the template, as the runner waits on it."""

    mode = "template"

    def __init__(self, template: _Template, pid: int) -> None:
        self.template = template
        self.pid = pid
        self._status: int | None = None

    def exit_status(self) -> int | None:
        if self._status is None:
            self._status = self.template.exit_status(self.pid, timeout=1.0)
        return self._status

    def kill_tree(self) -> None:
        # The fork leads its own session, so its group holds any straggler too.
        procs.kill_tree(self.pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        deadline = time.monotonic() + callspec.KILL_GRACE_S
        while self.exit_status() is None and time.monotonic() < deadline:
            pass


class TemplateLauncher:
    """Start each call as a fork of the warm template; fall back to ``fallback``."""

    mode = "template"

    def __init__(self, fallback: callspec.Launcher, required: bool, flavor: str = "casa") -> None:
        self.fallback = fallback
        self.required = required
        self.flavor = flavor

    def start(self, job: _job.JobDir) -> callspec.ChildHandle:
        """Fork the template for ``job`` (starting it if needed), or spawn.

        Raises:
            SetupError: ``required`` and the template cannot be started.
        """
        env = spawn.child_environment()
        failure = ""
        # Twice: a template that died since the last call is replaced once.
        for _ in range(2):
            try:
                template = _current_template(env, self.flavor)
            except TemplateUnavailable as error:
                if self.required:
                    # CASA's own one line when its configuration is the cause.
                    setup = isinstance(error, TemplateSetupFailed)
                    reason = str(error) if setup else TEMPLATE_UNAVAILABLE.format(reason=error)
                    raise SetupError(reason) from None
                # A spawned child still serves calls that need no CASA (casa=False);
                # one that needs CASA replies with the same SetupError line.
                return self._fall_back(job, str(error))
            try:
                pid, alive = template.fork(job.path, env)
                break
            except TemplateUnavailable as error:
                failure = str(error)
                template.await_death(callspec.KILL_GRACE_S)
        else:
            return self._fall_back(job, failure)
        if not alive and pid == 0:
            return self._fall_back(job, "fork failed in the template")
        if not alive:
            log.warning(
                "template_fork_unresponsive",
                template_pid=template.pid,
                pid=pid,
                after_s=HANDSHAKE_S,
            )
            # The fork may have opened its output file before it stalled.
            for name in (_job.OUTPUT, _job.PROGRESS):
                job.file(name).unlink(missing_ok=True)
            return self._fall_back(job, "fork did not answer")
        return TemplateHandle(template, pid)

    def _fall_back(self, job: _job.JobDir, reason: str) -> callspec.ChildHandle:
        log.warning("template_fallback", reason=reason, mode=self.fallback.mode)
        return self.fallback.start(job)


_lock = threading.Lock()
#: flavor -> the running template, when to retry after a failed start, and why it failed.
_templates: dict[str, _Template] = {}
_retry_at: dict[str, float] = {}
_last_failure: dict[str, str] = {}


def _current_template(env: dict[str, str], flavor: str = "casa", wait: bool = True) -> _Template:
    """The running template of ``flavor``, started (or restarted) if needed.

    Args:
        wait: block until it is ready (else return it while it still imports CASA).

    Raises:
        TemplateUnavailable: it cannot start, or failed to recently.
    """
    with _lock:
        template = _templates.get(flavor)
        site_config = env.get(casaenv.SITE_CONFIG_ENV, "")
        if template is not None and (template.dead or template.site_config != site_config):
            if not template.dead:
                # CASA read its site config at import: a new one needs a new template.
                log.info("template_restart", pid=template.pid, reason="CASASITECONFIG changed")
                template.close()
            _templates.pop(flavor, None)
            template = None
        if template is None:
            if time.monotonic() < _retry_at.get(flavor, 0.0):
                raise TemplateUnavailable(_last_failure.get(flavor, ""))
            template = _templates[flavor] = _Template(env, flavor)
            log.info("template_starting", flavor=flavor)
    if not wait:
        return template
    started = time.monotonic()
    if template.wait_ready(START_TIMEOUT_S):
        if not template.announced:
            template.announced = True
            waited = round(time.monotonic() - started, 3)
            log.info("template_ready", pid=template.pid, wait_s=waited)
        return template
    with _lock:
        if _templates.get(flavor) is template:
            del _templates[flavor]
            _retry_at[flavor] = time.monotonic() + RETRY_AFTER_S
            _last_failure[flavor] = template.failure
    template.close()
    if template.setup_error:
        raise TemplateSetupFailed(template.setup_error)
    raise TemplateUnavailable(template.failure)


def launcher(
    fallback: callspec.Launcher, required: bool = False, flavor: str = "casa"
) -> callspec.Launcher:
    """The template launcher (``runner.choose_launcher`` calls this).

    Args:
        fallback: the launcher used when the template cannot serve a call.
        required: raise ``SetupError`` instead of falling back when it cannot start.
        flavor: ``"casa"`` (casatools) or ``"casacore"`` (python-casacore); see FLAVORS.
    """
    if flavor not in FLAVORS:
        raise SetupError(f"unknown template flavor {flavor!r}: use one of {sorted(FLAVORS)}")
    return TemplateLauncher(fallback, required, flavor)


def warmup(timeout: float = START_TIMEOUT_S, *, wait: bool = True) -> int | None:
    """Start the warm template now, so the first guarded call does not pay CASA's import.

    Use it where a process starts that will make guarded calls: a
    ``multiprocessing.Pool`` initializer (``Pool(4,
    initializer=functools.partial(casaguard.warmup, wait=False))`` starts each
    worker's template in the background; ``map_task`` on Dask installs a worker
    plugin that does the same in every worker, see
    ``casaguard.batch.engines.warmup_plugin``). A worker forked
    from a process that already had a template never shares it: after ``fork``
    the worker starts its own.

    Once ready, the template also warms itself in its first idle moment (see
    ``WARM_ENV``): it runs ``ft`` and ``clearcal`` once on a scratch MS, so
    every later fork starts with CASA's first-use work already done.

    Does nothing when ``$CASAGUARD_MODE`` is ``spawn``.

    Args:
        timeout: seconds to wait for the template to import CASA.
        wait: False returns at once and lets the template start in the background
            (a failure then shows at the first call, which falls back to spawn).

    Returns:
        The template's pid (0 while it starts in the background), or None in spawn mode.

    Raises:
        SetupError: the template could not start (only with ``wait=True``).
    """
    if (os.environ.get(callspec.MODE_ENV) or "").lower() == "spawn":
        return None
    try:
        template = _current_template(spawn.child_environment(), wait=wait)
    except TemplateUnavailable as error:
        raise SetupError(TEMPLATE_UNAVAILABLE.format(reason=error)) from None
    if not wait:
        return template.pid
    if not template.wait_ready(timeout):
        raise SetupError(TEMPLATE_UNAVAILABLE.format(reason=template.failure))
    return template.pid


def template_pid(flavor: str = "casa") -> int | None:
    """The pid of the running template of ``flavor``, or None."""
    template = _templates.get(flavor)
    return template.pid if template is not None and not template.dead else None


def shutdown() -> None:
    """Stop the templates (they also stop by themselves when this process exits)."""
    with _lock:
        templates = list(_templates.values())
        _templates.clear()
        _retry_at.clear()
    for template in templates:
        template.close()


def _forget_after_fork() -> None:
    # A fork of the caller (a multiprocessing worker) must never send on, or read
    # from, its parent's control sockets: it starts templates of its own. Closing
    # its copies also lets the parent's template see EOF when the parent exits.
    global _lock
    for template in _templates.values():
        sock = template._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()  # this copy only: no shutdown, the parent's stays open
    _templates.clear()
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)
atexit.register(shutdown)


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


# -------------------------------------------------------------- template side
