"""The job directory: the whole contract between parent and child, as files.

One temporary directory per guarded call holds the request, the reply, the
child's captured fd 1/2 and its CASA log. Files rather than pipes because
(a) bytes the child wrote just before dying survive in a file, (b) a child
that floods stderr can never block on a full pipe, and (c) the same protocol
serves a freshly spawned interpreter and a fork of the warm template.

The request and the reply are serialised with ``dill``: functions defined in
the caller's ``__main__`` and closures travel *by value* (``recurse=True``
sends only the globals they use), so the child never imports the caller's
script -- and with it, never re-creates a python-casacore + casatools clash.
What holds nothing of ``__main__`` and plain ``pickle`` can write (a task's
request: names and parameter values) is written by ``pickle``, 25x faster
than ``dill`` and the same bytes a dill reader reads (``_dumps``).

A job dir is named ``casaguard-<owner pid>-<random>`` and holds an ``owner``
file (pid and pid namespace). A caller that was SIGKILLed cannot remove its
own; the next casaguard process that makes a job dir removes such leftovers
(``remove_stale_job_dirs``): only its own user's, only in the same pid
namespace, only when the owner pid is dead.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dill

from casaguard.sandbox.pids import pid_alive

REQUEST = "request.pkl"
REPLY = "reply.pkl"
OUTPUT = "output.log"
CASA_LOG = "casa.log"
PROGRESS = "progress"
#: A FIFO: the child writes one byte once it is done with everything but exiting.
DONE = "done"
OWNER = "owner"
JOB_PREFIX = "casaguard-"
#: ``casaguard-<pid>-<mkdtemp's 8 random characters>``.
_JOB_NAME = re.compile(r"^casaguard-(?P<pid>\d+)-[A-Za-z0-9_]{8}$")

#: The child leaves only through os._exit with one of these codes.
EXIT_REPLIED = 0
EXIT_BAD_REQUEST = 70
EXIT_REPLY_FAILED = 71
EXIT_PARENT_GONE = 72

STDERR_TAIL_BYTES = 64 * 1024
CASA_LOG_TAIL_BYTES = 256 * 1024


@dataclass
class Request:
    """What the child must do.

    Attributes:
        func: the callable to run (by reference or, for ``__main__``, by value).
        args / kwargs: its arguments.
        name: task or callable name, for logs and messages.
        is_casa_task: exceptions count as CASA errors (``casa-error``).
        setup_casa_log: import casatools and send the CASA log to this job's file.
        cwd: the caller's working directory at call time (relative paths).
        env_updates: environment variables to set in the child before the call.
    """

    func: Any
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    is_casa_task: bool = False
    setup_casa_log: bool = True
    cwd: str = ""
    env_updates: dict[str, str] = field(default_factory=dict)


@dataclass
class Reply:
    """What the child sends back before it exits.

    ``ok`` with ``value``, or not ok with the exception's type name, message,
    formatted traceback and (when picklable) the exception object itself.
    """

    ok: bool
    value: Any = None
    exc_type: str = ""
    exc_message: str = ""
    traceback: str = ""
    exc_pickle: bytes | None = None


#: ``Reply.exc_type`` of a child that could not start CASA or prepare the call:
#: the child sends it, the runner turns it into ``SetupError``.
SETUP_ERROR_TYPE = "casaguard.errors.SetupError"


@dataclass(frozen=True)
class Ref:
    """A function named by module and attribute, imported only when called.

    The parent uses it to name code that imports casatools at module level
    (``casaguard.remote.casa...``) without importing that module itself.
    """

    module: str
    attribute: str

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        import importlib

        return getattr(importlib.import_module(self.module), self.attribute)(*args, **kwargs)


class JobDir:
    """A private temporary directory for one guarded call; removed on close."""

    def __init__(self) -> None:
        remove_stale_job_dirs(once=True)
        self.path = Path(tempfile.mkdtemp(prefix=f"{JOB_PREFIX}{os.getpid()}-"))
        (self.path / OWNER).write_text(f"{os.getpid()} {_pid_namespace()}\n")
        os.mkfifo(self.path / DONE, 0o600)

    def __enter__(self) -> JobDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def file(self, name: str) -> Path:
        return self.path / name

    def write_request(self, request: Request) -> None:
        _atomic_write(self.file(REQUEST), _dumps(request))

    def read_reply(self) -> Reply | None:
        try:
            data = self.file(REPLY).read_bytes()
        except FileNotFoundError:
            return None
        try:
            reply = dill.loads(data)
        except Exception as error:  # noqa: BLE001 - a reply we cannot read is still a reply
            return Reply(ok=False, exc_type="casaguard.UnreadableReply", exc_message=repr(error))
        return reply if isinstance(reply, Reply) else None

    def output_tail(self, limit: int = STDERR_TAIL_BYTES) -> str:
        return _tail(self.file(OUTPUT), limit)

    def casa_log_tail(self, limit: int = CASA_LOG_TAIL_BYTES) -> str:
        return _tail(self.file(CASA_LOG), limit)

    def open_done(self) -> int:
        """The read end of the ``done`` FIFO, non-blocking; open it before the child starts.

        Until a writer has come and gone, Linux never reports a FIFO's read end
        readable, so a child that dies without writing leaves only its pidfd to wake on.
        """
        return os.open(self.file(DONE), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)

    def progress(self) -> list[str]:
        try:
            return self.file(PROGRESS).read_text().split()
        except FileNotFoundError:
            return []


_swept: set[str] = set()
_sweep_lock = threading.Lock()


def remove_stale_job_dirs(*, once: bool = False) -> list[Path]:
    """Remove job dirs that a killed casaguard process of this user left in the temp dir.

    A dir is removed only when its name and ``owner`` file say it belongs to a
    pid that is dead in this pid namespace, and it is a real directory (not a
    symlink) owned by this user.

    Args:
        once: do nothing if this process already swept this temp dir.

    Returns:
        The directories removed.
    """
    root = tempfile.gettempdir()
    with _sweep_lock:
        if once and root in _swept:
            return []
        _swept.add(root)
    removed = []
    namespace = _pid_namespace()
    try:
        entries = list(os.scandir(root))
    except OSError:
        return []
    for entry in entries:
        match = _JOB_NAME.match(entry.name)
        if match is None:
            continue
        with contextlib.suppress(OSError, ValueError):
            st = entry.stat(follow_symlinks=False)
            if not entry.is_dir(follow_symlinks=False) or st.st_uid != os.getuid():
                continue
            pid_text, ns = (Path(entry.path) / OWNER).read_text().split()
            if int(pid_text) != int(match["pid"]) or ns != namespace or pid_alive(int(pid_text)):
                continue
            shutil.rmtree(entry.path)
            removed.append(Path(entry.path))
    return removed


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return "?"


class _ByReference(pickle.Pickler):
    """``pickle``, refusing anything of ``__main__``: the child has another ``__main__``."""

    def reducer_override(self, obj: Any) -> Any:
        owner = obj if isinstance(obj, type) or callable(obj) else type(obj)
        # None: made by exec() without a __name__; pickle would guess __main__ for it.
        if getattr(owner, "__module__", None) in ("__main__", None):
            raise pickle.PicklingError("defined in __main__: dill sends it by value")
        return NotImplemented


def _dumps(obj: Any) -> bytes:
    """``obj`` pickled by reference when it can be, else by ``dill`` (by value where needed)."""
    buffer = io.BytesIO()
    try:
        _ByReference(buffer, protocol=dill.settings["protocol"]).dump(obj)
    except Exception:  # noqa: BLE001 - whatever pickle refuses, dill is the answer
        return bytes(dill.dumps(obj, recurse=True))
    return buffer.getvalue()


def read_request(directory: Path) -> Request:
    request = dill.loads((directory / REQUEST).read_bytes())
    if not isinstance(request, Request):
        raise TypeError(f"not a casaguard request: {type(request)!r}")
    return request


def write_reply(directory: Path, reply: Reply) -> None:
    _atomic_write(directory / REPLY, _dumps(reply))


def mark(directory: Path, step: str) -> None:
    """Append a progress marker (``started``, ``returned``...) for post-mortems."""
    with open(directory / PROGRESS, "a") as handle:
        handle.write(step + "\n")


def signal_done(directory: Path) -> None:
    """Tell the parent this child has replied, torn down and holds no table lock.

    Nothing but ``os._exit`` follows, whose kernel teardown of a forked ~330 MB
    address space takes ~5-10 ms the caller need not wait for. Silently nothing
    when the parent is not listening (no reader: ``ENXIO``).
    """
    with contextlib.suppress(OSError):
        fd = os.open(directory / DONE, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            os.write(fd, b"d")
        finally:
            os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def _tail(path: Path, limit: int) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - limit))
            data = handle.read()
    except FileNotFoundError:
        return ""
    text = data.decode("utf-8", errors="replace")
    if size > limit:
        # Drop the first, probably partial, line.
        text = text.split("\n", 1)[-1]
    return text
