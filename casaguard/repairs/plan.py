"""The repair's plan: which finding code has a safe fix, why the others have none, which fixes.

``FIXES`` and ``NO_FIX`` are the one table of what the repair may change
(docs/repair.md explains each row; tests/test_repair.py checks that every
fatal code is in one of them). ``plan_fixes`` turns a probe report into fix
objects, ``plan_journal_fixes`` does so for orphan journals, and
``planned_fix`` makes the report's entry for one fix. Apart from the run
(``casaguard.repairs.run``) because planning changes nothing: a dry run is
only this.
"""

from __future__ import annotations

from casaguard.ms import access
from casaguard.preflight.findings import ProbeReport
from casaguard.repairs import journal as repair_journal
from casaguard.repairs.column_fixes import RemoveCorrectedColumn, RemoveModelColumn
from casaguard.repairs.file_fixes import ReplaceForeignFiles, replaceable, unwritable_files
from casaguard.repairs.fix import Fix
from casaguard.repairs.journal_fixes import DiscardJournal, FinishJournal
from casaguard.repairs.report import PlannedFix, Unfixed

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
_DEFAULT_NO_FIX = (
    "casaguard knows no safe, minimal change for this cause",
    "see the finding's fix",
)


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


def plan_journal_fixes(ms: str, discard: bool) -> tuple[list[Fix], list[Unfixed]]:
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


def planned_fix(fix: Fix, report: ProbeReport) -> PlannedFix:
    changes = [c.to_dict() for c in fix.plan()]  # first: a fix's why may depend on its plan
    return PlannedFix(fix.code, fix.name, _message(fix, report), fix.why, fix.consequence, changes)
