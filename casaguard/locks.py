"""Who holds a casacore table lock, read from the kernel without opening the table.

casacore locks a table with POSIX record locks on its ``table.lock`` file:
byte 0 is the table lock proper (READ or WRITE), byte 1 marks "in use" (the
table is open in that process). A lock on byte 0 held by another process makes
CASA wait for it forever, so the runner checks this before starting a task.
We read ``/proc/locks`` (a fraction of a millisecond) instead of trying the lock
ourselves: trying would take it, and taking it would be a write to the user's MS.
A dead process's locks vanish with it, so stale ``table.lock`` files are harmless
and are never deleted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import psutil

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
        found.setdefault((pid, lock_type), LockHolder(pid, lock_type, _cmdline(pid)))
    order = {"write": 0, "read": 1, "in-use": 2}
    holders = sorted(found.values(), key=lambda h: (order[h.lock_type], h.pid))
    # A process that holds a table lock is also "in use": report it once.
    blocking = {h.pid for h in holders if h.blocks_casa}
    return [h for h in holders if h.blocks_casa or h.pid not in blocking]


def blocking_holder(table: str | os.PathLike[str]) -> LockHolder | None:
    """Return the first other process whose lock would make CASA wait, or None."""
    for holder in lock_holders(table):
        if holder.blocks_casa:
            return holder
    return None


def waiting_pids(table: str | os.PathLike[str]) -> set[int]:
    """Return the pids blocked in the kernel waiting for a lock on ``table``."""
    lock_file = Path(table) / "table.lock"
    try:
        stat = lock_file.stat()
        text = PROC_LOCKS.read_text()
    except OSError:
        return set()
    waiting = set()
    for line in text.splitlines():
        fields = line.split()
        # Blocked waiters look like "1: -> POSIX  ADVISORY  WRITE 4242 fe:00:123 0 0".
        if len(fields) >= 9 and fields[1] == "->":
            parsed = _parse(" ".join([fields[0], *fields[2:]]), stat.st_dev, stat.st_ino)
            if parsed is not None:
                waiting.add(parsed[0])
    return waiting


def _parse(line: str, device: int, inode: int) -> tuple[int, str] | None:
    # "1: POSIX  ADVISORY  WRITE 3079 fe:00:2146480 0 0" (blocked waiters carry "->").
    fields = line.split()
    if len(fields) < 8 or "->" in fields[1]:
        return None
    kind, mode, pid_text, where, start_text, end_text = (fields[i] for i in (1, 3, 4, 5, 6, 7))
    if kind not in ("POSIX", "OFDLCK"):
        return None
    major_minor_inode = where.split(":")
    if len(major_minor_inode) != 3:
        return None
    major, minor, inode_text = major_minor_inode
    try:
        if int(inode_text) != inode or os.makedev(int(major, 16), int(minor, 16)) != device:
            return None
        pid = int(pid_text)
        start = int(start_text)
    except ValueError:
        return None
    end = None if end_text == "EOF" else int(end_text)
    covers_lock_byte = start <= TABLE_LOCK_BYTE and (end is None or end >= TABLE_LOCK_BYTE)
    if not covers_lock_byte:
        return (pid, "in-use")
    return (pid, "write" if mode == "WRITE" else "read")


def _cmdline(pid: int) -> str:
    try:
        parts = psutil.Process(pid).cmdline()
    except (psutil.Error, OSError):
        return "?"
    # A `python -c` holder's argument spans lines; the error naming it must stay one line.
    text = " ".join(parts).replace("\r", "\\r").replace("\n", "\\n")
    return text or "?"
