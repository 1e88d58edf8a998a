"""The library as a pipeline uses it: path objects, kept CASA logs, component lists
without casatools in the caller."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import casa_script
from structlog.testing import capture_logs

import casaguard
from casaguard import Source
from casaguard.sandbox import casalog
from casaguard.sandbox.jobdir import Ref

READ = Ref("casaguard.remote.casa.inspect_ms", "read_column")


def test_ft_and_clearcal_take_path_objects(ms: Path, complist: Path, no_leaks: None) -> None:
    """vis= and complist= as pathlib.Path work (CASA gets a str): ft fills MODEL_DATA, and
    clearcal(addmodel=True) resets it to a 1 Jy unpolarized model (XX = YY = 1, XY = YX = 0)."""
    assert casaguard.ft(vis=ms, complist=complist, usescratch=True) is None
    model = casaguard.call(READ, str(ms), "MODEL_DATA")
    assert np.abs(model).max() > 0.5
    assert casaguard.clearcal(vis=ms, addmodel=True) is None
    reset = casaguard.call(READ, str(ms), "MODEL_DATA")
    np.testing.assert_array_equal(reset[[0, 3]], 1 + 0j)
    np.testing.assert_array_equal(reset[[1, 2]], 0j)


def test_run_task_takes_a_path_object(ms: Path, no_leaks: None) -> None:
    """run_task passes a pathlib.Path vis to CASA as a str (listobs reads it and returns)."""
    summary = casaguard.run_task("listobs", vis=ms)
    assert summary["nfields"] == 1


def test_casalog_keeps_success_and_failure(
    ms: Path, complist: Path, tmp_path: Path, no_leaks: None
) -> None:
    """casalog= appends each call's CASA log to the named file: a successful ft's whole log,
    then a failing ft's log with CASA's own error line."""
    kept = tmp_path / "logs" / "casa-pipeline.log"
    kept.parent.mkdir()
    casaguard.ft(vis=ms, complist=complist, usescratch=True, casalog=kept)
    first = kept.read_text()
    assert "##### Begin Task: ft" in first and "##### End Task: ft" in first
    assert f"complist='{complist}'" in first
    with pytest.raises(casaguard.CasaTaskError):
        casaguard.ft(vis=ms, complist=tmp_path / "missing.cl", casalog=kept)
    both = kept.read_text()
    assert both.startswith(first)
    assert both.count("##### Begin Task: ft") == 2
    assert "Componentlist " + str(tmp_path / "missing.cl") + " cannot be found" in both


def test_casalog_environment_variable(
    ms: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_leaks: None
) -> None:
    """$CASAGUARD_CASALOG appends every call's CASA log (here two clearcals) to that file."""
    kept = tmp_path / "env.log"
    monkeypatch.setenv(casalog.CASALOG_ENV, str(kept))
    casaguard.clearcal(vis=ms)
    casaguard.clearcal(vis=ms)
    assert kept.read_text().count("##### Begin Task: clearcal") == 2


def test_casalog_in_a_missing_directory_is_bad_input(ms: Path, tmp_path: Path) -> None:
    """A casalog whose directory does not exist is one-line InvalidInput before any child."""
    target = tmp_path / "nope" / "casa.log"
    with pytest.raises(casaguard.InvalidInput, match="no such directory") as caught:
        casaguard.clearcal(vis=ms, casalog=target)
    assert "\n" not in str(caught.value)
    assert not target.parent.exists()


def test_make_complist_matches_casatools_in_process(
    ms: Path, tmp_path: Path, no_leaks: None
) -> None:
    """make_complist's list (an off-centre point source with a spectral index and a
    gaussian) gives, through ft, exactly the MODEL_DATA of the same list built with
    casatools and used by plain casatasks.ft in one process."""
    sources = [
        Source("J2000 10h00m05.0 +40d01m00.0", flux_jy=2.5, freq="1.4GHz", spectral_index=-0.7),
        Source(
            "J2000 09h59m50.0 +39d58m00.0",
            flux_jy=0.8,
            shape="gaussian",
            major="20arcsec",
            minor="10arcsec",
            position_angle="30deg",
            label="blob",
        ),
    ]
    guarded_cl = casaguard.make_complist(tmp_path / "field.cl", sources)
    assert guarded_cl == str(tmp_path / "field.cl")
    reference = tmp_path / "reference.ms"
    shutil.copytree(ms, reference)
    casaguard.ft(vis=ms, complist=guarded_cl, usescratch=True)
    in_process_cl = tmp_path / "in-process.cl"
    result = casa_script(
        f"""
        import casatools, casatasks
        cl = casatools.componentlist()
        cl.addcomponent(dir="J2000 10h00m05.0 +40d01m00.0", flux=[2.5, 0, 0, 0], fluxunit="Jy",
                        freq="1.4GHz", shape="point", spectrumtype="spectral index", index=-0.7)
        cl.addcomponent(dir="J2000 09h59m50.0 +39d58m00.0", flux=[0.8, 0, 0, 0], fluxunit="Jy",
                        freq="1.4GHz", shape="gaussian", majoraxis="20arcsec",
                        minoraxis="10arcsec", positionangle="30deg")
        cl.rename({str(in_process_cl)!r})
        cl.close()
        casatasks.ft(vis={str(reference)!r}, complist={str(in_process_cl)!r}, usescratch=True)
        """
    )
    assert result.returncode == 0, result.stderr
    guarded = casaguard.call(READ, str(ms), "MODEL_DATA")
    in_process = casaguard.call(READ, str(reference), "MODEL_DATA")
    assert np.abs(guarded).max() > 0.5
    # Off-centre: the phases vary across baselines, so the position really is used.
    assert np.ptp(np.angle(guarded[0, 0])) > 1.0
    np.testing.assert_allclose(guarded, in_process, rtol=1e-6, atol=1e-6)
    assert {"casatools", "casatasks"}.isdisjoint(sys.modules)


@pytest.mark.parametrize(
    ("sources", "message"),
    [
        ([], "non-empty list"),
        ([Source("10h00m00 +40d00m00")], "FRAME LONGITUDE LATITUDE"),
        ([Source("J2000 10h00m00 +40d00m00", shape="ring")], "not one of point"),
        ([Source("J2000 10h00m00 +40d00m00", shape="disk")], "needs major and minor"),
        ([Source("J2000 10h00m00 +40d00m00", flux_jy=float("nan"))], "finite"),
    ],
)
def test_make_complist_bad_source_is_one_line(
    sources: list[Source], message: str, tmp_path: Path
) -> None:
    """A malformed source list is one-line InvalidInput, and nothing is written."""
    with pytest.raises(casaguard.InvalidInput, match=message) as caught:
        casaguard.make_complist(tmp_path / "x.cl", sources)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "x.cl").exists()


def test_make_complist_never_overwrites(complist: Path) -> None:
    """An existing path is refused, and the existing list is left as it was."""
    before = sorted(p.name for p in complist.iterdir())
    with pytest.raises(casaguard.InvalidInput, match="never overwrites"):
        casaguard.make_complist(complist, [Source("J2000 10h00m00 +40d00m00")])
    assert sorted(p.name for p in complist.iterdir()) == before


def test_lock_holder_with_a_multiline_command_is_one_line(ms: Path, complist: Path) -> None:
    """A holder started as `python -c` with a multi-line program: MsLocked's message stays
    one line, the newlines shown as \\n."""
    program = textwrap.dedent(
        f"""
        import time
        from casacore.tables import table
        t = table({str(ms)!r}, readonly=False, ack=False)
        t.lock(write=True)
        print("locked", flush=True)
        time.sleep(120)
        """
    )
    holder = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(casaguard.MsLocked) as caught:
            casaguard.ft(vis=ms, complist=complist, usescratch=True, lock_timeout=1.0)
    finally:
        holder.kill()
        holder.wait()
    message = str(caught.value)
    assert "\n" not in message and "\r" not in message
    assert f"locked by pid {holder.pid}" in message
    assert "\\nimport time\\nfrom casacore.tables import table\\n" in message
    assert "\n" not in caught.value.holder_cmdline


def test_missing_complist_is_logged_as_an_error_not_a_crash(
    ms: Path, tmp_path: Path, no_leaks: None
) -> None:
    """ft with a missing complist is logged outcome="error" (the task raised, the child
    lived); a segfault is still outcome="crash"."""
    with capture_logs() as captured, pytest.raises(casaguard.CasaTaskError):
        casaguard.ft(vis=ms, complist=tmp_path / "missing.cl")
    classified = next(e for e in captured if e["event"] == "crash_classified")
    assert (classified["outcome"], classified["kind"]) == ("error", "casa-error")
    from casaguard.corpus import crashers

    with capture_logs() as captured, pytest.raises(casaguard.Segfault):
        casaguard.call(crashers.segfault, casa=False)
    classified = next(e for e in captured if e["event"] == "crash_classified")
    assert (classified["outcome"], classified["kind"]) == ("crash", "segfault")


def test_missing_path_names_the_cwd_only_when_relative(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A missing absolute vis is reported as is; a relative one says what it is relative to."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(casaguard.InvalidInput) as caught:
        casaguard.clearcal(vis=tmp_path / "gone.ms")
    assert str(caught.value) == f"{tmp_path / 'gone.ms'}: no such Measurement Set"
    with pytest.raises(casaguard.InvalidInput) as caught:
        casaguard.clearcal(vis="gone.ms")
    assert str(caught.value) == f"gone.ms: no such Measurement Set (relative to {tmp_path})"
