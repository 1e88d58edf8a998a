"""The repair's only door into the journal: orphan journals, and the repair's own backups.

Every call the repair makes into ``casaguard.journal`` goes through this module,
so that a change of the journal's format or rules changes this file only.

Backups. Before a repair changes an MS it copies every file it will rewrite or
delete into a backup directory beside the MS, written in the journal's own
format (``journal.take_snapshot``: ``manifest.json`` + ``files/<relative path>``),
so the command users know undoes it::

    casaguard restore-journal <ms parent>/.<ms name>-repair.casaguard-journal-<UTC time>-<hex>

A backup also holds the ``table.lock`` of every table it copies files of, and
puts it back with them. casacore keeps a table's sync data (column and row
counts, change counters) in ``table.lock``; a ``table.dat`` put back without
its lock file is refused by casacore's next writer -- measured after undoing a
column removal: ``Table::lock cannot sync table ...; another process changed the
number of columns``. (The journal itself never copies ``table.lock``; the
journal rewrite decides that for journals, this module for backups.)

A backup is never an *orphan* journal: its name does not match the orphan
pattern ``.<ms name>.casaguard-journal-<pid>-*`` (the ``-repair`` sits between
the MS name and the mark, and the time stamp is not a pid), so guarded writes
neither warn about it nor refuse the MS. Its manifest says ``"kind":
"repair-backup"`` and names the fixes. A discarded orphan journal is moved,
whole, into ``discarded/`` inside the backup: ``casaguard restore-journal
<backup>/discarded/<journal>`` still rolls the MS back to it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from casaguard import journal

BACKUP_KIND = "repair-backup"
BACKUP_MARK = "-repair" + journal.JOURNAL_MARK
DISCARDED = "discarded"
ORPHAN_COPIES = "orphans"


def pending_journals(ms: str) -> list[Path]:
    """Journals of ``ms`` left by a guarded write whose caller died (they hold the old state)."""
    return journal.orphans(ms)


def journal_manifest(path: Path) -> dict[str, Any]:
    """The manifest of a journal (``{}`` if it has none)."""
    try:
        manifest: dict[str, Any] = json.loads((path / journal.MANIFEST).read_text())
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
            if entry.name not in before and entry.is_file() and entry.name != journal.LOCK_FILE:
                touched.append(entry.name)
    return list(dict.fromkeys(touched))


def journal_superseded(path: Path) -> bool | None:
    """Whether the MS provably changed after the dead call that left ``path``.

    The journal of today records no end state of the dead call, so nothing
    proves it either way: None. (The journal rewrite that refuses a restore over
    newer work answers this; only this function then changes.)
    """
    del path
    return None


def finish_journal(path: Path) -> list[str]:
    """Finish the restore an orphan journal holds (its MS goes back to before the dead call).

    Today's journal puts the data files back but not the tables' ``table.lock``.
    Measured (16,800-row MS, caller SIGKILLed mid-ft): the half-written MS reads
    fine, but after ``journal.recover`` python-casacore fails on
    ``SSMIndex::getIndex - access to non-existing row 0 in column APP_PARAMS of
    table .../HISTORY``; removing the ``table.lock`` of each table the restore put
    files back into (casacore writes a fresh one on the next open) makes plain
    ft + clearcal succeed. The repair's backup holds the removed lock files. (The
    journal rewrite of issue 11 restores consistent lock files itself; then this
    step finds nothing to do and goes.)
    """
    manifest = journal_manifest(path)
    ms = Path(manifest.get("vis", ""))
    done = journal.recover(ms, journal=path)
    tables = {str(Path(rel).parent) for rel in manifest.get("saved", [])}
    for table in sorted(tables):
        lock = ms / table / journal.LOCK_FILE
        if lock.is_file():
            lock.unlink()
            done.append(str(lock))
    return done


def backup_path(ms: str) -> Path:
    """A new backup directory's path beside the MS (see the module docstring)."""
    where = Path(ms)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return where.parent / f".{where.name}{BACKUP_MARK}{stamp}-{secrets.token_hex(3)}"


def take_backup(ms: str, files: Sequence[str], *, fixes: Sequence[str]) -> Path:
    """Copy ``files`` (relative to ``ms``) into a new backup directory; return its path.

    Raises:
        InvalidInput: not enough free space for the copy (nothing was copied).
    """
    path = backup_path(ms)
    path.mkdir(mode=0o700)
    try:
        journal.take_snapshot(
            path,
            ms,
            task="repair",
            files=list(files),
            subtables=[],
            growth_bytes=0,
            extra={"kind": BACKUP_KIND, "fixes": list(fixes)},
        )
        _add_lock_files(path, Path(ms), files)
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    return path


def _add_lock_files(backup: Path, ms: Path, files: Sequence[str]) -> None:
    """Copy the ``table.lock`` of every table ``files`` belong to, and list it in the manifest."""
    tables = sorted({str(Path(rel).parent) for rel in files} | ({"."} if files else set()))
    manifest_path = backup / journal.MANIFEST
    manifest = json.loads(manifest_path.read_text())
    for table in tables:
        rel = os.path.normpath(os.path.join(table, journal.LOCK_FILE))
        if (ms / rel).is_file():
            target = backup / journal.FILES / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            journal.copy_file(ms / rel, target)
            manifest["saved"].append(rel)
    tmp = manifest_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest))
    os.replace(tmp, manifest_path)


def restore_backup(path: Path) -> list[str]:
    """Put the MS back as the backup found it (the repair's rollback); keep the backup dir."""
    return journal.restore(path, vis=str(journal_manifest(path).get("vis", "")))


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
