"""Child entry point: run one request from a job directory, then ``os._exit``.

Order matters. Before anything that could crash: fd 1 and fd 2 go to the job's
output file (``os.dup2``: glibc, libstdc++ and faulthandler write there, and
the bytes survive the crash), ``LIBC_FATAL_STDERR_`` is set, faulthandler is
on, and the child asks the kernel to kill it if its parent dies. Only then is
the request read and CASA imported (by the function the request names; only
``casaguard.remote.casa`` modules import casatools). The reply is written before
any teardown, so a crash in teardown cannot lose a finished result. The child
never returns into the interpreter's shutdown: it leaves through ``os._exit``.

Run as ``python -m casaguard.sandbox.child JOBDIR PARENT_PID`` (spawn mode), or
called as ``run_job`` in a fork of the warm template.
"""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import gc
import os
import signal
import socket
import sys
import traceback
from pathlib import Path
from typing import NoReturn

from casaguard import casaenv
from casaguard.sandbox import jobdir as _job

_PR_SET_PDEATHSIG = 1
#: The one line a call gets (as ``SetupError``) when CASA cannot start in the child.
CASA_SETUP_FAILED = "CASA cannot start with its configuration: {cause}{where}"
#: The one line when the child cannot prepare a call (e.g. the caller's cwd is gone).
PREPARE_FAILED = "the sandbox child could not prepare the call: {cause}"
_TCP_LISTEN = "0A"  # the state column of /proc/net/tcp


def redirect_output(directory: Path) -> None:
    """Send fd 1 and fd 2 to the job's output file and arm the crash reporters."""
    fd = os.open(directory / _job.OUTPUT, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.environ["LIBC_FATAL_STDERR_"] = "1"
    # Python's own text streams must follow the new fds, unbuffered enough that a
    # crash right after a print still shows the print.
    sys.stdout = open(1, "w", buffering=1, closefd=False, errors="replace")  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False, errors="replace")  # noqa: SIM115
    faulthandler.enable(file=sys.stderr, all_threads=True)


def die_with_parent(parent_pid: int) -> None:
    """Ask the kernel for SIGKILL when the parent dies; leave now if it already has."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if parent_pid and os.getppid() != parent_pid:
        os._exit(_job.EXIT_PARENT_GONE)


def run_job(directory: Path) -> NoReturn:
    """Run the request in ``directory``, write the reply, and ``os._exit``."""
    try:
        request = _job.read_request(directory)
    except BaseException as error:  # noqa: BLE001 - report anything, then leave
        print(f"casaguard child: cannot read request: {error!r}", file=sys.stderr)
        _exit(_job.EXIT_BAD_REQUEST)
    try:
        _prepare(request, directory)
    except Exception as error:  # noqa: BLE001 - any setup failure is the caller's one line
        _job.mark(directory, "setup-failed")
        message = str(error) if isinstance(error, _CasaSetupFailed) else None
        reply = _job.Reply(
            ok=False,
            exc_type=_job.SETUP_ERROR_TYPE,
            exc_message=message or PREPARE_FAILED.format(cause=_first_line(error)),
            traceback="".join(traceback.format_exception(error)),
        )
        with contextlib.suppress(BaseException):
            _job.write_reply(directory, reply)
        _exit(_job.EXIT_REPLIED)
    _job.mark(directory, "started")
    try:
        value = request.func(*request.args, **request.kwargs)
    except BaseException as error:  # noqa: BLE001 - every exception becomes a reply
        _job.mark(directory, "raised")
        reply = _error_reply(error)
    else:
        _job.mark(directory, "returned")
        reply = _job.Reply(ok=True, value=value)
    try:
        _job.write_reply(directory, reply)
    except BaseException as error:  # noqa: BLE001 - e.g. a result dill cannot pickle
        try:
            _job.write_reply(directory, _error_reply(error))
        except BaseException:  # noqa: BLE001
            _exit(_job.EXIT_REPLY_FAILED)
    _job.mark(directory, "replied")
    # Teardown: collect what the call left in reference cycles, so destructors
    # that flush or unlock run as they would at interpreter exit. A crash here
    # is a teardown crash: the reply is already on disk and the caller gets it.
    gc.collect()
    _job.mark(directory, "torn-down")
    if request.is_casa_task and not holds_table_lock_file():
        # A CASA task's only locks are casacore's, on table.lock files: with none
        # open, none is held, and the caller may go on while the kernel unmaps us.
        _job.signal_done(directory)
    _exit(_job.EXIT_REPLIED)


def holds_table_lock_file() -> bool:
    """True if this process has a casacore ``table.lock`` open (so may hold its fcntl lock)."""
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{name}").endswith("/table.lock"):
                return True
    return False


def casa_arguments() -> None:
    """Give casaconfig the flags casaguard chose (``--noconfig``) before CASA is imported."""
    extra = os.environ.get(casaenv.CASA_ARGS_ENV, "").split()
    sys.argv += [word for word in extra if word not in sys.argv]


def close_listeners() -> list[int]:
    """Stop listening on TCP: swap each listening socket for an unbound one, same fd number.

    casatools' import starts a gRPC service registry on ``0.0.0.0:<random port>``
    (hard-coded in its ``Registrar``, with no setting to turn it off or bind it to
    loopback); no ft/clearcal path uses it. ``dup2`` rather than ``close``: the
    fd number gRPC holds stays valid (never reused for another file), and the
    listening socket's last reference goes, which also drops it from gRPC's epoll
    set. Called by the warm template before it forks (so no fork inherits a
    listener) and by a spawned child right after CASA is imported.

    Returns:
        The fd numbers that were listening.
    """
    listening: set[str] = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError), open(f"/proc/self/net/{table}") as handle:
            for line in handle.read().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 9 and fields[3] == _TCP_LISTEN:
                    listening.add(f"socket:[{fields[9]}]")
    replaced = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") not in listening:
                continue
            fd = int(name)
            family = socket.socket(fileno=os.dup(fd))
            placeholder = socket.socket(family.family, socket.SOCK_STREAM)
            family.close()
            os.dup2(placeholder.fileno(), fd, inheritable=False)
            placeholder.close()
        except OSError:
            continue
        replaced.append(fd)
    return replaced


def setup_failure(error: BaseException) -> str:
    """One line: why CASA (or the call's setup) could not start, and which config said so.

    casatools raises ``ImportError("measures data is not available...")`` at import
    when ``measurespath`` is wrong; casaconfig has by then recorded where
    ``measurespath`` came from.
    """
    cause = _first_line(error)
    config = sys.modules.get("casaconfig.config")
    where = ""
    if config is not None:
        measurespath = getattr(config, "measurespath", None)
        missing = bool(measurespath) and not os.path.isdir(str(measurespath))
        files = [str(f) for f in config.load_success()[1:]]
        where = (
            f" (measurespath {measurespath!r}{' does not exist' if missing else ''}; "
            f"config: {', '.join(files) or 'none loaded'})"
        )
    return CASA_SETUP_FAILED.format(cause=cause, where=where)


def _prepare(request: _job.Request, directory: Path) -> None:
    os.environ.update(request.env_updates)
    if request.cwd:
        os.chdir(request.cwd)
    if request.setup_casa_log:
        from casaguard.remote.casa.logs import log_to

        # A fork of the warm template has casatools already, and no listener: the
        # template closed them before it forked. Only a first import opens one.
        first_import = "casatools" not in sys.modules
        try:
            log_to(str(directory / _job.CASA_LOG))
        except Exception as error:
            raise _CasaSetupFailed(setup_failure(error)) from error
        if first_import:
            close_listeners()


class _CasaSetupFailed(Exception):
    """CASA itself could not start in this child; the message is the caller's one line."""


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _error_reply(error: BaseException) -> _job.Reply:
    kind = type(error)
    try:
        import dill

        pickled: bytes | None = dill.dumps(error)
        dill.loads(pickled)  # only send what the parent can rebuild
    except BaseException:  # noqa: BLE001
        pickled = None
    return _job.Reply(
        ok=False,
        exc_type=f"{kind.__module__}.{kind.__qualname__}",
        exc_message=str(error),
        traceback="".join(traceback.format_exception(error)),
        exc_pickle=pickled,
    )


def _exit(code: int) -> NoReturn:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # nothing is left to report a failure to
            stream.flush()
    os._exit(code)


def main(argv: list[str] | None = None) -> NoReturn:
    args = sys.argv[1:] if argv is None else argv
    directory = Path(args[0])
    redirect_output(directory)
    die_with_parent(int(args[1]) if len(args) > 1 else 0)
    casa_arguments()
    run_job(directory)


if __name__ == "__main__":
    main()
