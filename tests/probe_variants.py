"""MS variants for the probe tests, each built for real from the session's simulated MSs.

Altered with python-casacore in a subprocess (``casacore_script``), through the
file system, or written by the real WSClean (/usr/bin/wsclean, Debian's 3.1).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import casacore_script

WSCLEAN = "/usr/bin/wsclean"
NOBODY = 65534
Builder = Callable[[Path], Path]


def remove_scratch_columns(ms: Path) -> None:
    casacore_script(
        f"""
        from casacore import tables as pt
        t = pt.table({str(ms)!r}, readonly=False, ack=False)
        t.removecols([c for c in ("MODEL_DATA", "CORRECTED_DATA") if c in t.colnames()])
        t.close()
        """
    )


def run_wsclean(ms: Path, image_dir: Path) -> subprocess.CompletedProcess[str]:
    image_dir.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [WSCLEAN, "-size", "64", "64", "-scale", "30asec", "-niter", "10", "-mgain", "0.8",
         "-name", str(image_dir / "img"), str(ms)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


class Variants:
    """Builders of each MS variant from the session's simulated MSs."""

    def __init__(self, ms_factory: Any) -> None:
        self.ms_factory = ms_factory

    def clean(self, dest: Path) -> Path:
        return self.ms_factory(dest)  # type: ignore[no-any-return]

    def after_wsclean(self, dest: Path) -> Path:
        ms = self.ms_factory(dest)
        remove_scratch_columns(ms)
        result = run_wsclean(ms, dest.parent / f"{dest.name}-img")
        assert result.returncode == 0, result.stdout[-2000:]
        return ms  # type: ignore[no-any-return]

    def multi_spw_fixed_model(self, dest: Path) -> Path:
        # WSClean's own layout: MODEL_DATA joins the StandardStMan 'SSM' as a
        # fixed-shape column shaped like DATA's first row (spw 0: 4 channels).
        ms = self.ms_factory(dest, nchan=(4, 16))
        remove_scratch_columns(ms)
        casacore_script(
            f"""
            import numpy as np
            from casacore import tables as pt
            t = pt.table({str(ms)!r}, readonly=False, ack=False)
            shape = t.getcell("DATA", 0).shape
            desc = pt.makearrcoldesc("MODEL_DATA", 0j, shape=list(shape), valuetype="complex",
                                     datamanagertype="StandardStMan", datamanagergroup="SSM")
            t.addcols(pt.maketabdesc(desc))
            t.putcol("MODEL_DATA", np.zeros((t.nrows(),) + shape, dtype=complex))
            t.close()
            """
        )
        return ms  # type: ignore[no-any-return]

    def mangled_spw(self, dest: Path) -> Path:
        ms = self.ms_factory(dest)
        casacore_script(
            f"""
            from casacore import tables as pt
            t = pt.table({str(ms / "SPECTRAL_WINDOW")!r}, readonly=False, ack=False)
            t.putcell("NUM_CHAN", 0, 16)
            t.close()
            """
        )
        return ms  # type: ignore[no-any-return]

    def missing_subtable(self, dest: Path) -> Path:
        ms = self.ms_factory(dest)
        shutil.rmtree(ms / "POLARIZATION")
        return ms  # type: ignore[no-any-return]

    def truncated_storage(self, dest: Path) -> Path:
        # table.f0 is the IncrementalStMan file (TIME, FIELD_ID, UVW...): cut 10% off.
        ms = self.ms_factory(dest)
        storage = ms / "table.f0"
        os.truncate(storage, storage.stat().st_size * 9 // 10)
        return ms  # type: ignore[no-any-return]

    def empty(self, dest: Path) -> Path:
        source = self.ms_factory(dest.with_name(dest.name + ".src"))
        casacore_script(
            f"""
            from casacore import tables as pt
            t = pt.table({str(source)!r}, ack=False)
            t.copy({str(dest)!r}, deep=True, copynorows=True).close()
            t.close()
            """
        )
        shutil.rmtree(source)
        return dest

    def read_only_dir(self, dest: Path) -> Path:
        ms = self.ms_factory(dest)
        ms.chmod(0o555)
        return ms  # type: ignore[no-any-return]

    def foreign_table_dat(self, dest: Path) -> Path:
        # The field report: WSClean run as another user rewrote table.dat as its own.
        ms = self.ms_factory(dest)
        os.chown(ms / "table.dat", NOBODY, NOBODY)
        return ms  # type: ignore[no-any-return]

    def read_only_history(self, dest: Path) -> Path:
        ms = self.ms_factory(dest)
        for item in (ms / "HISTORY").iterdir():
            item.chmod(0o444)
        (ms / "HISTORY").chmod(0o555)
        return ms  # type: ignore[no-any-return]

    def nan_model(self, dest: Path) -> Path:
        ms = self.ms_factory(dest)
        casacore_script(
            f"""
            import numpy as np
            from casacore import tables as pt
            t = pt.table({str(ms)!r}, readonly=False, ack=False)
            cell = t.getcell("MODEL_DATA", 0)
            cell[0, 0] = np.nan
            t.putcell("MODEL_DATA", 0, cell)
            t.close()
            """
        )
        return ms  # type: ignore[no-any-return]
