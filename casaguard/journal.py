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
takes DATA's files along -- correct, just dearer. ``table.lock`` is never
copied, replaced or deleted: the kernel drops a dead process's ``fcntl``
locks, and a fresh opener re-reads ``table.dat``, not the lock file's sync
counters (the tests prove both).

Who does what (the parent never imports casacore)::

    parent: MsJournal                         child (CASA)
    -----------------                         ------------
    check_writable_ms (missing, not an MS,
        read-only -> InvalidInput)
    before(): flock(<ms dir>) -- one guarded writer per MS
              mkdir <ms>/../.<ms>.casaguard-journal-*
                            ----------------> _incasa.journal.run_journaled
                                                tb.getdminfo(): column -> files
                                                free space?  no -> InvalidInput
                                                copy files, manifest.json (atomic)
                                                the task itself
    crash/kill/timeout/Ctrl-C: restore()       ... dies anywhere
      take table.lock byte 0 (fcntl, like casacore)
      rename copies back, table.dat last; delete files the task created
    always: discard() removes the journal (kept if a restore failed), drops the flock

The snapshot is taken in the child because only casacore knows which file
holds which column, and the child already has casatools loaded: the lookup
costs one table open (milliseconds) instead of a second CASA process. The
manifest is written last, by rename; the task starts only after it exists,
so a child that dies without a manifest never wrote to the MS.

Cost: one copy of the written columns' files (e.g. MODEL_DATA: 8 bytes per
visibility) plus HISTORY and SOURCE. The journal lives beside the MS, on the
same file system, so the copy uses reflinks where the file system has them
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
import json
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from casaguard import events
from casaguard._job import Ref
from casaguard.errors import LOCKED_MESSAGE, InvalidInput, JournalError, MsLocked
from casaguard.msinput import require_ms

if TYPE_CHECKING:
    from casaguard.runner import CallSpec

log = events.get_logger()

MANIFEST = "manifest.json"
FILES = "files"
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

NOT_MS_MESSAGE = "{task}: {vis} is not a Measurement Set ({why})"
READ_ONLY_MESSAGE = "{task}: {vis} is read-only ({path} is not writable{hint}); nothing was changed"
READ_ONLY_TABLE_DAT_HINT = ": WSClean run as another user leaves table.dat owned by it"
NO_SPACE_MESSAGE = (
    "{task}: not enough free space to journal {vis}: needs {need_mb:.2f} MB on {where}, "
    "{free_mb:.2f} MB free; nothing was changed (journal=False runs without a safety copy)"
)
ORPHAN_ADVICE = (
    "a guarded write to this MS died with its caller; its snapshot is in {journal}: "
    "run `casaguard restore-journal {journal}` to roll the MS back, or delete it to keep the MS"
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

    ``writer_fd`` holds an exclusive ``flock`` on the MS directory from before
    the snapshot until after any restore, so two guarded writes to one MS (two
    threads of a batch, two pipelines) never interleave: a later write cannot
    snapshot the half-written state of an earlier one, nor be undone by its restore.
    """

    path: Path
    vis: str
    writer_fd: int | None = None
    kept: bool = False


class MsJournal:
    """The runner's journal hook for one guarded write to one MS.

    ``before`` creates the (empty) journal directory, the child fills it
    (``casaguard._incasa.journal``), ``restore`` puts the MS back after a
    crash, ``discard`` drops the journal.
    """

    def __init__(
        self, vis: str, writes: Sequence[str], *, task: str, lock_timeout: float = 60.0
    ) -> None:
        self.vis = os.path.abspath(vis)
        self.writes = tuple(dict.fromkeys((*writes, *ALWAYS_SUBTABLES)))
        self.task = task
        self.lock_timeout = lock_timeout
        self.path = _journal_path(self.vis)

    def before(self) -> Snapshot:
        """Create the journal directory (the child fills it before the task starts)."""
        for orphan in orphans(self.vis):
            log.warning(
                "journal_orphan",
                vis=self.vis,
                journal=str(orphan),
                advice=ORPHAN_ADVICE.format(journal=orphan),
            )
        writer_fd = _one_writer(self.vis, self.lock_timeout, self.task)
        try:
            self.path.mkdir(mode=0o700)
        except BaseException:
            os.close(writer_fd)
            raise
        return Snapshot(self.path, self.vis, writer_fd)

    def restore(self, snapshot: Snapshot) -> list[str]:
        """Put back what the snapshot holds; delete what the task created.

        Returns:
            The paths restored or removed (empty when the child died before the
            snapshot was complete, i.e. before the task could write anything).

        Raises:
            JournalError: the table stayed locked by another process, or a file
                could not be put back; the journal is kept and the message says where.
        """
        try:
            return restore(snapshot.path)
        except JournalError:
            snapshot.kept = True
            raise

    def discard(self, snapshot: Snapshot) -> None:
        """Remove the journal (unless a failed restore still needs it); let go of the MS."""
        try:
            self._discard(snapshot)
        finally:
            if snapshot.writer_fd is not None:
                os.close(snapshot.writer_fd)  # releases the flock
                snapshot.writer_fd = None

    def _discard(self, snapshot: Snapshot) -> None:
        if snapshot.kept:
            log.error("journal_kept", vis=snapshot.vis, journal=str(snapshot.path))
            return
        try:
            manifest = json.loads((snapshot.path / MANIFEST).read_text())
        except (OSError, ValueError):
            manifest = {}
        started = time.monotonic()
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


def _one_writer(vis: str, lock_timeout: float, task: str) -> int:
    """Take an exclusive ``flock`` on the MS directory, waiting up to ``lock_timeout``.

    ``flock`` on the directory is independent of casacore's ``fcntl`` locks on
    ``table.lock`` and creates no file. The kernel drops it if this process dies.

    Raises:
        MsLocked: another guarded write to this MS still runs after ``lock_timeout``.
    """
    fd = os.open(vis, os.O_RDONLY | os.O_DIRECTORY)
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
        holder = _flock_holder(vis)
        if not announced:
            log.warning("journal_wait", task=task, vis=vis, holder_pid=holder)
            announced = True
        waited = time.monotonic() - started
        if waited > lock_timeout:
            os.close(fd)
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


def _flock_holder(vis: str) -> int | None:
    """The pid holding a ``flock`` on the MS directory, from ``/proc/locks``."""
    try:
        st = os.stat(vis)
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


def orphans(vis: str | os.PathLike[str]) -> list[Path]:
    """Return journals of ``vis`` whose owner died mid-call (e.g. the caller was SIGKILLed).

    Such a journal may hold the only good copy of what the dead call was writing.
    """
    ms = Path(vis).absolute()
    found = []
    for where in (ms.parent, Path(tempfile.gettempdir())):
        for path in sorted(where.glob(f"*{ms.name}{JOURNAL_MARK}*")):
            if not (path / MANIFEST).exists():
                continue  # the task never started: nothing to restore
            owner = path.name.rsplit(JOURNAL_MARK, 1)[-1].split("-", 1)[0]
            if owner.isdigit() and not _alive(int(owner)) and _journal_vis(path) == str(ms):
                found.append(path)
    return found


def recover(path: str | os.PathLike[str]) -> list[str]:
    """Restore an orphaned journal into its MS, then remove the journal.

    Args:
        path: the journal directory (see ``orphans``).

    Returns:
        The paths restored or removed.

    Raises:
        JournalError: the restore failed; the journal is kept.
        InvalidInput: ``path`` is not a casaguard journal.
    """
    journal = Path(path)
    if JOURNAL_MARK.strip(".") not in journal.name or not journal.is_dir():
        raise InvalidInput(f"{journal} is not a casaguard journal")
    done = restore(journal)
    shutil.rmtree(journal)
    return done


def _journal_vis(path: Path) -> str | None:
    try:
        vis = json.loads((path / MANIFEST).read_text())["vis"]
    except (OSError, ValueError, KeyError):
        return None
    return str(vis)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def journaled(spec: CallSpec, writes: Sequence[str]) -> CallSpec:
    """Return ``spec`` with a journal: the child snapshots ``writes`` before running it.

    Args:
        spec: a call on ``spec.vis`` that writes to it.
        writes: main-table columns and/or subtable names the call may change.
    """
    if not spec.vis:
        raise InvalidInput(f"{spec.name}: a journaled call needs vis")
    hook = MsJournal(spec.vis, writes, task=spec.name, lock_timeout=spec.lock_timeout)
    return dataclasses.replace(
        spec,
        func=Ref("casaguard._incasa.journal", "run_journaled"),
        args=(str(hook.path), hook.vis, hook.writes, spec.name, spec.func, spec.args, spec.kwargs),
        kwargs={},
        journal=hook,
    )


def _journal_path(vis: str) -> Path:
    ms = Path(vis)
    name = f".{ms.name}{JOURNAL_MARK}{os.getpid()}-{secrets.token_hex(4)}"
    # Beside the MS: same file system, so restore is a rename and copies may be reflinks.
    if os.access(ms.parent, os.W_OK | os.X_OK):
        return ms.parent / name
    return Path(tempfile.gettempdir()) / name.lstrip(".")


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

    Runs in the child, before the task. Nothing of the MS is modified.

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
    saved = [name for name in files if (root / name).is_file() and name != LOCK_FILE]
    present = [name for name in subtables if (root / name).is_dir()]
    for name in present:
        saved += [
            str(p.relative_to(root))
            for p in sorted((root / name).rglob("*"))
            if p.is_file() and p.name != LOCK_FILE
        ]
    saved = list(dict.fromkeys(saved))
    snapshot_bytes = sum((root / rel).stat().st_size for rel in saved)
    _check_space(task, vis, journal, snapshot_bytes, growth_bytes)
    started = time.monotonic()
    for rel in saved:
        target = journal / FILES / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        copy_file(root / rel, target)
    manifest = {
        "version": 1,
        "vis": vis,
        "task": task,
        "pid": os.getpid(),
        "parent_pid": os.getppid(),
        "saved": saved,
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
    tmp.write_text(json.dumps(manifest))
    os.replace(tmp, journal / MANIFEST)
    return manifest


def restore(journal: str | os.PathLike[str]) -> list[str]:
    """Restore the MS recorded in ``journal``'s manifest (the writer must be dead).

    Args:
        journal: a journal directory written by ``take_snapshot``.

    Returns:
        Absolute paths restored or removed; empty if there is no manifest
        (the writer died before the task started).

    Raises:
        JournalError: see ``MsJournal.restore``.
    """
    journal = Path(journal)
    try:
        manifest = json.loads((journal / MANIFEST).read_text())
    except FileNotFoundError:
        log.info("journal_restored", journal=str(journal), restored=[], note="no snapshot yet")
        return []
    root = Path(manifest["vis"])
    saved: list[str] = manifest["saved"]
    changed = [rel for rel in saved if _stat(root / rel) != manifest["stat"].get(rel)]
    created = _created_entries(root, manifest)
    with _table_lock(root) as locked:
        if not locked:
            if not changed and not created:
                log.info("journal_restored", vis=str(root), restored=[], note="nothing changed")
                return []
            raise JournalError(
                f"cannot restore {root}: another process holds its lock; "
                f"the snapshot is kept in {journal}"
            )
        done: list[str] = []
        same_fs = _same_device(journal, root)
        # table.dat last: until it is back, the old column set is not visible.
        for rel in sorted(saved, key=lambda r: Path(r).name == "table.dat"):
            _put_back(journal / FILES / rel, root / rel, move=same_fs)
            done.append(str(root / rel))
        for path in created:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
            done.append(str(path))
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
    tmp = target.with_name(target.name + ".casaguard-restore")
    shutil.copy2(saved, tmp)
    os.replace(tmp, target)


def _created_entries(root: Path, manifest: dict[str, Any]) -> list[Path]:
    """Entries the task created: new main-table files, new subtable files, new subtables."""
    created: list[Path] = []
    before = set(manifest["main_entries"])
    for entry in sorted(root.iterdir()):
        if entry.name not in before and entry.name != LOCK_FILE and JOURNAL_MARK not in entry.name:
            created.append(entry)
    for name, existed in manifest["subtables"].items():
        if not existed or not (root / name).is_dir():
            continue  # a subtable the task created is already a new main entry
        known = set(manifest["subtable_entries"].get(name, []))
        for entry in sorted((root / name).rglob("*")):
            rel = str(entry.relative_to(root))
            inside_new = any(parent in created for parent in entry.parents)
            if rel not in known and entry.name != LOCK_FILE and not inside_new:
                created.append(entry)
    return created


def _unjournaled_changes(root: Path, manifest: dict[str, Any]) -> list[str]:
    saved = set(manifest["saved"])
    return sorted(
        rel
        for rel, before in manifest["stat"].items()
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
def _table_lock(root: Path) -> Iterator[bool]:
    """Hold casacore's write lock (an fcntl lock on byte 0 of table.lock) while restoring.

    Taking a lock changes no byte of the file. If the lock file is missing
    nobody can hold the table, and it is not created here.
    """
    try:
        fd = os.open(root / LOCK_FILE, os.O_RDWR)
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
