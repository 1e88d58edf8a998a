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
import gc
import importlib
import importlib.abc
import itertools
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NoReturn

import psutil

from casaguard import casaenv, events
from casaguard.errors import SetupError
from casaguard.sandbox import callspec, procs, spawn
from casaguard.sandbox import jobdir as _job

log = events.get_logger()

#: A fork must say "alive" within this many seconds, or it is killed and the call spawned.
HANDSHAKE_S = 5.0
#: The template must be ready (CASA imported) within this many seconds.
START_TIMEOUT_S = 120.0
#: After a failed start, calls use spawn mode for this long before the next attempt.
RETRY_AFTER_S = 30.0
#: Exit code of a fork that failed before running the request (e.g. a bad job path).
EXIT_FORK_FAILED = 73

#: What the template's interpreter runs (``python -P -c TEMPLATE_CODE FD PID``).
TEMPLATE_CODE = "import casaguard.sandbox.template as t; t.main()"
#: The kernel name (``/proc/PID/comm``) of a fork running a call.
FORK_NAME = b"casaguard-call"
#: The kernel name of the template's pre-forked spare, idle until a call arrives.
SPARE_NAME = b"casaguard-spare"
#: The template's scratch cwd while it imports CASA (removed once it is warm).
SCRATCH_PREFIX = "casaguard-template-"

TEMPLATE_UNAVAILABLE = "the warm template cannot serve calls: {reason}"
CASACORE_IN_TEMPLATE = (
    "python-casacore cannot be imported in a fork of the warm CASA template: casatools is "
    "loaded there and the two must never share a process; run this call with mode='spawn' "
    "or flavor='casacore'"
)
CASA_IN_CASACORE_TEMPLATE = (
    "casatools cannot be imported in a fork of the warm python-casacore template: the two "
    "must never share a process; run this call with flavor='casa'"
)


@dataclass(frozen=True)
class Flavor:
    """What one kind of template imports, and what its forks must never import."""

    warm: tuple[str, ...]
    refuse: tuple[str, ...]
    refusal: str


#: ``casa`` serves CASA tasks; ``casacore`` serves python-casacore code (the static
#: probe). Each refuses the other's library: the two heap-clash in one process.
FLAVORS: dict[str, Flavor] = {
    "casa": Flavor(
        warm=(
            "casatools",
            "casatasks",
            "casaguard.sandbox.child",
            "casaguard.remote.casa.logs",
            "casaguard.remote.casa.tasks",
            "dill",
        ),
        refuse=("casacore",),
        refusal=CASACORE_IN_TEMPLATE,
    ),
    "casacore": Flavor(
        warm=(
            "numpy",
            "casacore.tables",
            "casaguard.sandbox.child",
            "casaguard.remote.casacore.static",
            "dill",
        ),
        refuse=("casatools", "casatasks"),
        refusal=CASA_IN_CASACORE_TEMPLATE,
    ),
}


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


class _Refuse(importlib.abc.MetaPathFinder):
    """Make imports of the other library fail loudly in a template and its forks."""

    def __init__(self, flavor: Flavor) -> None:
        self.flavor = flavor

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if any(name == top or name.startswith(top + ".") for top in self.flavor.refuse):
            raise ImportError(self.flavor.refusal, name=name)
        return None


_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15


def _prctl(option: int, value: int | bytes) -> None:
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)


def _send_line(sock: socket.socket, message: dict[str, Any]) -> None:
    sock.sendall(json.dumps(message).encode() + b"\n")


#: GNU OpenMP's thread pool does not survive ``fork``: a fork of a process whose
#: pool ever ran more than one thread hangs in its first parallel region. The
#: template therefore runs OpenMP (its warm-up task) with one thread, and each
#: fork sets the count its caller asked for (``OMP_NUM_THREADS`` in the caller's
#: environment at call time), else libgomp's own default (all usable CPUs), as an
#: in-process CASA would; libgomp then starts a fresh pool in the fork.
_omp_default_threads: int | None = None


def _libgomp() -> Any:
    """The libgomp CASA loaded, or None (never loads one)."""
    import ctypes

    try:
        return ctypes.CDLL("libgomp.so.1", mode=os.RTLD_NOLOAD)
    except OSError:
        return None


def _settle_openmp_in_template() -> None:
    global _omp_default_threads
    gomp = _libgomp()
    if gomp is not None:
        _omp_default_threads = int(gomp.omp_get_max_threads())
        gomp.omp_set_num_threads(1)


def _settle_openmp_in_fork(env: dict[str, str]) -> None:
    if _omp_default_threads is None:
        return
    wanted = _omp_default_threads
    with contextlib.suppress(ValueError):
        wanted = max(1, int(env.get("OMP_NUM_THREADS", "").split(",")[0]))
    gomp = _libgomp()
    if gomp is not None:
        gomp.omp_set_num_threads(wanted)


#: After this many seconds without a request (and no call running), the template
#: warms itself once: see ``_warm``.
WARM_IDLE_S = 0.5
#: ``0`` turns the warm-up off (for comparing; forks then pay CASA's first-use costs).
WARM_ENV = "CASAGUARD_TEMPLATE_WARM"


def _warm() -> None:
    """Run ft and clearcal once on a scratch MS, so forks inherit CASA's first-use work.

    A fork's first ``ft`` otherwise pays for initialising what a warm process
    already has (the simulator-free part of the measures tables, the imager,
    the table system, casalog) and copy-on-write faults on all of it: measured
    on a 1k-row MS, ~13 ms of CPU and ~500 page faults per call. The results
    do not change (tests/test_perf_template.py compares MODEL_DATA with an
    in-process ft element by element). Runs with one OpenMP thread (see above).
    """
    import casatasks

    from casaguard.remote.casa import journal as incasa_journal
    from casaguard.remote.casa import logs, simulate

    scratch = tempfile.mkdtemp(prefix=SCRATCH_PREFIX + "warm-")
    # CASA prints its leap-second SEVERE noise and warnings on fd 2 whatever the
    # log sink: keep them out of the template's stderr, which reports its failures.
    saved_stderr = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    try:
        logs.log_to(os.path.join(scratch, "casa.log"))
        vis = os.path.join(scratch, "warm.ms")
        point = os.path.join(scratch, "warm.cl")
        simulate.simulate_ms(vis, n_antennas=2, n_times=1, nchan=(1,))
        simulate.make_point_complist(point)
        incasa_journal.plan(vis, ("MODEL_DATA", "SOURCE"), task="ft")
        casatasks.ft(vis=vis, complist=point, usescratch=True)
        casatasks.clearcal(vis=vis)
    finally:
        with contextlib.suppress(Exception):  # the warm-up is an optimisation only
            logs.log_to(os.devnull)
        shutil.rmtree(scratch, ignore_errors=True)
        os.dup2(saved_stderr, 2)
        os.close(saved_stderr)


@dataclass
class _Spare:
    """A fork made ahead of time: named, parent-death signal armed, handshaken, idle.

    It blocks reading ``jobs_w``'s pipe; the next fork request is written there
    and the pipe closed, and the spare becomes that call's child. It says "!"
    on ``alive_r``'s pipe twice: once idle, once the job's output is redirected
    (the same point at which a fork made on the spot says it).
    """

    pid: int
    jobs_w: int
    alive_r: int

    def close(self) -> None:
        """Let go of the spare's pipes (it leaves at EOF, or is already gone)."""
        for fd in (self.jobs_w, self.alive_r):
            with contextlib.suppress(OSError):
                os.close(fd)


class _Server:
    """The template's loop state: the control socket, the SIGCHLD wakeup pipe, the spare."""

    def __init__(self, sock: socket.socket, wakeup: tuple[int, int]) -> None:
        self.sock = sock
        self.wakeup = wakeup
        self.spare: _Spare | None = None
        #: Forks handed to callers and not yet reaped; spares let go of without a job.
        self.running: set[int] = set()
        self.discarded: set[int] = set()
        self.warm_pending = False

    def fds_to_close(self) -> tuple[int, ...]:
        """What a new fork must not keep: the control socket, the wakeup pipe, a spare's pipe."""
        spare = () if self.spare is None else (self.spare.jobs_w, self.spare.alive_r)
        return (self.sock.fileno(), *self.wakeup, *spare)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.spare is not None and pid == self.spare.pid:
                # An idle spare died (killed from outside): no call knows its pid.
                self.spare.close()
                self.spare = None
                continue
            if pid in self.discarded:
                self.discarded.discard(pid)
                continue
            self.running.discard(pid)
            _send_line(self.sock, {"exit": pid, "status": os.waitstatus_to_exitcode(status)})

    def serve(self, message: dict[str, Any]) -> None:
        """Answer one fork request: hand it to the spare, or fork on the spot."""
        spare, self.spare = self.spare, None
        if spare is not None:
            try:
                _write_all(spare.jobs_w, json.dumps(message).encode())
            except OSError:  # the spare died since its handshake: fork afresh
                self.discarded.add(spare.pid)
                spare.close()
                spare = None
        if spare is not None:
            os.close(spare.jobs_w)
            alive = _await_alive(spare.pid, spare.alive_r)
            if alive is None:  # it died idle (killed from outside): fork afresh
                self.discarded.add(spare.pid)
            else:
                if alive:
                    self.running.add(spare.pid)
                _send_line(self.sock, {"id": message["id"], "pid": spare.pid, "alive": alive})
                return
        pid = _fork(self.sock, message, self.fds_to_close())
        if pid:
            self.running.add(pid)

    def idle_timeout(self) -> float | None:
        """How long the loop may wait before warming (None: wait for requests only)."""
        return WARM_IDLE_S if self.warm_pending else None

    def warm(self) -> None:
        """Warm the template once (idle, no call running), then fork a warm spare."""
        if self.running:
            return  # a call is using the CPUs: try at the next idle moment
        self.warm_pending = False
        spare, self.spare = self.spare, None
        if spare is not None:  # forked cold: let it go, a warm one replaces it
            self.discarded.add(spare.pid)
            spare.close()
        started = time.monotonic()
        try:
            _warm()
        except Exception as error:  # noqa: BLE001 - forks still work, only slower
            print(f"casaguard template: warm-up failed: {error!r}", file=sys.stderr)
        gc.collect()
        gc.freeze()
        self.replace_spare()
        _send_line(self.sock, {"warm": os.getpid(), "warm_s": round(time.monotonic() - started, 3)})

    def replace_spare(self) -> None:
        """Fork the next spare (after a reply went out: off every caller's critical path)."""
        if self.spare is None:
            self.spare = _make_spare(self.fds_to_close())


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _await_alive(pid: int, alive_r: int) -> bool | None:
    """Wait up to HANDSHAKE_S for a fork's "!"; SIGKILL and reap a silent one.

    Returns:
        True: it said "!"; False: it stayed silent (killed); None: it died first.
    """
    ready, _, _ = select.select([alive_r], [], [], HANDSHAKE_S)
    said = os.read(alive_r, 1) if ready else None
    os.close(alive_r)
    if said == b"!":
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):  # reaped already by the SIGCHLD loop
        os.waitpid(pid, 0)
    return None if said == b"" else False


def _fork(sock: socket.socket, message: dict[str, Any], close: tuple[int, ...]) -> int:
    """Fork a child for one job; answer with its pid and whether it said "alive" in time.

    Returns:
        The pid of the fork if it is alive, else 0.
    """
    alive_r, alive_w = os.pipe()
    template = os.getpid()
    try:
        pid = os.fork()
    except OSError as error:  # EAGAIN, ENOMEM: this call spawns instead
        os.close(alive_r)
        os.close(alive_w)
        _send_line(sock, {"id": message["id"], "pid": 0, "alive": False, "error": str(error)})
        return 0
    if pid == 0:
        os.close(alive_r)
        _in_fork(message, alive_w, template, close=close)
    os.close(alive_w)
    alive = bool(_await_alive(pid, alive_r))
    _send_line(sock, {"id": message["id"], "pid": pid, "alive": alive})
    return pid if alive else 0


def _make_spare(close: tuple[int, ...]) -> _Spare | None:
    """Fork a spare and wait for its handshake; None if it cannot fork or stays silent."""
    alive_r, alive_w = os.pipe()
    jobs_r, jobs_w = os.pipe()
    template = os.getpid()
    try:
        pid = os.fork()
    except OSError:
        for fd in (alive_r, alive_w, jobs_r, jobs_w):
            os.close(fd)
        return None  # the next call forks on the spot (and may fall back to spawn)
    if pid == 0:
        os.close(alive_r)
        os.close(jobs_w)
        _in_spare(alive_w, jobs_r, template, close=close)
    os.close(alive_w)
    os.close(jobs_r)
    ready, _, _ = select.select([alive_r], [], [], HANDSHAKE_S)
    if not (ready and os.read(alive_r, 1) == b"!"):
        os.close(alive_r)
        os.close(jobs_w)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        print(f"casaguard template: spare fork {pid} stayed silent; killed", file=sys.stderr)
        return None
    return _Spare(pid, jobs_w, alive_r)


def _become_child(template: int, close: tuple[int, ...], name: bytes) -> None:
    """A fresh fork's first steps: own session, a name, default signals, parent-death signal."""
    os.setsid()
    _prctl(_PR_SET_NAME, name)  # what ps and top show
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for fd in close:
        os.close(fd)
    from casaguard.sandbox import child as _child

    _child.die_with_parent(template)


def _take_job(message: dict[str, Any]) -> Path:
    """Take the caller's environment and import path; send fd 1/2 to the job's output file."""
    from casaguard.sandbox import child as _child

    env = message["env"]
    os.environ.clear()
    os.environ.update(env)
    # The caller's import path as of this call, ahead of the template's own.
    extra = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]
    sys.path[:0] = extra
    directory = Path(message["job"])
    _child.redirect_output(directory)
    _settle_openmp_in_fork(env)
    return directory


def _in_fork(
    message: dict[str, Any], alive_w: int, template: int, close: tuple[int, ...]
) -> NoReturn:
    """A fork made for one call: become a clean child, take the job, say alive, run it."""
    try:
        from casaguard.sandbox import child as _child

        _become_child(template, close, FORK_NAME)
        directory = _take_job(message)
        os.write(alive_w, b"!")
        os.close(alive_w)
        _child.run_job(directory)
    finally:
        os._exit(EXIT_FORK_FAILED)


def _in_spare(alive_w: int, jobs_r: int, template: int, close: tuple[int, ...]) -> NoReturn:
    """A spare's whole life: become a clean child, say alive, wait for a job, run it."""
    try:
        from casaguard.sandbox import child as _child

        _become_child(template, close, SPARE_NAME)
        os.write(alive_w, b"!")
        chunks = []
        while chunk := os.read(jobs_r, 1 << 16):
            chunks.append(chunk)
        os.close(jobs_r)
        if not chunks:
            os._exit(0)  # the template let this spare go without a job
        _prctl(_PR_SET_NAME, FORK_NAME)
        directory = _take_job(json.loads(b"".join(chunks)))
        os.write(alive_w, b"!")
        os.close(alive_w)
        _child.run_job(directory)
    finally:
        os._exit(EXIT_FORK_FAILED)


def main(argv: list[str] | None = None) -> NoReturn:
    """Template entry point: ``python -P -c TEMPLATE_CODE CONTROL_FD PARENT_PID``."""
    args = sys.argv[1:] if argv is None else argv
    control_fd, parent = int(args[0]), int(args[1])
    flavor = FLAVORS[args[2] if len(args) > 2 else "casa"]
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(0)  # the caller died before the signal was armed
    sock = socket.socket(fileno=control_fd)
    sys.meta_path.insert(0, _Refuse(flavor))
    from casaguard.sandbox import child as _child

    _child.casa_arguments()
    for module in flavor.warm:
        try:
            importlib.import_module(module)
        except Exception as error:  # e.g. casatools refusing its measurespath
            casa = module in ("casatools", "casatasks")
            cause = _child.setup_failure(error) if casa else f"cannot import {module}: {error}"
            _send_line(sock, {"setup_error": cause.splitlines()[0] if cause else module})
            raise
    _settle_openmp_in_template()
    _child.close_listeners()  # casatools' gRPC registry: no fork may inherit it
    scratch = os.getcwd()
    os.chdir("/")  # never pin a directory; each fork goes to its caller's cwd
    if os.path.basename(scratch).startswith(SCRATCH_PREFIX):
        shutil.rmtree(scratch, ignore_errors=True)
    wakeup = os.pipe()
    for fd in wakeup:
        os.set_blocking(fd, False)
    signal.set_wakeup_fd(wakeup[1])
    signal.signal(signal.SIGCHLD, lambda *_: None)
    # Everything imported so far is shared copy-on-write with every fork: keep
    # the collector from touching (and so copying) those pages.
    gc.collect()
    gc.freeze()
    server = _Server(sock, wakeup)
    server.warm_pending = "casatasks" in flavor.warm and os.environ.get(WARM_ENV) != "0"
    _send_line(sock, {"ready": os.getpid()})
    server.replace_spare()
    buffer = b""
    control = sock.fileno()
    while True:
        readable, _, _ = select.select([control, wakeup[0]], [], [], server.idle_timeout())
        if not readable:
            server.warm()
            continue
        if wakeup[0] in readable:
            with contextlib.suppress(BlockingIOError):
                while os.read(wakeup[0], 512):
                    pass
        server.reap()
        if control in readable:
            data = sock.recv(1 << 16)
            if not data:
                os._exit(0)  # the caller is gone; our forks follow by their death signal
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                server.serve(json.loads(line))
            server.replace_spare()


if __name__ == "__main__":
    main()
