"""The repair's answer for one MS: ``RepairReport``, its fixes and unfixed causes, its exit code.

Plain data (``to_dict`` is ``casaguard repair --json``), apart from the
planning and the run that fill it in, so that the CLI and the batch engine
read a report without importing the machinery that makes one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from casaguard.exits import EXIT_BAD_INPUT, EXIT_OK, EXIT_UNSAFE
from casaguard.preflight.findings import SCHEMA_VERSION, Finding, ProbeReport, Verdict


@dataclass
class PlannedFix:
    """One fix for one cause, as planned and (with apply) as it went.

    Attributes:
        code: the finding code it removes (``JOURNAL_PENDING`` for an orphan journal).
        fix: the fix's name (``own-copy``, ``remove-column``, ``finish-journal``...).
        finding: the finding's message.
        why: why this change removes the cause.
        consequence: what the user loses or must redo.
        changes: the exact changes.
        status: ``planned``, ``applied``, ``rolled-back`` or ``failed``.
        error: why it failed (empty otherwise).
    """

    code: str
    fix: str
    finding: str
    why: str
    consequence: str
    changes: list[dict[str, Any]]
    status: str = "planned"
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Unfixed:
    """A fatal finding the repair leaves alone, and why."""

    code: str
    finding: str
    why: str
    human: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class RepairReport:
    """The repair's answer for one MS (``to_dict`` is the ``--json`` form).

    Attributes:
        ms: the MS (absolute).
        apply: whether changes were to be made (False: a dry run).
        fixes: the fixes, planned or applied.
        unfixed: fatal findings without a safe fix.
        before / after: the probe reports before and after (after: None in a dry run).
        backups: backup directories made (undo: ``casaguard restore-journal DIR``).
        canary: the verification canary's findings (empty if it did not run).
        verified: True/False after verification, None when it did not run.
        rolled_back: the fixes were undone because verification failed.
        notes: anything else the user must know.
    """

    ms: str
    apply: bool
    fixes: list[PlannedFix] = field(default_factory=list)
    unfixed: list[Unfixed] = field(default_factory=list)
    before: ProbeReport | None = None
    after: ProbeReport | None = None
    backups: list[str] = field(default_factory=list)
    canary: list[Finding] = field(default_factory=list)
    verified: bool | None = None
    rolled_back: bool = False
    notes: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def verdict_before(self) -> Verdict:
        if self.before is None:
            return "unknown"
        return "unsafe" if self.before.verdict == "safe" and self._pending else self.before.verdict

    @property
    def _pending(self) -> bool:
        return any(f.code == "JOURNAL_PENDING" for f in self.fixes)

    @property
    def verdict_after(self) -> Verdict | None:
        """The verdict after applying (None in a dry run or when nothing was applied)."""
        if self.after is None:
            return None
        if self.after.verdict == "safe" and any(
            f.code == "JOURNAL_PENDING" and f.status != "applied" for f in self.fixes
        ):
            return "unsafe"
        return self.after.verdict

    @property
    def bad_input(self) -> bool:
        return self.before is not None and self.before.bad_input

    @property
    def exit_code(self) -> int:
        """0 nothing to do or repaired; 1 unsafe findings remain; 2 bad input or probe failure."""
        final = self.verdict_after if self.verdict_after is not None else self.verdict_before
        if self.bad_input or final == "unknown":
            return EXIT_BAD_INPUT
        return EXIT_UNSAFE if final == "unsafe" else EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "ms": self.ms,
            "apply": self.apply,
            "exit_code": self.exit_code,
            "verdict_before": self.verdict_before,
            "verdict_after": self.verdict_after,
            "codes_before": self.before.codes() if self.before else [],
            "codes_after": self.after.codes() if self.after else None,
            "fixes": [f.to_dict() for f in self.fixes],
            "unfixed": [u.to_dict() for u in self.unfixed],
            "backups": self.backups,
            "verified": self.verified,
            "canary": [f.to_dict() for f in self.canary],
            "rolled_back": self.rolled_back,
            "notes": self.notes,
            "elapsed_s": round(self.elapsed_s, 4),
        }
