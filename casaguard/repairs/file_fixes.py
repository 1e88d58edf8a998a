"""The own-copy fix: files of a table this user may not write, in a directory it may write.

CASA opens a table's files read/write; a file another user owns (WSClean or a
container run as another uid rewrote it) is replaced by a byte-identical copy
this user owns, and a file of this user's own whose mode forbids writing gets
``u+w``. Never a ``chmod``/``chown`` of someone else's file. Also here: which
files a not-writable finding names, and which of them this fix can replace,
so that the planner asks the module that knows the rule.
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

from casaguard.ms import access
from casaguard.preflight.findings import Finding
from casaguard.repairs.fix import Change

TMP_MARK = ".casaguard-repair-"


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
