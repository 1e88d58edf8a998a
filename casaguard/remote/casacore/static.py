"""The static probe: read an MS as CASA reads it, with python-casacore, read-only; return facts.

Runs only in a throwaway child (``casaguard.call(Ref(...), casa=False)``):
reading a damaged storage file can kill the process, and that death is itself
the evidence (the parent classifies it). Before each risky read a marker line
goes to stdout -- the child's fd 1 is the job's output file -- so that a crash
names the data manager or column it died on.

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

Where the reading lives: ``reader`` (the marker, failures kept as facts),
``lock_sync`` (a table.lock's sync data, as bytes), ``subtables`` (reached
through keywords), ``subtable_rows`` (what the metadata subtables say),
``main_table`` (column descriptions, data managers, shapes, MODEL_DATA).
This module opens the main table and puts the facts together; it is the one
the parent names (``Ref("casaguard.remote.casacore.static", "inspect_ms")``)
and the casacore template imports to warm them all.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from casaguard.preflight.table_rules import REQUIRED as REQUIRED_SUBTABLES
from casaguard.remote.casacore.lock_sync import read_lock_sync
from casaguard.remote.casacore.main_table import (
    read_coldesc,
    read_data_managers,
    read_ddid_use,
    read_id_ranges,
    read_model_sample,
)
from casaguard.remote.casacore.reader import Reader, mark, missing_required
from casaguard.remote.casacore.subtable_rows import (
    read_data_descriptions,
    read_history,
    read_polarizations,
    read_spectral_windows,
)
from casaguard.remote.casacore.subtables import Opener, read_subtables


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
    reader = Reader(facts)
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


def _read_main(pt: Any, reader: Reader, main: Any, path: str, facts: dict[str, Any]) -> None:
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
        missing_columns=missing_required(pt, "MAIN", columns),
        lock_sync=read_lock_sync(path),
    )
    facts["subtables"] = read_subtables(pt, reader, path, keywords)
    opener = Opener(pt, reader, facts["subtables"])
    facts["spw"] = read_spectral_windows(opener, reader)
    facts["polarization"] = read_polarizations(opener, reader)
    facts["data_description"] = read_data_descriptions(opener, reader)
    facts["history"] = read_history(opener, reader)
    facts["coldesc"] = {
        name: read_coldesc(reader, main, name)
        for name in ("DATA", "MODEL_DATA", "CORRECTED_DATA")
        if name in columns
    }
    facts["data_managers"] = read_data_managers(reader, main, nrows)
    if nrows == 0:
        return
    facts["id_ranges"] = read_id_ranges(reader, main, columns)
    facts["ddid_use"] = ddid_use = read_ddid_use(reader, main, columns)
    if "MODEL_DATA" in columns:
        facts["model_sample"] = read_model_sample(reader, main, nrows, ddid_use, columns)
