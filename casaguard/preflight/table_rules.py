"""Rules on the tables as casacore opens them: is each there, reached, and readable.

The first questions asked of the static child's facts: is the table an MS with rows,
does each required subtable hang off the main table's keywords as CASA follows them,
do the tables carry the columns MS v2 requires, does each table.lock agree with its
table.dat, and does every cell and data manager the child touched read back. Apart
from the metadata and scratch-column rules because these are about tables and files
being whole, not about what their rows say. ``REQUIRED`` (the MS v2 subtables) lives
here because these rules define it; the static child imports it to know what to open.
"""

from __future__ import annotations

from typing import Any

from casaguard.preflight.findings import Finding

REQUIRED = (
    "ANTENNA",
    "DATA_DESCRIPTION",
    "FEED",
    "FIELD",
    "FLAG_CMD",
    "HISTORY",
    "OBSERVATION",
    "POINTING",
    "POLARIZATION",
    "PROCESSOR",
    "SPECTRAL_WINDOW",
    "STATE",
)
#: Subtables whose rows ft or clearcal read: empty, CASA raises 'SSMIndex::getIndex -
#: access to non-existing row 0' or segfaults (measured: tests/test_probe_variants.py).
NEEDS_ROWS = (
    "ANTENNA",
    "DATA_DESCRIPTION",
    "FEED",
    "FIELD",
    "POLARIZATION",
    "SPECTRAL_WINDOW",
)
FIX_REBUILD = (
    "restore the MS from its source (importfits/importuvfits/the archive); do not write to it"
)


def open_error_finding(ms: str, facts: dict[str, Any]) -> Finding:
    """An MS whose main table does not open is damaged; a bare table.dat is bad input."""
    message = _first_line(facts["open_error"])
    subtables = list(facts.get("subtable_dirs") or [])
    if subtables:
        return Finding(
            "MAIN_TABLE_UNREADABLE",
            f"casacore cannot open the main table of {ms} (it has subtables "
            f"{', '.join(subtables[:4])}{' ...' if len(subtables) > 4 else ''}): {message}",
            FIX_REBUILD,
            path=f"{ms}/table.dat",
            data={"error": facts["open_error"], "subtable_dirs": subtables},
        )
    return Finding(
        "TABLE_UNREADABLE",
        f"casacore cannot open {ms}: {message}",
        "check the path, its permissions, and that table.dat is intact",
        path=ms,
    )


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def input_findings(ms: str, facts: dict[str, Any]) -> list[Finding]:
    columns = facts.get("columns", [])
    subtables = facts.get("subtables", {})
    if (
        "DATA" not in columns
        and "FLOAT_DATA" not in columns
        and not any(subtables.get(name, {}).get("keyword") for name in REQUIRED)
    ):
        return [
            Finding(
                "NOT_AN_MS",
                f"{ms} is a casacore table ({facts.get('table_type') or 'no type'}) but not a "
                "MeasurementSet: no DATA column and no MS subtables",
                "give the path of the MS itself (the directory holding SPECTRAL_WINDOW, "
                "ANTENNA...)",
                path=ms,
            )
        ]
    findings = []
    if facts.get("nrows") == 0:
        findings.append(
            Finding(
                "MS_EMPTY",
                "the main table has no rows: ft stops with 'Input MeasurementSet has zero "
                "selected rows'",
                "check the split/selection that produced this MS",
                path=ms,
            )
        )
    return findings


def reachability_findings(ms: str, facts: dict[str, Any]) -> list[Finding]:
    """Each subtable as CASA reaches it: the main table's keyword, then the table it names."""
    findings: list[Finding] = []
    subtables: dict[str, dict[str, Any]] = facts.get("subtables", {})
    for name in (*REQUIRED, *sorted(set(subtables) - set(REQUIRED))):
        entry = subtables.get(name, {})
        required = name in REQUIRED
        if not entry.get("keyword_is_table"):
            if not required:
                continue
            there = (
                f"the directory {name} exists, but CASA does not look there"
                if entry.get("dir_exists")
                else f"and there is no {name} directory either"
            )
            findings.append(
                Finding(
                    "SUBTABLE_KEYWORD_MISSING",
                    f"the main table has no {name} table keyword: {there} (CASA: "
                    "'NullTable::lock - Table object is empty' or 'Error in "
                    "Calibrater::initialize()')",
                    f"restore the main table's {name} keyword (python-casacore: "
                    f"t.putkeyword('{name}', 'Table: <ms>/{name}')), or restore the MS",
                    path=f"{ms}/{name}",
                    data={"subtable": name, "dir_exists": bool(entry.get("dir_exists"))},
                )
            )
            continue
        data = {"subtable": name, "keyword_path": entry.get("path")}
        if not entry.get("opens"):
            error = _first_line(entry.get("error") or "?")
            if not entry.get("exists", True):
                findings.append(
                    Finding(
                        "SUBTABLE_MISSING",
                        f"subtable {name}: the main table's keyword names {entry.get('path')}, "
                        f"which does not exist (CASA stops with '{error}')",
                        f"restore {name} from a copy of the MS"
                        + (
                            f" (a {name} directory exists: point the keyword at it)"
                            if entry.get("dir_exists")
                            else ""
                        ),
                        path=entry.get("path"),
                        data=data,
                    )
                )
            else:
                findings.append(
                    Finding(
                        "SUBTABLE_UNREADABLE",
                        f"subtable {name} ({entry.get('path')}) exists but casacore cannot "
                        f"open it: {error}",
                        f"restore {name} from a copy of the MS; {FIX_REBUILD}",
                        path=entry.get("path"),
                        data={**data, "error": entry.get("error")},
                    )
                )
            continue
        if entry.get("relative") not in (name, None):
            findings.append(
                Finding(
                    "SUBTABLE_ELSEWHERE",
                    f"the {name} keyword points at {entry.get('path')} ({entry.get('relative')} "
                    f"relative to the MS), not at the MS's own {name}: CASA reads that table",
                    f"check that {entry.get('path')} is this MS's {name}; copy it into the MS "
                    "if the MS is to move",
                    path=entry.get("path"),
                    data={**data, "relative": entry.get("relative")},
                )
            )
        if name in NEEDS_ROWS and entry.get("nrows") == 0:
            findings.append(
                Finding(
                    "SUBTABLE_EMPTY",
                    f"subtable {name} has no rows: ft and clearcal read it (CASA: "
                    f"'SSMIndex::getIndex - access to non-existing row 0 ... of table "
                    f".../{name}', or a segfault)",
                    f"restore {name} from a copy of the MS",
                    path=entry.get("path"),
                    data={"subtable": name},
                )
            )
    return findings


def required_column_findings(ms: str, facts: dict[str, Any]) -> list[Finding]:
    """Columns the MS v2 definition requires: CASA refuses a table without them."""
    findings = []
    tables = [("", ms, facts.get("missing_columns") or [])]
    tables += [
        (name, entry.get("path"), entry.get("missing_columns") or [])
        for name, entry in facts.get("subtables", {}).items()
    ]
    for name, path, missing in tables:
        if not missing:
            continue
        kind = f"MS{name.title().replace('_', '')}" if name else "MS"
        where = f"subtable {name}" if name else "the main table"
        findings.append(
            Finding(
                "REQUIRED_COLUMN_MISSING",
                f"{where} lacks required column(s) {', '.join(missing[:6])}"
                f"{' ...' if len(missing) > 6 else ''} (CASA: '{kind}(...) - table is not a "
                f"valid {kind}')",
                f"restore {name or 'the MS'} from a copy of the MS",
                path=path,
                data={"table": name or None, "columns": list(missing)},
            )
        )
    return findings


def lock_sync_findings(ms: str, facts: dict[str, Any]) -> list[Finding]:
    """A table.lock whose sync data disagrees with table.dat on the column count."""
    findings = []
    tables = [("", ms, facts.get("lock_sync"), len(facts.get("columns", [])))]
    tables += [
        (name, entry.get("path"), entry.get("lock_sync"), entry.get("ncolumns"))
        for name, entry in facts.get("subtables", {}).items()
        if entry.get("opens")
    ]
    for name, path, sync, ncolumns in tables:
        if not sync or ncolumns is None or sync["nrcolumn"] < 0 or sync["nrcolumn"] == ncolumns:
            continue
        where = f"subtable {name}" if name else "the main table"
        findings.append(
            Finding(
                "LOCK_SYNC_MISMATCH",
                f"{where}'s table.lock records {sync['nrcolumn']} columns but table.dat has "
                f"{ncolumns} (CASA: 'Table::lock cannot sync table; another process changed the "
                "number of columns'): its files and its table.lock come from different states",
                "restore table.lock together with the files it belongs to (casaguard "
                "restore-journal does), or restore the MS from a copy",
                path=f"{path}/table.lock",
                data={
                    "table": name or None,
                    "lock_columns": sync["nrcolumn"],
                    "lock_rows": sync["nrrow"],
                    "columns": ncolumns,
                    "rows": facts.get("nrows")
                    if not name
                    else facts["subtables"][name].get("nrows"),
                },
            )
        )
    return findings


def read_error_findings(ms: str, facts: dict[str, Any]) -> list[Finding]:
    """Every exception casacore raised while the static child read the MS: one per table."""
    subtables: dict[str, dict[str, Any]] = facts.get("subtables", {})
    # Main-table columns that fail in their data manager are STORAGE_UNREADABLE's.
    storage = {
        str(column)
        for manager in facts.get("data_managers", {}).get("managers", [])
        for column in manager.get("read_errors", {})
    }
    by_table: dict[str, list[dict[str, Any]]] = {}
    for error in facts.get("read_errors", []):
        table = str(error.get("table", ""))
        if error.get("column") is None and table and not subtables.get(table, {}).get("opens"):
            continue  # a subtable that does not open: reachability_findings names it
        if not table and error.get("column") in storage:
            continue
        by_table.setdefault(table, []).append(error)
    findings: list[Finding] = []
    for table, errors in by_table.items():
        where = f"subtable {table}" if table else "the main table"
        path = subtables.get(table, {}).get("path") if table else ms
        first = errors[0]
        message = _first_line(str(first.get("error") or first.get("exc_type") or "?"))
        columns = list(dict.fromkeys(str(e["column"]) for e in errors if e.get("column")))
        data = {
            "table": table or None,
            "column": first.get("column"),
            "columns": columns,
            "row": first.get("row"),
            "exc_type": first.get("exc_type"),
            "error": first.get("error"),
        }
        if first.get("column") is None:
            findings.append(
                Finding(
                    "SUBTABLE_UNREADABLE" if table else "MAIN_TABLE_UNREADABLE",
                    f"{where} opens but cannot be read: {message}",
                    FIX_REBUILD,
                    path=path,
                    data=data,
                )
            )
            continue
        row = f" row {first['row']}" if first.get("row") is not None else ""
        more = f" ({len(columns) - 1} more columns fail too)" if len(columns) > 1 else ""
        findings.append(
            Finding(
                "COLUMN_UNREADABLE",
                f"column {first['column']} of {where}{row} cannot be read{more}: {message}",
                f"restore {table or 'the MS'} from a copy; {FIX_REBUILD}",
                path=path,
                data=data,
            )
        )
    return findings


def storage_findings(ms: str, facts: dict[str, Any]) -> list[Finding]:
    findings = []
    managers = facts.get("data_managers", {})
    if managers.get("error"):
        findings.append(
            Finding(
                "STORAGE_UNREADABLE",
                "the main table's data-manager info cannot be read: "
                f"{_first_line(managers['error'])}",
                FIX_REBUILD,
                path=ms,
            )
        )
    for manager in managers.get("managers", []):
        for column, error in manager.get("read_errors", {}).items():
            findings.append(
                Finding(
                    "STORAGE_UNREADABLE",
                    f"column {column} ({manager['type']} '{manager['name']}', "
                    f"table.f{manager['seqnr']}*) "
                    f"cannot be read at {_first_line(error)}",
                    FIX_REBUILD,
                    path=f"{ms}/table.f{manager['seqnr']}",
                    data={
                        "column": column,
                        "data_manager": manager["type"],
                        "seqnr": manager["seqnr"],
                    },
                )
            )
    return findings
