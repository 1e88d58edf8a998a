"""Guarded casatasks on real simulated MSs: drop-in signatures, same results, CASA's failures."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import DROP_ROOT_POWERS, casa_script, casacore_script

import casaguard
from casaguard.corpus.casacore_cache import casacore_clash_dir
from casaguard.sandbox.jobdir import Ref

FT_WRITABLE_ERROR = "Please make sure MS is writable when using Imager::ft"


def _casaguard_params(func: object) -> list[tuple[str, object]]:
    params = inspect.signature(func).parameters.values()  # type: ignore[arg-type]
    return [(p.name, p.default) for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]


@pytest.mark.parametrize("name", ["ft", "clearcal"])
def test_parameters_match_casatasks(name: str) -> None:
    """casaguard.ft / clearcal take casatasks' own parameters, in order, with the same defaults."""
    real = casaguard.call(Ref("casaguard.remote.casa.tasks", "task_parameters"), name)
    assert _casaguard_params(getattr(casaguard, name)) == real


@pytest.mark.parametrize("name", ["ft", "clearcal"])
def test_drop_ins_take_run_tasks_own_options(name: str) -> None:
    """After the CASA parameters, ft / clearcal take run_task's keyword-only options (bar
    ``writes``, which a drop-in knows), with the same defaults."""

    def keyword_only(func: object) -> list[tuple[str, object]]:
        params = inspect.signature(func).parameters.values()  # type: ignore[arg-type]
        return [(p.name, p.default) for p in params if p.kind is p.KEYWORD_ONLY]

    own = [(n, d) for n, d in keyword_only(casaguard.run_task) if n != "writes"]
    assert keyword_only(getattr(casaguard, name)) == own


def test_a_misspelt_drop_in_keyword_is_pythons_type_error() -> None:
    """casaguard.ft(bogus=1) is the TypeError any Python function gives, naming ft."""
    with pytest.raises(TypeError, match=r"^ft\(\) got an unexpected keyword argument 'bogus'$"):
        casaguard.ft(vis="x.ms", bogus=1)  # type: ignore[call-arg]


def test_guarded_ft_writes_what_in_process_ft_writes(
    ms: Path, complist: Path, tmp_path: Path, no_leaks: None
) -> None:
    """MODEL_DATA from casaguard.ft equals, element for element, in-process casatasks.ft's."""
    reference = tmp_path / "reference.ms"
    subprocess.run(["cp", "-r", str(ms), str(reference)], check=True)
    casaguard.ft(vis=str(ms), complist=str(complist), usescratch=True)
    result = casa_script(
        f"""
        import casatasks
        casatasks.ft(vis={str(reference)!r}, complist={str(complist)!r}, usescratch=True)
        """
    )
    assert result.returncode == 0, result.stderr
    read = Ref("casaguard.remote.casa.inspect_ms", "read_column")
    guarded = casaguard.call(read, str(ms), "MODEL_DATA")
    in_process = casaguard.call(read, str(reference), "MODEL_DATA")
    assert guarded.shape == in_process.shape == (4, 8, 168)
    assert np.abs(guarded).max() > 0.5  # the point source really landed
    np.testing.assert_array_equal(guarded, in_process)


def _scribble_scratch_columns(vis: str) -> None:
    """Fill MODEL_DATA with 3 and CORRECTED_DATA with 7: values no clearcal leaves."""
    from casacore.tables import table

    with table(vis, readonly=False, ack=False) as main:
        for column, value in (("MODEL_DATA", 3), ("CORRECTED_DATA", 7)):
            main.putcol(column, main.getcol(column) * 0 + value)


def test_guarded_clearcal_writes_and_returns_what_in_process_clearcal_does(
    ms: Path, tmp_path: Path, no_leaks: None
) -> None:
    """Guarded clearcal(addmodel=True) returns None and resets MODEL_DATA and CORRECTED_DATA
    exactly as in-process casatasks.clearcal does: unity model, corrected = data."""
    casaguard.call(_scribble_scratch_columns, str(ms), casa=False, flavor="casacore")
    reference = tmp_path / "reference.ms"
    subprocess.run(["cp", "-r", str(ms), str(reference)], check=True)
    assert casaguard.clearcal(vis=str(ms), addmodel=True) is None
    result = casa_script(
        f"""
        import casatasks
        assert casatasks.clearcal(vis={str(reference)!r}, addmodel=True) is None
        """
    )
    assert result.returncode == 0, result.stderr
    read = Ref("casaguard.remote.casa.inspect_ms", "read_column")
    columns = {}
    for column in ("DATA", "MODEL_DATA", "CORRECTED_DATA"):
        columns[column] = casaguard.call(read, str(ms), column)
        np.testing.assert_array_equal(columns[column], casaguard.call(read, str(reference), column))
    np.testing.assert_array_equal(columns["CORRECTED_DATA"], columns["DATA"])
    unity = np.zeros((4, 8, 168), complex)
    unity[[0, 3]] = 1  # XX and YY
    np.testing.assert_array_equal(columns["MODEL_DATA"], unity)


def test_caller_never_imports_casa(ms: Path, complist: Path) -> None:
    """After guarded calls, this process has no casatools, casatasks or casacore module."""
    casaguard.ft(vis=str(ms), complist=str(complist), usescratch=True)
    casaguard.clearcal(vis=str(ms))
    loaded = {name.split(".")[0] for name in sys.modules}
    assert not loaded & {"casatools", "casatasks", "casacore", "casaconfig"}


def test_unknown_task_is_a_clear_error() -> None:
    """A task name casatasks does not have gives InvalidInput naming it."""
    with pytest.raises(casaguard.InvalidInput, match="no task named 'ftt'"):
        casaguard.run_task("ftt", vis="x.ms")


def test_unknown_parameter_is_a_clear_error() -> None:
    """A parameter the task does not take gives InvalidInput, not a crash."""
    with pytest.raises(casaguard.InvalidInput, match=r"ft: .*complistt"):
        casaguard.run_task("ft", vis="x.ms", complistt="a.cl")


def test_missing_ms_is_rejected_before_any_child(tmp_path: Path) -> None:
    """ft or clearcal on a missing path or a non-MS directory is a one-line InvalidInput."""
    with pytest.raises(casaguard.InvalidInput, match="no such Measurement Set"):
        casaguard.ft(vis=str(tmp_path / "nope.ms"), complist="x.cl")
    with pytest.raises(casaguard.InvalidInput, match="not a Measurement Set"):
        casaguard.clearcal(vis=str(tmp_path))


def test_casa_parameter_check_is_a_casa_error_with_a_cause(tmp_path: Path) -> None:
    """CASA's own rejection of a missing vis (listobs: no pre-flight) is a CasaTaskError + cause."""
    with pytest.raises(casaguard.CasaTaskError) as caught:
        casaguard.run_task("listobs", vis=str(tmp_path / "nope.ms"))
    assert "the vis parameter must be a path that exists" in (caught.value.casa_error or "")
    assert "likely cause: the vis path does not exist" in str(caught.value)
    assert isinstance(caught.value, AssertionError), "plain listobs raises AssertionError"


def test_known_writer_via_run_task_gets_the_pre_flight(tmp_path: Path) -> None:
    """run_task("ft") on a missing vis is the same one-line InvalidInput as casaguard.ft."""
    with pytest.raises(casaguard.InvalidInput, match="no such Measurement Set"):
        casaguard.run_task("ft", vis=str(tmp_path / "nope.ms"), complist="x.cl")


def _run_unprivileged(script: str, tmp_path: Path) -> dict[str, object]:
    """Run a casaguard script as root without its file-mode powers; return its JSON output."""
    path = tmp_path / "unprivileged.py"
    path.write_text(textwrap.dedent(script))
    result = subprocess.run(
        [*DROP_ROOT_POWERS, sys.executable, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    # casaguard's own structlog events may share stdout: take the JSON line.
    last_json = [line for line in result.stdout.splitlines() if line.startswith("{")][-1]
    return json.loads(last_json)  # type: ignore[no-any-return]


def test_field_report_sequence_casa_error_then_heap_abort(
    ms: Path, complist: Path, tmp_path: Path
) -> None:
    """CASA's real 'MS is writable' error, then a real double free: one exception with both."""
    (ms / "table.dat").chmod(0o444)  # what WSClean run as another user leaves behind
    facts = _run_unprivileged(
        f"""
        import json, casaguard
        from casaguard.corpus import crashers

        def ft_then_abort(vis, cl):
            import casatasks
            try:
                casatasks.ft(vis=vis, complist=cl, usescratch=True)
            except RuntimeError:
                crashers.double_free_out()  # the abort CASA's cleanup hits in the field
            return "ft did not fail"

        try:
            casaguard.call(ft_then_abort, {str(ms)!r}, {str(complist)!r})
            print(json.dumps({{"kind": "none"}}))
        except casaguard.CasaCrash as error:
            print(json.dumps({{**error.facts(), "cls": type(error).__name__}}, default=str))
        """,
        tmp_path,
    )
    assert facts["cls"] == "HeapCorruption"
    assert (facts["kind"], facts["signal"]) == ("double-free", "SIGABRT")
    assert facts["detail"] == "double free or corruption (out)"
    assert facts["casa_error"] == FT_WRITABLE_ERROR
    assert f'after CASA error "{FT_WRITABLE_ERROR}"' in str(facts["message"])


def test_ft_on_unwritable_table_dat_names_the_cause(
    ms: Path, complist: Path, tmp_path: Path
) -> None:
    """ft with table.dat not writable raises CasaTaskError with the field report's exact text."""
    (ms / "table.dat").chmod(0o444)
    facts = _run_unprivileged(
        f"""
        import json, casaguard
        try:
            # journal=False: no pre-flight check, CASA itself meets the read-only table.dat.
            casaguard.ft(
                vis={str(ms)!r}, complist={str(complist)!r}, usescratch=True, journal=False
            )
            print(json.dumps({{"kind": "none"}}))
        except casaguard.CasaCrash as error:
            print(json.dumps(error.facts(), default=str))
        """,
        tmp_path,
    )
    assert facts["kind"] == "casa-error"
    assert str(facts["casa_error"]).startswith(FT_WRITABLE_ERROR)
    assert "Imager.cc, line 4309" in str(facts["casa_error"])
    assert "WSClean run as another user" in str(facts["message"])


def test_clearcal_on_unwritable_ms_dir_is_a_cxx_terminate(ms: Path, tmp_path: Path) -> None:
    """An unwritable MS directory makes clearcal die of an uncaught casacore::AipsError."""
    ms.chmod(0o555)
    try:
        facts = _run_unprivileged(
            f"""
            import json, casaguard
            try:
                # journal=False: no pre-flight check, CASA itself meets the read-only MS.
                casaguard.clearcal(vis={str(ms)!r}, addmodel=True, journal=False)
                print(json.dumps({{"kind": "none"}}))
            except casaguard.CasaCrash as error:
                print(json.dumps(error.facts(), default=str))
            """,
            tmp_path,
        )
    finally:
        ms.chmod(0o755)
    assert (facts["kind"], facts["signal"]) == ("cxx-terminate", "SIGABRT")
    assert "casacore::AipsError" in str(facts["detail"])


def test_silent_ft_failure_raises_casa_severe(ms: Path, complist: Path) -> None:
    """ft that only logs SEVERE (MODEL_DATA shaped unlike DATA) and returns is not a success."""
    casacore_script(
        f"""
        from casacore.tables import table, makearrcoldesc, maketabdesc
        t = table({str(ms)!r}, readonly=False, ack=False)
        if "MODEL_DATA" in t.colnames():
            t.removecols(["MODEL_DATA"])
        desc = makearrcoldesc("MODEL_DATA", 0j, shape=[4, 4], valuetype="complex")
        dminfo = {{"TYPE": "StandardStMan", "NAME": "wsc", "SPEC": {{}}}}
        t.addcols(maketabdesc(desc), dminfo=dminfo)
        t.close()
        """
    )
    with pytest.raises(casaguard.CasaSevereError) as caught:
        casaguard.ft(vis=str(ms), complist=str(complist), usescratch=True)
    assert caught.value.kind == "casa-severe"
    assert any("conformance" in line for line in caught.value.severe_lines)
    assert not any("MeasTable::dUTC" in line for line in caught.value.severe_lines)
    # strict=False is the documented opt-out: the silent failure is returned as CASA returns it.
    assert casaguard.ft(vis=str(ms), complist=str(complist), usescratch=True, strict=False) is None


def test_ms_locked_by_another_process_names_the_holder(ms: Path, complist: Path) -> None:
    """A live process's write lock makes ft fail with MsLocked naming its pid and command."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                from casacore.tables import table
                t = table({str(ms)!r}, readonly=False, ack=False)
                t.lock(write=True)
                print("locked", flush=True)
                time.sleep(120)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        with pytest.raises(casaguard.MsLocked) as caught:
            casaguard.ft(vis=str(ms), complist=str(complist), usescratch=True, lock_timeout=1.0)
        assert time.monotonic() - started < 30
        error = caught.value
        assert error.kind == "locked" and error.holder_pid == holder.pid
        assert error.lock_type == "write" and "time.sleep(120)" in error.holder_cmdline
        assert f"locked by pid {holder.pid}" in str(error)
    finally:
        holder.kill()
        holder.wait()
    # The lock file was never touched: the next call just works.
    casaguard.ft(vis=str(ms), complist=str(complist), usescratch=True)


@pytest.mark.parametrize("casacore_version", ["installed", "3.7.1"])
def test_user_script_importing_python_casacore_runs_clean(
    ms: Path, complist: Path, tmp_path: Path, casacore_version: str
) -> None:
    """A script whose top level imports python-casacore (also 3.7.1, which crashes beside
    casatools in one process) can call casaguard.ft: the child never re-runs the script."""
    env = dict(os.environ)
    if casacore_version != "installed":
        # Only this script's process sees 3.7.1; the venv keeps its own python-casacore.
        env["PYTHONPATH"] = os.pathsep.join([str(casacore_clash_dir()), env.get("PYTHONPATH", "")])
    script = tmp_path / "pipeline.py"
    script.write_text(
        textwrap.dedent(
            f"""
            from casacore.tables import table   # the field report's pipeline does this
            import casaguard

            def model_amplitude(vis):
                import casatools
                tb = casatools.table()
                tb.open(vis)
                value = abs(tb.getcell("MODEL_DATA", 0)[0, 0])
                tb.close()
                return float(value)

            if __name__ == "__main__":
                casaguard.ft(vis={str(ms)!r}, complist={str(complist)!r}, usescratch=True)
                print("amplitude", casaguard.call(model_amplitude, {str(ms)!r}))
                with table({str(ms)!r}, ack=False) as t:
                    print("rows", t.nrows())
                import casacore
                print("python-casacore", casacore.__version__)
            """
        )
    )
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "amplitude 1.0" in result.stdout and "rows 168" in result.stdout
    if casacore_version != "installed":
        assert f"python-casacore {casacore_version}" in result.stdout
