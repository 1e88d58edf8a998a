"""Canary preparation in a CASA child: copy a slice of an MS and write a model.

The slice keeps every subtable and, from the main table, the first rows of
every DATA_DESC_ID in use, with each column in the same data manager and
shape as the original (a deep copy of a row selection keeps the data-manager
layout). The original is opened ``nomodify`` and never written.
"""

from __future__ import annotations

from typing import Any

import casatools


def make_slice(ms: str, dest: str, complist: str, rows_per_ddid: int = 8) -> dict[str, Any]:
    """Copy a slice of ``ms`` to ``dest`` and write a one-source component list.

    Returns:
        ``{"rows": n, "ddids": [...], "dminfo_types": {column: type}}`` of the copy.
    """
    import numpy as np

    tb = casatools.table()
    tb.open(ms, nomodify=True)
    try:
        ddid = np.asarray(tb.getcol("DATA_DESC_ID"))
        rows: list[int] = []
        for value in np.unique(ddid):
            rows += [int(r) for r in np.flatnonzero(ddid == value)[:rows_per_ddid]]
        selection = tb.selectrows(sorted(rows))
        try:
            copy = selection.copy(dest, deep=True, valuecopy=False, returnobject=True)
            copy.close()
        finally:
            selection.close()
    finally:
        tb.close()
    _write_complist(ms, complist)
    tb.open(dest, nomodify=True)
    try:
        types = {c: str(tb.getcoldesc(c).get("dataManagerType", "")) for c in tb.colnames()}
        count = int(tb.nrows())
    finally:
        tb.close()
    return {"rows": count, "ddids": sorted(int(v) for v in np.unique(ddid)), "dminfo_types": types}


def _write_complist(ms: str, path: str) -> None:
    tb = casatools.table()
    tb.open(f"{ms}/FIELD", nomodify=True)
    try:
        ra, dec = (float(v) for v in tb.getcell("PHASE_DIR", 0)[:, 0])
    finally:
        tb.close()
    tb.open(f"{ms}/SPECTRAL_WINDOW", nomodify=True)
    try:
        freq = float(tb.getcell("REF_FREQUENCY", 0))
    finally:
        tb.close()
    cl = casatools.componentlist()
    try:
        cl.addcomponent(
            dir=f"J2000 {ra}rad {dec}rad", flux=1.0, fluxunit="Jy", freq=f"{freq}Hz", shape="point"
        )
        cl.rename(path)
    finally:
        cl.close(log=False)
