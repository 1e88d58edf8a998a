"""One running template process, seen from the caller: start it, talk to it, hear it exit.

``Template`` starts the template's interpreter from a keeper thread (whose
life its parent-death signal follows), sends fork requests as JSON lines on
the control socket, and hands each reply and each fork's exit status to the
thread waiting for it. Which template serves a call is ``client``'s concern;
the package docstring has the design.
"""

from __future__ import annotations

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
from pathlib import Path
from typing import IO, Any

from casaguard import casaenv, events
from casaguard.sandbox import callspec, pids
from casaguard.sandbox.template.flavors import HANDSHAKE_S, SCRATCH_PREFIX

log = events.get_logger()


#: What the template's interpreter runs (``python -P -c TEMPLATE_CODE FD PID``).
TEMPLATE_CODE = "import casaguard.sandbox.template.server as t; t.main()"


class TemplateUnavailable(Exception):
    """The template cannot serve this call; the reason is the message."""


class TemplateSetupFailed(TemplateUnavailable):
    """CASA could not start with this configuration: a spawned child would fail alike."""


class Template:
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
        #: How many pages its spares copy ahead of a job (``prefault``), once warm.
        self.prefault_pages = 0
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
        #: Forks whose caller stopped waiting (they said they were done): their
        #: exit reports are dropped on arrival instead of kept for nobody.
        self._forgotten: set[int] = set()
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

    def forget(self, pid: int) -> None:
        """Nobody will ask for fork ``pid``'s exit status: do not keep it."""
        with self._cond:
            if self._statuses.pop(pid, None) is None:
                self._forgotten.add(pid)

    def exit_status(self, pid: int, timeout: float) -> int | None:
        """The raw exit status of fork ``pid`` (negative: signal), once the template reaped it."""
        with self._cond:
            self._cond.wait_for(lambda: pid in self._statuses or self._dead, timeout)
            if pid in self._statuses:
                return self._statuses.pop(pid)
        # The template died: its forks got SIGKILL from their parent-death signal,
        # and someone else (init) reaps them.
        return None if pids.running(pid) else -signal.SIGKILL

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
        # -c rather than -m: the server is imported under its own name and never
        # runs as __main__, the module every fork inherits.
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
                pid = int(message["exit"])
                if pid in self._forgotten:
                    self._forgotten.discard(pid)
                else:
                    self._statuses[pid] = int(message["status"])
            elif "id" in message:
                # A fork reply for pid P comes after the exit of any earlier P: drop
                # a status nobody collected, so a reused pid never reads it.
                self._statuses.pop(int(message["pid"]), None)
                self._forgotten.discard(int(message["pid"]))
                self._replies[int(message["id"])] = message
            elif "ready" in message:
                self._ready = True
            elif "setup_error" in message:
                self.failure = self.setup_error = str(message["setup_error"])
            elif "warm" in message:
                self._warm = True
                self.prefault_pages = int(message.get("prefault_pages") or 0)
                log.debug(
                    "template_warm",
                    pid=self.pid,
                    warm_s=message.get("warm_s"),
                    prefault_pages=self.prefault_pages,
                )
            self._cond.notify_all()

    def _set_dead(self, reason: str) -> None:
        with self._cond:
            self._dead = True
            self.failure = self.failure or reason
            self._cond.notify_all()
