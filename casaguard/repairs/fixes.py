"""The repair's safe fixes, one small class each: ``plan()`` says what changes, ``apply()`` does it.

A fix is built from one probe finding (or one orphan journal) and the MS as it
is now. ``plan()`` returns ``Change`` records -- file, column, mode, owner,
before and after -- without touching anything; ``backup_files()`` names every
file (relative to the MS) that ``apply()`` rewrites or deletes, so that the
repair can copy them first (``casaguard.repairs.journal.take_backup``).

The rules every fix keeps:

* the smallest change that removes the cause named by the finding;
* never ``chmod``/``chown`` a file another user owns: a file this process may
  not write but whose directory it may is replaced by a copy it owns
  (write to a temp name in the same directory, then ``rename``);
* never touch DATA, FLAG, UVW, WEIGHT, or a subtable's contents;
* nothing is deleted that the backup cannot put back.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from casaguard.api import tasks
from casaguard.ms import access
from casaguard.preflight.findings import Finding
from casaguard.repairs import journal as repair_journal
from casaguard.sandbox.jobdir import Ref

#: Columns no fix may remove or rewrite.
PROTECTED_COLUMNS = frozenset({"DATA", "FLOAT_DATA", "FLAG", "FLAG_ROW", "UVW", "WEIGHT", "SIGMA"})
TMP_MARK = ".casaguard-repair-"
CHILD_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Change:
    """One exact change a fix makes.

    Attributes:
        action: ``replace-file``, ``chmod-own-file``, ``remove-column``,
            ``finish-journal`` or ``discard-journal``.
        path: the file, table or journal changed.
        before: its state now (owner, mode, column layout...).
        after: its state after the fix.
    """

    action: str
    path: str
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """One line a human can check against the MS."""
        if self.action == "replace-file":
            return (
                f"replace {self.path} (owner {self.before['owner']}, mode {self.before['mode']}) "
                f"by a byte-identical copy owned by {self.after['owner']}, mode "
                f"{self.after['mode']} (write a temp copy in the same directory, then rename)"
            )
        if self.action == "chmod-own-file":
            return (
                f"chmod {self.before['mode']} -> {self.after['mode']} on {self.path} "
                f"(owned by this user, {self.before['owner']})"
            )
        if self.action == "remove-column":
            shared = self.before.get("shared_with") or []
            where = (
                f" (its {self.before['dm_type']} '{self.before['dm_name']}' also holds "
                f"{', '.join(shared)}: their values are kept)"
                if shared
                else f" and its {self.before['dm_type']} files {', '.join(self.before['files'])}"
            )
            shape = self.before.get("shape")
            layout = f"{self.before.get('value_type', '?')}" + (
                f", fixed shape {shape}" if shape else ""
            )
            return f"remove column {self.before['column']} ({layout}) from {self.path}{where}"
        if self.action == "finish-journal":
            return (
                f"finish the restore in {self.path}: put back {self.before['files']} file(s) "
                f"saved before the dead {self.before['task']} call (pid {self.before['pid']}), "
                "then remove the journal"
            )
        if self.action == "discard-journal":
            return f"move the orphan journal {self.path} into the backup (the MS is kept as it is)"
        return f"{self.action} {self.path}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "path": self.path,
            "before": self.before,
            "after": self.after,
            "text": self.describe(),
        }


class Fix(Protocol):
    """What the repair needs of a fix."""

    code: str
    name: str
    why: str
    consequence: str

    def plan(self) -> list[Change]: ...

    def backup_files(self) -> list[str]: ...

    def apply(self, backup: Path) -> None: ...

    def rollback(self, backup: Path) -> None: ...


# ----------------------------------------------------------------------------- file access


def _owner(uid: int) -> str:
    return f"{access.user_name(uid)} (uid {uid})"


def _readable(path: str) -> bool:
    try:
        with open(path, "rb"):
            return True
    except OSError:
        return False


_FOREIGN_WHY = (
    "CASA opens these files read/write; they belong to another user (WSClean or a container "
    "run as another uid rewrote them), so this user cannot write them -- but may replace "
    "them in their directory, which it can write"
)


_OWN_WHY = (
    "CASA opens these files read/write; they are this user's own, but their mode forbids "
    "writing, and a user may change the mode of their own files"
)


@dataclass
class ReplaceForeignFiles:
    """Files of a table this process may not write, in a directory it may write.

    A file owned by someone else is replaced by a byte-identical copy this
    process owns (mode kept, plus owner-write; set-id bits dropped; times
    kept). A file this process owns but whose mode forbids writing gets
    ``u+w`` -- a user may change the mode of their own file.
    """

    code: str
    ms: str
    files: list[str]
    creds: access.Credentials
    name: str = "own-copy"
    why: str = _FOREIGN_WHY
    consequence: str = "none: the bytes are identical; only owner and write permission change"
    _changes: list[Change] = field(default_factory=list)

    def plan(self) -> list[Change]:
        self._changes = []
        for path in self.files:
            st = os.stat(path)
            mode = stat.S_IMODE(st.st_mode)
            if st.st_uid == self.creds.uid:
                self._changes.append(
                    Change(
                        "chmod-own-file",
                        path,
                        {"owner": _owner(st.st_uid), "mode": f"{mode:04o}"},
                        {"owner": _owner(st.st_uid), "mode": f"{mode | stat.S_IWUSR:04o}"},
                    )
                )
                continue
            new_mode = (mode & 0o777) | stat.S_IWUSR
            self._changes.append(
                Change(
                    "replace-file",
                    path,
                    {"owner": _owner(st.st_uid), "mode": f"{mode:04o}", "size": st.st_size},
                    {"owner": _owner(self.creds.uid), "mode": f"{new_mode:04o}"},
                )
            )
        own = all(change.action == "chmod-own-file" for change in self._changes)
        self.why = _OWN_WHY if own else _FOREIGN_WHY
        return list(self._changes)

    def backup_files(self) -> list[str]:
        return [os.path.relpath(path, self.ms) for path in self.files]

    def apply(self, backup: Path) -> None:
        del backup
        changes = self._changes or self.plan()
        with _no_casacore_writer(self.ms):
            for change in changes:
                if change.action == "chmod-own-file":
                    os.chmod(change.path, int(change.after["mode"], 8))
                else:
                    replace_by_own_copy(change.path)

    def rollback(self, backup: Path) -> None:
        del backup  # the repair restores the backup's files


def replace_by_own_copy(path: str) -> None:
    """Replace ``path`` by a copy owned by this process: same bytes, mode (+u+w) and times.

    The copy is written beside the original under a temp name and renamed over
    it, so a reader sees either the old file or the new one, never half of one.
    """
    st = os.stat(path)
    directory, name = os.path.split(path)
    tmp = os.path.join(directory, f".{name}{TMP_MARK}{secrets.token_hex(4)}")
    try:
        shutil.copyfile(path, tmp)
        os.chmod(tmp, (stat.S_IMODE(st.st_mode) & 0o777) | stat.S_IWUSR)
        os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
        if os.path.getsize(tmp) != st.st_size:
            raise OSError(f"copy of {path} is short")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _no_casacore_writer(table: str) -> Iterator[None]:
    """Hold a shared fcntl lock on byte 0 of ``table.lock`` (casacore writers need it exclusive)."""
    try:
        fd = os.open(os.path.join(table, "table.lock"), os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB, 1, 0)
        except OSError as error:
            raise RuntimeError(f"{table} is write-locked by another process") from error
        yield
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- columns


@dataclass
class RemoveModelColumn:
    """A MODEL_DATA CASA cannot write (fixed shape that misfits a spw, or not complex): remove it.

    CASA's ft(usescratch=True) and clearcal(addmodel=True) then create MODEL_DATA
    the way CASA wants it (a variable-shape TiledShapeStMan column). The model
    it held is lost (the backup keeps it): re-predict it.
    """

    code: str
    ms: str
    column: str = "MODEL_DATA"
    name: str = "remove-column"
    why: str = (
        "CASA cannot write its model into this MODEL_DATA (a fixed shape cannot hold the cells "
        "of spectral windows of another shape; a non-complex column cannot hold visibilities); "
        "CASA creates MODEL_DATA itself, variable-shape and complex, when it does not exist"
    )
    consequence: str = (
        "the model in MODEL_DATA is lost (kept in the backup): re-predict it with ft "
        "(usescratch=True) or WSClean -predict"
    )
    storage: dict[str, Any] = field(default_factory=dict)

    def _storage(self) -> dict[str, Any]:
        if not self.storage:
            self.storage = tasks.call(
                Ref("casaguard.remote.casacore.repair_columns", "column_storage"),
                self.ms,
                self.column,
                casa=False,
                flavor="casacore",
                timeout=CHILD_TIMEOUT_S,
            )
        return self.storage

    def plan(self) -> list[Change]:
        info = self._storage()
        if not info.get("exists"):
            return []
        shared = [c for c in info.get("columns", []) if c != self.column]
        return [
            Change(
                "remove-column",
                self.ms,
                {
                    "column": self.column,
                    "shape": info.get("shape"),
                    "value_type": info.get("value_type"),
                    "dm_type": info.get("type"),
                    "dm_name": info.get("name"),
                    "shared_with": shared,
                    "files": info.get("files", []),
                },
                {"column": None, "created_by": "CASA's next ft(usescratch=True) or clearcal"},
            )
        ]

    def backup_files(self) -> list[str]:
        info = self._storage()
        return ["table.dat", "table.info", *info.get("files", [])] if info.get("exists") else []

    def apply(self, backup: Path) -> None:
        del backup
        if self.column in PROTECTED_COLUMNS:
            raise RuntimeError(f"refusing to remove {self.column}")
        tasks.call(
            Ref("casaguard.remote.casacore.repair_columns", "remove_column"),
            self.ms,
            self.column,
            casa=False,
            flavor="casacore",
            timeout=CHILD_TIMEOUT_S,
        )

    def rollback(self, backup: Path) -> None:
        del backup


@dataclass
class RemoveCorrectedColumn(RemoveModelColumn):
    """A fixed-shape CORRECTED_DATA that misfits a spw: remove it, as a misfit MODEL_DATA is.

    clearcal creates CORRECTED_DATA the way CASA wants it (variable-shape,
    filled from DATA) -- which is also what clearcal would have put into it.
    """

    column: str = "CORRECTED_DATA"
    why: str = (
        "CASA cannot write calibrated cells of spectral windows of another shape into a "
        "fixed-shape CORRECTED_DATA; clearcal creates CORRECTED_DATA itself, variable-shape, "
        "when it does not exist"
    )
    consequence: str = (
        "the calibrated data in CORRECTED_DATA is lost (kept in the backup): clearcal "
        "recreates it as a copy of DATA; re-run applycal"
    )


# ----------------------------------------------------------------------------- journals


@dataclass
class FinishJournal:
    """An orphan casaguard journal: a guarded write died with its caller, mid-write.

    Finishing the restore puts the MS back to before that write -- the state the
    journal was made to protect. The files the restore overwrites (the
    half-written state) go to the backup first, and a copy of the journal is kept
    until the repair is verified, so a failed verification can undo it.
    """

    ms: str
    journal: Path
    code: str = "JOURNAL_PENDING"
    name: str = "finish-journal"
    why: str = (
        "a guarded write was killed with its caller mid-write: the MS may hold half of it; "
        "the journal holds the state from before it"
    )
    consequence: str = "the dead call's partial result is undone (it never finished)"
    _copy: Path | None = None

    def plan(self) -> list[Change]:
        manifest = repair_journal.journal_manifest(self.journal)
        return [
            Change(
                "finish-journal",
                str(self.journal),
                {
                    "task": manifest.get("task", "?"),
                    "pid": manifest.get("parent_pid", manifest.get("pid", "?")),
                    "files": len(manifest.get("saved", [])),
                },
                {"journal": None},
            )
        ]

    def backup_files(self) -> list[str]:
        return repair_journal.journal_touches(self.journal)

    def apply(self, backup: Path) -> None:
        self._copy = repair_journal.keep_orphan_copy(backup, self.journal)
        repair_journal.finish_journal(self.journal)

    def rollback(self, backup: Path) -> None:
        del backup
        if self._copy is not None:
            repair_journal.put_orphan_back(self._copy, self.journal)


@dataclass
class DiscardJournal:
    """An orphan journal the caller asked to drop (``--discard-journal``): the MS stays as it is."""

    ms: str
    journal: Path
    proven: bool | None
    code: str = "JOURNAL_PENDING"
    name: str = "discard-journal"
    why: str = (
        "--discard-journal: the MS is to be kept as it is now, not rolled back to the journal"
    )
    consequence: str = (
        "the journal moves into <backup>/discarded/: moved back beside the MS it is an orphan "
        "again, and `casaguard repair --apply` rolls the MS back to it"
    )
    _moved: Path | None = None

    def plan(self) -> list[Change]:
        return [Change("discard-journal", str(self.journal), {"proven_newer": self.proven}, {})]

    def backup_files(self) -> list[str]:
        return []

    def apply(self, backup: Path) -> None:
        self._moved = repair_journal.discard_journal(backup, self.journal)

    def rollback(self, backup: Path) -> None:
        del backup
        if self._moved is not None and not self.journal.exists():
            os.replace(self._moved, self.journal)


# ----------------------------------------------------------------------------- planner


def unwritable_files(finding: Finding) -> list[str]:
    """The files a TABLE_DAT/TABLE_FILE/SUBTABLE_NOT_WRITABLE finding names."""
    files = finding.data.get("files")
    if files:
        return [str(f) for f in files]
    return [finding.path] if finding.path else []


def replaceable(paths: list[str], creds: access.Credentials) -> tuple[list[str], list[str]]:
    """Split ``paths`` into (fixable, not) -- fixable: a readable file in a writable directory."""
    ok: list[str] = []
    not_ok: list[str] = []
    for path in paths:
        directory = os.path.dirname(path)
        is_file = os.path.isfile(path) and not os.path.islink(path)
        if is_file and _readable(path) and access.judge_write(directory, creds).writable:
            ok.append(path)
        else:
            not_ok.append(path)
    return ok, not_ok
