"""Journal and rollback: a crash in the middle of a write never leaves the MS worse than before.

What a write can change, and so what is copied (measured on CASA 6.7 by hashing
every file of an MS before and after each task):

* ``ft(usescratch=True)``: the storage-manager files of MODEL_DATA (a
  TiledShapeStMan: ``table.f<N>`` and ``table.f<N>_TSM*``), the HISTORY
  subtable, and -- when MODEL_DATA does not exist yet -- ``table.dat`` plus
  new ``table.f<M>*`` files. It also clears any virtual model ("Clearing all
  model records in MS header"), so SOURCE is copied too.
  ``ft(usescratch=False)`` rewrites the SOURCE subtable (the virtual model)
  and HISTORY.
* ``clearcal``: the files of MODEL_DATA and CORRECTED_DATA (creating them if
  needed), HISTORY, and SOURCE (the virtual model is cleared).
* ``run_task(..., writes=[...])``: what the caller declares -- main-table
  column names and/or subtable names -- plus HISTORY.

Always added: the main table's ``table.dat`` and ``table.info`` (a few kB).
Never copied: DATA, FLAG, UVW and every other column in a data manager the
task does not write. The data-manager map comes from casacore itself
(``table.getdminfo()``), so a column that shares a data manager with DATA
takes DATA's files along -- correct, just dearer.

``table.lock`` is part of a table's state, so it is snapshotted too. casacore
(``casa/IO/LockFile.cc``, ``tables/Tables/TableSyncData.cc``) keeps two things
in it: at offset 0 a fixed 260-byte list of processes waiting for the lock,
then, written by every writer when it lets go of its write lock, the table's
*sync data*: row count, column count, a modify counter, a table change counter
and one change counter per data manager. The next process to take the lock
reads it and trusts it: the row count overrides what ``table.dat`` says, and a
data manager whose counter moved is re-read. A restore that puts the data
files back but leaves the aborted writer's sync data makes the table claim
rows its files do not hold -- ``SSMIndex::getIndex - access to non-existing
row 2 in column TIME of table .../HISTORY`` on the next ``ft`` after a CASA
error. So for every table whose files it restores, the journal also puts back
the sync data of the snapshot (bytes 260 onwards), in place -- the same inode,
so no process's open descriptor or ``fcntl`` lock is lost -- while holding
casacore's own write lock (an ``fcntl`` lock on byte 0). The waiting list at
the front is left as it is now: it names live waiters, not table state. The
counters go *back*; casacore compares them for inequality, never order, so a
reader that cached the aborted write's state re-reads the table and one that
never saw it has the old state cached, which is the restored one. A lock file
the aborted call created (the snapshot had none) is emptied, which casacore
reads as "no sync data: re-read everything". Locks themselves need no
cleaning: the kernel drops a dead process's ``fcntl`` locks.

One guarded writer per MS: the parent holds an exclusive ``flock`` on
``<ms>/.casaguard-writer.lock`` from before the snapshot until after any
restore. The file is created mode 0600 (0660 when the MS directory is group
writable): a reader cannot open it at all, so cannot lock it. Neither the MS
directory (any reader can open and ``flock`` a directory) nor ``table.lock``
would do: an ``fcntl`` *write* lock needs a descriptor open for writing, but
a *read* lock needs only a read-only one and conflicts with it just the same,
so anyone who can read a file can block a write lock on it. ``flock`` locks
belong to the open file, so threads of one process exclude each other too,
and the caller's own python-casacore opening and closing table files never
drops it (as it would drop a process-wide ``fcntl`` lock).

Who does what (the parent never imports casacore)::

    parent: MsJournal                         child (CASA)
    -----------------                         ------------
    check_writable_ms (missing, not an MS,
        read-only -> InvalidInput)
    before(): flock <ms>/.casaguard-writer.lock -- one guarded writer per MS
              pending journal of this MS?  -> JournalError (or discard it)
              mkdir <journal>, heartbeat thread
                            ----------------> _incasa.journal.run_journaled
                                                tb.getdminfo(): column -> files
                                                free space?  no -> InvalidInput
                                                copy files + table.lock of each table
                                                manifest.json (atomic, 0600)
                                                the task itself
    crash/kill/timeout/Ctrl-C: restore()       ... dies anywhere
      under casacore's lock (byte 0) of every touched table:
      put files back (table.dat last), sync data back, delete what the task created
      any failure -> journal kept, temp files removed, JournalError with the command
    always: discard() removes the journal (kept if a restore failed), drops the lock

Where journals live, and when one is trusted (a journal is an instruction to
overwrite and delete files in an MS, so a planted one is an attack):

* beside the MS (``<parent>/.<ms>.casaguard-journal-<pid>-<token>``) when the
  parent is writable by the caller and not world-writable, or world-writable
  but sticky (``/tmp``); otherwise in a per-user 0700 directory
  (``$XDG_RUNTIME_DIR/casaguard/journals`` or ``~/.cache/casaguard/journals``,
  owner and mode checked), named after the MS and a hash of its absolute path.
  Never in a world-writable directory without the sticky bit.
* journals are found from the MS (those two places, by name), never by
  scanning ``/tmp``. One is trusted only if it and its manifest are owned by
  the caller, are not symlinks, have no group/other write, and the manifest
  names exactly that MS; others are ignored with a ``journal_untrusted`` event.
* every path in a manifest must lie inside the MS after resolving (no ``..``,
  no absolute path, no symlink escape); a restore deletes only entries the
  snapshot did not list, that the declared writes can create (new
  ``table.f<N>*`` files, new files of a journaled subtable, a declared
  subtable that did not exist) and that were born after the snapshot.

A journal outlives its call only when the caller was killed mid-write or a
restore failed. Such a *pending* journal blocks the next guarded write to the
MS (``JournalError`` naming it and ``casaguard restore-journal <ms>``) unless
the caller passes ``discard_orphan_journal=True``. ``recover`` (the CLI's
``restore-journal``) also requires that the writer's pids are dead (or that
the writer, alive after its restore failed, marked the journal ``released``),
that it can take the writer lock, and that nothing wrote to the MS after the
dead call: every file the call could not write still has the size, mtime and
inode recorded in the manifest, and no file is newer than the journal's last
heartbeat (the parent touches it every ``HEARTBEAT_S`` while the call runs)
plus ``LATER_WRITE_MARGIN_S``. ``force=True`` skips the pid and later-write
checks, never the trust and path checks.

The snapshot is taken in the child because only casacore knows which file
holds which column, and the child already has casatools loaded: the lookup
costs one table open (milliseconds) instead of a second CASA process. The
manifest is written last, by rename; the task starts only after it exists,
so a child that dies without a manifest never wrote to the MS.

Cost: one copy of the written columns' files (e.g. MODEL_DATA: 8 bytes per
visibility) plus HISTORY and SOURCE. Beside the MS the journal shares its file
system, so the copy uses reflinks where the file system has them
(``FICLONE``) or an in-kernel ``copy_file_range``, a restore is a rename,
and a discard an unlink. ``bench/bench_journal.py`` measures the ratio to an
unjournaled call. No ``fsync``: the journal guards against a process dying,
not against the machine losing power.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from casaguard import events
from casaguard.errors import LOCKED_MESSAGE, InvalidInput, JournalError, MsLocked
from casaguard.ms.checks import require_ms
from casaguard.sandbox.jobdir import Ref
from casaguard.sandbox.pids import pid_alive

if TYPE_CHECKING:
    from casaguard.sandbox.callspec import CallSpec

log = events.get_logger()

MANIFEST = "manifest.json"
FILES = "files"
HEARTBEAT = "heartbeat"
#: Written when a live caller keeps a journal after a failed restore: it writes no more.
RELEASED = "released"
JOURNAL_MARK = ".casaguard-journal-"
LOCK_FILE = "table.lock"
#: Subtables that CASA tasks write besides what they declare (history rows).
ALWAYS_SUBTABLES = ("HISTORY",)
#: Small main-table files a write may rewrite (keywords, column set).
ALWAYS_FILES = ("table.dat", "table.info")
#: Head room demanded beyond the bytes counted, for casacore's own small files.
SPACE_MARGIN_BYTES = 64 * 1024
#: How long a restore waits for another process's lock on the table.
RESTORE_LOCK_WAIT_S = 10.0
#: How long ``recover`` waits for the writer lock before refusing.
RECOVER_LOCK_WAIT_S = 1.0
#: casacore's waiting list at the head of table.lock: (1 + 2*32) 4-byte ints.
LOCK_REQUEST_BYTES = 260
#: casaguard's single-writer lock file inside the MS (mode 0600, 0660 in a group-writable MS).
WRITER_LOCK_FILE = ".casaguard-writer.lock"
#: How often the parent touches the journal's heartbeat while the call runs.
HEARTBEAT_S = 0.5
#: A file newer than the last heartbeat by more than this was written after the call died.
LATER_WRITE_MARGIN_S = 2.0
#: Tolerance between time.time_ns() and the kernel's coarse file timestamps.
CLOCK_SLACK_NS = 1_000_000_000
#: What a write can add to a main table: data-manager files, casacore's temp table.dat.
_DATA_MANAGER_FILE = re.compile(r"^(table\.f\d+|table\.dat_tmp$)")

NOT_MS_MESSAGE = "{task}: {vis} is not a Measurement Set ({why})"
READ_ONLY_MESSAGE = "{task}: {vis} is read-only ({path} is not writable{hint}); nothing was changed"
READ_ONLY_TABLE_DAT_HINT = ": WSClean run as another user leaves table.dat owned by it"
NO_SPACE_MESSAGE = (
    "{task}: not enough free space to journal {vis}: needs {need_mb:.2f} MB on {where}, "
    "{free_mb:.2f} MB free; nothing was changed (journal=False runs without a safety copy)"
)
RESTORE_COMMAND = "casaguard restore-journal {vis}"
PENDING_MESSAGE = (
    "{task}: {vis} has a pending journal {journal} (a guarded write died mid-write or its "
    "restore failed); run `" + RESTORE_COMMAND + "` to roll the MS back, or pass "
    "discard_orphan_journal=True to keep the MS as it is; nothing was changed"
)
RESTORE_FAILED_MESSAGE = (
    "could not restore {vis} ({why}); the snapshot is kept in {journal}: "
    "run `" + RESTORE_COMMAND + "` to finish the restore"
)
LATER_WRITE_MESSAGE = (
    "refusing to restore {vis} from {journal}: the MS was written after the call that left "
    "the journal died ({paths}); restoring would undo that newer work (--force to restore anyway)"
)
REFERENCE_TABLE_MESSAGE = (
    "{task}: cannot journal {vis}: it has no storage managers of its own (a reference or "
    "concatenated table); pass journal=False to write without a safety copy"
)

#: What the drop-in tasks write, as main-table columns and subtable names.
_FT_SCRATCH = ("MODEL_DATA", "SOURCE")
_FT_VIRTUAL = ("SOURCE",)
_CLEARCAL = ("MODEL_DATA", "CORRECTED_DATA", "SOURCE")


def task_writes(name: str, params: dict[str, Any]) -> tuple[str, ...] | None:
    """Return what casatask ``name`` writes (columns and subtables), or None if unknown.

    Args:
        name: casatask name.
        params: the task's parameters.
    """
    if name == "ft":
        return _FT_SCRATCH if params.get("usescratch") else _FT_VIRTUAL
    if name == "clearcal":
        return _CLEARCAL
    return None


def check_writable_ms(vis: str, *, task: str, writes: Sequence[str] = ()) -> None:
    """Reject, before anything is touched, an MS that a write cannot succeed on.

    Args:
        vis: absolute path of the MS.
        task: task name, for the message.
        writes: declared columns / subtables (subtables are checked too).

    Raises:
        InvalidInput: the path is missing, is not a Measurement Set, or is read-only.
    """
    require_ms(vis)
    path = Path(vis)
    try:
        info = (path / "table.info").read_text(errors="replace")
    except OSError:
        info = ""
    first_line = info.splitlines()[0] if info else ""
    if "Measurement Set" not in first_line:
        raise InvalidInput(
            NOT_MS_MESSAGE.format(task=task, vis=vis, why="table.info does not say Measurement Set")
        )
    subtables = [path / name for name in (*writes, *ALWAYS_SUBTABLES) if (path / name).is_dir()]
    for candidate in _writable_candidates(path, subtables):
        if not os.access(candidate, os.W_OK):
            hint = READ_ONLY_TABLE_DAT_HINT if candidate.name == "table.dat" else ""
            raise InvalidInput(
                READ_ONLY_MESSAGE.format(task=task, vis=vis, path=candidate, hint=hint)
            )


def _writable_candidates(path: Path, subtables: Iterable[Path]) -> Iterator[Path]:
    for directory in (path, *subtables):
        yield directory
        for entry in sorted(directory.iterdir()):
            if entry.is_file() and entry.name != LOCK_FILE:
                yield entry


@dataclass
class Snapshot:
    """A journal directory; filled by the child, read back by the parent on a crash.

    ``writer_fd`` holds casaguard's writer lock on the MS (see the module
    docstring) from before the snapshot until after any restore, so two guarded
    writes to one MS never interleave: a later write cannot snapshot the
    half-written state of an earlier one, nor be undone by its restore.
    """

    path: Path
    vis: str
    writer_fd: int | None = None
    kept: bool = False
    heartbeat_stop: threading.Event = field(default_factory=threading.Event)


class MsJournal:
    """The runner's journal hook for one guarded write to one MS.

    ``before`` takes the writer lock, refuses a pending journal, creates the
    (empty) journal directory; the child fills it (``casaguard.remote.casa.journal``);
    ``restore`` puts the MS back after a crash; ``discard`` drops the journal.
    """

    def __init__(
        self,
        vis: str,
        writes: Sequence[str],
        *,
        task: str,
        lock_timeout: float = 60.0,
        discard_orphan_journal: bool = False,
    ) -> None:
        self.vis = os.path.abspath(vis)
        self.writes = tuple(dict.fromkeys((*writes, *ALWAYS_SUBTABLES)))
        self.task = task
        self.lock_timeout = lock_timeout
        self.discard_orphan_journal = discard_orphan_journal
        self.path = _journal_path(self.vis)

    def before(self) -> Snapshot:
        """Take the writer lock, refuse (or discard) a pending journal, create the journal dir.

        Raises:
            MsLocked: another guarded write to this MS still runs after ``lock_timeout``.
            JournalError: a pending journal of this MS (unless ``discard_orphan_journal``).
            InvalidInput: the MS's ``table.lock`` cannot be opened for writing.
        """
        writer_fd = _one_writer(self.vis, self.lock_timeout, self.task)
        try:
            self._settle_pending()
            if not _beside_ok(Path(self.vis).parent):
                _private_root(create=True)
            self.path.mkdir(mode=0o700)
        except BaseException:
            os.close(writer_fd)
            raise
        snapshot = Snapshot(self.path, self.vis, writer_fd)
        _start_heartbeat(snapshot)
        return snapshot

    def _settle_pending(self) -> None:
        for orphan in pending_journals(self.vis):
            if not self.discard_orphan_journal:
                log.error("journal_pending", task=self.task, vis=self.vis, journal=str(orphan))
                raise JournalError(
                    PENDING_MESSAGE.format(task=self.task, vis=self.vis, journal=orphan)
                )
            shutil.rmtree(orphan)
            log.warning(
                "journal_orphan_discarded", task=self.task, vis=self.vis, journal=str(orphan)
            )

    def restore(self, snapshot: Snapshot) -> list[str]:
        """Put back what the snapshot holds; delete what the task created.

        Returns:
            The paths restored or removed (empty when the child died before the
            snapshot was complete, i.e. before the task could write anything).

        Raises:
            JournalError: anything went wrong; the journal is kept, no temp file
                of casaguard is left in the MS, and the message says where the
                snapshot is and which command finishes the restore.
        """
        try:
            return restore(snapshot.path, vis=snapshot.vis)
        except BaseException:
            snapshot.kept = True
            raise

    def discard(self, snapshot: Snapshot) -> None:
        """Remove the journal (unless a failed restore still needs it); let go of the MS."""
        try:
            self._discard(snapshot)
        finally:
            snapshot.heartbeat_stop.set()
            if snapshot.writer_fd is not None:
                os.close(snapshot.writer_fd)  # releases the writer lock
                snapshot.writer_fd = None

    def _discard(self, snapshot: Snapshot) -> None:
        if snapshot.kept:
            _touch(snapshot.path / HEARTBEAT)
            _touch(snapshot.path / RELEASED)
            log.error(
                "journal_kept",
                vis=snapshot.vis,
                journal=str(snapshot.path),
                advice=RESTORE_COMMAND.format(vis=snapshot.vis),
            )
            return
        try:
            manifest = json.loads((snapshot.path / MANIFEST).read_text())
        except (OSError, ValueError):
            manifest = {}
        started = time.monotonic()
        snapshot.heartbeat_stop.set()
        shutil.rmtree(snapshot.path, ignore_errors=True)
        log.debug(
            "journal_dropped",
            vis=snapshot.vis,
            bytes=manifest.get("bytes"),
            files=len(manifest.get("saved", ())),
            copy_s=manifest.get("copy_s"),
            plan_s=manifest.get("plan_s"),
            drop_s=round(time.monotonic() - started, 4),
        )


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


# --- the writer lock ----------------------------------------------------------------------


def _open_writer_lock(vis: str, task: str) -> int:
    """Open (creating if needed) the MS's writer-lock file, closed to everyone but its writers."""
    path = Path(vis) / WRITER_LOCK_FILE
    try:
        group_writes = bool(os.stat(vis).st_mode & stat.S_IWGRP)
        mode = 0o660 if group_writes else 0o600
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as error:
        raise InvalidInput(
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
        InvalidInput: the lock file cannot be created or opened (a read-only MS).
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
            command = _command(holder) if holder else "?"
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
    try:
        st = os.stat(Path(vis) / WRITER_LOCK_FILE)
        text = Path("/proc/locks").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        fields = line.split()
        # "3: FLOCK  ADVISORY  WRITE 4242 fe:00:123 0 EOF" (waiters carry "->").
        if len(fields) < 6 or fields[1] != "FLOCK":
            continue
        where = fields[5].split(":")
        try:
            device = os.makedev(int(where[0], 16), int(where[1], 16))
            if len(where) == 3 and int(where[2]) == st.st_ino and device == st.st_dev:
                return int(fields[4])
        except (ValueError, IndexError):
            continue
    return None


def _command(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip() or "?"


# --- where journals live, and which are trusted -------------------------------------------


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
    """May a journal live in the MS's parent? Writable by us; by the world only if sticky.

    In a sticky directory (``/tmp``) nobody else can rename or delete our 0700
    journal, its name has 32 random bits so it cannot be planted ahead, and a
    planted look-alike fails ``trust_problem``'s owner check. Refusing such a
    parent would hand the journal to ``~/.cache``, which another user can own
    when ``HOME=/tmp`` -- a denial of every guarded write (found in review).
    """
    try:
        st = os.stat(parent)
    except OSError:
        return False
    shared_unsafely = st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX
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
    for path in _candidates(ms):
        if not os.path.lexists(path / MANIFEST):
            owner = _owner_pid(path)
            with contextlib.suppress(OSError):
                ours = os.lstat(path).st_uid == os.geteuid() and not path.is_symlink()
                if clean and ours and owner is not None and not pid_alive(owner):
                    shutil.rmtree(path)  # the task never started: nothing to restore
            continue
        problem = trust_problem(path, ms)
        if problem is not None:
            log.warning("journal_untrusted", vis=str(ms), journal=str(path), reason=problem)
            continue
        found.append(path)
    return found


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


@contextlib.contextmanager
def writer_lock(vis: str | os.PathLike[str], *, timeout: float, task: str) -> Iterator[None]:
    """Hold casaguard's writer lock on ``vis`` (the one every guarded write takes).

    For writers that are not a guarded call (the repair): while it is held no
    guarded write to ``vis`` starts, and none is running.

    Raises:
        MsLocked: another writer still holds it after ``timeout`` seconds.
        InvalidInput: the lock file cannot be created or opened (a read-only MS).
    """
    fd = _one_writer(os.path.abspath(vis), timeout, task)
    try:
        yield
    finally:
        os.close(fd)


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
        if path.name in (LOCK_FILE, WRITER_LOCK_FILE) or not path.is_file() or path.is_symlink():
            continue
        other_writer = rel in recorded and rel not in could_write and _stat(path) != recorded[rel]
        if other_writer or path.stat().st_mtime_ns > limit:
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


def journaled(
    spec: CallSpec, writes: Sequence[str], *, discard_orphan_journal: bool = False
) -> CallSpec:
    """Return ``spec`` with a journal: the child snapshots ``writes`` before running it.

    Args:
        spec: a call on ``spec.vis`` that writes to it.
        writes: main-table columns and/or subtable names the call may change.
        discard_orphan_journal: delete a pending journal of the MS instead of
            refusing the write (keeps the MS as the dead call left it).
    """
    if not spec.vis:
        raise InvalidInput(f"{spec.name}: a journaled call needs vis")
    hook = MsJournal(
        spec.vis,
        writes,
        task=spec.name,
        lock_timeout=spec.lock_timeout,
        discard_orphan_journal=discard_orphan_journal,
    )
    return dataclasses.replace(
        spec,
        func=Ref("casaguard.remote.casa.journal", "run_journaled"),
        args=(str(hook.path), hook.vis, hook.writes, spec.name, spec.func, spec.args, spec.kwargs),
        kwargs={},
        journal=hook,
    )


# --- the snapshot (runs in the child) and the restore (runs in the parent) ---


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
        subtables: subtable directory names (relative to ``vis``) to copy whole;
            one that does not exist yet is recorded as absent.
        growth_bytes: what the task may add to the MS (columns it creates).
        extra: more facts for the manifest (e.g. how long the planning took).

    Returns:
        The manifest.

    Raises:
        InvalidInput: not enough free space; nothing was copied.
    """
    root = Path(vis)
    journal = Path(journal)
    taken_ns = time.time_ns()
    saved = [name for name in files if (root / name).is_file() and name != LOCK_FILE]
    present = [name for name in subtables if (root / name).is_dir()]
    for name in present:
        saved += [
            str(p.relative_to(root))
            for p in sorted((root / name).rglob("*"))
            if p.is_file() and not p.is_symlink() and p.name != LOCK_FILE
        ]
    saved = list(dict.fromkeys(saved))
    lock_of = {"": LOCK_FILE, **{name: f"{name}/{LOCK_FILE}" for name in present}}
    locks = {rel: (root / rel).is_file() for rel in lock_of.values()}
    copied = saved + [rel for rel, exists in locks.items() if exists]
    snapshot_bytes = sum((root / rel).stat().st_size for rel in copied)
    _check_space(task, vis, journal, snapshot_bytes, growth_bytes)
    started = time.monotonic()
    try:
        for rel in copied:
            target = journal / FILES / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            copy_file(root / rel, target)
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
        "main_entries": sorted(p.name for p in root.iterdir()),
        "subtable_entries": {
            name: sorted(str(p.relative_to(root)) for p in (root / name).rglob("*"))
            for name in present
        },
        "stat": _stat_tree(root),
        "bytes": snapshot_bytes,
        "copy_s": round(time.monotonic() - started, 4),
        **(extra or {}),
    }
    tmp = journal / (MANIFEST + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps(manifest))
    os.replace(tmp, journal / MANIFEST)
    return manifest


def _read_manifest(journal: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((journal / MANIFEST).read_text())
    except (OSError, ValueError) as error:
        raise JournalError(f"cannot read the manifest of {journal}: {error}") from None
    if not isinstance(manifest, dict):
        raise JournalError(f"the manifest of {journal} is not an object")
    return manifest


def _inside(root: Path, rel: Any, *, what: str) -> Path:
    """``root / rel`` if ``rel`` is a plain relative path that stays inside ``root``."""
    if not isinstance(rel, str) or not rel or os.path.isabs(rel) or ".." in Path(rel).parts:
        raise JournalError(f"manifest path {rel!r} ({what}) is not a path inside {root}")
    target = root / rel
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
    for entries in manifest.get("subtable_entries", {}).values():
        for rel in entries:
            _inside(root, rel, what="subtable entry")


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
    try:
        return _restore(journal, root)
    except BaseException as error:
        _remove_temp_files(root)
        if isinstance(error, KeyboardInterrupt):
            raise
        why = str(error) if isinstance(error, JournalError) else f"{type(error).__name__}: {error}"
        raise JournalError(
            RESTORE_FAILED_MESSAGE.format(vis=root, why=why, journal=journal)
        ) from error


def _restore(journal: Path, root: Path) -> list[str]:
    manifest = _read_manifest(journal)
    if os.path.realpath(str(manifest.get("vis"))) != os.path.realpath(root):
        raise JournalError(f"its manifest names {manifest.get('vis')!r}, not {root}")
    _validated(root, journal, manifest)
    saved: list[str] = manifest["saved"]
    recorded: dict[str, Any] = manifest.get("stat", {})
    changed = [rel for rel in saved if _stat(root / rel) != recorded.get(rel)]
    created = _created_entries(root, manifest)
    lock_files: dict[str, bool] = manifest.get("locks", {})
    tables = sorted({str(Path(rel).parent) for rel in lock_files}, key=len) or ["."]
    with contextlib.ExitStack() as held:
        for table in tables:
            if not held.enter_context(_table_lock(root / table)):
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
            _put_back(source, root / rel, move=same_fs)
            done.append(str(root / rel))
        for path in created:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
            done.append(str(path))
        for rel, existed in lock_files.items():
            if (root / rel).exists():
                _put_back_sync_data(journal / FILES / rel if existed else None, root / rel)
    unjournaled = _unjournaled_changes(root, manifest)
    if unjournaled:
        log.warning("journal_unjournaled_change", vis=str(root), paths=unjournaled)
    log.info(
        "journal_restored",
        vis=str(root),
        restored=sorted(done),
        changed=sorted(changed),
        created=sorted(str(p) for p in created),
    )
    return sorted(done)


def _put_back_sync_data(saved: Path | None, target: Path) -> None:
    """Write the snapshot's sync data (bytes LOCK_REQUEST_BYTES on) into ``target`` in place.

    The head of the file (casacore's list of waiting processes) is kept as it
    is now; ``saved=None`` (no lock file at snapshot time) empties the file.
    """
    data = saved.read_bytes() if saved is not None else b""
    fd = os.open(target, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        current = os.pread(fd, LOCK_REQUEST_BYTES, 0)
        if saved is not None and len(data) >= LOCK_REQUEST_BYTES == len(current):
            data = current + data[LOCK_REQUEST_BYTES:]
        if os.pread(fd, len(data) + 1, 0) == data:
            return
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)


def _remove_temp_files(root: Path) -> None:
    with contextlib.suppress(OSError):
        for path in root.rglob(f"*{_RESTORE_SUFFIX}"):
            path.unlink(missing_ok=True)


def copy_file(source: Path, target: Path) -> None:
    """Copy one file at the lowest cost the file system offers, keeping mode and times.

    A reflink (``FICLONE``: btrfs, XFS) shares the blocks until one side is
    written; else ``copy_file_range`` copies inside the kernel.
    """
    with open(source, "rb") as src, open(target, "wb") as dst:
        try:
            fcntl.ioctl(dst.fileno(), _FICLONE, src.fileno())
        except OSError:
            _copy_range(src.fileno(), dst.fileno(), os.fstat(src.fileno()).st_size)
    shutil.copystat(source, target)


_FICLONE = 0x40049409
_RESTORE_SUFFIX = ".casaguard-restore"


def _copy_range(src: int, dst: int, size: int) -> None:
    copied = 0
    try:
        while copied < size:
            step = os.copy_file_range(src, dst, size - copied)
            if step == 0:
                break
            copied += step
        return
    except OSError as error:
        if error.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
            raise
    os.lseek(src, copied, os.SEEK_SET)
    os.lseek(dst, copied, os.SEEK_SET)
    while chunk := os.read(src, 1 << 20):
        os.write(dst, chunk)


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


def _put_back(saved: Path, target: Path, *, move: bool) -> None:
    if not saved.exists():
        return  # put back by an earlier, interrupted restore of this journal
    if move:
        os.replace(saved, target)
        return
    tmp = target.with_name(target.name + _RESTORE_SUFFIX)
    try:
        shutil.copy2(saved, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _created_entries(root: Path, manifest: dict[str, Any]) -> list[Path]:
    """Entries the aborted call created, and only those.

    An entry counts only if the snapshot did not list it, the declared writes
    can create it (a new ``table.f<N>*`` data-manager file of the main table or
    casacore's ``table.dat_tmp``, a
    new file of a journaled subtable, a declared subtable that did not exist),
    and it was born after the snapshot was taken.
    """
    taken = int(manifest.get("taken_ns", 0)) - CLOCK_SLACK_NS
    created: list[Path] = []
    before = set(manifest["main_entries"])
    new_subtables = {name for name, existed in manifest.get("subtables", {}).items() if not existed}
    for entry in sorted(root.iterdir()):
        if entry.name in before or entry.name == LOCK_FILE or JOURNAL_MARK in entry.name:
            continue
        if not (_DATA_MANAGER_FILE.match(entry.name) or entry.name in new_subtables):
            continue
        if os.lstat(entry).st_ctime_ns >= taken:
            created.append(entry)
    for name, existed in manifest.get("subtables", {}).items():
        if not existed or not (root / name).is_dir() or (root / name).is_symlink():
            continue
        known = set(manifest.get("subtable_entries", {}).get(name, []))
        for entry in sorted((root / name).rglob("*")):
            rel = str(entry.relative_to(root))
            inside_new = any(parent in created for parent in entry.parents)
            if rel in known or entry.name == LOCK_FILE or inside_new:
                continue
            if os.lstat(entry).st_ctime_ns >= taken:
                created.append(entry)
    return created


def _unjournaled_changes(root: Path, manifest: dict[str, Any]) -> list[str]:
    saved = set(manifest["saved"])
    return sorted(
        rel
        for rel, before in manifest.get("stat", {}).items()
        if rel not in saved and Path(rel).name != LOCK_FILE and _stat(root / rel) != before
    )


def _stat_tree(root: Path) -> dict[str, list[int] | None]:
    return {str(p.relative_to(root)): _stat(p) for p in root.rglob("*") if p.is_file()}


def _stat(path: Path) -> list[int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def _same_device(a: Path, b: Path) -> bool:
    return os.stat(a).st_dev == os.stat(b).st_dev


@contextlib.contextmanager
def _table_lock(table: Path) -> Iterator[bool]:
    """Hold casacore's write lock (an fcntl lock on byte 0 of table.lock) while restoring.

    Taking a lock changes no byte of the file. If the lock file is missing
    nobody can hold the table, and it is not created here.
    """
    try:
        fd = os.open(table / LOCK_FILE, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        yield True
        return
    try:
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
    finally:
        os.close(fd)


def files_of_data_manager(names: Iterable[str], seqnr: int) -> list[str]:
    """Return the files of data manager ``seqnr`` among a table directory's ``names``.

    casacore names them ``table.f<seqnr>`` plus a suffix that does not start
    with a digit (``_TSM1`` for tiles, ``i`` for an index).
    """
    pattern = re.compile(rf"^table\.f{seqnr}(?!\d)")
    return sorted(name for name in names if pattern.match(name))
