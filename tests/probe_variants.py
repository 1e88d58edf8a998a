"""MS variants for the probe tests, each built for real from the session's simulated MSs.

Altered with python-casacore in a subprocess (``casacore_script``), through the
file system, or written by the real WSClean (/usr/bin/wsclean, Debian's 3.1).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import casacore_script

WSCLEAN = "/usr/bin/wsclean"
NOBODY = 65534
Builder = Callable[[Path], Path]


def reality(build: Builder, tmp_path: Path, complist: Path) -> dict[str, str]:
    """Run guarded ft(usescratch=True) and clearcal, each on its own fresh copy of a variant.

    Each task runs real casatasks in a fresh sandbox child (journal=False: reality is
    what CASA itself does, not the journal's pre-flight). Returns ``{task: "ok" or the
    crash kind}``.
    """
    import casaguard

    outcome = {}
    for task in ("ft", "clearcal"):
        ms = build(tmp_path / f"reality-{task}.ms")
        try:
            if task == "ft":
                casaguard.ft(
                    vis=str(ms),
                    complist=str(complist),
                    usescratch=True,
                    timeout=300,
                    lock_timeout=3,
                    journal=False,
                )
            else:
                casaguard.clearcal(vis=str(ms), timeout=300, lock_timeout=3, journal=False)
            outcome[task] = "ok"
        except casaguard.CasaCrash as error:
            outcome[task] = error.kind
    return outcome


def real_verdict(outcome: dict[str, str]) -> str:
    """``safe`` when both ft and clearcal succeeded for real, else ``unsafe``."""
    return "safe" if all(kind == "ok" for kind in outcome.values()) else "unsafe"


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

    # --- issue 14: what ft/clearcal open, as CASA opens it -------------------------------
    # Subtables are reached through the main table's keywords; rows the main table refers
    # to must exist; every column must be readable through its data manager.

    def _zero_rows(self, dest: Path, subtable: str) -> Path:
        """A consistent, empty copy of one subtable (its description and data managers kept)."""
        ms = self.ms_factory(dest)
        sub = ms / subtable
        casacore_script(
            f"""
            from casacore import tables as pt
            t = pt.table({str(sub)!r}, ack=False)
            t.copy({str(sub) + ".empty"!r}, deep=True, copynorows=True).close()
            t.close()
            """
        )
        shutil.rmtree(sub)
        os.rename(f"{sub}.empty", sub)
        return ms  # type: ignore[no-any-return]

    def spw_zero_rows(self, dest: Path) -> Path:
        return self._zero_rows(dest, "SPECTRAL_WINDOW")

    def pol_zero_rows(self, dest: Path) -> Path:
        return self._zero_rows(dest, "POLARIZATION")

    def dd_zero_rows(self, dest: Path) -> Path:
        return self._zero_rows(dest, "DATA_DESCRIPTION")

    def field_zero_rows(self, dest: Path) -> Path:
        return self._zero_rows(dest, "FIELD")

    def antenna_zero_rows(self, dest: Path) -> Path:
        return self._zero_rows(dest, "ANTENNA")

    def feed_zero_rows(self, dest: Path) -> Path:
        return self._zero_rows(dest, "FEED")

    def pointing_zero_rows(self, dest: Path) -> Path:
        # Many MSs carry no pointing table rows (split, import without pointing): CASA copes.
        return self._zero_rows(dest, "POINTING")

    def observation_zero_rows(self, dest: Path) -> Path:
        return self._zero_rows(dest, "OBSERVATION")

    def state_zero_rows(self, dest: Path) -> Path:
        return self._zero_rows(dest, "STATE")

    def truncated_pointing(self, dest: Path) -> Path:
        # POINTING's storage cut in half: a table CASA opens but ft/clearcal may not read.
        ms = self.ms_factory(dest)
        for storage in sorted((ms / "POINTING").glob("table.f*")):
            os.truncate(storage, storage.stat().st_size // 2)
        return ms  # type: ignore[no-any-return]

    def spw_rows_removed(self, dest: Path) -> Path:
        # removerows of the only row leaves table.dat saying 1 row and the SSM index
        # holding none (python-casacore 3.8.1): the inconsistent state the issue quotes,
        # 'SSMIndex::getIndex - access to non-existing row 0 in column NUM_CHAN'.
        ms = self.ms_factory(dest)
        casacore_script(
            f"""
            from casacore import tables as pt
            t = pt.table({str(ms / "SPECTRAL_WINDOW")!r}, readonly=False, ack=False)
            t.removerows([0])
            t.close()
            """
        )
        return ms  # type: ignore[no-any-return]

    def _set_main(self, dest: Path, column: str, value: int, row: int = 0) -> Path:
        ms = self.ms_factory(dest)
        casacore_script(
            f"""
            from casacore import tables as pt
            t = pt.table({str(ms)!r}, readonly=False, ack=False)
            t.putcell({column!r}, {row}, {value})
            t.close()
            """
        )
        return ms  # type: ignore[no-any-return]

    def ddid_out_of_range(self, dest: Path) -> Path:
        return self._set_main(dest, "DATA_DESC_ID", 3)

    def field_id_out_of_range(self, dest: Path) -> Path:
        return self._set_main(dest, "FIELD_ID", 2)

    def antenna1_out_of_range(self, dest: Path) -> Path:
        return self._set_main(dest, "ANTENNA1", 8, row=5)

    def _keywords(self, dest: Path, code: str) -> Path:
        ms = self.ms_factory(dest)
        casacore_script(
            f"""
            from casacore import tables as pt
            t = pt.table({str(ms)!r}, readonly=False, ack=False)
            {code}
            t.close()
            """
        )
        return ms  # type: ignore[no-any-return]

    def keyword_missing(self, dest: Path) -> Path:
        # The SPECTRAL_WINDOW directory is intact; only the main table's keyword is gone.
        return self._keywords(dest, 't.removekeyword("SPECTRAL_WINDOW")')

    def keyword_to_missing_table(self, dest: Path) -> Path:
        # The keyword names a table that no longer exists (a path left by an old move):
        # python-casacore only stores a keyword to a table that exists, so point it at a
        # copy, then delete the copy.
        gone = dest.with_name(dest.name + ".gone")
        ms = self._keywords(
            dest,
            f'pt.table("{dest}/FIELD", ack=False).copy("{gone}", deep=True).close()\n'
            f'            t.putkeyword("FIELD", "Table: {gone}")',
        )
        shutil.rmtree(gone)
        return ms

    def keyword_elsewhere(self, dest: Path) -> Path:
        # FIELD's keyword names an identical FIELD table in another MS next to it.
        other = self.ms_factory(dest.with_name(dest.name + ".other"))
        return self._keywords(dest, f't.putkeyword("FIELD", "Table: {other}/FIELD")')

    def subtable_renamed(self, dest: Path) -> Path:
        ms = self.ms_factory(dest)
        os.rename(ms / "SPECTRAL_WINDOW", ms / "SPECTRAL_WINDOW.bak")
        return ms  # type: ignore[no-any-return]

    def truncated_subtable(self, dest: Path) -> Path:
        # SPECTRAL_WINDOW/table.f0 holds its StandardStMan columns: cut it in half.
        ms = self.ms_factory(dest)
        storage = ms / "SPECTRAL_WINDOW" / "table.f0"
        os.truncate(storage, storage.stat().st_size // 2)
        return ms  # type: ignore[no-any-return]

    def subtable_table_dat_missing(self, dest: Path) -> Path:
        ms = self.ms_factory(dest)
        os.unlink(ms / "FIELD" / "table.dat")
        return ms  # type: ignore[no-any-return]

    def stale_lock(self, dest: Path) -> Path:
        # A writer SIGKILLed while holding a permanent write lock: its table.lock stays,
        # with the dead pid's lock request recorded in it; the kernel lock died with it.
        ms = self.ms_factory(dest)
        holder = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(
                f"""
                import time
                from casacore import tables as pt
                t = pt.table({str(ms)!r}, readonly=False, ack=False, lockoptions="permanent")
                s = pt.table({str(ms / "HISTORY")!r}, readonly=False, ack=False,
                             lockoptions="permanent")
                print("locked", flush=True)
                time.sleep(600)
                """
            )],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stdout.close()
        return ms  # type: ignore[no-any-return]

    def via_symlink(self, dest: Path) -> Path:
        # The MS lives elsewhere; the path given to the probe and to CASA is a symlink.
        real = self.ms_factory(dest.with_name(dest.name + ".real"))
        dest.symlink_to(real, target_is_directory=True)
        return dest

    def foreign_world_writable(self, dest: Path) -> Path:
        # Written by another user (uid 65534) who left everything world-writable.
        ms = self.ms_factory(dest)
        for item in [ms, *ms.rglob("*")]:
            os.chown(item, NOBODY, NOBODY)
            item.chmod(0o777 if item.is_dir() else 0o666)
        return ms  # type: ignore[no-any-return]

    def _model(self, dest: Path, manager: str, *, fill: bool = True, **kwargs: Any) -> Path:
        """Variable-shape MODEL_DATA in a data manager of its own (``manager``: its TYPE)."""
        ms = self.ms_factory(dest, **kwargs)
        remove_scratch_columns(ms)
        casacore_script(
            f"""
            import numpy as np
            from casacore import tables as pt
            t = pt.table({str(ms)!r}, readonly=False, ack=False)
            desc = pt.makearrcoldesc("MODEL_DATA", 0j, ndim=2, valuetype="complex")
            dminfo = {{"TYPE": {manager!r}, "NAME": "ModelOwn", "SPEC": {{}}}}
            t.addcols(pt.maketabdesc(desc), dminfo)
            if {fill!r}:
                for row in range(t.nrows()):
                    t.putcell("MODEL_DATA", row, np.ones(t.getcell("DATA", row).shape, complex))
            t.close()
            """
        )
        return ms  # type: ignore[no-any-return]

    def model_standard_stman(self, dest: Path) -> Path:
        # Variable-shape MODEL_DATA in a StandardStMan of its own (neither CASA's nor WSClean's).
        return self._model(dest, "StandardStMan")

    def model_variable_multi_spw(self, dest: Path) -> Path:
        # Variable-shape MODEL_DATA (TiledShapeStMan, as CASA makes it) on 4+16 channel spws.
        return self._model(dest, "TiledShapeStMan", nchan=(4, 16))

    def model_cells_undefined(self, dest: Path) -> Path:
        # MODEL_DATA exists (variable shape, TiledShapeStMan) but no cell was ever written.
        return self._model(dest, "TiledShapeStMan", fill=False)

    def wsclean_predict(self, dest: Path) -> Path:
        # WSClean images (writing its fixed-shape MODEL_DATA), then -predict rewrites it.
        ms = self.after_wsclean(dest)
        image = dest.parent / f"{dest.name}-img" / "img"
        result = subprocess.run(
            [WSCLEAN, "-predict", "-size", "64", "64", "-scale", "30asec",
             "-name", str(image), str(ms)],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout[-2000:]
        return ms

    def truncated_main_table_dat(self, dest: Path) -> Path:
        # The main table's own description cut short (subtables intact): a damaged MS,
        # not a directory that was never an MS.
        ms = self.ms_factory(dest)
        table_dat = ms / "table.dat"
        os.truncate(table_dat, table_dat.stat().st_size // 2)
        return ms  # type: ignore[no-any-return]

    def relative_path(self, dest: Path) -> Path:
        # Built like clean; the tests pass it relative to the working directory.
        return self.clean(dest)

    def lock_newer_than_data(self, dest: Path) -> Path:
        # A restore that put back every data file but not table.lock: the lock's sync data
        # (row/column counts, change counters) is that of a later state (scratch columns
        # removed), the files those of the earlier one.
        ms = self.ms_factory(dest)
        saved = dest.with_name(dest.name + ".saved")
        shutil.copytree(ms, saved)
        remove_scratch_columns(ms)
        for item in saved.iterdir():
            if item.is_file() and item.name != "table.lock":
                shutil.copy2(item, ms / item.name)
        shutil.rmtree(saved)
        return ms  # type: ignore[no-any-return]

    def no_lock_files(self, dest: Path) -> Path:
        # Every table.lock deleted (e.g. an rsync that excluded them): casacore recreates them.
        ms = self.ms_factory(dest)
        for lock in ms.rglob("table.lock"):
            lock.unlink()
        return ms  # type: ignore[no-any-return]

    def foreign_read_only_antenna(self, dest: Path) -> Path:
        # ANTENNA's files (not HISTORY/SOURCE) owned by uid 65534, mode 0644, dir 0755.
        ms = self.ms_factory(dest)
        for item in [ms / "ANTENNA", *(ms / "ANTENNA").iterdir()]:
            os.chown(item, NOBODY, NOBODY)
            item.chmod(0o755 if item.is_dir() else 0o644)
        return ms  # type: ignore[no-any-return]

    def corrected_fixed_multi_spw(self, dest: Path) -> Path:
        # CORRECTED_DATA (not MODEL_DATA) fixed-shape like spw 0, on 4+16 channel spws.
        ms = self.ms_factory(dest, nchan=(4, 16))
        remove_scratch_columns(ms)
        casacore_script(
            f"""
            import numpy as np
            from casacore import tables as pt
            t = pt.table({str(ms)!r}, readonly=False, ack=False)
            shape = t.getcell("DATA", 0).shape
            desc = pt.makearrcoldesc("CORRECTED_DATA", 0j, shape=list(shape),
                                     valuetype="complex")
            t.addcols(pt.maketabdesc(desc))
            t.close()
            """
        )
        return ms  # type: ignore[no-any-return]

    def keyword_wrong_table(self, dest: Path) -> Path:
        # The SPECTRAL_WINDOW keyword names the MS's FIELD table.
        return self._keywords(dest, f't.putkeyword("SPECTRAL_WINDOW", "Table: {dest}/FIELD")')

    def main_column_missing(self, dest: Path) -> Path:
        # A required main-table column (WEIGHT) removed.
        return self._keywords(dest, 't.removecols(["WEIGHT"])')

    def spw_column_missing(self, dest: Path) -> Path:
        # A required SPECTRAL_WINDOW column (CHAN_WIDTH) removed.
        ms = self.ms_factory(dest)
        casacore_script(
            f"""
            from casacore import tables as pt
            t = pt.table({str(ms / "SPECTRAL_WINDOW")!r}, readonly=False, ack=False)
            t.removecols(["CHAN_WIDTH"])
            t.close()
            """
        )
        return ms  # type: ignore[no-any-return]

    def foreign_read_only_main_lock(self, dest: Path) -> Path:
        # Only the main table's table.lock belongs to uid 65534, mode 0644.
        ms = self.ms_factory(dest)
        os.chown(ms / "table.lock", NOBODY, NOBODY)
        (ms / "table.lock").chmod(0o644)
        return ms  # type: ignore[no-any-return]

    def no_source(self, dest: Path) -> Path:
        # The optional SOURCE subtable removed, keyword and directory.
        ms = self._keywords(dest, 't.removekeyword("SOURCE")')
        shutil.rmtree(ms / "SOURCE")
        return ms
