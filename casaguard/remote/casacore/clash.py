"""``casaguard doctor --deep``: load python-casacore AND casatools in one throwaway child.

This is the one module that deliberately puts both in one process: it
reproduces, for real, the heap clash of python-casacore < 3.8.1 with
casatools (``free(): invalid pointer`` or SIGSEGV depending on import order).
It runs only in a sandbox child, whose death the parent classifies.
"""

from __future__ import annotations

import importlib
from typing import Any


def import_both(casacore_first: bool, table: str | None = None) -> dict[str, Any]:
    """Import both libraries in the given order and use each once.

    Args:
        casacore_first: import python-casacore before casatools (else after).
        table: a casacore table both open read-only, if given.

    Returns:
        The two versions, when the process survived.
    """
    order = ["casacore.tables", "casatools"] if casacore_first else ["casatools", "casacore.tables"]
    modules = {name: importlib.import_module(name) for name in order}
    pt, casatools = modules["casacore.tables"], modules["casatools"]
    if table:
        handle = pt.table(table, readonly=True, ack=False, lockoptions="usernoread")
        handle.close()
        tb = casatools.table()
        tb.open(table, nomodify=True)
        tb.close()
    import casacore

    return {
        "python-casacore": getattr(casacore, "__version__", "?"),
        "casatools": str(casatools.version_string()),
    }
