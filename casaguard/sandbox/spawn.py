"""The spawn launcher: a fresh interpreter per call, and the environment every child gets."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from casaguard import casaenv
from casaguard.sandbox import jobdir as _job
from casaguard.sandbox.callspec import KILL_GRACE_S
from casaguard.sandbox.procs import _descendants, _kill_group, _reap, _terminate


class SpawnHandle:
    """A child started as a fresh interpreter (``python -m casaguard.sandbox.child``)."""

    mode = "spawn"
    replies = True

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self.pid = process.pid

    def detach(self) -> bool:
        # This process is the child's parent: only waiting reaps it.
        return False

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
