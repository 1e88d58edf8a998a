"""The static probe: read an MS with python-casacore, read-only, and return raw facts.

Runs only in a throwaway child (``casaguard.call(Ref(...), casa=False)``):
reading a damaged storage file can kill the process, and that death is itself
the evidence (the parent classifies it). Before each risky read a marker line
goes to stdout -- the child's fd 1 is the job's output file -- so that a crash
names the data manager or column it died on.

Tables are opened ``readonly=True`` with ``lockoptions="usernoread"``: reading
needs no lock, so the probe never waits on another process's lock and never
acquires (and so never writes back) a lock itself; an existing ``table.lock``
is left byte-for-byte unchanged. casacore still creates a missing
``table.lock`` on open (CASA would too); the parent reports that case.

The facts are plain JSON-ready data; turning them into findings is
``casaguard.probe_rules``' job, in the parent, where it can be unit-tested.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from casaguard.probe_rules import REQUIRED as REQUIRED_SUBTABLES

SPW_ARRAYS = ("CHAN_FREQ", "CHAN_WIDTH", "EFFECTIVE_BW", "RESOLUTION")
ID_COLUMNS = {
    "DATA_DESC_ID": "DATA_DESCRIPTION",
    "FIELD_ID": "FIELD",
    "ANTENNA1": "ANTENNA",
    "ANTENNA2": "ANTENNA",
}
#: casacore ColumnDesc option bit for a fixed-shape array column.
FIXED_SHAPE = 4
MARKER = "casaguard-probe:"
MODEL_SAMPLE_ROWS = 64
COMPLEX_BYTES = 8


def mark(step: str) -> None:
    """Say what is about to be read; survives a crash in the job's output file."""
    print(MARKER, step, flush=True)


def inspect_ms(path: str) -> dict[str, Any]:
    """Read every fact the probe rules need from the MS at ``path``, read-only.

    Returns:
        A JSON-ready dict (see ``casaguard.probe_rules`` for the keys it reads).

    Raises:
        RuntimeError: casatools is loaded in this process (never mix the two).
    """
    if "casatools" in sys.modules:
        raise RuntimeError("casatools is loaded in the casacore probe child: refusing to mix them")
    import casacore
    from casacore import tables as pt

    facts: dict[str, Any] = {"casacore_version": getattr(casacore, "__version__", "?")}
    mark("open main table")
    try:
        main = pt.table(path, readonly=True, ack=False, lockoptions="usernoread")
    except RuntimeError as error:
        facts["open_error"] = str(error)
        return _done(facts)
    try:
        _read_main(pt, main, path, facts)
    finally:
        main.close()
    return _done(facts)


def _done(facts: dict[str, Any]) -> dict[str, Any]:
    facts["casatools_loaded"] = "casatools" in sys.modules
    return facts


def _open_sub(pt: Any, path: str, name: str) -> Any:
    mark(f"open subtable {name}")
    return pt.table(os.path.join(path, name), readonly=True, ack=False, lockoptions="usernoread")


def _read_main(pt: Any, main: Any, path: str, facts: dict[str, Any]) -> None:
    nrows = int(main.nrows())
    columns = list(main.colnames())
    keywords = main.getkeywords()
    facts.update(
        nrows=nrows,
        columns=columns,
        table_type=str(main.info().get("type", "")),
        keywords=sorted(str(k) for k in keywords),
    )
    facts["subtables"] = subtables = {}
    for name in (*REQUIRED_SUBTABLES, "SOURCE"):
        entry: dict[str, Any] = {"keyword": name in keywords}
        try:
            sub = _open_sub(pt, path, name)
        except RuntimeError as error:
            entry.update(opens=False, error=str(error).strip())
        else:
            entry.update(opens=True, nrows=int(sub.nrows()))
            sub.close()
        subtables[name] = entry
    facts["spw"] = _spectral_windows(pt, path)
    facts["polarization"] = _polarizations(pt, path)
    facts["data_description"] = _data_descriptions(pt, path)
    facts["history"] = _history(pt, path)
    facts["coldesc"] = {
        name: _coldesc(main, name)
        for name in ("DATA", "MODEL_DATA", "CORRECTED_DATA")
        if name in columns
    }
    facts["data_managers"] = _data_managers(main, nrows)
    if nrows == 0:
        return
    facts["id_ranges"] = _id_ranges(main, columns)
    facts["ddid_use"] = ddid_use = _ddid_use(main, columns)
    if "MODEL_DATA" in columns:
        facts["model_sample"] = _model_sample(main, nrows, ddid_use)


def _safe(func: Any, *args: Any) -> Any:
    try:
        return func(*args)
    except RuntimeError:
        return None


def _spectral_windows(pt: Any, path: str) -> list[dict[str, Any]] | None:
    import numpy as np

    try:
        spw = _open_sub(pt, path, "SPECTRAL_WINDOW")
    except RuntimeError:
        return None
    rows = []
    try:
        mark("read SPECTRAL_WINDOW")
        for row in range(spw.nrows()):
            entry: dict[str, Any] = {"row": row, "num_chan": int(spw.getcell("NUM_CHAN", row))}
            lengths: dict[str, int | None] = {}
            for column in SPW_ARRAYS:
                if column in spw.colnames() and spw.iscelldefined(column, row):
                    lengths[column] = int(np.asarray(spw.getcell(column, row)).size)
                else:
                    lengths[column] = None
            entry["lengths"] = lengths
            if lengths.get("CHAN_FREQ"):
                freq = np.asarray(spw.getcell("CHAN_FREQ", row), dtype=float)
                entry["freq_nonfinite"] = int((~np.isfinite(freq)).sum())
                entry["freq_nonpositive"] = int((freq[np.isfinite(freq)] <= 0).sum())
            rows.append(entry)
    finally:
        spw.close()
    return rows


def _polarizations(pt: Any, path: str) -> list[dict[str, Any]] | None:
    import numpy as np

    try:
        pol = _open_sub(pt, path, "POLARIZATION")
    except RuntimeError:
        return None
    try:
        mark("read POLARIZATION")
        return [
            {
                "row": row,
                "num_corr": int(pol.getcell("NUM_CORR", row)),
                "corr_type_len": int(np.asarray(pol.getcell("CORR_TYPE", row)).size)
                if pol.iscelldefined("CORR_TYPE", row)
                else None,
            }
            for row in range(pol.nrows())
        ]
    finally:
        pol.close()


def _data_descriptions(pt: Any, path: str) -> list[dict[str, Any]] | None:
    try:
        dd = _open_sub(pt, path, "DATA_DESCRIPTION")
    except RuntimeError:
        return None
    try:
        mark("read DATA_DESCRIPTION")
        return [
            {
                "row": row,
                "spw": int(dd.getcell("SPECTRAL_WINDOW_ID", row)),
                "pol": int(dd.getcell("POLARIZATION_ID", row)),
            }
            for row in range(dd.nrows())
        ]
    finally:
        dd.close()


def _history(pt: Any, path: str) -> dict[str, Any] | None:
    try:
        history = _open_sub(pt, path, "HISTORY")
    except RuntimeError:
        return None
    try:
        mark("read HISTORY")
        n = int(history.nrows())
        entry: dict[str, Any] = {"nrows": n}
        if n:
            last = n - 1
            for column in ("APPLICATION", "ORIGIN", "MESSAGE"):
                if column in history.colnames():
                    entry[column.lower()] = str(history.getcell(column, last))[:200]
        return entry
    finally:
        history.close()


def _coldesc(main: Any, name: str) -> dict[str, Any]:
    desc = main.getcoldesc(name)
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


def _data_managers(main: Any, nrows: int) -> dict[str, Any]:
    """Ask for the data-manager info, then read the first and last cell of every column.

    A storage file cut short passes the reads of row 0 that users usually try;
    the last row, or the data manager's own header, lives in the missing part.
    """
    mark("getdminfo")
    result: dict[str, Any] = {"error": None, "managers": []}
    try:
        info = main.getdminfo()
    except RuntimeError as error:
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
                except RuntimeError as error:
                    entry["read_errors"][column] = f"row {row}: {str(error).strip()}"
                    break
        result["managers"].append(entry)
    return result


def _id_ranges(main: Any, columns: list[str]) -> dict[str, list[int]]:
    ranges = {}
    for column in ID_COLUMNS:
        if column in columns:
            mark(f"read column {column}")
            values = _safe(main.getcol, column)
            if values is not None and len(values):
                ranges[column] = [int(values.min()), int(values.max())]
    return ranges


def _ddid_use(main: Any, columns: list[str]) -> list[dict[str, Any]]:
    """For every DATA_DESC_ID in use: its row count, first row and that row's cell shapes."""
    import numpy as np

    if "DATA_DESC_ID" not in columns:
        return []
    ddid = _safe(main.getcol, "DATA_DESC_ID")
    if ddid is None:
        return []
    values, first, counts = np.unique(ddid, return_index=True, return_counts=True)
    use = []
    for value, row, count in zip(values, first, counts, strict=True):
        entry: dict[str, Any] = {"ddid": int(value), "first_row": int(row), "rows": int(count)}
        for column in ("DATA", "MODEL_DATA"):
            if column in columns:
                mark(f"shape of {column} row {row}")
                shape = _safe(main.getcolshapestring, column, int(row), 1)
                entry[f"{column.lower()}_shape"] = _parse_shape(shape[0]) if shape else None
        use.append(entry)
    return use


def _parse_shape(text: str) -> list[int] | None:
    # python-casacore prints shapes in numpy's order ("[8, 4]" = 8 chan x 4 corr),
    # the order getcell and getcoldesc use too.
    text = text.strip().strip("[]")
    if not text:
        return None
    return [int(part) for part in text.split(",")]


def _model_sample(main: Any, nrows: int, ddid_use: list[dict[str, Any]]) -> dict[str, Any]:
    """Read a sample of MODEL_DATA rows: NaN/Inf count and cells whose shape differs from DATA."""
    import numpy as np

    rows = {int(r) for r in np.linspace(0, nrows - 1, min(nrows, MODEL_SAMPLE_ROWS))}
    rows.update(int(d["first_row"]) for d in ddid_use)
    nonfinite = 0
    mismatches: list[dict[str, Any]] = []
    errors: list[str] = []
    has_data = "DATA" in main.colnames()
    for row in sorted(rows):
        mark(f"sample MODEL_DATA row {row}")
        try:
            if not main.iscelldefined("MODEL_DATA", row):
                continue
            model = np.asarray(main.getcell("MODEL_DATA", row))
            nonfinite += int((~np.isfinite(model)).sum())
            if has_data and main.iscelldefined("DATA", row):
                # The shape comes from the data manager's index, not the DATA
                # bytes: damage in DATA is reported by _data_managers, not here.
                data_shape = _parse_shape(main.getcolshapestring("DATA", row, 1)[0])
                if list(model.shape) != data_shape and len(mismatches) < 8:
                    mismatches.append({"row": row, "model": list(model.shape), "data": data_shape})
        except RuntimeError as error:
            errors.append(f"row {row}: {str(error).strip()}")
            break
    return {
        "rows": len(rows),
        "nonfinite": nonfinite,
        "shape_mismatches": mismatches,
        "errors": errors,
    }
