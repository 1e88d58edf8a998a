"""The snapshot, in the child before the task: copy what the task may change, then the manifest."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import functools
import json
import os
import shutil
import stat
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from casaguard.errors import InvalidInput
from casaguard.journal.layout import (
    _FICLONE,
    FILES,
    LOCK_FILE,
    MANIFEST,
    NO_SPACE_MESSAGE,
    SPACE_MARGIN_BYTES,
    SYMLINKED_MESSAGE,
    UNLISTABLE_MESSAGE,
    _stat,
)


def take_snapshot(
    journal: str | os.PathLike[str],
    vis: str,
    *,
    task: str,
    files: Sequence[str],
    subtables: Sequence[str],
    growth_bytes: int,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Copy ``files`` and whole ``subtables`` of ``vis`` into ``journal``, then write the manifest.

    Runs in the child, before the task. Nothing of the MS is modified. Each
    copied table's ``table.lock`` is copied too (its sync data, see the module
    docstring), listed under ``locks`` (``null`` when the table had none).

    Args:
        journal: the (empty) journal directory.
        vis: the MS.
        task: task name, for messages.
        files: main-table file names to copy (``table.dat``, ``table.f4_TSM1``...).
        subtables: subtable directory names (relative to ``vis``) whose files to copy
            (those directly in it: a nested directory is not the table's); one that
            does not exist yet is recorded as absent.
        growth_bytes: what the task may add to the MS (columns it creates).
        extra: more facts for the manifest (e.g. how long the planning took).

    Returns:
        The manifest.

    Raises:
        InvalidInput: not enough free space, a main-table file to copy is a symlink, or a
            subtable cannot be listed; nothing was copied.
    """
    root = Path(vis)
    journal = Path(journal)
    taken_ns = time.time_ns()
    present = [name for name in subtables if (root / name).is_dir()]
    # One walk of the MS gives the files to copy, the entries and the stat tree.
    tree = _walk(vis)
    # Each subtable from its own top, which may be a symlink (a repair's backup names
    # subtables unresolved): the walk of the MS does not enter symlinked directories.
    # Only its top level: a table's files lie directly in its directory, and a
    # directory nested in it is no file of the task's (another user's, say) -- copying
    # it would make a restore move files back into a directory it may not write.
    try:
        under = {name: _walk(vis, name, must_list=True, deep=False) for name in present}
    except _Unlistable as error:
        raise InvalidInput(UNLISTABLE_MESSAGE.format(task=task, vis=vis, rel=error.rel)) from None
    linked = [name for name in files if (root / name).is_symlink()]
    if linked:
        raise InvalidInput(SYMLINKED_MESSAGE.format(task=task, vis=vis, rel=linked[0]))
    saved = [name for name in files if (root / name).is_file() and name != LOCK_FILE]
    for name in present:
        saved += [
            e.rel
            for e in sorted(under[name], key=lambda e: e.rel.split(os.sep))
            if e.is_file and not e.is_symlink and os.path.basename(e.rel) != LOCK_FILE
        ]
    saved = list(dict.fromkeys(saved))
    lock_of = {"": LOCK_FILE, **{name: f"{name}/{LOCK_FILE}" for name in present}}
    locks = {rel: (root / rel).is_file() for rel in lock_of.values()}
    copied = saved + [rel for rel, exists in locks.items() if exists]
    snapshot_bytes = sum((root / rel).stat().st_size for rel in copied)
    _check_space(task, vis, journal, snapshot_bytes, growth_bytes)
    started = time.monotonic()
    try:
        made: set[Path] = set()
        copied_by: Counter[str] = Counter()
        for rel in copied:
            target = journal / FILES / rel
            if target.parent not in made:
                target.parent.mkdir(parents=True, exist_ok=True)
                made.add(target.parent)
            copied_by[copy_file(root / rel, target)] += 1
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        shutil.rmtree(journal / FILES, ignore_errors=True)
        stats = os.statvfs(journal)
        raise InvalidInput(
            NO_SPACE_MESSAGE.format(
                task=task,
                vis=vis,
                need_mb=(snapshot_bytes + SPACE_MARGIN_BYTES) / 1e6,
                where=journal.parent,
                free_mb=stats.f_bavail * stats.f_frsize / 1e6,
            )
        ) from None
    manifest = {
        "version": 2,
        "vis": vis,
        "task": task,
        "pid": os.getpid(),
        "parent_pid": os.getppid(),
        "taken_ns": taken_ns,
        "saved": saved,
        "locks": locks,
        "subtables": {name: name in present for name in subtables},
        # Which directories these are: a restore works only in these very ones.
        "dirs": {rel: _identity(root / rel) for rel in ("", *present)},
        "main_entries": sorted(os.listdir(root)),
        "subtable_entries": {name: sorted(e.rel for e in under[name]) for name in present},
        "stat": {e.rel: e.stat for e in tree if e.is_file},
        "bytes": snapshot_bytes,
        "copy_s": round(time.monotonic() - started, 4),
        "copied_by": dict(copied_by),
        **(extra or {}),
    }
    tmp = journal / (MANIFEST + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps(manifest))
    os.replace(tmp, journal / MANIFEST)
    return manifest


def _identity(directory: Path) -> list[int]:
    """[device, inode] of ``directory`` (a symlinked subtable: of where it leads)."""
    st = os.stat(directory)
    return [st.st_dev, st.st_ino]


@dataclass(frozen=True)
class _Entry:
    """One entry under the MS, as ``Path.rglob("*")`` lists it (symlinked directories
    are listed, not entered); ``is_file`` follows a symlink, as ``Path.is_file`` does."""

    rel: str
    is_file: bool
    is_symlink: bool
    #: ``layout._stat`` of a file: [size, mtime_ns, inode], or None if it vanished.
    stat: list[int] | None


class _Unlistable(Exception):
    """A directory the snapshot must copy from cannot be listed (``rel``, under the MS)."""

    def __init__(self, rel: str) -> None:
        self.rel = rel


def _walk(
    root: str, prefix: str = "", *, must_list: bool = False, deep: bool = True
) -> list[_Entry]:
    """Every entry under ``root`` (``deep=False``: directly in it), with plain ``os.scandir``:
    a few hundred stats, no pathlib.

    What this process may not see is passed over, as a plain CASA task running
    as the same user passes it over: a directory below ``root`` it may not list
    is listed, not entered, and a file in a directory it may list but not enter
    (``r`` without ``x``) is no file. But in a subtable the snapshot copies
    (``must_list``), a directory that can be entered but not listed (``x``
    without ``r``) may hold files the task writes unseen: ``_Unlistable``, the
    call refused (it is only ever asked of a subtable's own directory).
    """
    found: list[_Entry] = []
    top = os.path.join(root, prefix) if prefix else root
    try:
        with os.scandir(top) as entries:
            listed = list(entries)
    except PermissionError:
        if must_list and _can_enter(top):
            raise _Unlistable(prefix) from None
        if not prefix:
            raise  # the MS itself
        return found
    for entry in listed:
        rel = os.path.join(prefix, entry.name) if prefix else entry.name
        try:
            stat = _stat(entry.path) if entry.is_file() else None
        except PermissionError:  # listed, but its directory cannot be entered
            stat = None
        is_symlink = entry.is_symlink()
        # A file gone since the listing is no file (as Path.is_file would say).
        found.append(_Entry(rel, stat is not None, is_symlink, stat))
        if deep and entry.is_dir() and not is_symlink:
            found += _walk(root, rel)
    return found


def _can_enter(directory: str) -> bool:
    """Whether this process may look up names in ``directory`` (asked of the kernel,
    with the process's own credentials: a name that is not there is not refused)."""
    try:
        os.lstat(os.path.join(directory, ".casaguard-lookup"))
    except FileNotFoundError:
        return True
    except PermissionError:
        return False
    return True


#: Below this a file is read and written in one go: for the many small files of a
#: subtable a reflink attempt, ``copy_file_range`` and ``shutil.copystat`` cost twice
#: the copy itself (46 vs 89 us per file, measured).
_SMALL_FILE_BYTES = 64 * 1024


#: ``fallocate``'s "allocate, but keep the file's size" flag (linux/falloc.h).
_FALLOC_FL_KEEP_SIZE = 0x01


def copy_file(source: Path, target: Path) -> str:
    """Copy one file at the lowest cost the file system offers, keeping mode, times, xattrs.

    A reflink (``FICLONE``: btrfs, XFS) shares the blocks until one side is
    written; else the target's blocks are allocated in one go and
    ``copy_file_range`` copies inside the kernel (a 25.7 MB MODEL_DATA file on
    ext4: 9.3 ms without the allocation, 7.6 ms with it). ``target`` must not exist.

    Returns:
        How the data was copied: ``reflink``, ``copy_file_range`` or ``read``.
    """
    src = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        st = os.fstat(src)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        dst = os.open(target, flags, 0o600)
        try:
            how = _copy_data(src, dst, st.st_size)
            _copy_xattrs(src, dst)
            os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
            os.fchmod(dst, stat.S_IMODE(st.st_mode))
        finally:
            os.close(dst)
    finally:
        os.close(src)
    return how


def _copy_data(src: int, dst: int, size: int) -> str:
    if size < _SMALL_FILE_BYTES:
        _copy_by_read(src, dst)
        return "read"
    try:
        fcntl.ioctl(dst, _FICLONE, src)
        return "reflink"
    except OSError:
        pass
    # Not os.posix_fallocate: where the file system cannot allocate, glibc emulates
    # it by writing zeros, which would double the copy. A failure is left to the copy.
    _libc().fallocate(dst, _FALLOC_FL_KEEP_SIZE, 0, size)
    return _copy_range(src, dst, size)


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    libc.fallocate.restype = ctypes.c_int
    return libc


def _copy_range(src: int, dst: int, size: int) -> str:
    copied = 0
    try:
        while copied < size:
            step = os.copy_file_range(src, dst, size - copied)
            if step == 0:
                break
            copied += step
        return "copy_file_range"
    except OSError as error:
        if error.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
            raise
    os.lseek(src, copied, os.SEEK_SET)
    os.lseek(dst, copied, os.SEEK_SET)
    _copy_by_read(src, dst)
    return "read"


def _copy_by_read(src: int, dst: int) -> None:
    while chunk := os.read(src, 1 << 20):
        view = memoryview(chunk)
        while view:
            view = view[os.write(dst, view) :]


#: What ``shutil.copystat`` shrugs off when it cannot copy an extended attribute.
_XATTR_SKIPPED = (errno.EPERM, errno.ENOTSUP, errno.ENODATA, errno.EINVAL, errno.EACCES)


def _copy_xattrs(src: int, dst: int) -> None:
    """Extended attributes as ``shutil.copystat`` copies them: what cannot be set is skipped."""
    try:
        names = os.listxattr(src)
    except OSError as error:
        if error.errno in (errno.ENOTSUP, errno.ENODATA, errno.EINVAL):
            return
        raise
    for name in names:
        try:
            os.setxattr(dst, name, os.getxattr(src, name))
        except OSError as error:
            if error.errno not in _XATTR_SKIPPED:
                raise


def _check_space(task: str, vis: str, journal: Path, snapshot_bytes: int, growth: int) -> None:
    needs: dict[int, list[Any]] = {}
    for where, amount in ((journal, snapshot_bytes), (Path(vis), growth)):
        device = os.stat(where).st_dev
        entry = needs.setdefault(device, [where, 0])
        entry[1] += amount
    for where, amount in needs.values():
        need = amount + SPACE_MARGIN_BYTES
        stats = os.statvfs(where)
        free = stats.f_bavail * stats.f_frsize
        if free < need:
            raise InvalidInput(
                NO_SPACE_MESSAGE.format(
                    task=task, vis=vis, need_mb=need / 1e6, where=where, free_mb=free / 1e6
                )
            )
