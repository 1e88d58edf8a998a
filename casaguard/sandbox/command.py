"""Guarded external commands (WSClean first): same capture, timeout and classification.

WSClean is not a Python callable, so it cannot travel in a request. Instead a
``CommandLauncher`` starts the command itself as the "child" of
``runner.run``: fd 1 and fd 2 go straight to the job's output file (the
bytes glibc prints before an abort survive), the command leads its own
session, and ``setpriv --pdeathsig KILL`` (when available) makes the kernel
kill it if the caller dies. Everything else is the runner's: the lock wait,
the pidfd wait, the timeout that kills the whole tree, ``classify.classify``
on the exit status and output, the crash evidence and the typed exception.
A command has no reply file; the runner treats exit 0 as its success.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from casaguard.errors import InvalidInput
from casaguard.sandbox import callspec, runner, spawn
from casaguard.sandbox import jobdir as _job

WSCLEAN_ENV = "CASAGUARD_WSCLEAN"


@dataclass(frozen=True)
class CommandResult:
    """A command that exited 0.

    Attributes:
        args: the command line that ran.
        output_tail: the last 64 KiB of what it wrote to stdout and stderr.
    """

    args: tuple[str, ...]
    output_tail: str


class CommandHandle(spawn.SpawnHandle):
    """A started command; like a spawned child, but it never writes a reply."""

    mode = "command"
    replies = False


class CommandLauncher:
    """Start ``args`` as the job's child with fd 1/2 on the job's output file."""

    mode = "command"

    def __init__(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> None:
        self.args = [os.fspath(a) for a in args]
        self.env = dict(env) if env is not None else None
        self.cwd = cwd

    def start(self, job: _job.JobDir) -> CommandHandle:
        env = dict(os.environ if self.env is None else self.env)
        # Old glibc writes its heap-check message to the tty unless told otherwise.
        env.setdefault("LIBC_FATAL_STDERR_", "1")
        with open(job.file(_job.OUTPUT), "ab") as output:
            process = subprocess.Popen(
                _pdeathsig_prefix() + self.args,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                env=env,
                cwd=self.cwd,
                # Own session: Ctrl-C reaches only the caller, which kills the tree.
                start_new_session=True,
            )
        return CommandHandle(process)


@functools.cache
def _pdeathsig_prefix() -> list[str]:
    """``setpriv --pdeathsig KILL`` when util-linux has it (2.33+), else nothing.

    setpriv execs the command, so the pid the runner waits on is the command's.
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return []
    probe = subprocess.run(
        [setpriv, "--pdeathsig", "KILL", "true"], capture_output=True, check=False
    )
    return [setpriv, "--pdeathsig", "KILL"] if probe.returncode == 0 else []


def run_command(
    args: Sequence[str | os.PathLike[str]],
    *,
    name: str | None = None,
    timeout: float | None = None,
    vis: str | os.PathLike[str] | None = None,
    lock_timeout: float = callspec.DEFAULT_LOCK_TIMEOUT_S,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> CommandResult:
    """Run an external command under casaguard's guard.

    Args:
        args: the command line; ``args[0]`` is looked up on ``PATH``.
        name: name for messages and logs (default: ``args[0]``'s base name).
        timeout: seconds before the command's whole process tree is killed.
        vis: an MS the command uses: wait for other processes' locks on it.
        lock_timeout: seconds to wait for such a lock.
        env: the command's environment (default: this process's).
        cwd: its working directory (default: this process's).

    Returns:
        A CommandResult with the tail of the command's output.

    Raises:
        InvalidInput: the command is empty or not found.
        CasaCrash: a subclass naming how the command died (``Segfault``,
            ``HeapCorruption``, ``AbortCrash``, ``TaskTimeout``, ``UnexpectedExit``
            for a non-zero exit...).
    """
    argv = [os.fspath(a) for a in args]
    if not argv:
        raise InvalidInput("run_command needs a command line")
    executable = shutil.which(argv[0])
    if executable is None:
        raise InvalidInput(f"command not found: {argv[0]!r}")
    argv[0] = executable
    label = name or Path(executable).name
    output = runner.run(
        callspec.CallSpec(
            func=None,
            name=label,
            setup_casa_log=False,
            vis=os.path.abspath(vis) if vis else None,
            timeout=timeout,
            lock_timeout=lock_timeout,
            strict=False,
            launcher=CommandLauncher(argv, env=env, cwd=cwd),
        )
    )
    return CommandResult(args=tuple(argv), output_tail=str(output))


def wsclean_executable() -> str:
    """The WSClean to run: ``$CASAGUARD_WSCLEAN``, else ``wsclean`` on PATH.

    Raises:
        InvalidInput: WSClean is not installed.
    """
    configured = os.environ.get(WSCLEAN_ENV, "wsclean")
    found = shutil.which(configured)
    if found is None:
        raise InvalidInput(
            f"WSClean not found ({configured!r}); install it (Debian: apt-get install wsclean) "
            f"or set {WSCLEAN_ENV}"
        )
    return found


def measurement_sets(args: Sequence[str]) -> list[str]:
    """The MSs on a WSClean command line: its trailing arguments that are tables."""
    found: list[str] = []
    for arg in reversed(args):
        if not os.path.isfile(os.path.join(arg, "table.dat")):
            break
        found.append(arg)
    return found[::-1]


def wsclean(
    args: Sequence[str | os.PathLike[str]],
    *,
    timeout: float | None = None,
    lock_timeout: float = callspec.DEFAULT_LOCK_TIMEOUT_S,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> CommandResult:
    """Run WSClean with ``args`` (everything after ``wsclean``) under casaguard's guard.

    Example: ``casaguard.wsclean(["-size", "64", "64", "-scale", "20asec",
    "-niter", "100", "-mgain", "0.8", "obs.ms"], timeout=600)``.

    Args:
        args: WSClean's arguments; the MSs come last, as WSClean wants them.
        timeout: seconds before WSClean's process tree is killed.
        lock_timeout: seconds to wait while another process holds the (first) MS's lock.
        env, cwd: WSClean's environment and working directory.

    Returns:
        A CommandResult whose ``output_tail`` is the end of WSClean's log.

    Raises:
        InvalidInput: WSClean is not installed.
        CasaCrash: a subclass naming how WSClean died; e.g. WSClean 3.1 creating
            MODEL_DATA on an MS whose spectral windows differ in channel count
            dies of ``Segfault`` or ``HeapCorruption``.
    """
    argv = [os.fspath(a) for a in args]
    sets = measurement_sets(argv)
    return run_command(
        [wsclean_executable(), *argv],
        name="wsclean",
        timeout=timeout,
        vis=sets[0] if sets else None,
        lock_timeout=lock_timeout,
        env=env,
        cwd=cwd,
    )
