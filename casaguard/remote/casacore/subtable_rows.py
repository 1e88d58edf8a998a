"""The metadata subtables, row by row: SPECTRAL_WINDOW, POLARIZATION, DATA_DESCRIPTION, HISTORY.

Per spectral window its channel count and array lengths, per polarization its
correlation count, each data description's spw/pol pair, and the last HISTORY
entry: the metadata ft and clearcal size their work by. The parent's rules
(``casaguard.preflight.rules``) hold them against each other and against the
main table's cells. Apart from ``subtables``, which only finds and opens the
tables: each reader here opens its table through ``Opener``, which returns
None for a subtable that did not open there.
"""

from __future__ import annotations

from typing import Any

from casaguard.remote.casacore.reader import Reader, mark
from casaguard.remote.casacore.subtables import Opener

SPW_ARRAYS = ("CHAN_FREQ", "CHAN_WIDTH", "EFFECTIVE_BW", "RESOLUTION")


def _rows(table: Any) -> int:
    return int(table.nrows())


def read_spectral_windows(opener: Opener, reader: Reader) -> list[dict[str, Any]] | None:
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


def read_polarizations(opener: Opener, reader: Reader) -> list[dict[str, Any]] | None:
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


def read_data_descriptions(opener: Opener, reader: Reader) -> list[dict[str, Any]] | None:
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


def read_history(opener: Opener, reader: Reader) -> dict[str, Any] | None:
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
