"""CASA logs kept where the caller names them: ``casalog=`` or ``$CASAGUARD_CASALOG``.

Every guarded CASA call's child sends CASA's log to its own job directory.
By default that log is discarded with the job directory when the call
succeeds, and kept (``casa.log``) in the call's crash-evidence folder under
``$CASAGUARD_CRASH_DIR`` when it fails. With a target file -- the call's
``casalog=`` argument, else ``$CASAGUARD_CASALOG`` -- each call's whole CASA log
is *appended* to that file when the call ends, success or failure (a crash, a
timeout, Ctrl-C). Concurrent calls (``map_task``) append whole logs under an
``flock``, so their lines never interleave.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

from casaguard.errors import InvalidInput

#: Environment variable naming the file every call's CASA log is appended to.
CASALOG_ENV = "CASAGUARD_CASALOG"


def target(casalog: str | os.PathLike[str] | None) -> str | None:
    """The absolute file to append CASA logs to, from the argument or the environment.

    Raises:
        InvalidInput: the file's directory does not exist, or the path is a directory.
    """
    chosen = os.fspath(casalog) if casalog is not None else os.environ.get(CASALOG_ENV)
    if not chosen:
        return None
    path = os.path.abspath(chosen)
    origin = "casalog" if casalog is not None else f"${CASALOG_ENV}"
    if os.path.isdir(path):
        raise InvalidInput(f"{origin} {path} is a directory: name a log file")
    if not os.path.isdir(os.path.dirname(path)):
        raise InvalidInput(f"{origin} {path}: no such directory {os.path.dirname(path)}")
    return path


def append(path: str, log: Path) -> None:
    """Append the CASA log ``log`` (if the child wrote one) to ``path``, whole, under a lock.

    Raises:
        OSError: ``path`` cannot be written.
    """
    try:
        source = log.open("rb")
    except FileNotFoundError:
        return
    with source, open(path, "ab") as sink:
        fcntl.flock(sink, fcntl.LOCK_EX)
        try:
            shutil.copyfileobj(source, sink)
        finally:
            fcntl.flock(sink, fcntl.LOCK_UN)
