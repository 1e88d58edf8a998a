"""How the static probe touches casacore: each risky read announced, each failure kept as a fact.

Every reader of the static probe (main table, subtables, their rows) goes
through ``Reader``, so that an exception casacore raises becomes an entry of
``facts["read_errors"]`` instead of the end of the probe, and announces a
risky read with ``mark`` first, so that a crash names what it died on. They
live apart from the table readers because every reader shares them; so does
``missing_required``, since the main table and every subtable are held
against the MS definition the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

MARKER = "casaguard-probe:"


def mark(step: str) -> None:
    """Say what is about to be read; survives a crash in the job's output file."""
    print(MARKER, step, flush=True)


class Reader:
    """Runs each casacore read, turning its exception into a recorded fact."""

    def __init__(self, facts: dict[str, Any]) -> None:
        self.errors: list[dict[str, Any]] = facts.setdefault("read_errors", [])

    def attempt(
        self,
        table: str,
        column: str | None,
        row: int | None,
        func: Callable[..., Any],
        *args: Any,
    ) -> tuple[bool, Any]:
        """``(True, func(*args))``, or ``(False, None)`` with the exception recorded."""
        try:
            return True, func(*args)
        except Exception as error:  # noqa: BLE001 -- any casacore failure is a fact about the MS
            self.errors.append(
                {
                    "table": table,
                    "column": column,
                    "row": row,
                    "exc_type": type(error).__name__,
                    "error": str(error).strip(),
                }
            )
            return False, None

    def cell(self, name: str, table: Any, column: str, row: int) -> tuple[bool, Any]:
        """Read one cell: ``(True, value)``, value None for a cell never written."""
        ok, defined = self.attempt(name, column, row, table.iscelldefined, column, row)
        if not ok or not defined:
            return ok, None
        return self.attempt(name, column, row, table.getcell, column, row)


def missing_required(pt: Any, name: str, columns: list[str]) -> list[str]:
    """Columns the MS v2 definition requires of table ``name`` ("MAIN" or a subtable)."""
    try:
        desc = pt.required_ms_desc(name)
    except Exception:  # noqa: BLE001 -- a table the MS definition does not know
        return []
    required = {k for k, v in desc.items() if isinstance(v, dict) and "valueType" in v}
    return sorted(required - set(columns))
