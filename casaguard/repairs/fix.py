"""What a fix is: the ``Fix`` protocol the repair drives, and the ``Change`` records it plans.

A fix is built from one probe finding (or one orphan journal) and the MS as it
is now. ``plan()`` returns ``Change`` records -- file, column, mode, owner,
before and after -- without touching anything; ``backup_files()`` names every
file (relative to the MS) that ``apply()`` rewrites or deletes, so that the
repair can copy them first (``casaguard.repairs.journal.take_backup``).

The fixes themselves live by what they change: ``file_fixes`` (own-copy),
``column_fixes`` (remove-column), ``journal_fixes`` (finish- and
discard-journal). This module is apart so that the repair's planner and
every fix share one contract without importing each other.

The rules every fix keeps:

* the smallest change that removes the cause named by the finding;
* never ``chmod``/``chown`` a file another user owns: a file this process may
  not write but whose directory it may is replaced by a copy it owns
  (write to a temp name in the same directory, then ``rename``);
* never touch DATA, FLAG, UVW, WEIGHT, or a subtable's contents;
* nothing is deleted that the backup cannot put back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


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
