"""The static probe: read an MS as CASA reads it, with python-casacore, read-only; return facts.

Runs only in a throwaway child (``casaguard.call(Ref(...), casa=False)``):
reading a damaged storage file can kill the process, and that death is itself
the evidence (the parent classifies it). Before each risky read a marker line
goes to stdout -- the child's fd 1 is the job's output file -- so that a crash
names the data manager or column it died on.

CASA opens the main table, then every subtable through the main table's
keywords (``SPECTRAL_WINDOW`` -> ``Table: <path>``, stored relative to the
MS), never by joining a directory name; so does this module. A directory that
exists but is not reachable by keyword is invisible to CASA, and a keyword
that points elsewhere is followed.

Every exception casacore raises while the MS is read is a fact about the MS,
not a failure of the probe: it is recorded in ``facts["read_errors"]`` with the
table, column and row it came from and casacore's own message, and reading
goes on with what is left. Only an exception outside these reads (a bug in
casaguard) escapes ``inspect_ms``.

Tables are opened ``readonly=True`` with ``lockoptions="usernoread"``: reading
needs no lock, so the probe never waits on another process's lock and never
acquires (and so never writes back) a lock itself; an existing ``table.lock``
is left byte-for-byte unchanged. casacore still creates a missing
``table.lock`` on open (CASA would too); the parent reports that case.

The facts are plain JSON-ready data; turning them into findings is
``casaguard.preflight.rules``' job, in the parent, where it can be unit-tested.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from casaguard.preflight.table_rules import REQUIRED as REQUIRED_SUBTABLES

SPW_ARRAYS = ("CHAN_FREQ", "CHAN_WIDTH", "EFFECTIVE_BW", "RESOLUTION")
ID_COLUMNS = {
    "DATA_DESC_ID": "DATA_DESCRIPTION",
    "FIELD_ID": "FIELD",
    "ANTENNA1": "ANTENNA",
    "ANTENNA2": "ANTENNA",
}
#: Subtables read beyond the required ones, when the MS has them.
OPTIONAL_SUBTABLES = ("SOURCE", "SYSCAL", "WEATHER", "DOPPLER", "FREQ_OFFSET")
#: Subtables whose cells ft and clearcal read (or append to): their first and last cell
#: of every column are read. The others (POINTING, FLAG_CMD, ...) are only opened, as
#: CASA's MeasurementSet constructor opens them: a POINTING table cut in half is
#: harmless to ft and clearcal (measured) but can kill a reader of its cells.
READ_CELLS = (
    "ANTENNA",
    "DATA_DESCRIPTION",
    "FEED",
    "FIELD",
    "HISTORY",
    "OBSERVATION",
    "POLARIZATION",
    "SOURCE",
    "SPECTRAL_WINDOW",
    "STATE",
)
TABLE_PREFIX = "Table: "
#: casacore ColumnDesc option bit for a fixed-shape array column.
FIXED_SHAPE = 4
MARKER = "casaguard-probe:"
MODEL_SAMPLE_ROWS = 64
COMPLEX_BYTES = 8
#: python-casacore's message for a cell of an array column that was never written.
_UNDEFINED_CELL = ("no array in row", "not defined")


def mark(step: str) -> None:
    """Say what is about to be read; survives a crash in the job's output file."""
    print(MARKER, step, flush=True)


class _Reader:
    """Runs each casacore read, turning its exception into a recorded fact."""

    def __init__(self, facts: dict[str, Any]) -> None:
        self.errors: list[dict[str, Any]] = facts.setdefault("read_errors", [])

    def attempt(
        self,
        table: str,
        column: str | None,
        row: int | None,
        func: Callable[..., Any],
        *args: Any,
    ) -> tuple[bool, Any]:
        """``(True, func(*args))``, or ``(False, None)`` with the exception recorded."""
        try:
            return True, func(*args)
        except Exception as error:  # noqa: BLE001 -- any casacore failure is a fact about the MS
            self.errors.append(
                {
                    "table": table,
                    "column": column,
                    "row": row,
                    "exc_type": type(error).__name__,
                    "error": str(error).strip(),
                }
            )
            return False, None

    def cell(self, name: str, table: Any, column: str, row: int) -> tuple[bool, Any]:
        """Read one cell: ``(True, value)``, value None for a cell never written."""
        ok, defined = self.attempt(name, column, row, table.iscelldefined, column, row)
        if not ok or not defined:
            return ok, None
        return self.attempt(name, column, row, table.getcell, column, row)


def read_lock_sync(table: str) -> dict[str, int] | None:
    """The sync data a writer left in ``table/table.lock``, read as plain bytes (no lock).

    casacore's ``TableSyncData::write`` stores, in AipsIO (big-endian) after the lock
    file's request area: magic 0xbebebebe, object length, the type string ``"sync"``,
    a version (1: 32-bit row count, 2: 64-bit), the row count, the column count (-1
    when only rows were written), the modify counter. A later opener that locks the
    table (CASA does; the probe does not) syncs from it and refuses a column count that
    disagrees with table.dat: "Table::lock cannot sync table; another process changed
    the number of columns".

    Returns:
        ``{"version", "nrrow", "nrcolumn", "modify_counter"}``, or None when the lock
        file is missing or holds no sync data.
    """
    import struct

    try:
        with open(os.path.join(table, "table.lock"), "rb") as lock:
            data = lock.read(1 << 16)
    except OSError:
        return None
    start = data.find(b"\xbe\xbe\xbe\xbe")
    # magic, object length, type-string length, "sync", version
    header = start + 4 + 4
    if start < 0 or data[header : header + 8] != b"\x00\x00\x00\x04sync":
        return None
    offset = header + 8
    try:
        (version,) = struct.unpack_from(">I", data, offset)
        offset += 4
        if version == 1:
            (nrrow,) = struct.unpack_from(">I", data, offset)
            offset += 4
        else:
            (nrrow,) = struct.unpack_from(">Q", data, offset)
            offset += 8
        nrcolumn, modify = struct.unpack_from(">iI", data, offset)
    except struct.error:
        return None
    return {"version": version, "nrrow": nrrow, "nrcolumn": nrcolumn, "modify_counter": modify}


def _missing_required(pt: Any, name: str, columns: list[str]) -> list[str]:
    """Columns the MS v2 definition requires of table ``name`` ("MAIN" or a subtable)."""
    try:
        desc = pt.required_ms_desc(name)
    except Exception:  # noqa: BLE001 -- a table the MS definition does not know
        return []
    required = {k for k, v in desc.items() if isinstance(v, dict) and "valueType" in v}
    return sorted(required - set(columns))


def inspect_ms(path: str) -> dict[str, Any]:
    """Read every fact the probe rules need from the MS at ``path``, read-only.

    Returns:
        A JSON-ready dict, read by the rule groups that ``casaguard.preflight.rules`` runs.

    Raises:
        RuntimeError: casatools is loaded in this process (never mix the two).
    """
    if "casatools" in sys.modules:
        raise RuntimeError("casatools is loaded in the casacore probe child: refusing to mix them")
    import casacore
    from casacore import tables as pt

    facts: dict[str, Any] = {"casacore_version": getattr(casacore, "__version__", "?")}
    reader = _Reader(facts)
    mark("open main table")
    try:
        main = pt.table(path, readonly=True, ack=False, lockoptions="usernoread")
    except Exception as error:  # noqa: BLE001 -- an MS casacore cannot open is a fact
        facts["open_error"] = str(error).strip()
        # Subtable directories tell a damaged MS from a directory that is no MS at all.
        facts["subtable_dirs"] = [
            name
            for name in REQUIRED_SUBTABLES
            if os.path.isfile(os.path.join(path, name, "table.dat"))
        ]
        return _done(facts)
    try:
        _read_main(pt, reader, main, path, facts)
    finally:
        main.close()
    return _done(facts)


def _done(facts: dict[str, Any]) -> dict[str, Any]:
    facts["casatools_loaded"] = "casatools" in sys.modules
    return facts


def _read_main(pt: Any, reader: _Reader, main: Any, path: str, facts: dict[str, Any]) -> None:
    ok, nrows = reader.attempt("", None, None, main.nrows)
    _, columns = reader.attempt("", None, None, main.colnames)
    _, keywords = reader.attempt("", None, None, main.getkeywords)
    _, info = reader.attempt("", None, None, main.info)
    nrows = int(nrows) if ok and nrows is not None else 0
    columns = [str(c) for c in columns or []]
    keywords = dict(keywords or {})
    facts.update(
        nrows=nrows,
        columns=columns,
        table_type=str((info or {}).get("type", "")),
        keywords=sorted(str(k) for k in keywords),
        missing_columns=_missing_required(pt, "MAIN", columns),
        lock_sync=read_lock_sync(path),
    )
    facts["subtables"] = _subtables(pt, reader, path, keywords)
    opener = _Opener(pt, reader, facts["subtables"])
    facts["spw"] = _spectral_windows(opener, reader)
    facts["polarization"] = _polarizations(opener, reader)
    facts["data_description"] = _data_descriptions(opener, reader)
    facts["history"] = _history(opener, reader)
    facts["coldesc"] = {
        name: _coldesc(reader, main, name)
        for name in ("DATA", "MODEL_DATA", "CORRECTED_DATA")
        if name in columns
    }
    facts["data_managers"] = _data_managers(reader, main, nrows)
    if nrows == 0:
        return
    facts["id_ranges"] = _id_ranges(reader, main, columns)
    facts["ddid_use"] = ddid_use = _ddid_use(reader, main, columns)
    if "MODEL_DATA" in columns:
        facts["model_sample"] = _model_sample(reader, main, nrows, ddid_use, columns)


def keyword_target(value: Any) -> str | None:
    """The table a keyword value names (``"Table: /abs/path"``), or None."""
    if isinstance(value, str) and value.startswith(TABLE_PREFIX):
        return value[len(TABLE_PREFIX) :].strip()
    return None


def _subtables(
    pt: Any, reader: _Reader, path: str, keywords: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """Open every required subtable (and the optional ones present) through its keyword."""
    names = list(REQUIRED_SUBTABLES)
    names += [n for n in OPTIONAL_SUBTABLES if n in keywords]
    names += sorted(str(k) for k in keywords if keyword_target(keywords[k]) and str(k) not in names)
    real = os.path.realpath(path)
    result: dict[str, dict[str, Any]] = {}
    for name in names:
        target = keyword_target(keywords.get(name))
        entry: dict[str, Any] = {
            "keyword": name in keywords,
            "keyword_is_table": target is not None,
            "path": target,
            # casacore stores a subtable's path relative to the MS; resolved, it should
            # land inside the MS under its own name.
            "relative": os.path.relpath(os.path.realpath(target), real) if target else None,
            "dir_exists": os.path.isfile(os.path.join(path, name, "table.dat")),
            "opens": False,
            "nrows": None,
        }
        result[name] = entry
        if target is None:
            continue
        entry["lock_sync"] = read_lock_sync(target)
        mark(f"open subtable {name} ({target})")
        ok, sub = reader.attempt(name, None, None, _open, pt, target)
        if not ok or sub is None:
            last = reader.errors[-1]
            entry["error"] = last["error"]
            entry["exists"] = os.path.isfile(os.path.join(target, "table.dat"))
            continue
        try:
            entry["opens"] = True
            ok, n = reader.attempt(name, None, None, sub.nrows)
            entry["nrows"] = int(n) if ok and n is not None else None
            _, sub_columns = reader.attempt(name, None, None, sub.colnames)
            entry["ncolumns"] = len(sub_columns or [])
            entry["missing_columns"] = _missing_required(pt, name, list(sub_columns or []))
            if entry["nrows"] and name in READ_CELLS:
                _read_ends(reader, sub, name, entry["nrows"])
        finally:
            sub.close()
    return result


def _open(pt: Any, target: str) -> Any:
    return pt.table(target, readonly=True, ack=False, lockoptions="usernoread")


def _read_ends(reader: _Reader, table: Any, name: str, nrows: int) -> None:
    """Read the first and last cell of every column of a subtable, through its data manager."""
    _, columns = reader.attempt(name, None, None, table.colnames)
    for column in columns or []:
        for row in sorted({0, nrows - 1}):
            mark(f"read {name}.{column} row {row}")
            ok, _ = reader.cell(name, table, column, row)
            if not ok:
                break


class _Opener:
    """Opens a subtable where its keyword says, once it is known to open."""

    def __init__(self, pt: Any, reader: _Reader, subtables: dict[str, dict[str, Any]]) -> None:
        self.pt = pt
        self.reader = reader
        self.subtables = subtables

    def open(self, name: str) -> Any:
        entry = self.subtables.get(name, {})
        if not entry.get("opens"):
            return None
        mark(f"open subtable {name}")
        ok, table = self.reader.attempt(name, None, None, _open, self.pt, entry["path"])
        return table if ok else None


def _rows(table: Any) -> int:
    return int(table.nrows())


def _spectral_windows(opener: _Opener, reader: _Reader) -> list[dict[str, Any]] | None:
    import numpy as np

    spw = opener.open("SPECTRAL_WINDOW")
    if spw is None:
        return None
    rows = []
    try:
        mark("read SPECTRAL_WINDOW")
        columns = list(spw.colnames())
        for row in range(_rows(spw)):
            ok, num_chan = reader.cell("SPECTRAL_WINDOW", spw, "NUM_CHAN", row)
            if not ok or num_chan is None:
                break
            entry: dict[str, Any] = {"row": row, "num_chan": int(num_chan)}
            lengths: dict[str, int | None] = {}
            for column in SPW_ARRAYS:
                ok, cell = (
                    reader.cell("SPECTRAL_WINDOW", spw, column, row)
                    if column in columns
                    else (True, None)
                )
                lengths[column] = int(np.asarray(cell).size) if ok and cell is not None else None
                if column == "CHAN_FREQ" and lengths[column]:
                    freq = np.asarray(cell, dtype=float)
                    entry["freq_nonfinite"] = int((~np.isfinite(freq)).sum())
                    entry["freq_nonpositive"] = int((freq[np.isfinite(freq)] <= 0).sum())
            entry["lengths"] = lengths
            rows.append(entry)
    finally:
        spw.close()
    return rows


def _polarizations(opener: _Opener, reader: _Reader) -> list[dict[str, Any]] | None:
    import numpy as np

    pol = opener.open("POLARIZATION")
    if pol is None:
        return None
    rows = []
    try:
        mark("read POLARIZATION")
        for row in range(_rows(pol)):
            ok, num_corr = reader.cell("POLARIZATION", pol, "NUM_CORR", row)
            if not ok or num_corr is None:
                break
            ok, corr_type = reader.cell("POLARIZATION", pol, "CORR_TYPE", row)
            rows.append(
                {
                    "row": row,
                    "num_corr": int(num_corr),
                    "corr_type_len": int(np.asarray(corr_type).size)
                    if ok and corr_type is not None
                    else None,
                }
            )
    finally:
        pol.close()
    return rows


def _data_descriptions(opener: _Opener, reader: _Reader) -> list[dict[str, Any]] | None:
    dd = opener.open("DATA_DESCRIPTION")
    if dd is None:
        return None
    rows = []
    try:
        mark("read DATA_DESCRIPTION")
        for row in range(_rows(dd)):
            ok_spw, spw = reader.cell("DATA_DESCRIPTION", dd, "SPECTRAL_WINDOW_ID", row)
            ok_pol, pol = reader.cell("DATA_DESCRIPTION", dd, "POLARIZATION_ID", row)
            if not (ok_spw and ok_pol) or spw is None or pol is None:
                break
            rows.append({"row": row, "spw": int(spw), "pol": int(pol)})
    finally:
        dd.close()
    return rows


def _history(opener: _Opener, reader: _Reader) -> dict[str, Any] | None:
    history = opener.open("HISTORY")
    if history is None:
        return None
    try:
        mark("read HISTORY")
        n = _rows(history)
        entry: dict[str, Any] = {"nrows": n}
        if n:
            last = n - 1
            for column in ("APPLICATION", "ORIGIN", "MESSAGE"):
                if column in history.colnames():
                    ok, value = reader.cell("HISTORY", history, column, last)
                    if ok and value is not None:
                        entry[column.lower()] = str(value)[:200]
        return entry
    finally:
        history.close()


def _coldesc(reader: _Reader, main: Any, name: str) -> dict[str, Any] | None:
    ok, desc = reader.attempt("", name, None, main.getcoldesc, name)
    if not ok or desc is None:
        return None
    shape = desc.get("shape")
    return {
        "value_type": str(desc.get("valueType", "")),
        "dm_type": str(desc.get("dataManagerType", "")),
        "dm_group": str(desc.get("dataManagerGroup", "")),
        "option": int(desc.get("option", 0)),
        "fixed_shape": bool(int(desc.get("option", 0)) & FIXED_SHAPE),
        "ndim": int(desc.get("ndim", -1)),
        "shape": [int(n) for n in shape] if shape is not None else None,
        "comment": str(desc.get("comment", "")),
    }


def _data_managers(reader: _Reader, main: Any, nrows: int) -> dict[str, Any]:
    """Ask for the data-manager info, then read the first and last cell of every column.

    A storage file cut short passes the reads of row 0 that users usually try;
    the last row, or the data manager's own header, lives in the missing part.
    Errors are kept here (with the data manager) rather than in ``read_errors``.
    """
    mark("getdminfo")
    result: dict[str, Any] = {"error": None, "managers": []}
    try:
        info = main.getdminfo()
    except Exception as error:  # noqa: BLE001 -- damaged storage is a fact about the MS
        result["error"] = str(error).strip()
        return result
    for key in sorted(info, key=lambda k: int(info[k].get("SEQNR", 0))):
        manager = info[key]
        entry: dict[str, Any] = {
            "seqnr": int(manager.get("SEQNR", -1)),
            "type": str(manager.get("TYPE", "")),
            "name": str(manager.get("NAME", "")),
            "columns": [str(c) for c in manager.get("COLUMNS", [])],
            "read_errors": {},
        }
        for column in entry["columns"]:
            for row in sorted({0, nrows - 1}) if nrows else ():
                mark(
                    f"read {column} row {row} ({entry['type']} {entry['name']}, "
                    f"table.f{entry['seqnr']})"
                )
                try:
                    if main.iscelldefined(column, row):
                        main.getcell(column, row)
                except Exception as error:  # noqa: BLE001 -- see the docstring
                    entry["read_errors"][column] = f"row {row}: {str(error).strip()}"
                    break
        result["managers"].append(entry)
    return result


def _id_ranges(reader: _Reader, main: Any, columns: list[str]) -> dict[str, list[int]]:
    ranges = {}
    for column in ID_COLUMNS:
        if column in columns:
            mark(f"read column {column}")
            ok, values = reader.attempt("", column, None, main.getcol, column)
            if ok and values is not None and len(values):
                ranges[column] = [int(values.min()), int(values.max())]
    return ranges


def _ddid_use(reader: _Reader, main: Any, columns: list[str]) -> list[dict[str, Any]]:
    """For every DATA_DESC_ID in use: its row count, first row and that row's cell shapes."""
    import numpy as np

    if "DATA_DESC_ID" not in columns:
        return []
    ok, ddid = reader.attempt("", "DATA_DESC_ID", None, main.getcol, "DATA_DESC_ID")
    if not ok or ddid is None:
        return []
    values, first, counts = np.unique(ddid, return_index=True, return_counts=True)
    use = []
    for value, row, count in zip(values, first, counts, strict=True):
        entry: dict[str, Any] = {"ddid": int(value), "first_row": int(row), "rows": int(count)}
        for column in ("DATA", "MODEL_DATA"):
            if column in columns:
                mark(f"shape of {column} row {row}")
                ok, shape = reader.attempt("", column, int(row), _shape, main, column, int(row))
                entry[f"{column.lower()}_shape"] = shape if ok else None
        use.append(entry)
    return use


def _shape(main: Any, column: str, row: int) -> list[int] | None:
    """A cell's shape from the data manager's index; None for a cell never written."""
    if not main.iscelldefined(column, row):
        return None
    return _parse_shape(main.getcolshapestring(column, row, 1)[0])


def _parse_shape(text: str) -> list[int] | None:
    # python-casacore prints shapes in numpy's order ("[8, 4]" = 8 chan x 4 corr),
    # the order getcell and getcoldesc use too.
    text = text.strip().strip("[]")
    if not text:
        return None
    return [int(part) for part in text.split(",")]


def _model_sample(
    reader: _Reader, main: Any, nrows: int, ddid_use: list[dict[str, Any]], columns: list[str]
) -> dict[str, Any]:
    """Read a sample of MODEL_DATA rows: NaN/Inf count and cells whose shape differs from DATA."""
    import numpy as np

    rows = {int(r) for r in np.linspace(0, nrows - 1, min(nrows, MODEL_SAMPLE_ROWS))}
    rows.update(int(d["first_row"]) for d in ddid_use)
    nonfinite = 0
    undefined = 0
    mismatches: list[dict[str, Any]] = []
    errors: list[str] = []
    has_data = "DATA" in columns
    for row in sorted(rows):
        mark(f"sample MODEL_DATA row {row}")
        try:
            if not main.iscelldefined("MODEL_DATA", row):
                undefined += 1
                continue
            model = np.asarray(main.getcell("MODEL_DATA", row))
            nonfinite += int((~np.isfinite(model)).sum())
            if has_data and main.iscelldefined("DATA", row):
                # The shape comes from the data manager's index, not the DATA
                # bytes: damage in DATA is reported by _data_managers, not here.
                data_shape = _parse_shape(main.getcolshapestring("DATA", row, 1)[0])
                if list(model.shape) != data_shape and len(mismatches) < 8:
                    mismatches.append({"row": row, "model": list(model.shape), "data": data_shape})
        except Exception as error:  # noqa: BLE001 -- a damaged MODEL_DATA is a fact
            errors.append(f"row {row}: {str(error).strip()}")
            reader.errors.append(
                {
                    "table": "",
                    "column": "MODEL_DATA",
                    "row": row,
                    "exc_type": type(error).__name__,
                    "error": str(error).strip(),
                }
            )
            break
    return {
        "rows": len(rows),
        "undefined": undefined,
        "nonfinite": nonfinite,
        "shape_mismatches": mismatches,
        "errors": errors,
    }
