"""``casaguard restore-journal``: finish a dead caller's pending journal, unless the MS moved on."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import Any

from casaguard import events
from casaguard.errors import InvalidInput, JournalError, MsLocked
from casaguard.journal.layout import (
    HEARTBEAT,
    LATER_WRITE_MARGIN_S,
    LATER_WRITE_MESSAGE,
    LOCK_FILE,
    MANIFEST,
    RECOVER_LOCK_WAIT_S,
    RELEASED,
    WRITER_LOCK_FILE,
    _stat,
)
from casaguard.journal.restore import _read_manifest, restore
from casaguard.journal.trust import _owner_pid, pending_journals, trust_problem
from casaguard.journal.writer import _one_writer
from casaguard.ms.checks import require_ms
from casaguard.sandbox.pids import pid_alive

log = events.get_logger()


def recover(
    vis: str | os.PathLike[str],
    *,
    journal: str | os.PathLike[str] | None = None,
    force: bool = False,
    writer_lock_held: bool = False,
) -> list[str]:
    """Restore the pending journal of ``vis`` into it, then remove the journal.

    Args:
        vis: the MS. The journal is found from it (or must be among those found).
        journal: a specific journal directory of ``vis``.
        force: restore even if a pid that wrote the journal looks alive or the
            MS was written after the call died.
        writer_lock_held: the caller already holds ``writer_lock(vis)`` (a
            second ``flock`` from this process would conflict with it).

    Returns:
        The paths restored or removed.

    Raises:
        InvalidInput: ``vis`` is not an MS, or has no trusted pending journal.
        JournalError: refused (writer alive, MS locked, MS written later, bad
            manifest) or the restore failed; the journal is kept.
    """
    ms = Path(os.path.abspath(vis))
    require_ms(ms)
    writer_fd = None
    if not writer_lock_held:
        try:
            writer_fd = _one_writer(str(ms), RECOVER_LOCK_WAIT_S, "restore-journal")
        except MsLocked as error:
            raise JournalError(f"refusing to restore {ms}: {error}") from None
    try:
        path = _the_pending_journal(ms, journal)
        manifest = _read_manifest(path)
        if not force and not _is_own_file(path / RELEASED):
            pids = {_owner_pid(path), manifest.get("pid"), manifest.get("parent_pid")}
            for pid in sorted(p for p in pids if isinstance(p, int)):
                if pid != os.getpid() and pid_alive(pid):
                    raise JournalError(
                        f"refusing to restore {ms}: pid {pid}, which wrote {path}, is still "
                        "alive (--force if it is not the writer)"
                    )
        if not force:
            later = later_writes(ms, path, manifest)
            if later:
                shown = ", ".join(later[:3]) + (" ..." if len(later) > 3 else "")
                raise JournalError(LATER_WRITE_MESSAGE.format(vis=ms, journal=path, paths=shown))
        done = restore(path, vis=str(ms))
        shutil.rmtree(path)
    finally:
        if writer_fd is not None:
            os.close(writer_fd)
    log.info("journal_recovered", vis=str(ms), journal=str(path), restored=len(done))
    return done


def _the_pending_journal(ms: Path, journal: str | os.PathLike[str] | None) -> Path:
    pending = pending_journals(ms)
    if journal is not None:
        wanted = Path(os.path.abspath(journal))
        if wanted not in pending:
            problem = trust_problem(wanted, ms) if os.path.lexists(wanted) else "it does not exist"
            raise JournalError(f"{wanted} is not a trusted pending journal of {ms}: {problem}")
        return wanted
    if not pending:
        raise InvalidInput(f"{ms}: no pending casaguard journal, nothing to restore")
    if len(pending) > 1:
        raise JournalError(
            f"{ms} has {len(pending)} pending journals ({', '.join(map(str, pending))}): "
            "restore them one at a time, newest first"
        )
    return pending[0]


def later_writes(ms: Path, journal: Path, manifest: dict[str, Any]) -> list[str]:
    """Files of ``ms`` written after the call that left ``journal`` died.

    A file the call could not write (not in its snapshot, not a file it could
    create) must still match the manifest's size, mtime and inode; and no file
    may be newer than the journal's last heartbeat + LATER_WRITE_MARGIN_S.
    ``table.lock`` is exempt: a waiting reader writes its pid there.
    """
    could_write = set(manifest.get("saved", ()))
    recorded: dict[str, Any] = manifest.get("stat", {})
    last = max(_mtime_ns(journal / HEARTBEAT), _mtime_ns(journal / MANIFEST))
    limit = last + int(LATER_WRITE_MARGIN_S * 1e9)
    found = []
    for path in sorted(ms.rglob("*")):
        rel = str(path.relative_to(ms))
        if path.name in (LOCK_FILE, WRITER_LOCK_FILE):
            continue
        try:
            if not path.is_file() or path.is_symlink():
                continue
            other_writer = (
                rel in recorded and rel not in could_write and _stat(path) != recorded[rel]
            )
            newer = path.stat().st_mtime_ns > limit
        except PermissionError:  # listed, in a directory this process cannot enter
            continue
        if other_writer or newer:
            found.append(rel)
    found += [rel for rel in recorded if rel not in could_write and not (ms / rel).exists()]
    return sorted(set(found))


def _is_own_file(path: Path) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o022


def _mtime_ns(path: Path) -> int:
    try:
        return os.lstat(path).st_mtime_ns
    except OSError:
        return 0
