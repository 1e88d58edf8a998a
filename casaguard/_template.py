"""The warm template: one process that imported CASA once and forks a fresh child per call.

A fresh interpreter pays ~1.2-1.9 s to import casatools and casatasks; ``ft``
on a small MS takes ~20 ms. The template pays the import once, never runs a
task itself, and ``fork``s a child per guarded call, so every call still
starts from the template's pristine heap and dies alone::

    caller process                      template                        fork (one per call)
    (never imports CASA)                python -P -c casaguard._template
    --------------------                ---------------------------     -------------------
    keeper thread: Popen ------------>  pdeathsig; import casatools,
      (own session)                     casatasks; gc.freeze()
      <--------------------- {"ready"}  select(control, SIGCHLD)
    run(): JobDir request.pkl
    {"op":"fork", job, env} -------->   os.fork() ------------------->  setsid, pdeathsig
                                        wait "alive" <=5 s <--- "!" --  dup2 fd 1/2 -> output.log
      <------------ {"id", pid, alive}  (silent? SIGKILL it,           environ = caller's, chdir
    wait on pidfd_open(pid)              answer alive=false: the       run_job(): reply.pkl,
                                         caller spawns instead)        os._exit / or crashes
                                        SIGCHLD: waitpid
      <-------------- {"exit", status}
    statuses routed by pid to the waiting thread

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
``python -P -c "import casaguard._template ..."`` (no caller cwd on
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

from casaguard import _job, casaenv, events, runner
from casaguard.errors import SetupError

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
TEMPLATE_CODE = "import casaguard._template as t; t.main()"
#: The kernel name (``/proc/PID/comm``) of a fork running a call.
FORK_NAME = b"casaguard-call"
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
            "casaguard._child",
            "casaguard._incasa.logs",
            "casaguard._incasa.tasks",
            "dill",
        ),
        refuse=("casacore",),
        refusal=CASACORE_IN_TEMPLATE,
    ),
    "casacore": Flavor(
        warm=(
            "numpy",
            "casacore.tables",
            "casaguard._child",
            "casaguard._incasacore.static",
            "dill",
        ),
        refuse=("casatools", "casatasks"),
        refusal=CASA_IN_CASACORE_TEMPLATE,
    ),
}


class TemplateUnavailable(Exception):
    """The template cannot serve this call; the reason is the message."""


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
        self._ready = False
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
                process.wait(timeout=runner.KILL_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._thread.join(timeout=runner.KILL_GRACE_S)

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
            code = self._process.wait(timeout=runner.KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            self._process.kill()
            code = self._process.wait()
        self.exit_code = code
        ours.close()
        shutil.rmtree(scratch, ignore_errors=True)
        tail = self.stderr_tail()
        self._stderr.close()
        self._set_dead(f"exited with status {code}" + (f": {tail}" if tail else ""))
        event = log.info if self._closing else log.warning
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
        runner.kill_tree(self.pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        deadline = time.monotonic() + runner.KILL_GRACE_S
        while self.exit_status() is None and time.monotonic() < deadline:
            pass


class TemplateLauncher:
    """Start each call as a fork of the warm template; fall back to ``fallback``."""

    mode = "template"

    def __init__(self, fallback: runner.Launcher, required: bool, flavor: str = "casa") -> None:
        self.fallback = fallback
        self.required = required
        self.flavor = flavor

    def start(self, job: _job.JobDir) -> runner.ChildHandle:
        """Fork the template for ``job`` (starting it if needed), or spawn.

        Raises:
            SetupError: ``required`` and the template cannot be started.
        """
        env = runner.child_environment()
        failure = ""
        # Twice: a template that died since the last call is replaced once.
        for _ in range(2):
            try:
                template = _current_template(env, self.flavor)
            except TemplateUnavailable as error:
                if self.required:
                    raise SetupError(TEMPLATE_UNAVAILABLE.format(reason=error)) from None
                return self._fall_back(job, str(error))
            try:
                pid, alive = template.fork(job.path, env)
                break
            except TemplateUnavailable as error:
                failure = str(error)
                template.await_death(runner.KILL_GRACE_S)
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

    def _fall_back(self, job: _job.JobDir, reason: str) -> runner.ChildHandle:
        log.warning("template_fallback", reason=reason, mode=self.fallback.mode)
        return self.fallback.start(job)


_lock = threading.Lock()
#: flavor -> the running template, when to retry after a failed start, and why it failed.
_templates: dict[str, _Template] = {}
_retry_at: dict[str, float] = {}
_last_failure: dict[str, str] = {}


def _current_template(env: dict[str, str], flavor: str = "casa") -> _Template:
    """The running template of ``flavor``, started (or restarted) if needed.

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
    raise TemplateUnavailable(template.failure)


def launcher(
    fallback: runner.Launcher, required: bool = False, flavor: str = "casa"
) -> runner.Launcher:
    """The template launcher (``runner.choose_launcher`` calls this).

    Args:
        fallback: the launcher used when the template cannot serve a call.
        required: raise ``SetupError`` instead of falling back when it cannot start.
        flavor: ``"casa"`` (casatools) or ``"casacore"`` (python-casacore); see FLAVORS.
    """
    if flavor not in FLAVORS:
        raise SetupError(f"unknown template flavor {flavor!r}: use one of {sorted(FLAVORS)}")
    return TemplateLauncher(fallback, required, flavor)


def warmup(timeout: float = START_TIMEOUT_S) -> int | None:
    """Start the warm template now, so the first guarded call does not pay CASA's import.

    Does nothing when ``$CASAGUARD_MODE`` is ``spawn``.

    Args:
        timeout: seconds to wait for the template to import CASA.

    Returns:
        The template's pid, or None in spawn mode.

    Raises:
        SetupError: the template could not start.
    """
    if (os.environ.get(runner.MODE_ENV) or "").lower() == "spawn":
        return None
    try:
        template = _current_template(runner.child_environment())
    except TemplateUnavailable as error:
        raise SetupError(TEMPLATE_UNAVAILABLE.format(reason=error)) from None
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
    # A fork of the caller must not share the control sockets: it gets its own templates.
    global _lock
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


def _reap(sock: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _send_line(sock, {"exit": pid, "status": os.waitstatus_to_exitcode(status)})


def _fork(sock: socket.socket, message: dict[str, Any], wakeup: tuple[int, int]) -> None:
    """Fork a child for one job; answer with its pid and whether it said "alive" in time."""
    alive_r, alive_w = os.pipe()
    template = os.getpid()
    try:
        pid = os.fork()
    except OSError as error:  # EAGAIN, ENOMEM: this call spawns instead
        os.close(alive_r)
        os.close(alive_w)
        _send_line(sock, {"id": message["id"], "pid": 0, "alive": False, "error": str(error)})
        return
    if pid == 0:
        os.close(alive_r)
        _in_fork(message, alive_w, template, close=(sock.fileno(), *wakeup))
    os.close(alive_w)
    ready, _, _ = select.select([alive_r], [], [], HANDSHAKE_S)
    alive = bool(ready) and os.read(alive_r, 1) == b"!"
    os.close(alive_r)
    if not alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    _send_line(sock, {"id": message["id"], "pid": pid, "alive": alive})


def _in_fork(
    message: dict[str, Any], alive_w: int, template: int, close: tuple[int, ...]
) -> NoReturn:
    """The fork's whole life: become a clean child of the template, say alive, run the job."""
    try:
        from casaguard import _child

        os.setsid()
        _prctl(_PR_SET_NAME, FORK_NAME)  # what ps and top show for a running call
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in close:
            os.close(fd)
        env = message["env"]
        os.environ.clear()
        os.environ.update(env)
        # The caller's import path as of this call, ahead of the template's own.
        extra = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]
        sys.path[:0] = extra
        directory = Path(message["job"])
        _child.redirect_output(directory)
        _child.die_with_parent(template)
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
    for module in flavor.warm:
        importlib.import_module(module)
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
    _send_line(sock, {"ready": os.getpid()})
    buffer = b""
    control = sock.fileno()
    while True:
        readable, _, _ = select.select([control, wakeup[0]], [], [])
        if wakeup[0] in readable:
            with contextlib.suppress(BlockingIOError):
                while os.read(wakeup[0], 512):
                    pass
        _reap(sock)
        if control in readable:
            data = sock.recv(1 << 16)
            if not data:
                os._exit(0)  # the caller is gone; our forks follow by their death signal
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                _fork(sock, json.loads(line), wakeup)


if __name__ == "__main__":
    main()
