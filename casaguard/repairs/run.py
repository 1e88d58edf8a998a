"""Repair: make an MS the probe calls unsafe usable again -- reversibly, and verified by CASA.

::

    repair(ms, apply=False)
     |- probe(ms)                                   findings with codes
     |- orphan journals of ms (repair_journal)      a guarded write died with its caller
     |- plan: finding code -> fix (repairs.plan)    or "no safe fix": why, what a human must do
     |  dry run stops here: the report lists every exact change and why
     '- apply (one guarded writer: the journal's writer lock, <ms>/.casaguard-writer.lock)
         |- backup: copy every file the fixes rewrite or delete (journal format, beside the MS)
         |- fixes, journals first; then re-probe and plan the rest on the new state
         |- verify: probe again -- the fixed codes must be gone, no new fatal one --
         |          and (verify=True) a guarded canary ft + clearcal on a slice copy
         '- verification failed: every fix rolled back from the backup

Which codes have a fix, and why the others have none, is ``FIXES`` / ``NO_FIX``
in ``casaguard.repairs.plan`` and docs/repair.md. The calling process never
imports casacore: column work runs in a python-casacore child
(``casaguard.remote.casacore.repair_columns``).
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from casaguard import events
from casaguard.errors import InvalidInput
from casaguard.ms import access
from casaguard.preflight.findings import ProbeReport
from casaguard.preflight.probe import probe
from casaguard.repairs import journal as repair_journal
from casaguard.repairs.fix import Fix
from casaguard.repairs.plan import plan_fixes, plan_journal_fixes, planned_fix
from casaguard.repairs.report import PlannedFix, RepairReport, Unfixed

log = events.get_logger()


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
    journal_fixes, stale = plan_journal_fixes(path, discard_journal)
    other_fixes, report.unfixed = plan_fixes(path, before, creds)
    report.unfixed[:0] = stale
    if journal_fixes and other_fixes:
        report.notes.append(
            "fixes after the journal's were planned on the MS as it is now; --apply re-plans "
            "them after the journal is dealt with"
        )
    blocked = any(f.code in ("MS_LOCKED", "MS_IN_USE") for f in before.findings)
    if not apply:
        report.fixes = [planned_fix(f, before) for f in (*journal_fixes, *other_fixes)]
        return _finish(report, started)
    if blocked:
        report.fixes = [planned_fix(f, before) for f in (*journal_fixes, *other_fixes)]
        report.notes.append("nothing was changed: another process has the MS open or locked")
        return _finish(report, started)
    if not journal_fixes and not other_fixes:
        return _finish(report, started)
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(repair_journal.writer_lock(path))
        except InvalidInput as error:  # no writer-lock file can be made: nothing can be written
            report.fixes = [planned_fix(f, before) for f in (*journal_fixes, *other_fixes)]
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
        planned = [planned_fix(f, current) for f in fixes]
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
