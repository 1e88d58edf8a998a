"""Repair: make an MS the probe calls unsafe usable again -- reversibly, and verified by CASA.

::

    repair(ms, apply=False)
     |- probe(ms)                                   findings with codes
     |- orphan journals of ms (repair_journal)      a guarded write died with its caller
     |- plan: finding code -> fix (repair_fixes)    or "no safe fix": why, what a human must do
     |  dry run stops here: the report lists every exact change and why
     '- apply (one guarded writer: the journal's writer lock, <ms>/.casaguard-writer.lock)
         |- backup: copy every file the fixes rewrite or delete (journal format, beside the MS)
         |- fixes, journals first; then re-probe and plan the rest on the new state
         |- verify: probe again -- the fixed codes must be gone, no new fatal one --
         |          and (verify=True) a guarded canary ft + clearcal on a slice copy
         '- verification failed: every fix rolled back from the backup

Which codes have a fix, and why the others have none, is ``FIXES`` / ``NO_FIX``
below and docs/repair.md. The calling process never imports casacore: column
work runs in a python-casacore child (``casaguard.remote.casacore.repair_columns``).
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from casaguard import events
from casaguard.errors import InvalidInput
from casaguard.ms import access
from casaguard.preflight.findings import CODES, SCHEMA_VERSION, Finding, ProbeReport, Verdict
from casaguard.preflight.probe import probe
from casaguard.repairs import journal as repair_journal
from casaguard.repairs.column_fixes import RemoveCorrectedColumn, RemoveModelColumn
from casaguard.repairs.file_fixes import ReplaceForeignFiles, replaceable, unwritable_files
from casaguard.repairs.fix import Fix
from casaguard.repairs.journal_fixes import DiscardJournal, FinishJournal

log = events.get_logger()

EXIT_OK = 0
EXIT_UNSAFE = 1
EXIT_BAD_INPUT = 2

#: Finding codes with a safe fix, and the fix's name.
FIXES: dict[str, str] = {
    "TABLE_DAT_NOT_WRITABLE": "own-copy",
    "TABLE_FILE_NOT_WRITABLE": "own-copy",
    "SUBTABLE_NOT_WRITABLE": "own-copy",
    "MODEL_DATA_FIXED_SHAPE_MISMATCH": "remove-column",
    "MODEL_DATA_BAD_TYPE": "remove-column",
    "CORRECTED_DATA_FIXED_SHAPE_MISMATCH": "remove-column",
    "JOURNAL_PENDING": "finish-journal",
}

_REBUILD = "restore the MS from its source (archive, importfits/importuvfits) and re-run the steps"
#: Fatal codes without a safe fix: (why there is none, what a human must do).
NO_FIX: dict[str, tuple[str, str]] = {
    "MS_DIR_NOT_WRITABLE": (
        "the MS directory belongs to someone else or forbids writing: only its owner or root may "
        "change that, and a repair never chmods or chowns what is not its own",
        "ask the owner to chmod u+w / chown the directory, or run CASA as its owner",
    ),
    "READ_ONLY_FILESYSTEM": (
        "nothing on a read-only file system can be changed",
        "copy the MS to a writable disk",
    ),
    "DISK_SPACE_LOW": (
        "freeing space means deleting someone's files: not the repair's call",
        "free disk space or move the MS",
    ),
    "MS_LOCKED": (
        "a live process holds the MS; taking its lock away would corrupt what it writes",
        "wait for that process to finish or close the MS (the finding names its pid)",
    ),
    "PROBE_CRASHED": ("bytes of a storage file are damaged or missing", _REBUILD),
    "STORAGE_UNREADABLE": ("bytes of a storage file are damaged or missing", _REBUILD),
    "SUBTABLE_MISSING": ("a whole subtable is gone; its contents cannot be invented", _REBUILD),
    "MS_EMPTY": ("the MS has no visibilities", "re-run the split/selection that made it"),
    "SPW_NUM_CHAN_MISMATCH": (
        "the metadata contradicts itself; which side is right is a human's judgement",
        "make NUM_CHAN equal the length of CHAN_FREQ (or the reverse) from the observation log",
    ),
    "POL_NUM_CORR_MISMATCH": (
        "the metadata contradicts itself; which side is right is a human's judgement",
        "make NUM_CORR equal the length of CORR_TYPE",
    ),
    "DDID_BAD_SPW": ("an index points at nothing; the right target is not knowable", _REBUILD),
    "DDID_BAD_POL": ("an index points at nothing; the right target is not knowable", _REBUILD),
    "MAIN_ID_OUT_OF_RANGE": (
        "an index points at nothing; the right target is not knowable",
        _REBUILD,
    ),
    "DATA_SHAPE_MISMATCH": (
        "DATA itself disagrees with its metadata; a repair never touches DATA",
        _REBUILD,
    ),
    "MODEL_DATA_SHAPE_MISMATCH": (
        "not yet verified on a real variant: removing MODEL_DATA would very likely fix it, but "
        "casaguard does not claim a fix it has not seen CASA accept",
        "remove MODEL_DATA (python-casacore: t.removecols('MODEL_DATA')), then re-run ft",
    ),
    "MAIN_TABLE_UNREADABLE": (
        "casacore cannot open the main table: bytes of its files are damaged or missing",
        _REBUILD,
    ),
    "SUBTABLE_UNREADABLE": ("bytes of a subtable's files are damaged or missing", _REBUILD),
    "COLUMN_UNREADABLE": ("bytes of a column's storage file are damaged or missing", _REBUILD),
    "SUBTABLE_KEYWORD_MISSING": (
        "the main table no longer points at a required subtable; re-adding the keyword is a "
        "change to table.dat casaguard has not seen CASA accept, and the subtable may be gone",
        "if the subtable directory is intact, add the keyword back (python-casacore: "
        "t.putkeyword('NAME', 'Table: <ms>/NAME')); otherwise " + _REBUILD,
    ),
    "SUBTABLE_EMPTY": (
        "a subtable ft/clearcal need rows of has none; its rows cannot be invented",
        _REBUILD,
    ),
    "REQUIRED_COLUMN_MISSING": (
        "a column the MS definition requires is gone; its values cannot be invented",
        _REBUILD,
    ),
    "LOCK_SYNC_MISMATCH": (
        "table.lock and table.dat disagree, and the files cannot tell which is right: data "
        "files put back without their lock (the lock is stale) or a table.dat rolled back "
        "under a newer writer (the data is stale)",
        "if the table's files were put back from a copy and no process has the MS open, "
        "remove that table's table.lock (casacore writes a fresh one); otherwise " + _REBUILD,
    ),
    "CANARY_FAILED": ("CASA failed on a copy for a reason no static finding names", _REBUILD),
    "CANARY_SLICE_FAILED": ("CASA cannot even copy the MS", _REBUILD),
}
SUPERSEDED_FINDING = "pending journal {journal}, and the MS was written after the call died"
SUPERSEDED = (
    "the MS was written after the call that left the journal died: finishing the restore "
    "would undo that newer work, and which state to keep is the user's call",
    "keep the MS as it is: `casaguard repair --apply --discard-journal`; or roll back anyway: "
    "`casaguard restore-journal MS --force`",
)
_MODEL_CODES = ("MODEL_DATA_FIXED_SHAPE_MISMATCH", "MODEL_DATA_BAD_TYPE")
_ACCESS_CODES = ("TABLE_DAT_NOT_WRITABLE", "TABLE_FILE_NOT_WRITABLE", "SUBTABLE_NOT_WRITABLE")
_DEFAULT_NO_FIX = (
    "casaguard knows no safe, minimal change for this cause",
    "see the finding's fix",
)


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


# ----------------------------------------------------------------------------- planning


def plan_fixes(
    ms: str, report: ProbeReport, creds: access.Credentials
) -> tuple[list[Fix], list[Unfixed]]:
    """Map the probe's fatal findings to fixes (one per cause) and to causes without one."""
    fixes: list[Fix] = []
    unfixed: list[Unfixed] = []
    seen: set[str] = set()
    for finding in report.findings:
        if finding.severity != "fatal" or finding.code == "JOURNAL_PENDING":
            continue  # orphan journals are planned from the journals themselves
        if finding.code in (
            "TABLE_DAT_NOT_WRITABLE",
            "TABLE_FILE_NOT_WRITABLE",
            "SUBTABLE_NOT_WRITABLE",
        ):
            ok, not_ok = replaceable(unwritable_files(finding), creds)
            if ok:
                fixes.append(ReplaceForeignFiles(finding.code, ms, ok, creds))
            if not_ok:
                unfixed.append(
                    Unfixed(
                        finding.code,
                        finding.message,
                        f"{', '.join(not_ok[:4])}: a directory, unreadable, or in a directory "
                        "this user may not write -- only its owner or root can change it",
                        finding.fix,
                    )
                )
        elif finding.code == "CORRECTED_DATA_FIXED_SHAPE_MISMATCH":
            fixes.append(RemoveCorrectedColumn(finding.code, ms))
        elif finding.code in _MODEL_CODES:
            if not seen & set(_MODEL_CODES):  # one removal, whatever else is wrong with it
                fixes.append(RemoveModelColumn(finding.code, ms))
        else:
            why, human = NO_FIX.get(finding.code, _DEFAULT_NO_FIX)
            unfixed.append(Unfixed(finding.code, finding.message, why, human or finding.fix))
        seen.add(finding.code)
    return fixes, unfixed


def _journal_fixes(ms: str, discard: bool) -> tuple[list[Fix], list[Unfixed]]:
    """A fix per pending journal; none for one the MS was written after (finishing it undoes
    that newer work), unless the caller asked to discard journals."""
    fixes: list[Fix] = []
    unfixed: list[Unfixed] = []
    for orphan in repair_journal.pending_journals(ms):
        superseded = repair_journal.journal_superseded(orphan)
        if discard:
            fixes.append(DiscardJournal(ms, orphan, superseded))
        elif superseded:
            finding = SUPERSEDED_FINDING.format(journal=orphan)
            unfixed.append(Unfixed("JOURNAL_PENDING", finding, *SUPERSEDED))
        else:
            fixes.append(FinishJournal(ms, orphan))
    return fixes, unfixed


def _message(fix: Fix, report: ProbeReport) -> str:
    if isinstance(fix, FinishJournal | DiscardJournal):
        # The probe's JOURNAL_PENDING finding for this very journal, when it saw it.
        for finding in report.findings:
            if finding.code == fix.code and finding.data.get("journal") == str(fix.journal):
                return finding.message
        return "a pending casaguard journal: a guarded write died mid-write"
    return next((f.message for f in report.findings if f.code == fix.code), fix.code)


def _planned(fix: Fix, report: ProbeReport) -> PlannedFix:
    changes = [c.to_dict() for c in fix.plan()]  # first: a fix's why may depend on its plan
    return PlannedFix(fix.code, fix.name, _message(fix, report), fix.why, fix.consequence, changes)


# ----------------------------------------------------------------------------- repair


def repair(
    ms: str | os.PathLike[str],
    *,
    apply: bool = False,
    verify: bool = True,
    discard_journal: bool = False,
    timeout: float | None = None,
) -> RepairReport:
    """Plan (and with ``apply=True`` make) the safe fixes for what the probe finds.

    Args:
        ms: the MeasurementSet.
        apply: make the changes (default: a dry run that changes nothing).
        verify: after applying, run a guarded canary ft + clearcal on a slice copy
            (the re-probe always runs); a failed verification rolls every fix back.
        discard_journal: keep the MS as it is and move orphan journals into the
            backup, instead of finishing their restore.
        timeout: seconds per probe / canary child.

    Returns:
        A RepairReport; bad input is reported (``exit_code`` 2), never raised.

    Raises:
        MsLocked: (apply only) another guarded write to the MS is running.
    """
    started = time.monotonic()
    path = os.path.abspath(os.fspath(ms))
    report = RepairReport(ms=path, apply=apply)
    report.before = before = probe(path, timeout=timeout)
    if before.bad_input:
        report.unfixed = [
            Unfixed(f.code, f.message, "not a usable MS: there is nothing to repair", f.fix)
            for f in before.findings
            if f.group == "input"
        ]
        return _finish(report, started)
    creds = access.current_credentials()
    journal_fixes, stale = _journal_fixes(path, discard_journal)
    other_fixes, report.unfixed = plan_fixes(path, before, creds)
    report.unfixed[:0] = stale
    if journal_fixes and other_fixes:
        report.notes.append(
            "fixes after the journal's were planned on the MS as it is now; --apply re-plans "
            "them after the journal is dealt with"
        )
    blocked = any(f.code in ("MS_LOCKED", "MS_IN_USE") for f in before.findings)
    if not apply:
        report.fixes = [_planned(f, before) for f in (*journal_fixes, *other_fixes)]
        return _finish(report, started)
    if blocked:
        report.fixes = [_planned(f, before) for f in (*journal_fixes, *other_fixes)]
        report.notes.append("nothing was changed: another process has the MS open or locked")
        return _finish(report, started)
    if not journal_fixes and not other_fixes:
        return _finish(report, started)
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(repair_journal.writer_lock(path))
        except InvalidInput as error:  # no writer-lock file can be made: nothing can be written
            report.fixes = [_planned(f, before) for f in (*journal_fixes, *other_fixes)]
            report.notes.append(f"nothing was changed: {error}")
            return _finish(report, started)
        _apply(report, path, journal_fixes, other_fixes, creds, verify=verify, timeout=timeout)
    return _finish(report, started)


def _apply(
    report: RepairReport,
    path: str,
    journal_fixes: list[Fix],
    other_fixes: list[Fix],
    creds: access.Credentials,
    *,
    verify: bool,
    timeout: float | None,
) -> None:
    assert report.before is not None
    done: list[tuple[Fix, PlannedFix, Path]] = []
    current = report.before
    rounds: list[list[Fix]] = [journal_fixes, other_fixes] if journal_fixes else [other_fixes]
    for index, fixes in enumerate(rounds):
        if index and journal_fixes:
            current = probe(path, timeout=timeout)
            fixes, report.unfixed = plan_fixes(path, current, creds)
        if not fixes:
            continue
        planned = [_planned(f, current) for f in fixes]
        report.fixes += planned
        files = sorted({rel for f in fixes for rel in f.backup_files()})
        try:
            backup = repair_journal.take_backup(path, files, fixes=[f.name for f in fixes])
        except InvalidInput as error:
            # No backup, no change: a repair that could not be undone is not made.
            for entry in planned:
                entry.status, entry.error = "failed", f"no backup: {error}"
            report.notes.append("nothing was changed in this round: the backup failed")
            if done:
                _rollback(report, done)
            report.after = probe(path, timeout=timeout)
            return
        report.backups.append(str(backup))
        for fix, entry in zip(fixes, planned, strict=True):
            try:
                fix.apply(backup)
            except Exception as error:  # noqa: BLE001 -- any failure of a fix: undo all, report it
                entry.status, entry.error = "failed", f"{type(error).__name__}: {error}"
                done.append((fix, entry, backup))
                _rollback(report, done)
                report.after = probe(path, timeout=timeout)
                return
            entry.status = "applied"
            done.append((fix, entry, backup))
    if not done:
        return
    report.after = after = probe(path, timeout=timeout)
    problem = _verification_problem(report, after)
    if problem is None and verify and after.verdict == "safe":
        from casaguard.preflight import canary

        report.canary = canary.run_canary(path, timeout=timeout)
        if any(f.severity == "fatal" for f in report.canary):
            problem = "the canary ft + clearcal on a slice copy failed"
    elif problem is None and verify:
        report.notes.append("canary skipped: fatal findings without a fix remain")
    if problem is not None:
        report.verified = False
        report.notes.append(f"verification failed ({problem}): every fix was rolled back")
        _rollback(report, done)
        report.after = probe(path, timeout=timeout)
        return
    report.verified = True
    for kept in report.backups:
        repair_journal.drop_orphan_copies(Path(kept))
        repair_journal.seal_backup(Path(kept))


def _verification_problem(report: RepairReport, after: ProbeReport) -> str | None:
    """Why the re-probe says the repair did not work, or None."""
    assert report.before is not None
    fixed = {f.code for f in report.fixes if f.status == "applied"}
    if after.bad_input or after.verdict == "unknown":
        return "the MS no longer probes cleanly: " + ", ".join(
            f.code for f in after.findings if f.group in ("input", "probe")
        )
    still = sorted(fixed & set(after.codes()))
    if still:
        return f"still found: {', '.join(still)}"
    new = sorted({f.code for f in after.fatal()} - {f.code for f in report.before.fatal()})
    if new:
        return f"new fatal findings: {', '.join(new)}"
    if "JOURNAL_PENDING" in fixed and repair_journal.pending_journals(report.ms):
        return "an orphan journal is still pending"
    return None


def _rollback(report: RepairReport, done: list[tuple[Fix, PlannedFix, Path]]) -> None:
    """Undo applied fixes, newest backup first: backed-up files back, then each fix's own undo."""
    report.rolled_back = True
    backups = list(dict.fromkeys(backup for _, _, backup in done))
    for backup in reversed(backups):
        repair_journal.restore_backup(backup)
        for fix, entry, where in reversed(done):
            if where == backup:
                fix.rollback(backup)
                if entry.status == "applied":
                    entry.status = "rolled-back"
    log.warning("repair_rolled_back", vis=report.ms, backups=backups)


def _finish(report: RepairReport, started: float) -> RepairReport:
    report.elapsed_s = time.monotonic() - started
    log.info(
        "repair_finished",
        vis=report.ms,
        apply=report.apply,
        fixes=[f"{f.code}:{f.status}" for f in report.fixes],
        unfixed=[u.code for u in report.unfixed],
        verdict_before=report.verdict_before,
        verdict_after=report.verdict_after,
        elapsed_s=round(report.elapsed_s, 4),
    )
    return report


def known_codes() -> dict[str, str]:
    """Every fatal finding code with ``fix`` or ``no fix`` (for docs and tests)."""
    return {
        code: ("fix: " + FIXES[code]) if code in FIXES else "no fix"
        for code, info in CODES.items()
        if info.severity == "fatal"
    }
