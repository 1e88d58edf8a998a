"""One guarded writer per MS: a writer lock file readers cannot take, and the writer's heartbeat."""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from casaguard import events
from casaguard.errors import LOCKED_MESSAGE, InvalidInput, MsLocked, ReadOnlyMs
from casaguard.journal.layout import (
    HEARTBEAT,
    HEARTBEAT_S,
    READ_ONLY_MESSAGE,
    WRITER_LOCK_FILE,
    Snapshot,
)
from casaguard.ms import locks

log = events.get_logger()


def _start_heartbeat(snapshot: Snapshot) -> None:
    """Touch ``<journal>/heartbeat`` every HEARTBEAT_S until discard: the call's sign of life."""
    beat = snapshot.path / HEARTBEAT
    _touch(beat)

    def run() -> None:
        while not snapshot.heartbeat_stop.wait(HEARTBEAT_S):
            if not _touch(beat):
                return

    threading.Thread(target=run, name="casaguard-journal-heartbeat", daemon=True).start()


def _touch(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError:
        return False
    try:
        os.utime(fd)
    finally:
        os.close(fd)
    return True


def _open_writer_lock(vis: str, task: str) -> int:
    """Open (creating if needed) the MS's writer-lock file, closed to everyone but its writers."""
    path = Path(vis) / WRITER_LOCK_FILE
    try:
        group_writes = bool(os.stat(vis).st_mode & stat.S_IWGRP)
        mode = 0o660 if group_writes else 0o600
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as error:
        raise ReadOnlyMs(
            READ_ONLY_MESSAGE.format(task=task, vis=vis, path=path, hint=f": {error.strerror}")
        ) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise InvalidInput(f"{task}: {path} is not a plain file; nothing was changed")
    if st.st_mode & 0o007 and st.st_uid == os.geteuid():
        os.fchmod(fd, stat.S_IMODE(st.st_mode) & ~0o007)  # a reader must not be able to open it
    return fd


def _one_writer(vis: str, lock_timeout: float, task: str) -> int:
    """Take casaguard's writer lock on the MS, waiting up to ``lock_timeout``.

    Returns:
        The descriptor holding the lock; closing it lets go.

    Raises:
        MsLocked: another guarded write to this MS still runs after ``lock_timeout``.
        ReadOnlyMs: the lock file cannot be created or opened (a read-only MS).
    """
    fd = _open_writer_lock(vis, task)
    started = time.monotonic()
    announced = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            pass
        except BaseException:
            os.close(fd)
            raise
        if not announced:
            log.warning("journal_wait", task=task, vis=vis, holder_pid=writer_lock_holder(vis))
            announced = True
        waited = time.monotonic() - started
        if waited > lock_timeout:
            os.close(fd)
            holder = writer_lock_holder(vis)
            command = locks.command_line(holder) if holder else "?"
            raise MsLocked(
                LOCKED_MESSAGE.format(
                    vis=vis, holder_pid=holder, holder_cmdline=command, waited_s=waited
                )
                + "; another guarded write to it is in progress",
                holder_pid=holder,
                holder_cmdline=command,
                lock_type="write",
                task=task,
                vis=vis,
            )
        time.sleep(0.05)


def writer_lock_holder(vis: str | os.PathLike[str]) -> int | None:
    """The pid holding casaguard's writer lock on ``vis`` (from ``/proc/locks``), or None."""
    return locks.flock_holder(Path(vis) / WRITER_LOCK_FILE)


@contextlib.contextmanager
def writer_lock(vis: str | os.PathLike[str], *, timeout: float, task: str) -> Iterator[None]:
    """Hold casaguard's writer lock on ``vis`` (the one every guarded write takes).

    For writers that are not a guarded call (the repair): while it is held no
    guarded write to ``vis`` starts, and none is running.

    Raises:
        MsLocked: another writer still holds it after ``timeout`` seconds.
        ReadOnlyMs: the lock file cannot be created or opened (a read-only MS).
    """
    fd = _one_writer(os.path.abspath(vis), timeout, task)
    try:
        yield
    finally:
        os.close(fd)
