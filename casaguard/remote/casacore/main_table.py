"""The main table's columns: descriptions, data managers, ID ranges, cell shapes, MODEL_DATA.

These are the reads that can kill the child on a damaged storage file (a data
manager's header, a last row cut off), so each is marked first. They are apart
from the subtable readers because they read the visibilities' own table,
large and read through its data managers, where those read small metadata
tables.
"""

from __future__ import annotations

from typing import Any

from casaguard.remote.casacore.reader import Reader, mark

ID_COLUMNS = {
    "DATA_DESC_ID": "DATA_DESCRIPTION",
    "FIELD_ID": "FIELD",
    "ANTENNA1": "ANTENNA",
    "ANTENNA2": "ANTENNA",
}
#: casacore ColumnDesc option bit for a fixed-shape array column.
FIXED_SHAPE = 4
MODEL_SAMPLE_ROWS = 64


def read_coldesc(reader: Reader, main: Any, name: str) -> dict[str, Any] | None:
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


def read_data_managers(reader: Reader, main: Any, nrows: int) -> dict[str, Any]:
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


def read_id_ranges(reader: Reader, main: Any, columns: list[str]) -> dict[str, list[int]]:
    ranges = {}
    for column in ID_COLUMNS:
        if column in columns:
            mark(f"read column {column}")
            ok, values = reader.attempt("", column, None, main.getcol, column)
            if ok and values is not None and len(values):
                ranges[column] = [int(values.min()), int(values.max())]
    return ranges


def read_ddid_use(reader: Reader, main: Any, columns: list[str]) -> list[dict[str, Any]]:
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


def read_model_sample(
    reader: Reader, main: Any, nrows: int, ddid_use: list[dict[str, Any]], columns: list[str]
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
                # bytes: damage in DATA is reported by read_data_managers, not here.
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
