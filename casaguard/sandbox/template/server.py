"""The warm template process itself: import CASA once, then fork a fresh child per call.

Runs only in the template (``python -P -c 'import casaguard.sandbox.template.server
as t; t.main()'``): ``main`` imports the flavor's libraries, then answers each
fork request with the spare forked ahead of time or a fork made on the spot,
waits for the fork's "!", and reports every fork's exit status. What a fork
does is ``forked``; the warm-up is ``warm``; the caller's side is ``client``,
and the package docstring has the design.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import importlib.abc
import json
import os
import select
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any, NoReturn

from casaguard.sandbox.template import forked, prefault, warm
from casaguard.sandbox.template.flavors import (
    FLAVORS,
    HANDSHAKE_S,
    SCRATCH_PREFIX,
    WARM_ENV,
    WARM_IDLE_S,
    Flavor,
)


class _Refuse(importlib.abc.MetaPathFinder):
    """Make imports of the other library fail loudly in a template and its forks."""

    def __init__(self, flavor: Flavor) -> None:
        self.flavor = flavor

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if any(name == top or name.startswith(top + ".") for top in self.flavor.refuse):
            raise ImportError(self.flavor.refusal, name=name)
        return None


_PR_SET_PDEATHSIG = 1
#: Signals of a process that touched memory it may not: an idle spare should never die of one.
_FAULTS = (signal.SIGSEGV, signal.SIGBUS)


def _send_line(sock: socket.socket, message: dict[str, Any]) -> None:
    sock.sendall(json.dumps(message).encode() + b"\n")


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
                if os.WIFSIGNALED(status) and os.WTERMSIG(status) in _FAULTS:
                    # It may have been touching pages ahead (it never should fault):
                    # spares stop doing so rather than die again.
                    prefault.forget()
                    print(f"casaguard template: idle spare {pid} faulted", file=sys.stderr)
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
            with warm.scratch_ms() as (vis, point):
                warm.run_tasks(vis, point)
                gc.collect()
                gc.freeze()
                # In the state every spare starts from: which pages its first task writes.
                prefault.learn(lambda: warm.run_tasks(vis, point), self.fds_to_close())
        except Exception as error:  # noqa: BLE001 - forks still work, only slower
            print(f"casaguard template: warm-up failed: {error!r}", file=sys.stderr)
        # Whether or not the warm-up got that far: spares fork from a frozen heap.
        gc.collect()
        gc.freeze()
        self.replace_spare()
        _send_line(
            self.sock,
            {
                "warm": os.getpid(),
                "warm_s": round(time.monotonic() - started, 3),
                "prefault_pages": prefault.learned_pages(),
            },
        )

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
        forked.in_fork(message, alive_w, template, close=close)
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
        forked.in_spare(alive_w, jobs_r, template, close=close)
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


def main(argv: list[str] | None = None) -> NoReturn:
    """Template entry point: ``python -P -c TEMPLATE_CODE CONTROL_FD PARENT_PID``."""
    args = sys.argv[1:] if argv is None else argv
    control_fd, parent = int(args[0]), int(args[1])
    flavor = FLAVORS[args[2] if len(args) > 2 else "casa"]
    forked.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
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
    warm.settle_openmp_in_template()
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
