"""Locks on the MS that would make a CASA child wait: found before the call and while it runs.

A lock held by the caller itself is refused at once; another process's is
waited for up to ``lock_timeout``, then ``MsLocked`` names the holder.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from casaguard import events
from casaguard.crash import signatures
from casaguard.errors import (
    LOCK_WAIT_KILLED,
    LOCKED_MESSAGE,
    SELF_LOCKED_MESSAGE,
    MsLocked,
)
from casaguard.ms import locks
from casaguard.sandbox.callspec import CallSpec, ChildHandle
from casaguard.sandbox.procs import _descendants

log = events.get_logger()


@dataclass
class _Kill:
    """Why ``_wait`` killed the child (None of these: it exited by itself)."""

    timed_out: bool = False
    lock: locks.TableConflict | None = None
    lock_waited_s: float = 0.0
    lock_unknown: bool = False


def _lock_wait(handle: ChildHandle, spec: CallSpec) -> tuple[locks.TableConflict | None, bool]:
    """Is the child waiting for a table lock? (the conflicting lock, blocked in the kernel).

    casacore first polls for a lock without blocking (about 30 s, invisible to
    the kernel), then blocks in ``fcntl``: a conflicting lock held by anyone
    outside the child's tree counts from the first poll, so ``lock_timeout``
    holds on both phases.
    """
    if not spec.vis:
        return None, False
    child_tree = {handle.pid, *(p.pid for p in _descendants(handle.pid))}
    conflicts = locks.table_conflicts(
        spec.vis, writes=spec.may_write, written=spec.written, exclude=child_tree
    )
    waiting = bool(child_tree & locks.waiting_pids(spec.vis, subtables=True))
    return (conflicts[0] if conflicts else None), waiting


def _lock_kill_error(
    spec: CallSpec, handle: ChildHandle, kill: _Kill, facts: dict[str, Any]
) -> MsLocked:
    """The MsLocked for a child that was killed because it waited too long for a lock."""
    suffix = LOCK_WAIT_KILLED.format(
        task=spec.name, child_pid=handle.pid, waited_s=kill.lock_waited_s
    )
    facts["signature"] = signatures.signature("locked", "lock held by another process")
    conflict = kill.lock
    if conflict is None:
        facts["detail"] = "blocked on a table lock whose holder is gone"
        return MsLocked(f"{spec.vis}: a table lock blocked the call" + suffix, **facts)
    holder = conflict.holder
    facts["detail"] = f"{holder.describe()} on {conflict.table}"
    if conflict.is_self:
        message = _self_locked_message(spec, conflict)
    else:
        message = LOCKED_MESSAGE.format(
            vis=conflict.table,
            holder_pid=holder.pid,
            holder_cmdline=holder.cmdline,
            waited_s=kill.lock_waited_s,
        )
    return MsLocked(
        message + suffix,
        holder_pid=holder.pid,
        holder_cmdline=holder.cmdline,
        lock_type=holder.lock_type,
        **facts,
    )


def _self_locked_message(spec: CallSpec, conflict: locks.TableConflict) -> str:
    return SELF_LOCKED_MESSAGE.format(
        task=spec.name or "call",
        pid=conflict.holder.pid,
        lock_type=conflict.holder.lock_type.upper(),
        table=conflict.table,
    )


def _wait_for_lock(spec: CallSpec) -> None:
    """Refuse at once a lock this process holds; wait up to lock_timeout for another's.

    A lock held by this very process (a ``casacore.tables.table`` it still has
    open) would block the child forever, since the caller waits for the child:
    it is reported before any child starts.

    Raises:
        MsLocked: this process holds a conflicting lock on the MS or a subtable,
            or another process still does after ``lock_timeout``.
    """
    assert spec.vis is not None
    deadline = time.monotonic() + spec.lock_timeout
    started = time.monotonic()
    announced = False
    while True:
        conflicts = locks.table_conflicts(spec.vis, writes=spec.may_write, written=spec.written)
        if not conflicts:
            return
        conflict = conflicts[0]
        holder = conflict.holder
        signature = signatures.signature("locked", "lock held by another process")
        if conflict.is_self:
            raise MsLocked(
                _self_locked_message(spec, conflict),
                holder_pid=holder.pid,
                holder_cmdline=holder.cmdline,
                lock_type=holder.lock_type,
                task=spec.name,
                vis=spec.vis,
                detail=f"{holder.describe()} on {conflict.table} (this process)",
                elapsed_s=0.0,
                signature=signatures.signature("locked", "lock held by this process"),
            )
        if not announced:
            log.warning(
                "lock_wait",
                task=spec.name,
                vis=spec.vis,
                table=str(conflict.table),
                holder_pid=holder.pid,
                holder_cmdline=holder.cmdline,
                lock_type=holder.lock_type,
                lock_timeout_s=spec.lock_timeout,
            )
            announced = True
        if time.monotonic() >= deadline:
            waited = time.monotonic() - started
            raise MsLocked(
                LOCKED_MESSAGE.format(
                    vis=conflict.table,
                    holder_pid=holder.pid,
                    holder_cmdline=holder.cmdline,
                    waited_s=waited,
                ),
                holder_pid=holder.pid,
                holder_cmdline=holder.cmdline,
                lock_type=holder.lock_type,
                task=spec.name,
                vis=spec.vis,
                detail=f"{holder.describe()} on {conflict.table}",
                elapsed_s=round(waited, 4),
                signature=signature,
            )
        time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
