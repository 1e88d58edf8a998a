"""What a journal is on disk: names, limits, messages, what each task writes, file facts.

The leaf of the journal package: the child's snapshot, the parent's restore
and the trust rules all read these names.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
HEARTBEAT_S = 0.2


#: A file newer than the last heartbeat by more than this was written after the call died.
#: The dead call's own last write lands at most one beat after the last heartbeat plus the
#: time its child takes to die with the caller: parent-death signals kill it within
#: 2-32 ms of a SIGKILLed caller (measured, template and spawn mode). Any later write is
#: someone else's newer work, which restore-journal refuses to undo; a shorter window
#: leaves less room for such a write to pass as the dead call's.
LATER_WRITE_MARGIN_S = 0.5


#: Tolerance between time.time_ns() and the kernel's coarse file timestamps.
CLOCK_SLACK_NS = 1_000_000_000


#: What a write can add to a main table: data-manager files, casacore's temp table.dat.
_DATA_MANAGER_FILE = re.compile(r"^(table\.f\d+|table\.dat_tmp$)")


NOT_MS_MESSAGE = "{task}: {vis} is not a Measurement Set ({why})"


READ_ONLY_MESSAGE = "{task}: {vis} is read-only ({path} is not writable{hint}); nothing was changed"


#: An MS whose directory cannot be listed: casacore's DirectoryIterator fails on opening it,
#: so plain ft and clearcal raise a RuntimeError; nothing can be written.
UNLISTABLE_MS_MESSAGE = (
    "{task}: {vis} cannot be listed (permission denied), so CASA cannot open it; "
    "nothing was changed"
)


READ_ONLY_TABLE_DAT_HINT = ": WSClean run as another user leaves table.dat owned by it"


NO_SPACE_MESSAGE = (
    "{task}: not enough free space to journal {vis}: needs {need_mb:.2f} MB on {where}, "
    "{free_mb:.2f} MB free; nothing was changed (journal=False runs without a safety copy)"
)


#: A file of the main table the task writes that is a symlink: a restore could not put it
#: back in place (it would have to write wherever the link leads).
SYMLINKED_MESSAGE = (
    "{task}: cannot journal {vis}: {rel} is a symlink; nothing was changed "
    "(journal=False runs without a safety copy)"
)


#: A directory the snapshot must copy from but may not list.
UNLISTABLE_MESSAGE = (
    "{task}: cannot journal {vis}: {rel} cannot be listed (permission denied); "
    "nothing was changed (journal=False runs without a safety copy)"
)


RESTORE_COMMAND = "casaguard restore-journal {vis}"


PENDING_MESSAGE = (
    "{task}: {vis} has a pending journal {journal} (a guarded write died mid-write or its "
    "restore failed); run `" + RESTORE_COMMAND + "` to roll the MS back, or pass "
    "discard_orphan_journal=True (on the command line --discard-orphan-journal) to keep the "
    "MS as it is; nothing was changed"
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


_FICLONE = 0x40049409


_RESTORE_SUFFIX = ".casaguard-restore"


def _stat(path: str | os.PathLike[str]) -> list[int] | None:
    """What the restore compares a file by: [size, mtime_ns, inode], or None if it is gone."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def files_of_data_manager(names: Iterable[str], seqnr: int) -> list[str]:
    """Return the files of data manager ``seqnr`` among a table directory's ``names``.

    casacore names them ``table.f<seqnr>`` plus a suffix that does not start
    with a digit (``_TSM1`` for tiles, ``i`` for an index).
    """
    pattern = re.compile(rf"^table\.f{seqnr}(?!\d)")
    return sorted(name for name in names if pattern.match(name))


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
