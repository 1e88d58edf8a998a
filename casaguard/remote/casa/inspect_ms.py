"""Read-only looks at an MS with casatools, for the demo and the tests."""

from __future__ import annotations

from typing import Any

import casatools


def column_summary(vis: str, column: str) -> dict[str, Any]:
    """Return shape, mean amplitude and all-zero flag of ``column`` (read-only)."""
    import numpy as np

    tb = casatools.table()
    tb.open(vis, nomodify=True)
    try:
        if column not in tb.colnames():
            return {"present": False}
        data = tb.getcol(column)
    finally:
        tb.close()
    amplitude = np.abs(data)
    return {
        "present": True,
        "shape": list(data.shape),
        "mean_amplitude": float(amplitude.mean()),
        "all_zero": bool(not amplitude.any()),
    }


def read_column(vis: str, column: str) -> Any:
    """Return a whole column as a numpy array (read-only)."""
    tb = casatools.table()
    tb.open(vis, nomodify=True)
    try:
        return tb.getcol(column)
    finally:
        tb.close()
