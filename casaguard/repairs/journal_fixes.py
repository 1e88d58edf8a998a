"""The journal fixes: an orphan casaguard journal is finished (the MS rolled back) or discarded.

A guarded write that died with its caller leaves a journal beside the MS.
``FinishJournal`` completes its restore; ``DiscardJournal`` (``--discard-journal``)
keeps the MS as it is and moves the journal into the backup. Both reach the
journal only through ``casaguard.repairs.journal``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from casaguard.repairs import journal as repair_journal
from casaguard.repairs.fix import Change


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
