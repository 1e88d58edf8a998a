"""A real half-write followed by a real heap abort, for the journal's tests and demos.

CASA dies the way the field report shows -- glibc aborts on a corrupted heap --
and it may do so after it has written part of a column. This reproduces that
for real: casatools writes MODEL_DATA for the first part of the rows, flushes
it to disk, then the process dies of ``double free or corruption (out)``.
"""

from __future__ import annotations

from typing import Any

import casatools

from casaguard.corpus import crashers
from casaguard.remote.casa.tasks import run_casatask


def write_then_double_free(vis: str, column: str = "MODEL_DATA", fraction: float = 0.5) -> None:
    """Overwrite ``column`` in the first ``fraction`` of the rows, flush, then abort.

    The new values are ``2 * old + 1``, so every written cell differs from before.
    """
    tb = casatools.table()
    tb.open(vis, nomodify=False)
    rows = max(1, int(tb.nrows() * fraction))
    values = tb.getcol(column, 0, rows)
    tb.putcol(column, values * 2 + 1, 0, rows)
    tb.flush()  # the half-written column is on disk before the crash
    crashers.double_free_out()


def task_then_double_free(name: str, params: dict[str, Any]) -> None:
    """Run ``casatasks.<name>(**params)`` to the end, then abort before replying.

    The task has done all its writes (created columns included); the crash
    comes before the call could count as a success.
    """
    run_casatask(name, params)
    crashers.double_free_out()
