"""The probe's data model: findings with stable codes, and the per-MS report.

A leaf above ``errors`` (``MsUnsafe`` is a ``CasaguardError``): no I/O, nothing
that imports CASA. Every code a
probe can emit is listed in ``CODES`` with its severity and the class of cause
it belongs to, so that the table in docs/probe.md, the JSON output and the tests all
read one source of truth. Severity belongs to the code, never to the call
site: ``MS_DIR_NOT_WRITABLE`` is always fatal.

Verdict rules (``ProbeReport.verdict``):

* any ``fatal`` finding -> ``unsafe`` (CASA's ``ft`` or ``clearcal`` will crash,
  raise, or silently not write);
* else any finding of class ``probe`` that is not ``info`` (the probe itself
  could not finish: timeout, probe bug) -> ``unknown``;
* else ``safe``. ``warn`` findings never make an MS unsafe on their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from casaguard.errors import CasaguardError

Severity = Literal["fatal", "warn", "info"]
Verdict = Literal["safe", "unsafe", "unknown"]

#: Bump when the JSON layout changes incompatibly.
SCHEMA_VERSION = 1
#: MsUnsafe's message (a batch with probe_first=True skipped the MS).
UNSAFE_MESSAGE = "skipped {vis}: the probe calls it unsafe ({codes}): {first}"


@dataclass(frozen=True)
class CodeInfo:
    """What a finding code means.

    Attributes:
        severity: ``fatal``, ``warn`` or ``info``.
        group: ``input`` (not a usable MS: CLI exit 2), ``structure``,
            ``storage``, ``model``, ``access``, ``lock``, ``provenance``,
            ``environment``, ``canary`` or ``probe`` (the probe itself failed).
        summary: one line for the table in docs/probe.md.
    """

    severity: Severity
    group: str
    summary: str


CODES: dict[str, CodeInfo] = {
    # input: the path is not a usable MS (CLI exit 2)
    "PATH_MISSING": CodeInfo("fatal", "input", "the path does not exist"),
    "NOT_A_DIRECTORY": CodeInfo("fatal", "input", "the path is a file, not an MS directory"),
    "NOT_A_TABLE": CodeInfo(
        "fatal", "input", "the directory has no table.dat: not a casacore table"
    ),
    "TABLE_UNREADABLE": CodeInfo("fatal", "input", "the table cannot be opened for reading"),
    "NOT_AN_MS": CodeInfo(
        "fatal", "input", "a table, but not a MeasurementSet (no DATA column or subtables)"
    ),
    # A damaged MS is an MS: its findings are unsafe (exit 1), never bad input (exit 2).
    "SUBTABLE_MISSING": CodeInfo(
        "fatal", "structure", "a required subtable's keyword names a table that does not exist"
    ),
    "MS_EMPTY": CodeInfo("fatal", "structure", "the main table has no rows"),
    # structure: the MS opens, but its metadata contradicts itself
    "SPW_NUM_CHAN_MISMATCH": CodeInfo(
        "fatal",
        "structure",
        "SPECTRAL_WINDOW NUM_CHAN disagrees with CHAN_FREQ/CHAN_WIDTH/... lengths",
    ),
    "SPW_BAD_FREQ": CodeInfo(
        "warn", "structure", "a CHAN_FREQ value is not finite or not positive"
    ),
    "DDID_BAD_SPW": CodeInfo(
        "fatal", "structure", "DATA_DESCRIPTION points at a missing SPECTRAL_WINDOW row"
    ),
    "DDID_BAD_POL": CodeInfo(
        "fatal", "structure", "DATA_DESCRIPTION points at a missing POLARIZATION row"
    ),
    "POL_NUM_CORR_MISMATCH": CodeInfo(
        "fatal", "structure", "POLARIZATION NUM_CORR disagrees with CORR_TYPE"
    ),
    "MAIN_ID_OUT_OF_RANGE": CodeInfo(
        "fatal",
        "structure",
        "a main-table DATA_DESC_ID or FIELD_ID points past its subtable",
    ),
    "DATA_SHAPE_MISMATCH": CodeInfo(
        "fatal", "structure", "DATA cells disagree with NUM_CORR x NUM_CHAN of their DATA_DESC_ID"
    ),
    # storage: the bytes on disk
    "STORAGE_UNREADABLE": CodeInfo(
        "fatal", "storage", "a data manager's files cannot be read (truncated or damaged)"
    ),
    "PROBE_CRASHED": CodeInfo(
        "fatal",
        "storage",
        "reading the MS killed the probe child (segfault/abort): casacore cannot read it",
    ),
    # model: MODEL_DATA as ft and WSClean will see it
    "MODEL_DATA_ABSENT": CodeInfo(
        "info", "model", "no MODEL_DATA column: ft(usescratch=True) creates one"
    ),
    "MODEL_DATA_FIXED_SHAPE_MISMATCH": CodeInfo(
        "fatal", "model", "MODEL_DATA has one fixed cell shape that some DATA_DESC_ID does not have"
    ),
    "MODEL_DATA_SHAPE_MISMATCH": CodeInfo(
        "fatal", "model", "a MODEL_DATA cell's shape differs from DATA's"
    ),
    "MODEL_DATA_BAD_TYPE": CodeInfo("fatal", "model", "MODEL_DATA is not a complex array column"),
    "MODEL_DATA_NONFINITE": CodeInfo("warn", "model", "NaN or Inf in a sample of MODEL_DATA"),
    "WSCLEAN_MIXED_SPW_NO_MODEL": CodeInfo(
        "warn",
        "model",
        "spectral windows differ in channel count and MODEL_DATA is absent: WSClean 3.1 crashes",
    ),
    # access: judged with the credentials a CASA child of this process has
    "MS_DIR_NOT_WRITABLE": CodeInfo(
        "fatal", "access", "the MS directory is not writable (CASA aborts)"
    ),
    "TABLE_DAT_NOT_WRITABLE": CodeInfo(
        "fatal",
        "access",
        "table.dat not writable: 'Please make sure MS is writable when using Imager::ft'",
    ),
    "TABLE_FILE_NOT_WRITABLE": CodeInfo(
        "fatal", "access", "a file of the main table is not writable"
    ),
    "SUBTABLE_NOT_WRITABLE": CodeInfo(
        "fatal",
        "access",
        "HISTORY or SOURCE (opened read/write by ft and clearcal) is not writable",
    ),
    "READ_ONLY_FILESYSTEM": CodeInfo("fatal", "access", "the MS lives on a read-only file system"),
    "FOREIGN_OWNER": CodeInfo(
        "info", "access", "files owned by another user (e.g. WSClean run as root in Docker)"
    ),
    "DISK_SPACE_LOW": CodeInfo(
        "fatal", "access", "less free disk space than a MODEL_DATA write needs"
    ),
    "LOCK_FILE_MISSING": CodeInfo(
        "info", "access", "a table has no table.lock; opening it (CASA or the probe) creates one"
    ),
    # locks
    "MS_LOCKED": CodeInfo(
        "fatal", "lock", "another live process holds a read/write lock: CASA waits forever"
    ),
    "MS_IN_USE": CodeInfo(
        "warn", "lock", "another live process has the MS open (no table lock held now)"
    ),
    "JOURNAL_PENDING": CodeInfo(
        "fatal",
        "lock",
        "a guarded write died mid-write: its journal waits for `casaguard restore-journal`",
    ),
    # provenance
    "MODEL_DATA_BY_WSCLEAN": CodeInfo(
        "info",
        "provenance",
        "MODEL_DATA's data manager looks like WSClean's (fixed-shape StandardStMan)",
    ),
    "MODEL_DATA_BY_CASA": CodeInfo(
        "info", "provenance", "MODEL_DATA's data manager looks like CASA's"
    ),
    "HISTORY_LAST": CodeInfo("info", "provenance", "the last application recorded in HISTORY"),
    # environment
    "CALLER_HAS_CASA": CodeInfo(
        "warn",
        "environment",
        "the calling process has casacore/casatools loaded (probe is unaffected)",
    ),
    "CASACORE_CLASH_RISK": CodeInfo(
        "warn",
        "environment",
        "python-casacore < 3.8.1 is installed next to casatools (heap clash in one process)",
    ),
    # canary
    "CANARY_OK": CodeInfo("info", "canary", "guarded ft and clearcal succeeded on a slice copy"),
    "CANARY_FAILED": CodeInfo("fatal", "canary", "guarded ft or clearcal failed on a slice copy"),
    "CANARY_SLICE_FAILED": CodeInfo("fatal", "canary", "copying a slice of the MS failed in CASA"),
    # issue 14: the MS read as CASA reads it (subtables through the main table's keywords)
    "MAIN_TABLE_UNREADABLE": CodeInfo(
        "fatal", "storage", "an MS (it has subtables) whose main table casacore cannot open"
    ),
    "SUBTABLE_KEYWORD_MISSING": CodeInfo(
        "fatal",
        "structure",
        "the main table has no keyword for a required subtable: CASA cannot reach it",
    ),
    "SUBTABLE_ELSEWHERE": CodeInfo(
        "warn", "structure", "a subtable keyword names a table not the MS's own (CASA follows it)"
    ),
    "SUBTABLE_UNREADABLE": CodeInfo(
        "fatal", "storage", "a subtable exists but casacore cannot open it"
    ),
    "SUBTABLE_EMPTY": CodeInfo(
        "fatal", "structure", "a subtable ft/clearcal need rows of has none"
    ),
    "COLUMN_UNREADABLE": CodeInfo(
        "fatal", "storage", "casacore raises reading a column of the MS or of a subtable"
    ),
    "ANTENNA_ID_OUT_OF_RANGE": CodeInfo(
        "warn",
        "structure",
        "ANTENNA1/ANTENNA2 points past the ANTENNA table (ft and clearcal still work)",
    ),
    "REQUIRED_COLUMN_MISSING": CodeInfo(
        "fatal", "structure", "a column the MS v2 definition requires is missing"
    ),
    "LOCK_SYNC_MISMATCH": CodeInfo(
        "fatal",
        "storage",
        "table.lock's sync data disagrees with table.dat (files restored without their lock)",
    ),
    "CORRECTED_DATA_FIXED_SHAPE_MISMATCH": CodeInfo(
        "fatal",
        "model",
        "CORRECTED_DATA has one fixed cell shape that some DATA_DESC_ID does not have",
    ),
    # the probe itself
    "PROBE_TIMEOUT": CodeInfo("warn", "probe", "the probe child ran past its timeout"),
    "PROBE_ERROR": CodeInfo("warn", "probe", "the probe failed for a reason of its own"),
}

_SEVERITY_ORDER: dict[str, int] = {"fatal": 0, "warn": 1, "info": 2}


@dataclass(frozen=True)
class Finding:
    """One fact the probe established about an MS.

    Attributes:
        code: stable code from ``CODES``.
        message: one line naming the cause, with the MS's own numbers.
        fix: what to try, one line ("" when there is nothing to do).
        path: the file or table the finding is about, if any.
        data: machine-readable details (JSON-ready).
    """

    code: str
    message: str
    fix: str = ""
    path: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.code not in CODES:
            raise ValueError(f"unknown finding code {self.code!r}")

    @property
    def severity(self) -> Severity:
        return CODES[self.code].severity

    @property
    def group(self) -> str:
        return CODES[self.code].group

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "severity": self.severity,
            "group": self.group,
            "message": self.message,
            "fix": self.fix,
            "path": self.path,
            "data": self.data,
        }


@dataclass
class ProbeReport:
    """The probe's answer for one MS.

    Attributes:
        ms: the MS path as given (absolute).
        findings: every finding, most severe first.
        canary: whether the canary ran.
        elapsed_s: wall time of the probe.
        facts: the raw facts the static child read (JSON-ready; for debugging).
        environment: versions and checks of the calling environment.
    """

    ms: str
    findings: list[Finding] = field(default_factory=list)
    canary: bool = False
    elapsed_s: float = 0.0
    facts: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)

    def sort(self) -> None:
        self.findings.sort(key=lambda f: (_SEVERITY_ORDER[f.severity], f.code))

    @property
    def verdict(self) -> Verdict:
        """``unsafe`` on a fatal finding, ``unknown`` if the probe did not finish, else ``safe``."""
        if any(f.severity == "fatal" for f in self.findings):
            return "unsafe"
        if any(f.group == "probe" for f in self.findings):
            return "unknown"
        return "safe"

    @property
    def bad_input(self) -> bool:
        """True when the path is not a usable MS at all (CLI exit 2)."""
        return any(f.group == "input" for f in self.findings)

    def codes(self) -> list[str]:
        return [f.code for f in self.findings]

    def fatal(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "fatal"]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form documented in docs/probe.md (``JSON (--json)`` section)."""
        return {
            "ms": self.ms,
            "verdict": self.verdict,
            "bad_input": self.bad_input,
            "canary": self.canary,
            "elapsed_s": round(self.elapsed_s, 4),
            "findings": [f.to_dict() for f in self.findings],
        }


class MsUnsafe(CasaguardError):
    """The probe called an MS unsafe, so a guarded batch (``probe_first=True``) skipped it.

    Attributes:
        vis: the MS.
        report: the probe's report (every finding, its verdict).
        codes: the fatal finding codes, most severe first.
    """

    def __init__(self, report: ProbeReport) -> None:
        self.vis = report.ms
        self.report = report
        self.codes = [f.code for f in report.fatal()]
        first = report.fatal()[0] if report.fatal() else None
        super().__init__(
            UNSAFE_MESSAGE.format(
                vis=report.ms,
                codes=", ".join(self.codes) or "?",
                first=first.message if first else "?",
            )
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Dask sends outcomes back from workers: rebuild from the report.
        return (MsUnsafe, (self.report,))
