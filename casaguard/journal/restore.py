"""Putting an MS back from its journal, under casacore's own lock, lock-file sync data included."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import shutil
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from casaguard import events
from casaguard.errors import JournalError
from casaguard.journal.layout import (
    _DATA_MANAGER_FILE,
    _RESTORE_SUFFIX,
    CLOCK_SLACK_NS,
    FILES,
    JOURNAL_MARK,
    LOCK_FILE,
    LOCK_REQUEST_BYTES,
    MANIFEST,
    RESTORE_FAILED_MESSAGE,
    RESTORE_LOCK_WAIT_S,
    _stat,
)
from casaguard.journal.pinned import PinnedTree
from casaguard.ms import lock_files

log = events.get_logger()


def _read_manifest(journal: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((journal / MANIFEST).read_text())
    except (OSError, ValueError) as error:
        raise JournalError(f"cannot read the manifest of {journal}: {error}") from None
    if not isinstance(manifest, dict):
        raise JournalError(f"the manifest of {journal} is not an object")
    return manifest


def _relative(root: Path, rel: Any, *, what: str) -> str:
    """``rel`` if it is a plain relative path (no ``..``, not absolute)."""
    if not isinstance(rel, str) or not rel or os.path.isabs(rel) or ".." in Path(rel).parts:
        raise JournalError(f"manifest path {rel!r} ({what}) is not a path inside {root}")
    return rel


def _inside(root: Path, rel: Any, *, what: str) -> Path:
    """``root / rel`` if ``rel`` is a plain relative path that stays inside ``root``."""
    target = root / _relative(root, rel, what=what)
    real_root = os.path.realpath(root)
    real = os.path.realpath(target)
    if os.path.commonpath([real_root, real]) != real_root:
        raise JournalError(f"manifest path {rel!r} ({what}) resolves outside {root}: {real}")
    return target


def _validated(root: Path, journal: Path, manifest: dict[str, Any]) -> None:
    """Every path the manifest names lies inside the MS (and its copy inside the journal)."""
    for key in ("saved", "main_entries"):
        if not isinstance(manifest.get(key), list):
            raise JournalError(f"the manifest of {journal} has no {key} list")
    if "table.dat" not in manifest["main_entries"]:
        raise JournalError(f"the manifest of {journal} does not list the MS's table.dat")
    rels = [*manifest["saved"], *manifest.get("locks", {})]
    for rel in rels:
        _inside(root, rel, what="restored file")
        copy = _inside(journal / FILES, rel, what="journal copy")
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISREG(os.lstat(copy).st_mode):
                raise JournalError(f"journal copy {copy} is not a plain file")
    for name in manifest.get("subtables", {}):
        _inside(root, name, what="subtable")
    # Names the restore must leave alone: where one leads (a symlink out of the
    # MS, say) does not matter, so it is only checked to be a name.
    for entries in manifest.get("subtable_entries", {}).values():
        for rel in entries:
            _relative(root, rel, what="subtable entry")


def restore(journal: str | os.PathLike[str], *, vis: str) -> list[str]:
    """Restore ``vis`` from ``journal`` (the writer must be dead, the writer lock held).

    Args:
        journal: a journal directory written by ``take_snapshot``.
        vis: the MS the journal was found from; the manifest must name it.

    Returns:
        Absolute paths restored or removed; empty if there is no manifest
        (the writer died before the task started).

    Raises:
        JournalError: see ``MsJournal.restore``.
    """
    journal = Path(journal)
    root = Path(vis)
    if not (journal / MANIFEST).exists():
        log.info("journal_restored", journal=str(journal), restored=[], note="no snapshot yet")
        return []
    unpinned: Callable[[str], str] = str
    try:
        manifest = _read_manifest(journal)
        with PinnedTree(root, _snapshotted_dirs(manifest)) as pins:
            try:
                return _restore(journal, manifest, root, pins)
            except BaseException:
                _remove_temp_files(pins)
                unpinned = pins.unpinning(root)
                raise
    except BaseException as error:
        if isinstance(error, KeyboardInterrupt):
            raise
        why = str(error) if isinstance(error, JournalError) else f"{type(error).__name__}: {error}"
        why = unpinned(why)  # the MS's paths, not the descriptors the restore used
        raise JournalError(
            RESTORE_FAILED_MESSAGE.format(vis=root, why=why, journal=journal)
        ) from error


def _restore(journal: Path, manifest: dict[str, Any], root: Path, pins: PinnedTree) -> list[str]:
    """The restore itself; every rename, unlink and open in the MS goes through ``pins``."""
    if os.path.realpath(str(manifest.get("vis"))) != os.path.realpath(root):
        raise JournalError(f"its manifest names {manifest.get('vis')!r}, not {root}")
    _validated(root, journal, manifest)
    saved: list[str] = manifest["saved"]
    recorded: dict[str, Any] = manifest.get("stat", {})
    changed = [rel for rel in saved if _stat(pins.path(rel)) != recorded.get(rel)]
    created = _created_entries(pins, manifest)
    lock_files: dict[str, bool] = manifest.get("locks", {})
    if (
        not changed
        and not created
        and all(
            _sync_data_unchanged(journal / FILES / rel if existed else None, pins.path(rel))
            for rel, existed in lock_files.items()
        )
    ):
        # The call died before it wrote (e.g. CASA could not lock the table): nothing
        # to put back, and no need to open files it may not be allowed to write.
        log.info("journal_restored", vis=str(root), restored=[], note="nothing changed")
        return []
    tables = sorted({str(Path(rel).parent) for rel in lock_files}, key=len) or ["."]
    with contextlib.ExitStack() as held:
        for table in tables:
            if not held.enter_context(_table_lock(pins.dir("" if table == "." else table))):
                if not changed and not created:
                    log.info("journal_restored", vis=str(root), restored=[], note="nothing changed")
                    return []
                raise JournalError(f"another process holds the lock of {root / table}")
        done: list[str] = []
        same_fs = _same_device(journal, root)
        # table.dat last: until it is back, the old column set is not visible.
        for rel in sorted(saved, key=lambda r: Path(r).name == "table.dat"):
            source = journal / FILES / rel
            if not same_fs and rel not in changed:
                continue  # a copy across file systems is dear; this file was not touched
            _put_back(source, pins.path(rel), move=same_fs)
            done.append(str(root / rel))
        # Sync data before deleting what the task made: if a deletion fails, the tables
        # already say what their restored files hold (a file the old table.dat does not
        # name is ignored by casacore; sync data of the aborted write is not).
        for rel, existed in lock_files.items():
            if pins.path(rel).exists():
                _put_back_sync_data(journal / FILES / rel if existed else None, pins.path(rel))
        for rel in created:
            path = pins.path(rel)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
            done.append(str(root / rel))
    unjournaled = _unjournaled_changes(root, manifest)
    if unjournaled:
        log.warning("journal_unjournaled_change", vis=str(root), paths=unjournaled)
    log.info(
        "journal_restored",
        vis=str(root),
        restored=sorted(done),
        changed=sorted(changed),
        created=sorted(str(root / rel) for rel in created),
    )
    return sorted(done)


def _snapshotted_dirs(manifest: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """The (device, inode) of each directory the snapshot copied from, by path in the MS
    (none in a journal written before they were recorded)."""
    dirs = manifest.get("dirs", {})
    if not isinstance(dirs, dict):
        return {}
    return {
        rel: (ident[0], ident[1])
        for rel, ident in dirs.items()
        if isinstance(rel, str) and isinstance(ident, list) and len(ident) == 2
    }


def _sync_data_unchanged(saved: Path | None, target: Path) -> bool:
    """Whether ``target``'s sync data (from byte LOCK_REQUEST_BYTES) is the snapshot's."""
    try:
        with lock_files.open_lock_file(target, writable=False) as fd:
            now = os.pread(fd, os.fstat(fd).st_size, 0)
    except FileNotFoundError:
        return saved is None
    if saved is None:
        return now == b""
    return now[LOCK_REQUEST_BYTES:] == saved.read_bytes()[LOCK_REQUEST_BYTES:]


def _put_back_sync_data(saved: Path | None, target: Path) -> None:
    """Write the snapshot's sync data (bytes LOCK_REQUEST_BYTES on) into ``target`` in place.

    The head of the file (casacore's list of waiting processes) is kept as it
    is now; ``saved=None`` (no lock file at snapshot time) empties the file.
    """
    data = saved.read_bytes() if saved is not None else b""
    with lock_files.open_lock_file(target) as fd:
        _check_one_name(fd, target)
        current = os.pread(fd, LOCK_REQUEST_BYTES, 0)
        if saved is not None and len(data) >= LOCK_REQUEST_BYTES == len(current):
            data = current + data[LOCK_REQUEST_BYTES:]
        if os.pread(fd, len(data) + 1, 0) == data:
            return
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))


def _check_one_name(fd: int, path: Path) -> None:
    """Refuse a lock file with more than one name: casacore never links one, and another
    name may be anyone's file (a hard link planted in a subtable others may write to)."""
    links = os.fstat(fd).st_nlink
    if links != 1:
        raise JournalError(f"{path} has {links} names (hard links); it is not written")


def _remove_temp_files(pins: PinnedTree) -> None:
    """Remove casaguard's temp files from every directory the restore worked in."""
    for directory in pins.dirs():
        with contextlib.suppress(OSError):
            for path in directory.glob(f"*{_RESTORE_SUFFIX}-*"):
                path.unlink(missing_ok=True)


def _put_back(saved: Path, target: Path, *, move: bool) -> None:
    if not saved.exists():
        return  # put back by an earlier, interrupted restore of this journal
    if move:
        os.replace(saved, target)
        return
    # A fresh name, created here and written through its own descriptor: in a
    # directory others may write to, a fixed temp name could be a planted symlink.
    tmp = target.with_name(f"{target.name}{_RESTORE_SUFFIX}-{secrets.token_hex(8)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out, saved.open("rb") as source:
            shutil.copyfileobj(source, out)
            st = os.fstat(source.fileno())
            os.fchmod(out.fileno(), stat.S_IMODE(st.st_mode))
            os.utime(out.fileno(), ns=(st.st_atime_ns, st.st_mtime_ns))
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _created_entries(pins: PinnedTree, manifest: dict[str, Any]) -> list[str]:
    """Entries the aborted call created, and only those, relative to the MS.

    An entry counts only if the snapshot did not list it, the declared writes
    can create it (a new ``table.f<N>*`` data-manager file of the main table or
    casacore's ``table.dat_tmp``, a new file directly in a journaled subtable, a
    declared subtable that did not exist), and it was born after the snapshot was taken.
    """
    taken = int(manifest.get("taken_ns", 0)) - CLOCK_SLACK_NS
    created: list[str] = []
    before = set(manifest["main_entries"])
    new_subtables = {name for name, existed in manifest.get("subtables", {}).items() if not existed}
    for entry in sorted(pins.dir("").iterdir()):
        if entry.name in before or entry.name == LOCK_FILE or JOURNAL_MARK in entry.name:
            continue
        if entry.name in new_subtables:
            if _born_after(entry, taken, files_only=False):
                created.append(entry.name)
        elif _DATA_MANAGER_FILE.match(entry.name) and _born_after(entry, taken):
            created.append(entry.name)
    for name, existed in manifest.get("subtables", {}).items():
        top = pins.path(name)
        if not existed or not top.is_dir() or top.is_symlink():
            continue
        known = set(manifest.get("subtable_entries", {}).get(name, []))
        # Directly in the subtable only, as the snapshot: what lies in a directory
        # nested in it is not the task's (see _born_after).
        for entry in sorted(pins.dir(name).iterdir()):
            rel = os.path.join(name, entry.name)
            if rel in known or entry.name == LOCK_FILE:
                continue
            if _born_after(entry, taken):
                created.append(rel)
    return created


def _born_after(entry: Path, taken_ns: int, *, files_only: bool = True) -> bool:
    """Whether ``entry`` appeared after the snapshot and is of a kind the task makes.

    The storage managers CASA tasks create columns with (StandardStMan, the
    tiled ones, IncrementalStMan) write files into a table directory, not
    directories: a directory there (another user's, one nobody may enter) is
    not the task's and is left alone. So is an entry this process may not even
    look at, and one another user owns: the task ran with this process's
    credentials, so what it made is this user's. (A new subtable, a directory,
    is the task's: see the caller.)
    """
    try:
        st = os.lstat(entry)
    except (FileNotFoundError, PermissionError):
        return False
    if files_only and stat.S_ISDIR(st.st_mode):
        return False
    return st.st_ctime_ns >= taken_ns and st.st_uid == os.geteuid()


def _unjournaled_changes(root: Path, manifest: dict[str, Any]) -> list[str]:
    """Files the snapshot saw but did not copy that have changed since (for a warning)."""
    saved = set(manifest["saved"])
    found = []
    for rel, before in manifest.get("stat", {}).items():
        if rel in saved or Path(rel).name == LOCK_FILE:
            continue
        try:
            if _stat(root / rel) != before:
                found.append(rel)
        except PermissionError:  # its directory was closed to the caller since
            continue
    return sorted(found)


def _same_device(a: Path, b: Path) -> bool:
    return os.stat(a).st_dev == os.stat(b).st_dev


@contextlib.contextmanager
def _table_lock(table: Path) -> Iterator[bool]:
    """Hold casacore's write lock (an fcntl lock on byte 0 of table.lock) while restoring.

    Taking a lock changes no byte of the file. If the lock file is missing
    nobody can hold the table, and it is not created here.
    """
    with contextlib.ExitStack() as stack:
        try:
            fd = stack.enter_context(lock_files.open_lock_file(table / LOCK_FILE))
        except FileNotFoundError:
            yield True
            return
        _check_one_name(fd, table / LOCK_FILE)
        deadline = time.monotonic() + RESTORE_LOCK_WAIT_S
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
                break
            except OSError as error:
                if error.errno not in (errno.EACCES, errno.EAGAIN):
                    raise
                if time.monotonic() > deadline:
                    yield False
                    return
                time.sleep(0.05)
        try:
            yield True
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN, 1, 0)
