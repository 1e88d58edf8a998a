"""The remove-column fix: a MODEL_DATA or CORRECTED_DATA CASA cannot write is removed.

CASA creates either column itself, the way it wants it, when the column does
not exist. The column work runs in a python-casacore child
(``casaguard.remote.casacore.repair_columns``): the calling process never
imports casacore. ``PROTECTED_COLUMNS`` is the list no fix may touch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from casaguard.api import tasks
from casaguard.repairs.fix import Change
from casaguard.sandbox.jobdir import Ref

#: Columns no fix may remove or rewrite.
PROTECTED_COLUMNS = frozenset({"DATA", "FLOAT_DATA", "FLAG", "FLAG_ROW", "UVW", "WEIGHT", "SIGMA"})
CHILD_TIMEOUT_S = 120.0


@dataclass
class RemoveModelColumn:
    """A MODEL_DATA CASA cannot write (fixed shape that misfits a spw, or not complex): remove it.

    CASA's ft(usescratch=True) and clearcal(addmodel=True) then create MODEL_DATA
    the way CASA wants it (a variable-shape TiledShapeStMan column). The model
    it held is lost (the backup keeps it): re-predict it.
    """

    code: str
    ms: str
    column: str = "MODEL_DATA"
    name: str = "remove-column"
    why: str = (
        "CASA cannot write its model into this MODEL_DATA (a fixed shape cannot hold the cells "
        "of spectral windows of another shape; a non-complex column cannot hold visibilities); "
        "CASA creates MODEL_DATA itself, variable-shape and complex, when it does not exist"
    )
    consequence: str = (
        "the model in MODEL_DATA is lost (kept in the backup): re-predict it with ft "
        "(usescratch=True) or WSClean -predict"
    )
    storage: dict[str, Any] = field(default_factory=dict)

    def _storage(self) -> dict[str, Any]:
        if not self.storage:
            self.storage = tasks.call(
                Ref("casaguard.remote.casacore.repair_columns", "column_storage"),
                self.ms,
                self.column,
                casa=False,
                flavor="casacore",
                timeout=CHILD_TIMEOUT_S,
            )
        return self.storage

    def plan(self) -> list[Change]:
        info = self._storage()
        if not info.get("exists"):
            return []
        shared = [c for c in info.get("columns", []) if c != self.column]
        return [
            Change(
                "remove-column",
                self.ms,
                {
                    "column": self.column,
                    "shape": info.get("shape"),
                    "value_type": info.get("value_type"),
                    "dm_type": info.get("type"),
                    "dm_name": info.get("name"),
                    "shared_with": shared,
                    "files": info.get("files", []),
                },
                {"column": None, "created_by": "CASA's next ft(usescratch=True) or clearcal"},
            )
        ]

    def backup_files(self) -> list[str]:
        info = self._storage()
        return ["table.dat", "table.info", *info.get("files", [])] if info.get("exists") else []

    def apply(self, backup: Path) -> None:
        del backup
        if self.column in PROTECTED_COLUMNS:
            raise RuntimeError(f"refusing to remove {self.column}")
        tasks.call(
            Ref("casaguard.remote.casacore.repair_columns", "remove_column"),
            self.ms,
            self.column,
            casa=False,
            flavor="casacore",
            timeout=CHILD_TIMEOUT_S,
        )

    def rollback(self, backup: Path) -> None:
        del backup


@dataclass
class RemoveCorrectedColumn(RemoveModelColumn):
    """A fixed-shape CORRECTED_DATA that misfits a spw: remove it, as a misfit MODEL_DATA is.

    clearcal creates CORRECTED_DATA the way CASA wants it (variable-shape,
    filled from DATA) -- which is also what clearcal would have put into it.
    """

    column: str = "CORRECTED_DATA"
    why: str = (
        "CASA cannot write calibrated cells of spectral windows of another shape into a "
        "fixed-shape CORRECTED_DATA; clearcal creates CORRECTED_DATA itself, variable-shape, "
        "when it does not exist"
    )
    consequence: str = (
        "the calibrated data in CORRECTED_DATA is lost (kept in the backup): clearcal "
        "recreates it as a copy of DATA; re-run applycal"
    )
