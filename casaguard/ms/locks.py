"""Who holds a casacore table lock, read from the kernel without opening the table.

casacore locks a table with POSIX record locks on its ``table.lock`` file:
byte 0 is the table lock proper (READ or WRITE), byte 1 marks "in use" (the
table is open in that process). A lock on byte 0 held by another process makes
CASA wait for it forever, so the runner checks this before starting a task.
We read ``/proc/locks`` (a fraction of a millisecond) instead of trying the lock
ourselves: trying would take it, and taking it would be a write to the user's MS.
A dead process's locks vanish with it, so stale ``table.lock`` files are harmless
and are never deleted.

fcntl locks never conflict within one process, so a caller that keeps
``casacore.tables.table(ms)`` open does not block its own in-process CASA -- but
does block a sandbox child, which is another process. ``table_conflicts`` with
``include_self=True`` finds that case before a child is started: after opening
a table, casacore holds a READ lock on bytes 0-1 of its ``table.lock`` (until
``unlock()``), and a WRITE lock on byte 0 after a write, until ``unlock()`` or
``close()``; only the "in use" byte 1 remains after ``unlock()``.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import psutil

from casaguard.ms import lock_files

PROC_LOCKS = Path("/proc/locks")
TABLE_LOCK_BYTE = 0
IN_USE_BYTE = 1


@dataclass(frozen=True)
class LockHolder:
    """One process's lock on a table's ``table.lock``.

    Attributes:
        pid: the holder's pid.
        lock_type: ``"read"``, ``"write"`` or ``"in-use"`` (open, no table lock).
        cmdline: the holder's command line, or ``"?"`` when it cannot be read.
    """

    pid: int
    lock_type: str
    cmdline: str

    @property
    def blocks_casa(self) -> bool:
        """True when CASA would wait for this holder to let go."""
        return self.lock_type in ("read", "write")

    def describe(self) -> str:
        return f"{self.lock_type} lock held by pid {self.pid} ({self.cmdline})"


def lock_holders(table: str | os.PathLike[str], *, include_self: bool = False) -> list[LockHolder]:
    """List the processes that hold a lock on ``table``'s ``table.lock``.

    Args:
        table: path of a casacore table (an MS directory).
        include_self: also list locks held by this process.

    Returns:
        One LockHolder per (pid, lock type), write locks first; empty when the
        table has no lock file or nobody holds it.
    """
    lock_file = Path(table) / "table.lock"
    try:
        stat = lock_file.stat()
    except OSError:
        return []
    try:
        text = PROC_LOCKS.read_text()
    except OSError:
        return []
    me = os.getpid()
    found: dict[tuple[int, str], LockHolder] = {}
    for line in text.splitlines():
        holder = _parse(line, stat.st_dev, stat.st_ino)
        if holder is None or (holder[0] == me and not include_self):
            continue
        pid, lock_type = holder
        found.setdefault((pid, lock_type), LockHolder(pid, lock_type, command_line(pid)))
    order = {"write": 0, "read": 1, "in-use": 2}
    holders = sorted(found.values(), key=lambda h: (order[h.lock_type], h.pid))
    # A process that holds a table lock is also "in use": report it once.
    blocking = {h.pid for h in holders if h.blocks_casa}
    return [h for h in holders if h.blocks_casa or h.pid not in blocking]


def waiting_pids(table: str | os.PathLike[str], *, subtables: bool = False) -> set[int]:
    """Return the pids blocked in the kernel waiting for a lock on ``table``.

    Args:
        table: a table directory (an MS).
        subtables: also count waiters on the MS's subtables (``SOURCE``, ``HISTORY``...).
    """
    tables = ms_tables(table) if subtables else [Path(table)]
    inodes = set()
    for path in tables:
        try:
            st = (path / "table.lock").stat()
        except OSError:
            continue
        inodes.add((st.st_dev, st.st_ino))
    try:
        text = PROC_LOCKS.read_text()
    except OSError:
        return set()
    waiting = set()
    for line in text.splitlines():
        fields = line.split()
        # Blocked waiters look like "1: -> POSIX  ADVISORY  WRITE 4242 fe:00:123 0 0".
        if len(fields) >= 9 and fields[1] == "->":
            for device, inode in inodes:
                parsed = _parse(" ".join([fields[0], *fields[2:]]), device, inode)
                if parsed is not None:
                    waiting.add(parsed[0])
    return waiting


@dataclass(frozen=True)
class TableConflict:
    """A lock on one table of an MS that would make a CASA task wait.

    Attributes:
        table: the table directory (the MS itself or one of its subtables).
        holder: who holds the lock.
    """

    table: Path
    holder: LockHolder

    @property
    def is_self(self) -> bool:
        """True when the holder is this very process (a table object it still has open)."""
        return self.holder.pid == os.getpid()


def ms_tables(vis: str | os.PathLike[str]) -> list[Path]:
    """The MS directory and its subtable directories (those with a ``table.dat``)."""
    root = Path(vis)
    tables = [root]
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return tables
    tables += [entry for entry in entries if _is_table(entry)]
    return tables


def _is_table(entry: Path) -> bool:
    """Whether ``entry`` holds a ``table.dat``; a directory this process may not
    look into holds no table it (or a CASA task it starts) could open."""
    try:
        return (entry / "table.dat").is_file()
    except PermissionError:
        return False


def table_conflicts(
    vis: str | os.PathLike[str],
    *,
    writes: bool,
    written: Iterable[str] = (),
    include_self: bool = True,
    exclude: Collection[int] = (),
) -> list[TableConflict]:
    """Locks on the MS or its subtables that a CASA task on ``vis`` would wait for.

    One ``stat`` and one ``F_GETLK`` per table; ``/proc/locks`` only when a lock byte is
    taken or this process has a table file open.

    Args:
        vis: the MS.
        writes: the task may write to the MS: a READ lock on the main table
            (or on a subtable named in ``written``) blocks it too, not only a WRITE lock.
        written: subtable names the task writes (e.g. ``SOURCE``, ``HISTORY``).
        include_self: report locks this process holds (it blocks its own children).
        exclude: pids whose locks never count (the task's own child tree).

    Returns:
        The conflicting locks, this process's own first, then the main table's.
    """
    root = Path(vis)
    written_names = set(written)
    by_inode: dict[tuple[int, int], Path] = {}
    for table in ms_tables(root):
        try:
            st = (table / "table.lock").stat()
        except OSError:
            continue
        by_inode[(st.st_dev, st.st_ino)] = table
    if not by_inode:
        return []
    # Fast path, only when this process has no descriptor of any of these lock
    # files: then it holds no lock on them, and opening one for F_GETLK cannot
    # cost it one -- POSIX drops every lock a process holds on a file when it
    # closes *any* descriptor of that file, so probing a table.lock the caller's
    # casacore has open would silently unlock the caller's table. With none
    # open and no lock byte taken by others, /proc/locks (9-18 ms after CASA
    # ran) is not read.
    if not lock_files.has_own_descriptor(by_inode) and not any(
        lock_files.lock_byte_taken(t / "table.lock") for t in by_inode.values()
    ):
        return []
    try:
        text = PROC_LOCKS.read_text()
    except OSError:
        return []
    me = os.getpid()
    found: dict[tuple[Path, int], str] = {}
    for line in text.splitlines():
        parsed = _parse_any(line, by_inode)
        if parsed is None:
            continue
        table, pid, lock_type = parsed
        if pid in exclude or (pid == me and not include_self) or lock_type == "in-use":
            continue
        written_here = writes and (table == root or table.name in written_names)
        if (lock_type == "write" or written_here) and found.get((table, pid)) != "write":
            found[(table, pid)] = lock_type
    conflicts = [
        TableConflict(table, LockHolder(pid, lock_type, command_line(pid)))
        for (table, pid), lock_type in found.items()
    ]
    return sorted(conflicts, key=lambda c: (not c.is_self, c.table != root, str(c.table)))


def _parse_any(line: str, by_inode: Mapping[tuple[int, int], Path]) -> tuple[Path, int, str] | None:
    """Parse one granted ``/proc/locks`` line if it locks one of ``by_inode``'s files."""
    lock = _granted(line)
    table = None if lock is None else by_inode.get(lock.file)
    if lock is None or table is None:
        return None
    held = _table_lock_held(lock)
    return None if held is None else (table, *held)


class _Granted(NamedTuple):
    """One granted lock of ``/proc/locks``: ``1: POSIX  ADVISORY  WRITE 3079 fe:00:2146480 0 0``."""

    kind: str  # POSIX, OFDLCK or FLOCK
    mode: str  # READ or WRITE
    pid: int
    file: tuple[int, int]  # (st_dev, st_ino)
    start: int
    end: int | None  # None: to end of file


def _granted(line: str) -> _Granted | None:
    """Parse one ``/proc/locks`` line; None for a blocked waiter (``->``) or a line not understood.

    The one parser of ``/proc/locks`` in casaguard: table locks here, the
    journal's writer ``flock`` (``flock_holder``) too.
    """
    fields = line.split()
    if len(fields) < 8 or "->" in fields[1]:
        return None
    where = fields[5].split(":")
    if len(where) != 3:
        return None
    try:
        device = os.makedev(int(where[0], 16), int(where[1], 16))
        return _Granted(
            kind=fields[1],
            mode=fields[3],
            pid=int(fields[4]),
            file=(device, int(where[2])),
            start=int(fields[6]),
            end=None if fields[7] == "EOF" else int(fields[7]),
        )
    except ValueError:
        return None


def _parse(line: str, device: int, inode: int) -> tuple[int, str] | None:
    """(pid, "read" | "write" | "in-use") of a granted fcntl lock on the file, else None."""
    lock = _granted(line)
    if lock is None or lock.file != (device, inode):
        return None
    return _table_lock_held(lock)


def _table_lock_held(lock: _Granted) -> tuple[int, str] | None:
    """(pid, "read" | "write" | "in-use") of a casacore (fcntl) lock, None for a flock."""
    if lock.kind not in ("POSIX", "OFDLCK"):
        return None
    covers_lock_byte = lock.start <= TABLE_LOCK_BYTE and (
        lock.end is None or lock.end >= TABLE_LOCK_BYTE
    )
    if not covers_lock_byte:
        return (lock.pid, "in-use")
    return (lock.pid, "write" if lock.mode == "WRITE" else "read")


def flock_holder(path: str | os.PathLike[str]) -> int | None:
    """The pid holding a granted ``flock`` on ``path`` (from ``/proc/locks``), or None."""
    try:
        st = os.stat(path)
        text = PROC_LOCKS.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        lock = _granted(line)
        if lock is not None and lock.kind == "FLOCK" and lock.file == (st.st_dev, st.st_ino):
            return lock.pid
    return None


def command_line(pid: int) -> str:
    """``pid``'s command line on one line (newlines escaped), or ``?``."""
    try:
        parts = psutil.Process(pid).cmdline()
    except (psutil.Error, OSError):
        return "?"
    # A `python -c` holder's argument spans lines; the error naming it must stay one line.
    text = " ".join(parts).replace("\r", "\\r").replace("\n", "\\n")
    return text or "?"
