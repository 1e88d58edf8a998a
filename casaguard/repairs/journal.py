"""The repair's only door into the journal: orphan journals, the writer lock, and backups.

Every call the repair makes into the journal (``casaguard.journal.layout``, ``recovery``,
``restore``, ``snapshot``, ``trust`` and ``writer``) goes through this module, so that a
change of the journal's format or rules changes this file only.

Writer lock. The repair holds the journal's own writer lock
(``<ms>/.casaguard-writer.lock``, ``casaguard.journal.writer.writer_lock``) for the whole of an
apply, so no guarded write starts or runs while it changes the MS; finishing
an orphan journal then runs ``casaguard.journal.recovery.recover(..., writer_lock_held=True)``.

Backups. Before a repair changes an MS it copies every file it will rewrite or
delete into a backup directory beside the MS, written by the journal itself
(``casaguard.journal.snapshot.take_snapshot``: ``manifest.json`` + ``files/<relative path>``, plus
the ``table.lock`` of each table copied, whose sync data a restore puts back;
casacore refuses a put-back ``table.dat`` whose lock file says otherwise:
``Table::lock cannot sync table ...; another process changed the number of
columns``). A subtable with a file to back up is copied whole (the journal's
unit for subtables). ``casaguard restore-journal <backup>`` undoes the repair
(``undo_backup``); it refuses when the MS was written after the repair
(``casaguard.journal.recovery.later_writes``: the repair touches the backup's ``heartbeat`` when
its changes are done), unless ``--force``.

A backup is never a *pending* journal: the journal looks for
``.<ms name>.casaguard-journal-*`` beside the MS, and a backup is named
``.<ms name>-repair.casaguard-journal-<UTC time>-<hex>`` (the ``-repair`` sits
between the MS name and the mark), so the next guarded write neither warns
about it nor refuses the MS. (A backup of MS ``x`` does match the pattern of an
MS named ``x-repair``; its manifest names ``x``, so the journal ignores it there
as untrusted.) Its manifest says ``"kind": "repair-backup"`` and names the
fixes. A discarded orphan journal is moved, whole, into ``discarded/`` inside
the backup; moved back beside the MS it is pending again.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from casaguard.errors import InvalidInput, JournalError, MsLocked
from casaguard.journal import layout as journal_layout
from casaguard.journal import recovery as journal_recovery
from casaguard.journal import restore as journal_restore
from casaguard.journal import snapshot as journal_snapshot
from casaguard.journal import trust as journal_trust
from casaguard.journal import writer as journal_writer
from casaguard.ms.checks import require_ms

BACKUP_KIND = "repair-backup"
BACKUP_MARK = "-repair" + journal_layout.JOURNAL_MARK
DISCARDED = "discarded"
ORPHAN_COPIES = "orphans"


def pending_journals(ms: str) -> list[Path]:
    """Journals of ``ms`` left by a guarded write whose caller died (they hold the old state)."""
    return journal_trust.pending_journals(ms)


def journal_manifest(path: Path) -> dict[str, Any]:
    """The manifest of a journal (``{}`` if it has none)."""
    try:
        manifest: dict[str, Any] = json.loads((path / journal_layout.MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    return manifest


def journal_touches(path: Path) -> list[str]:
    """Paths (relative to the MS) a restore of journal ``path`` rewrites or deletes."""
    manifest = journal_manifest(path)
    ms = Path(manifest.get("vis", ""))
    touched = list(manifest.get("saved", []))
    before = set(manifest.get("main_entries", []))
    if ms.is_dir():
        for entry in sorted(ms.iterdir()):
            if (
                entry.name not in before
                and entry.is_file()
                and entry.name != journal_layout.LOCK_FILE
            ):
                touched.append(entry.name)
    return list(dict.fromkeys(touched))


def journal_superseded(path: Path) -> bool:
    """Whether the MS was written after the dead call that left ``path`` (``later_writes``).

    Finishing such a journal would undo that newer work, so the repair plans no
    finish for it (``--discard-journal`` or ``restore-journal --force`` decide).
    """
    manifest = journal_manifest(path)
    ms = Path(manifest.get("vis", ""))
    return ms.is_dir() and bool(journal_recovery.later_writes(ms, path, manifest))


@contextlib.contextmanager
def writer_lock(ms: str) -> Iterator[None]:
    """Hold the journal's writer lock on ``ms``, never waiting for it.

    Raises:
        MsLocked: a guarded write (or another repair) holds the MS.
    """
    with journal_writer.writer_lock(ms, timeout=0.0, task="repair"):
        yield


def finish_journal(path: Path) -> list[str]:
    """Finish the restore an orphan journal holds (its MS goes back to before the dead call).

    Call it holding ``writer_lock``. The journal puts the data files and each
    table's ``table.lock`` sync data back, then removes itself.

    Raises:
        JournalError: refused (the MS was written after the dead call, a bad
            manifest) or the restore failed; the journal is kept.
    """
    ms = Path(journal_manifest(path).get("vis", ""))
    return journal_recovery.recover(ms, journal=path, writer_lock_held=True)


def backup_path(ms: str) -> Path:
    """A new backup directory's path beside the MS (see the module docstring)."""
    where = Path(ms)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return where.parent / f".{where.name}{BACKUP_MARK}{stamp}-{secrets.token_hex(3)}"


def take_backup(ms: str, files: Sequence[str], *, fixes: Sequence[str]) -> Path:
    """Copy ``files`` (relative to ``ms``) into a new backup directory; return its path.

    Raises:
        InvalidInput: not enough free space, or a file cannot be read (nothing was copied).
    """
    path = backup_path(ms)
    path.mkdir(mode=0o700)
    try:
        journal_snapshot.take_snapshot(
            path,
            ms,
            task="repair",
            files=[rel for rel in files if len(Path(rel).parts) == 1],
            subtables=sorted({Path(rel).parts[0] for rel in files if len(Path(rel).parts) > 1}),
            growth_bytes=0,
            extra={"kind": BACKUP_KIND, "fixes": list(fixes)},
        )
    except OSError as error:
        shutil.rmtree(path, ignore_errors=True)
        raise InvalidInput(f"repair: cannot back up {ms}: {error}; nothing was changed") from None
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    return path


def seal_backup(backup: Path) -> None:
    """Mark the end of the repair's writes: whatever changes the MS later is newer work."""
    (backup / journal_layout.HEARTBEAT).touch(mode=0o600)


def restore_backup(path: Path) -> list[str]:
    """Put the MS back as the backup found it (the repair's rollback); keep the backup dir."""
    return journal_restore.restore(path, vis=str(journal_manifest(path).get("vis", "")))


def backup_ms(path: Path) -> Path | None:
    """The MS a repair backup belongs to (from its place, name and manifest), or None."""
    name = path.name
    if not name.startswith(".") or BACKUP_MARK not in name:
        return None
    if journal_manifest(path).get("kind") != BACKUP_KIND:
        return None
    return path.parent / name[1:].rsplit(BACKUP_MARK, 1)[0]


def undo_backup(path: Path, *, force: bool = False) -> tuple[Path, list[str]]:
    """``casaguard restore-journal <backup>``: undo a repair, then remove its backup.

    Returns:
        The MS and the paths restored or removed.

    Raises:
        InvalidInput: ``path`` is not a repair backup beside an MS.
        JournalError: refused (untrusted backup, MS locked, the MS was written
            after the repair -- unless ``force``) or the restore failed.
    """
    path = Path(os.path.abspath(path))
    ms = backup_ms(path)
    if ms is None:
        raise InvalidInput(f"{path}: not a casaguard repair backup")
    require_ms(ms)
    problem = journal_trust.trust_problem(path, ms)
    if problem is not None:
        raise JournalError(f"refusing to restore {ms} from {path}: {problem}")
    try:
        with journal_writer.writer_lock(
            ms, timeout=journal_layout.RECOVER_LOCK_WAIT_S, task="restore-journal"
        ):
            if not force:
                later = journal_recovery.later_writes(ms, path, journal_manifest(path))
                if later:
                    shown = ", ".join(later[:3]) + (" ..." if len(later) > 3 else "")
                    raise JournalError(
                        journal_layout.LATER_WRITE_MESSAGE.format(vis=ms, journal=path, paths=shown)
                    )
            done = journal_restore.restore(path, vis=str(ms))
            shutil.rmtree(path)
    except MsLocked as error:
        raise JournalError(f"refusing to restore {ms}: {error}") from None
    return ms, done


def keep_orphan_copy(backup: Path, orphan: Path) -> Path:
    """Copy an orphan journal into the backup before it is consumed (for a rollback)."""
    target = backup / ORPHAN_COPIES / orphan.name
    target.parent.mkdir(exist_ok=True)
    shutil.copytree(orphan, target, symlinks=True)
    return target


def put_orphan_back(copy: Path, original: Path) -> None:
    """Rollback of a finished journal: the orphan journal returns where it was."""
    if not original.exists():
        os.replace(copy, original)


def discard_journal(backup: Path, orphan: Path) -> Path:
    """Move an orphan journal into ``backup/discarded/`` (still restorable from there)."""
    target = backup / DISCARDED / orphan.name
    target.parent.mkdir(exist_ok=True)
    os.replace(orphan, target)
    return target


def drop_orphan_copies(backup: Path) -> None:
    """After a verified repair the copies kept for a rollback are not needed."""
    shutil.rmtree(backup / ORPHAN_COPIES, ignore_errors=True)
