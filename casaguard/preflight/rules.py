"""Pure rules: the static child's raw facts -> findings.

No I/O and no casacore: the facts dict comes from
``casaguard.remote.casacore.static.inspect_ms`` (read in a child), and every rule
here is a plain function of it, so each can be checked against the facts of a
real MS. Shapes in the facts are numpy-ordered: ``[channels, correlations]``.
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
ID_TARGETS = {
    "DATA_DESC_ID": "DATA_DESCRIPTION",
    "FIELD_ID": "FIELD",
    "ANTENNA1": "ANTENNA",
    "ANTENNA2": "ANTENNA",
}
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
#: Main-table IDs out of range that ft and clearcal survive (measured): a warning only.
WARN_ONLY_IDS = ("ANTENNA1", "ANTENNA2")
FIX_RECREATE_MODEL = (
    "recreate MODEL_DATA with CASA (remove the column, then ft(usescratch=True)), "
    "or run ft before WSClean"
)
FIX_REBUILD = (
    "restore the MS from its source (importfits/importuvfits/the archive); do not write to it"
)


def static_findings(ms: str, facts: dict[str, Any]) -> list[Finding]:
    """Turn the static child's facts into findings.

    Args:
        ms: the MS path (for messages and ``path`` fields).
        facts: what ``inspect_ms`` returned.

    Returns:
        The findings, unsorted.
    """
    if facts.get("open_error"):
        return [_open_error(ms, facts)]
    findings: list[Finding] = []
    findings += _input(ms, facts)
    if any(f.code in ("NOT_AN_MS",) for f in findings):
        return findings
    findings += _reachability(ms, facts)
    findings += _required_columns(ms, facts)
    findings += _lock_sync(ms, facts)
    findings += _read_errors(ms, facts)
    findings += _structure(facts)
    findings += _storage(ms, facts)
    findings += _model(facts)
    findings += _corrected(facts)
    findings += _provenance(facts)
    return findings


def _open_error(ms: str, facts: dict[str, Any]) -> Finding:
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


def _input(ms: str, facts: dict[str, Any]) -> list[Finding]:
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


def _reachability(ms: str, facts: dict[str, Any]) -> list[Finding]:
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


def _required_columns(ms: str, facts: dict[str, Any]) -> list[Finding]:
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


def _lock_sync(ms: str, facts: dict[str, Any]) -> list[Finding]:
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


def _read_errors(ms: str, facts: dict[str, Any]) -> list[Finding]:
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
            continue  # a subtable that does not open: _reachability names it
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


def _unreadable(facts: dict[str, Any]) -> set[str]:
    """Tables whose rows the static child could not all read (their row lists are partial)."""
    return {str(e.get("table", "")) for e in facts.get("read_errors", [])}


def _empty(facts: dict[str, Any], name: str) -> bool:
    return bool(facts.get("subtables", {}).get(name, {}).get("nrows") == 0)


def _spw_rows(facts: dict[str, Any]) -> list[dict[str, Any]]:
    return list(facts.get("spw") or [])


def _structure(facts: dict[str, Any]) -> list[Finding]:
    findings: list[Finding] = []
    spws = _spw_rows(facts)
    pols = list(facts.get("polarization") or [])
    dds = list(facts.get("data_description") or [])
    for spw in spws:
        wrong = {c: n for c, n in spw["lengths"].items() if n is not None and n != spw["num_chan"]}
        if wrong:
            listing = ", ".join(f"{c} has {n}" for c, n in wrong.items())
            findings.append(
                Finding(
                    "SPW_NUM_CHAN_MISMATCH",
                    f"SPECTRAL_WINDOW row {spw['row']}: NUM_CHAN is {spw['num_chan']} but "
                    f"{listing}",
                    "make NUM_CHAN equal the channel arrays' length (ft silently writes nothing "
                    "otherwise)",
                    data={"spw": spw["row"], "num_chan": spw["num_chan"], "lengths": wrong},
                )
            )
        bad = spw.get("freq_nonfinite", 0) + spw.get("freq_nonpositive", 0)
        if bad:
            findings.append(
                Finding(
                    "SPW_BAD_FREQ",
                    f"SPECTRAL_WINDOW row {spw['row']}: {spw.get('freq_nonfinite', 0)} non-finite "
                    "and "
                    f"{spw.get('freq_nonpositive', 0)} non-positive CHAN_FREQ values",
                    "repair CHAN_FREQ; imaging and calibration need real frequencies",
                    data={"spw": spw["row"]},
                )
            )
    for pol in pols:
        if pol["corr_type_len"] is not None and pol["corr_type_len"] != pol["num_corr"]:
            findings.append(
                Finding(
                    "POL_NUM_CORR_MISMATCH",
                    f"POLARIZATION row {pol['row']}: NUM_CORR is {pol['num_corr']} but CORR_TYPE "
                    f"has {pol['corr_type_len']} entries",
                    "make NUM_CORR equal the length of CORR_TYPE",
                    data={"pol": pol["row"]},
                )
            )
    partial = _unreadable(facts)
    # A subtable not reached, partly unreadable or empty has its own finding already.
    check_spw = (
        facts.get("spw") is not None
        and "SPECTRAL_WINDOW" not in partial
        and not _empty(facts, "SPECTRAL_WINDOW")
    )
    check_pol = (
        facts.get("polarization") is not None
        and "POLARIZATION" not in partial
        and not _empty(facts, "POLARIZATION")
    )
    for dd in dds:
        if check_spw and not 0 <= dd["spw"] < len(spws):
            findings.append(
                Finding(
                    "DDID_BAD_SPW",
                    f"DATA_DESCRIPTION row {dd['row']} points at SPECTRAL_WINDOW row {dd['spw']}, "
                    f"which does not exist ({len(spws)} rows)",
                    "repair SPECTRAL_WINDOW_ID in DATA_DESCRIPTION",
                    data={"ddid": dd["row"], "spw": dd["spw"]},
                )
            )
        if check_pol and not 0 <= dd["pol"] < len(pols):
            findings.append(
                Finding(
                    "DDID_BAD_POL",
                    f"DATA_DESCRIPTION row {dd['row']} points at POLARIZATION row {dd['pol']}, "
                    f"which does not exist ({len(pols)} rows)",
                    "repair POLARIZATION_ID in DATA_DESCRIPTION",
                    data={"ddid": dd["row"], "pol": dd["pol"]},
                )
            )
    subtables = facts.get("subtables", {})
    for column, (low, high) in facts.get("id_ranges", {}).items():
        target = ID_TARGETS.get(column)
        size = subtables.get(target, {}).get("nrows")
        if target and size and (low < 0 or high >= size):
            # An empty target is SUBTABLE_EMPTY's finding, not this one's.
            warn = column in WARN_ONLY_IDS
            findings.append(
                Finding(
                    "ANTENNA_ID_OUT_OF_RANGE" if warn else "MAIN_ID_OUT_OF_RANGE",
                    f"main-table {column} spans {low}..{high} but {target} has {size} rows"
                    + (" (ft and clearcal do not look the antennas up)" if warn else ""),
                    f"repair {column} or the {target} subtable",
                    data={"column": column, "min": low, "max": high, "rows": size},
                )
            )
    for use in facts.get("ddid_use", []):
        expected = expected_shape(facts, use["ddid"])
        shape = use.get("data_shape")
        if expected and shape and shape != expected:
            findings.append(
                Finding(
                    "DATA_SHAPE_MISMATCH",
                    f"DATA_DESC_ID {use['ddid']}: DATA cells are {shape[0]} chan x {shape[1]} corr "
                    f"but its SPECTRAL_WINDOW/POLARIZATION say {expected[0]} x {expected[1]}",
                    "repair NUM_CHAN / NUM_CORR (ft logs SEVERE and writes nothing otherwise)",
                    data={"ddid": use["ddid"], "data_shape": shape, "expected": expected},
                )
            )
    return findings


def expected_shape(facts: dict[str, Any], ddid: int) -> list[int] | None:
    """``[NUM_CHAN, NUM_CORR]`` of a DATA_DESC_ID, or None when a link is broken."""
    dds = list(facts.get("data_description") or [])
    spws = _spw_rows(facts)
    pols = list(facts.get("polarization") or [])
    if not 0 <= ddid < len(dds):
        return None
    dd = dds[ddid]
    if not (0 <= dd["spw"] < len(spws) and 0 <= dd["pol"] < len(pols)):
        return None
    return [int(spws[dd["spw"]]["num_chan"]), int(pols[dd["pol"]]["num_corr"])]


def _spw_of(facts: dict[str, Any], ddid: int) -> int | None:
    dds = list(facts.get("data_description") or [])
    return int(dds[ddid]["spw"]) if 0 <= ddid < len(dds) else None


def _storage(ms: str, facts: dict[str, Any]) -> list[Finding]:
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


def _model(facts: dict[str, Any]) -> list[Finding]:
    findings: list[Finding] = []
    use = facts.get("ddid_use", [])
    model = facts.get("coldesc", {}).get("MODEL_DATA")
    if model is None:
        findings.append(
            Finding(
                "MODEL_DATA_ABSENT", "MODEL_DATA does not exist; ft(usescratch=True) will create it"
            )
        )
        shapes = {tuple(u["data_shape"]) for u in use if u.get("data_shape")}
        channels = sorted({s[0] for s in shapes})
        if len(shapes) > 1:
            findings.append(
                Finding(
                    "WSCLEAN_MIXED_SPW_NO_MODEL",
                    f"spectral windows differ in shape ({', '.join(map(str, channels))} channels) "
                    "and "
                    "MODEL_DATA is absent: WSClean 3.1 crashes creating it",
                    "create MODEL_DATA with CASA first (ft(usescratch=True) or "
                    "clearcal(addmodel=True))",
                    data={"shapes": [list(s) for s in sorted(shapes)]},
                )
            )
        return findings
    if model["value_type"] != "complex" or model["ndim"] not in (2, -1):
        findings.append(
            Finding(
                "MODEL_DATA_BAD_TYPE",
                f"MODEL_DATA is a {model['value_type']} column of ndim {model['ndim']}, "
                "not a 2-d complex array",
                FIX_RECREATE_MODEL,
            )
        )
    kind = f"{model['dm_type']} ('{model['dm_group']}')"
    fixed = model["fixed_shape"] and model.get("shape")
    if fixed:
        for u in use:
            if u.get("data_shape") and u["data_shape"] != model["shape"]:
                spw = _spw_of(facts, u["ddid"])
                findings.append(
                    Finding(
                        "MODEL_DATA_FIXED_SHAPE_MISMATCH",
                        f"MODEL_DATA is a fixed-shape {kind} column of {model['shape'][0]} chan x "
                        f"{model['shape'][1]} corr (WSClean-style), but spw {spw} (DATA_DESC_ID "
                        f"{u['ddid']}) has {u['data_shape'][0]} x {u['data_shape'][1]}",
                        FIX_RECREATE_MODEL,
                        data={
                            "ddid": u["ddid"],
                            "spw": spw,
                            "model": model["shape"],
                            "data": u["data_shape"],
                        },
                    )
                )
    else:
        mismatched = [
            u
            for u in use
            if u.get("data_shape")
            and u.get("model_data_shape")
            and u["data_shape"] != u["model_data_shape"]
        ]
        sample = facts.get("model_sample", {}).get("shape_mismatches", [])
        if mismatched or sample:
            first = (
                {
                    "row": mismatched[0]["first_row"],
                    "model": mismatched[0]["model_data_shape"],
                    "data": mismatched[0]["data_shape"],
                }
                if mismatched
                else sample[0]
            )
            findings.append(
                Finding(
                    "MODEL_DATA_SHAPE_MISMATCH",
                    f"MODEL_DATA row {first['row']} is {first['model']} but DATA is "
                    f"{first['data']} "
                    "(ft logs SEVERE 'conformance error' and writes nothing)",
                    FIX_RECREATE_MODEL,
                    data=first,
                )
            )
    sample = facts.get("model_sample", {})
    if sample.get("nonfinite"):
        findings.append(
            Finding(
                "MODEL_DATA_NONFINITE",
                f"{sample['nonfinite']} NaN/Inf values in a {sample['rows']}-row sample of "
                "MODEL_DATA",
                "re-run ft (or clearcal(addmodel=True)) to reset MODEL_DATA",
            )
        )
    return findings


def _corrected(facts: dict[str, Any]) -> list[Finding]:
    """A fixed-shape CORRECTED_DATA that some DATA_DESC_ID's DATA does not fit (clearcal fails)."""
    corrected = facts.get("coldesc", {}).get("CORRECTED_DATA")
    if not corrected or not (corrected["fixed_shape"] and corrected.get("shape")):
        return []
    findings = []
    for use in facts.get("ddid_use", []):
        if use.get("data_shape") and use["data_shape"] != corrected["shape"]:
            spw = _spw_of(facts, use["ddid"])
            findings.append(
                Finding(
                    "CORRECTED_DATA_FIXED_SHAPE_MISMATCH",
                    f"CORRECTED_DATA is a fixed-shape column of {corrected['shape'][0]} chan x "
                    f"{corrected['shape'][1]} corr, but spw {spw} (DATA_DESC_ID {use['ddid']}) "
                    f"has {use['data_shape'][0]} x {use['data_shape'][1]} (clearcal: 'Table "
                    "array conformance error')",
                    "remove CORRECTED_DATA and let clearcal(addcorr=True) recreate it",
                    data={
                        "ddid": use["ddid"],
                        "spw": spw,
                        "corrected": corrected["shape"],
                        "data": use["data_shape"],
                    },
                )
            )
    return findings


def _provenance(facts: dict[str, Any]) -> list[Finding]:
    findings = []
    model = facts.get("coldesc", {}).get("MODEL_DATA")
    if model is not None:
        kind = f"{model['dm_type']} '{model['dm_group']}'"
        if model["dm_type"] == "StandardStMan" and model["fixed_shape"]:
            findings.append(
                Finding(
                    "MODEL_DATA_BY_WSCLEAN",
                    f"MODEL_DATA is a fixed-shape {kind} column: WSClean creates it so",
                    data={"data_manager": model["dm_type"], "group": model["dm_group"]},
                )
            )
        elif model["dm_type"].startswith("Tiled") or model["comment"] == "The model data column":
            findings.append(
                Finding(
                    "MODEL_DATA_BY_CASA",
                    f"MODEL_DATA is a variable-shape {kind} column: CASA creates it so",
                    data={"data_manager": model["dm_type"], "group": model["dm_group"]},
                )
            )
    history = facts.get("history") or {}
    if history.get("nrows"):
        findings.append(
            Finding(
                "HISTORY_LAST",
                f"HISTORY has {history['nrows']} rows; the last from "
                f"{history.get('application') or history.get('origin') or '?'}",
                data={k: history.get(k) for k in ("nrows", "application", "origin", "message")},
            )
        )
    return findings
