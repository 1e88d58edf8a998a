"""Child side of the repair's column fixes: where a column is stored, and removing it.

Runs only in a python-casacore child (``flavor="casacore"``). The parent asks
first (``column_storage``) so that it can back up exactly the files the removal
rewrites or deletes, then asks for the removal (``remove_column``). Nothing
else of the table is touched: casacore's ``removeColumn`` rewrites
``table.dat`` and, for a storage manager that holds only this column, deletes
its files; for one shared with other columns (WSClean adds MODEL_DATA to the
``StandardStMan`` that holds ANTENNA1/ANTENNA2), it frees the column's space
in that manager's files and leaves the other columns' values as they were.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from casaguard.journal.layout import files_of_data_manager

#: How many one-second attempts to get casacore's write lock before giving up.
LOCK_ATTEMPTS = 5


def _tables() -> Any:
    if "casatools" in sys.modules:
        raise RuntimeError("casatools is loaded in the casacore repair child: refusing to mix them")
    from casacore import tables as pt

    return pt


def column_storage(ms: str, column: str) -> dict[str, Any]:
    """Describe the data manager holding ``column`` of the main table, read-only.

    Returns:
        ``{"exists", "seqnr", "type", "name", "columns" (all columns of that
        manager), "files" (its files in the MS directory), "desc"}``.
    """
    pt = _tables()
    table = pt.table(ms, readonly=True, ack=False, lockoptions="usernoread")
    try:
        if column not in table.colnames():
            return {"exists": False}
        desc = table.getcoldesc(column)
        for manager in table.getdminfo().values():
            if column in manager["COLUMNS"]:
                seqnr = int(manager["SEQNR"])
                return {
                    "exists": True,
                    "seqnr": seqnr,
                    "type": str(manager["TYPE"]),
                    "name": str(manager["NAME"]),
                    "columns": [str(c) for c in manager["COLUMNS"]],
                    "files": files_of_data_manager(os.listdir(ms), seqnr),
                    "value_type": str(desc.get("valueType", "")),
                    "shape": [int(n) for n in desc["shape"]] if "shape" in desc else None,
                }
        return {"exists": True, "seqnr": None, "columns": [column], "files": []}
    finally:
        table.close()


def remove_column(ms: str, column: str) -> dict[str, Any]:
    """Remove ``column`` from the main table, holding casacore's write lock meanwhile.

    Returns:
        ``{"removed": bool, "columns": the table's columns afterwards}``.

    Raises:
        RuntimeError: the write lock could not be had (another process holds the MS).
    """
    pt = _tables()
    table = pt.table(ms, readonly=False, ack=False, lockoptions="user")
    try:
        # Raises RuntimeError when another process keeps the lock for LOCK_ATTEMPTS seconds.
        table.lock(True, LOCK_ATTEMPTS)
        try:
            removed = column in table.colnames()
            if removed:
                table.removecols(column)
            table.flush()
            return {"removed": removed, "columns": [str(c) for c in table.colnames()]}
        finally:
            table.unlock()
    finally:
        table.close()
