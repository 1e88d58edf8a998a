"""Where an MS's journals live, how they are found from the MS, and which are trusted."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import stat
from pathlib import Path

from casaguard import events
from casaguard.errors import JournalError
from casaguard.journal.layout import FILES, HEARTBEAT, JOURNAL_MARK, MANIFEST, RELEASED
from casaguard.journal.writer import writer_lock_holder
from casaguard.sandbox.pids import pid_alive

log = events.get_logger()


def _private_root(*, create: bool) -> Path:
    """The per-user 0700 journal directory; every component casaguard makes or reuses is checked.

    Args:
        create: make missing components (mode 0700); else just name the directory.

    Raises:
        JournalError: a component is not the caller's directory or is writable by others.
    """
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and _is_private_dir(Path(runtime), closed=0o077):
        chain = [Path(runtime) / "casaguard"]
    else:
        cache = Path(os.path.expanduser("~")) / ".cache"
        chain = [cache, cache / "casaguard"]
    chain.append(chain[-1] / "journals")
    for path in chain:
        if create:
            with contextlib.suppress(FileExistsError):
                path.mkdir(mode=0o700)
        elif not os.path.lexists(path):
            return chain[-1]
        closed = 0o077 if path == chain[-1] else 0o022
        if not _is_private_dir(path, closed=closed):
            raise JournalError(
                f"cannot keep a journal in {chain[-1]}: {path} is not a directory owned by "
                f"uid {os.geteuid()} and closed to others"
            )
    return chain[-1]


def _is_private_dir(path: Path, *, closed: int) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & closed


def _beside_ok(parent: Path) -> bool:
    """May a journal live in the MS's parent? Writable by us; by others only if sticky.

    In a sticky directory (``/tmp``) nobody else can rename or delete our 0700
    journal, its name has 32 random bits so it cannot be planted ahead, and a
    planted look-alike fails ``trust_problem``'s owner check. Refusing such a
    parent would hand the journal to ``~/.cache``, which another user can own
    when ``HOME=/tmp`` -- a denial of every guarded write (found in review).
    A group-writable parent without the sticky bit is as unsafe as a world-writable
    one: any member can rename the journal, or swap it for a directory of ours
    while a restore reads it (found in review).
    """
    try:
        st = os.stat(parent)
    except OSError:
        return False
    shared_unsafely = st.st_mode & (stat.S_IWOTH | stat.S_IWGRP) and not st.st_mode & stat.S_ISVTX
    return os.access(parent, os.W_OK | os.X_OK) and not shared_unsafely


def _private_prefix(ms: Path) -> str:
    digest = hashlib.sha256(str(ms).encode()).hexdigest()[:16]
    return f"{ms.name}-{digest}{JOURNAL_MARK}"


def _journal_path(vis: str) -> Path:
    ms = Path(vis)
    suffix = f"{os.getpid()}-{secrets.token_hex(4)}"
    # Beside the MS: same file system, so restore is a rename and copies may be reflinks.
    if _beside_ok(ms.parent):
        return ms.parent / f".{ms.name}{JOURNAL_MARK}{suffix}"
    return _private_root(create=False) / f"{_private_prefix(ms)}{suffix}"


def _candidates(ms: Path) -> list[Path]:
    """Journal directories named after ``ms`` in the two places a journal of it can be."""
    found = sorted(ms.parent.glob(f".{ms.name}{JOURNAL_MARK}*"))
    try:
        root = _private_root(create=False)
    except JournalError:
        return found
    if root.is_dir():
        found += sorted(root.glob(f"{_private_prefix(ms)}*"))
    return found


def trust_problem(path: Path, ms: Path) -> str | None:
    """Why the journal at ``path`` must not be trusted for ``ms``, or None if it is ours.

    Checked: the directory and its manifest are not symlinks, are owned by the
    caller and have no group/other write; the manifest names ``ms`` itself.
    """
    me = os.geteuid()
    for what, is_kind, kind in (
        (path, stat.S_ISDIR, "directory"),
        (path / MANIFEST, stat.S_ISREG, "file"),
    ):
        try:
            st = os.lstat(what)
        except FileNotFoundError:
            return f"{what} is missing"
        if not is_kind(st.st_mode):
            return f"{what} is not a plain {kind}"
        if st.st_uid != me:
            return f"{what} is owned by uid {st.st_uid}, not {me}"
        if st.st_mode & 0o022:
            return f"{what} is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    try:
        recorded = json.loads((path / MANIFEST).read_text())["vis"]
    except (OSError, ValueError, KeyError, TypeError):
        return "its manifest cannot be read"
    if not isinstance(recorded, str) or os.path.realpath(recorded) != os.path.realpath(ms):
        return f"its manifest names {recorded!r}, not {ms}"
    return None


def pending_journals(vis: str | os.PathLike[str], *, clean: bool = True) -> list[Path]:
    """Trusted journals of ``vis`` holding a snapshot nobody restored (found from the MS).

    Call it holding the writer lock (or after ``writer_active`` said no): then
    no call is still filling one. A journal without a manifest (its task never
    started) whose owner pid is dead is removed (unless ``clean=False``, as the
    read-only probe asks); an untrusted one is ignored and reported as
    ``journal_untrusted``.
    """
    ms = Path(os.path.abspath(vis))
    found = []
    # Where others may rename our entries (a group- or world-writable parent without the
    # sticky bit), casaguard puts no journal; a look-alike there is never cleaned up (its
    # checks would race a swap: found in review) nor trusted (it could be swapped mid-read).
    beside_ok = _beside_ok(ms.parent)
    for path in _candidates(ms):
        if path.parent == ms.parent and not beside_ok:
            log.warning(
                "journal_untrusted",
                vis=str(ms),
                journal=str(path),
                reason="it lies where others may rename entries",
            )
            continue
        if not os.path.lexists(path / MANIFEST):
            owner = _owner_pid(path)
            if clean and owner is not None and not pid_alive(owner):
                _remove_unstarted(path)  # the task never started: nothing to restore
            continue
        problem = trust_problem(path, ms)
        if problem is not None:
            log.warning("journal_untrusted", vis=str(ms), journal=str(path), reason=problem)
            continue
        found.append(path)
    return found


#: What a journal whose task never started can hold: the heartbeat, a released mark, a
#: half-made copy, a manifest not yet renamed into place.
_UNSTARTED_ENTRIES = frozenset({HEARTBEAT, RELEASED, FILES, MANIFEST + ".tmp"})


def _remove_unstarted(path: Path) -> None:
    """Remove a journal whose task never started -- only if it is one casaguard made.

    Anyone who may rename entries where journals are looked for can give any
    directory of ours a journal's name, so the name proves nothing (found in
    review: a victim's directory renamed so was deleted whole). It must also be
    our own plain 0700 directory holding nothing but a journal's own entries,
    with its heartbeat, which casaguard writes right after making it; an empty
    one is only ever rmdir-ed.
    """
    with contextlib.suppress(OSError):
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
            return
        entries = set(os.listdir(path))
        if not entries:
            os.rmdir(path)
        elif HEARTBEAT in entries and entries <= _UNSTARTED_ENTRIES:
            shutil.rmtree(path)


def orphans(vis: str | os.PathLike[str]) -> list[Path]:
    """Return pending journals of ``vis`` (see ``pending_journals``)."""
    return pending_journals(vis)


def writer_active(vis: str | os.PathLike[str]) -> bool:
    """True while a guarded write holds the writer lock of ``vis`` (read from the kernel)."""
    return writer_lock_holder(vis) is not None


def _owner_pid(path: Path) -> int | None:
    owner = path.name.rsplit(JOURNAL_MARK, 1)[-1].split("-", 1)[0]
    return int(owner) if owner.isdigit() else None


def ms_of_journal(journal: Path) -> Path | None:
    """The MS a journal kept beside it belongs to, from its location and name alone."""
    name = journal.name
    if not name.startswith(".") or JOURNAL_MARK not in name:
        return None
    return journal.parent / name[1:].rsplit(JOURNAL_MARK, 1)[0]
