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
    check_writable_ms (not an MS -> InvalidInput; read-only -> ReadOnlyMs)
    before(): flock <ms>/.casaguard-writer.lock -- one guarded writer per MS
              pending journal of this MS?  -> JournalError (or discard it)
              mkdir <journal>, heartbeat thread
                            ----------------> remote.casa.journal.run_journaled
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
  parent is writable by the caller and by no one else (group or world), or
  sticky (``/tmp``); otherwise in a per-user 0700 directory
  (``$XDG_RUNTIME_DIR/casaguard/journals`` or ``~/.cache/casaguard/journals``,
  owner and mode checked), named after the MS and a hash of its absolute path.
  Never in a world-writable directory without the sticky bit.
* journals are found from the MS (those two places, by name), never by
  scanning ``/tmp``. One is trusted only if it and its manifest are owned by
  the caller, are not symlinks, have no group/other write, and the manifest
  names exactly that MS; others are ignored with a ``journal_untrusted`` event.
* every path in a manifest that the restore acts on must lie inside the MS after
  resolving (no ``..``, no absolute path, no symlink escape), and the restore
  works through descriptors of the directories it checked
  (``casaguard.journal.pinned``); a restore deletes only entries the
  snapshot did not list, that the declared writes can create (new
  ``table.f<N>*`` files, new files directly in a journaled subtable, a declared
  subtable that did not exist), that were born after the snapshot and that the
  caller owns (the task ran as the caller). A journaled subtable is its own
  files: a directory nested in it is neither copied nor put back nor deleted.

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
(``FICLONE``) or an in-kernel ``copy_file_range`` into blocks allocated up
front (small files: one read and write), a restore is a rename,
and a discard an unlink. ``bench/bench_journal.py`` measures the ratio to an
unjournaled call. No ``fsync``: the journal guards against a process dying,
not against the machine losing power.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from casaguard import events
from casaguard.errors import InvalidInput, JournalError, ReadOnlyMs
from casaguard.journal import structures
from casaguard.journal.layout import (
    ALWAYS_SUBTABLES,
    HEARTBEAT,
    MANIFEST,
    NOT_MS_MESSAGE,
    PENDING_MESSAGE,
    READ_ONLY_MESSAGE,
    READ_ONLY_TABLE_DAT_HINT,
    RELEASED,
    RESTORE_COMMAND,
    UNLISTABLE_MS_MESSAGE,
    Snapshot,
)
from casaguard.journal.restore import restore
from casaguard.journal.trust import _beside_ok, _journal_path, _private_root, pending_journals
from casaguard.journal.writer import _one_writer, _start_heartbeat, _touch
from casaguard.sandbox.jobdir import Ref

if TYPE_CHECKING:
    from casaguard.sandbox.callspec import CallSpec

log = events.get_logger()


def check_writable_ms(vis: str, *, task: str, writes: Sequence[str] = ()) -> None:
    """Reject, before anything is touched, an MS that a guarded write cannot succeed on.

    Refused: an MS directory the caller may not list (plain CASA's ``DirectoryIterator``
    fails on it: a ``RuntimeError``, and nothing is written), a main ``table.dat`` that
    is not writable (every writer task of plain CASA fails on it, with the field
    report's error), and a directory the write
    must create or rename files in -- the MS and each declared subtable that
    exists -- because the journal puts files back by rename there (and clearcal
    dies of an uncaught AipsError on such an MS). Any other unwritable file is
    left to CASA, which writes some of them and never opens others for writing
    (measured, ``tests/test_writepath.py``); its error comes back as a
    ``CasaTaskError`` after the journal's restore, as plain CASA's would.

    Args:
        vis: absolute path of the MS, already through ``casaguard.ms.checks.require_ms``
            (the one check that a path is a table: ``run_task`` makes it, journal or not).
        task: task name, for the message.
        writes: declared columns / subtables (subtables are checked too).

    Raises:
        InvalidInput: the table is not a Measurement Set.
        ReadOnlyMs: the MS cannot be written (also a ``RuntimeError``).
    """
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
    if not os.access(path, os.R_OK):
        raise ReadOnlyMs(UNLISTABLE_MS_MESSAGE.format(task=task, vis=vis))
    subtables = [path / name for name in (*writes, *ALWAYS_SUBTABLES) if (path / name).is_dir()]
    for candidate in (path, *subtables, path / "table.dat"):
        if not os.access(candidate, os.W_OK):
            hint = READ_ONLY_TABLE_DAT_HINT if candidate.name == "table.dat" else ""
            message = READ_ONLY_MESSAGE.format(task=task, vis=vis, path=candidate, hint=hint)
            raise ReadOnlyMs(message)


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
        structures.put(snapshot.vis, manifest.get("structure"))
        started = time.monotonic()
        snapshot.heartbeat_stop.set()
        shutil.rmtree(snapshot.path, ignore_errors=True)
        log.debug(
            "journal_dropped",
            vis=snapshot.vis,
            bytes=manifest.get("bytes"),
            files=len(manifest.get("saved", ())),
            copy_s=manifest.get("copy_s"),
            copied_by=manifest.get("copied_by"),
            plan_s=manifest.get("plan_s"),
            structure_reused=manifest.get("structure_reused"),
            drop_s=round(time.monotonic() - started, 4),
        )


# --- the writer lock ----------------------------------------------------------------------


# --- where journals live, and which are trusted -------------------------------------------


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
    known = structures.get(hook.vis)
    return dataclasses.replace(
        spec,
        func=Ref("casaguard.remote.casa.journal", "run_journaled"),
        args=(str(hook.path), hook.vis, hook.writes, spec.name, spec.func, spec.args, spec.kwargs),
        kwargs={"known": known},
        journal=hook,
    )


# --- the snapshot (runs in the child) and the restore (runs in the parent) ---
