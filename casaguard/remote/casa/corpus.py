"""Child-side halves of crash-corpus reproducers that need CASA (or python-casacore).

Run only inside a sandbox child. The clash reproducer is the one place in the
package that imports python-casacore, and it does so on purpose, in a child
that exists to die of it.
"""

from __future__ import annotations

import sys
from typing import Any


def import_casacore_then_casatools(casacore_dir: str) -> str:
    """Import python-casacore from ``casacore_dir`` and then casatools in one process.

    With python-casacore 3.7.1 and casatools 6.7.0.31 the second import dies
    of SIGSEGV (both bring their own casacore; dask-ms#378, python-casacore#251).

    Returns:
        The two versions, if the import survives (the clash is fixed).
    """
    sys.path.insert(0, casacore_dir)
    import casacore
    import casacore.tables
    import casatools

    return f"python-casacore {casacore.__version__} + casatools {casatools.version_string()}"


def ft_error_then_heap_abort(vis: str, complist: str) -> Any:
    """The field report's sequence: ``ft`` raises a CASA error, then the heap aborts.

    The CASA error is real (the caller made ``table.dat`` unwritable); the abort
    is glibc's real ``double free or corruption (out)`` on a corrupted chunk,
    standing in for the teardown of CASA's never-closed imager tool.
    """
    import casatasks

    from casaguard.corpus import crashers

    try:
        casatasks.ft(vis=vis, complist=complist, usescratch=True)
    except RuntimeError:
        crashers.double_free_out()
    return "ft did not raise"
