"""Reach every subtable as CASA does: through the main table's keywords; read its end cells.

CASA opens the main table, then every subtable through the main table's
keywords (``SPECTRAL_WINDOW`` -> ``Table: <path>``, stored relative to the
MS), never by joining a directory name; so does this module. A directory that
exists but is not reachable by keyword is invisible to CASA, and a keyword
that points elsewhere is followed.

Opening a subtable and reading its first and last cells is this module's;
what the rows of SPECTRAL_WINDOW, POLARIZATION, DATA_DESCRIPTION and HISTORY
say is ``subtable_rows``', which opens them through ``Opener`` once this
module has found that they open.
"""

from __future__ import annotations

import os
from typing import Any

from casaguard.preflight.table_rules import REQUIRED as REQUIRED_SUBTABLES
from casaguard.remote.casacore.lock_sync import read_lock_sync
from casaguard.remote.casacore.reader import Reader, mark, missing_required

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


def keyword_target(value: Any) -> str | None:
    """The table a keyword value names (``"Table: /abs/path"``), or None."""
    if isinstance(value, str) and value.startswith(TABLE_PREFIX):
        return value[len(TABLE_PREFIX) :].strip()
    return None


def read_subtables(
    pt: Any, reader: Reader, path: str, keywords: dict[str, Any]
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
            entry["missing_columns"] = missing_required(pt, name, list(sub_columns or []))
            if entry["nrows"] and name in READ_CELLS:
                _read_ends(reader, sub, name, entry["nrows"])
        finally:
            sub.close()
    return result


def _open(pt: Any, target: str) -> Any:
    return pt.table(target, readonly=True, ack=False, lockoptions="usernoread")


def _read_ends(reader: Reader, table: Any, name: str, nrows: int) -> None:
    """Read the first and last cell of every column of a subtable, through its data manager."""
    _, columns = reader.attempt(name, None, None, table.colnames)
    for column in columns or []:
        for row in sorted({0, nrows - 1}):
            mark(f"read {name}.{column} row {row}")
            ok, _ = reader.cell(name, table, column, row)
            if not ok:
                break


class Opener:
    """Opens a subtable where its keyword says, once it is known to open."""

    def __init__(self, pt: Any, reader: Reader, subtables: dict[str, dict[str, Any]]) -> None:
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
