"""One write path: the caller's own lock, pre-flight in the parent, timeouts, exceptions, signals.

Every guarded entry point (``ft``, ``clearcal``, ``run_task``, ``map_task``, the CLI's
``ft`` / ``task`` / ``run``) goes through ``run_task``; these tests drive them for real:
python-casacore in subprocesses (never in this process), real CASA in sandbox
children, real signals sent with ``kill``, a second user for planted job dirs.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import DROP_ROOT_POWERS, casa_script, casacore_script
from next_reader import assert_casa_can_use
from structlog.testing import capture_logs

import casaguard
from casaguard import casaenv
from casaguard.api import params as task_params
from casaguard.errors import SELF_LOCKED_MESSAGE, CasaTaskError
from casaguard.sandbox import pids, signals
from casaguard.sandbox.jobdir import Ref
from casaguard.sandbox.template import client as _template

CLI = str(Path(sys.executable).parent / "casaguard")
UNPRIVILEGED = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def _started(events: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [e for e in events if e["event"] in ("task_started", "template_starting")]


def _script(tmp_path: Path, code: str, *args: str, env: dict[str, str] | None = None) -> Any:
    """Run ``code`` as a caller script in a fresh interpreter; return the completed process."""
    path = tmp_path / "caller.py"
    path.write_text(textwrap.dedent(code))
    return subprocess.run(
        [sys.executable, str(path), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
        check=False,
    )


def _result(process: Any) -> Any:
    """What the script printed after ``RESULT `` (JSON: a list, a string, ...)."""
    assert process.returncode == 0, process.stderr
    lines = [line for line in process.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, process.stdout + process.stderr
    return json.loads(lines[-1][len("RESULT ") :])


# ------------------------------------------------------------------ build 3: the caller's lock

CALLER_HOLDS_TABLE = """
import json, os, sys, time
from casacore import tables
from structlog.testing import capture_logs
import casaguard

ms, complist, opened = sys.argv[1], sys.argv[2], sys.argv[3]
held = tables.table(os.path.join(ms, opened), readonly=False, ack=False)
out = {"pid": os.getpid()}
with capture_logs() as events:
    try:
        casaguard.ft(vis=ms, complist=complist, usescratch=True, lock_timeout=5)
        out["first"] = "ok"
    except casaguard.CasaCrash as error:
        out.update(first=error.kind, cls=type(error).__name__, holder=error.holder_pid,
                   message=str(error))
out["children"] = [e["event"] for e in events if e["event"] == "task_started"]
out["lock_kept"] = any(
    line.split()[4] == str(os.getpid()) for line in open("/proc/locks").read().splitlines()
)
held.unlock()  # what the message advises
casaguard.ft(vis=ms, complist=complist, usescratch=True, lock_timeout=5)
out["after_unlock"] = "ok"
held.close()
print("RESULT " + json.dumps(out))
"""


@pytest.mark.parametrize("opened", [".", "SOURCE"])
def test_a_table_the_caller_holds_open_is_reported_at_once(
    ms: Path, complist: Path, tmp_path: Path, opened: str
) -> None:
    """A pipeline holding its MS (or a subtable) open gets MsLocked naming itself, no child,
    and still holds its table's lock afterwards (the check never drops it)."""
    out = _result(_script(tmp_path, CALLER_HOLDS_TABLE, str(ms), str(complist), opened))
    assert (out["first"], out["cls"], out["holder"]) == ("locked", "MsLocked", out["pid"])
    assert out["lock_kept"], "the pre-check dropped the caller's own casacore lock"
    table = ms if opened == "." else ms / opened
    assert out["message"] == SELF_LOCKED_MESSAGE.format(
        task="ft", pid=out["pid"], lock_type="READ", table=os.path.normpath(table)
    )
    assert out["children"] == [], "no child may start while the caller blocks it"
    assert out["after_unlock"] == "ok"
    assert_casa_can_use(ms, complist)


LATE_HOLDER = """
import sys, time
from casacore.tables import table
sys.stdin.readline()
t = table(sys.argv[1], readonly=False, ack=False)
t.lock(write=True)
print("locked", flush=True)
time.sleep(120)
"""


def test_lock_taken_after_the_child_started_is_locked_not_a_signal(
    ms: Path, complist: Path, no_leaks: None
) -> None:
    """A lock another process takes once the child runs ends in MsLocked naming it, not SIGTERM."""
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(LATE_HOLDER), str(ms)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdin is not None and holder.stdout is not None

    def lock_once_started(
        _: Any, __: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        if event.get("event") == "task_started":
            assert holder.stdin is not None and holder.stdout is not None
            holder.stdin.write("go\n")
            holder.stdin.flush()
            assert holder.stdout.readline().strip() == "locked"
        return event

    try:
        with (
            capture_logs(processors=[lock_once_started]),
            pytest.raises(casaguard.MsLocked) as caught,
        ):
            # spawn: the child imports CASA for ~1 s, so the lock lands before ft opens the MS.
            casaguard.ft(
                vis=str(ms),
                complist=str(complist),
                usescratch=True,
                lock_timeout=1.0,
                mode="spawn",
            )
    finally:
        holder.kill()
        holder.wait()
    error = caught.value
    assert type(error) is casaguard.MsLocked and error.holder_pid == holder.pid
    assert "died with" not in str(error), "our own kill is reported as its reason"
    assert f"locked by pid {holder.pid}" in str(error) and "was killed" in str(error)
    assert "\n" not in str(error)
    assert_casa_can_use(ms, complist)


# --------------------------------------------------- build 4: one write path, checked in the parent


def test_parent_reads_the_same_signatures_as_casatasks_in_a_child() -> None:
    """The ast reading of casatasks' source gives inspect.signature's names for every task."""
    real = casaguard.call(Ref("casaguard.remote.casa.tasks", "all_task_parameter_names"))
    modules = task_params.task_modules()
    assert modules is not None and set(modules) == set(real)
    assert {"ft", "clearcal", "flagdata"} <= set(real)
    for name, (parameters, any_keyword) in real.items():
        found = task_params.signature(name)
        assert found is not None, name
        assert (list(found.parameters), found.any_keyword) == (parameters, any_keyword), name
    assert "casatasks" not in sys.modules and "casatools" not in sys.modules


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: casaguard.run_task("ftt", vis="x.ms"),
            "casatasks has no task named 'ftt' (did you mean 'ft'?)",
        ),
        (
            lambda: casaguard.run_task("ft", vis="x.ms", complistt="a.cl"),
            "ft: unknown parameter 'complistt' (did you mean 'complist'?)",
        ),
        (
            lambda: casaguard.run_task("flagdata", vis="x.ms", mdoe="summary"),
            "flagdata: unknown parameter 'mdoe' (did you mean 'mode'?)",
        ),
        (
            lambda: casaguard.run_task("clearcal", vis="x.ms", zzz=1),
            "clearcal: unknown parameter 'zzz' (it takes: vis, field, spw, intent, addmodel)",
        ),
    ],
)
def test_unknown_task_or_parameter_is_rejected_in_the_parent(call: Any, message: str) -> None:
    """An unknown task or misspelt parameter is a one-line InvalidInput before any child starts."""
    with capture_logs() as events, pytest.raises(casaguard.InvalidInput) as caught:
        call()
    assert str(caught.value) == message
    assert _started(events) == []


def test_misspelt_parameter_in_a_100_ms_batch_is_one_error_and_no_child(tmp_path: Path) -> None:
    """map_task rejects a misspelt parameter once for a whole 100-MS batch, starting no child."""
    items = [{"vis": str(tmp_path / f"ms{i}.ms"), "complistt": "a.cl"} for i in range(100)]
    with capture_logs() as events, pytest.raises(casaguard.InvalidInput, match="did you mean"):
        casaguard.map_task("ft", items)
    assert _started(events) == []


def test_cli_run_with_a_misspelt_parameter_exits_2_with_one_line(tmp_path: Path) -> None:
    """`casaguard run ft` over 100 MSs with a misspelt parameter: exit 2, one stderr line."""
    paths = [str(tmp_path / f"ms{i}.ms") for i in range(100)]
    result = subprocess.run(
        [
            CLI,
            "-v",
            "run",
            "ft",
            "--param",
            "complistt=a.cl",
            "--vis",
            *paths,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == ["casaguard: ft: unknown parameter 'complistt' (did you mean 'complist'?)"]
    assert result.stdout == ""


def test_cli_run_on_a_missing_ms_is_invalid_input_without_casa(tmp_path: Path) -> None:
    """`casaguard run ft` on a missing MS: the item is invalid-input, exit 2, no child started."""
    result = subprocess.run(
        [
            CLI,
            "-v",
            "run",
            "ft",
            "--json",
            "--param",
            "complist=a.cl",
            "--vis",
            str(tmp_path / "nope.ms"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    outcome = json.loads(result.stdout)["outcomes"][0]
    assert outcome["kind"] == "invalid-input"
    assert "no such Measurement Set" in outcome["error"]["message"]
    assert "task_started" not in result.stderr


@pytest.mark.parametrize("entry", ["run_task", "map_task"])
def test_run_task_and_map_task_journal_ft_like_casaguard_ft(
    ms: Path, complist: Path, tmp_path: Path, entry: str
) -> None:
    """run_task("ft") and map_task("ft") without writes= journal and restore like casaguard.ft."""
    missing = str(tmp_path / "missing.cl")
    if entry == "run_task":
        with pytest.raises(casaguard.CasaTaskError) as caught:
            casaguard.run_task("ft", vis=str(ms), complist=missing, usescratch=True)
        error: Any = caught.value
    else:
        [outcome] = casaguard.map_task(
            "ft", [{"vis": str(ms), "complist": missing, "usescratch": True}]
        )
        error = outcome.error
    assert isinstance(error, casaguard.CasaTaskError) and error.restored
    assert_casa_can_use(ms, complist)


def test_read_only_ms_is_refused_by_every_entry_point(ms: Path, tmp_path: Path) -> None:
    """A read-only MS gets the same one-line InvalidInput from ft, run_task and map_task."""
    ms.chmod(0o555)
    try:
        code = f"""
            import json, casaguard
            out = []
            calls = [
                lambda: casaguard.ft(vis={str(ms)!r}, complist="a.cl", usescratch=True),
                lambda: casaguard.run_task("ft", vis={str(ms)!r}, complist="a.cl"),
                lambda: casaguard.map_task("clearcal", [{{"vis": {str(ms)!r}}}])[0].unwrap(),
            ]
            for call in calls:
                try:
                    call()
                    out.append("ran")
                except casaguard.InvalidInput as error:
                    out.append(str(error))
            print("RESULT " + json.dumps(out))
        """
        path = tmp_path / "ro.py"
        path.write_text(textwrap.dedent(code))
        result = subprocess.run(
            [*DROP_ROOT_POWERS, sys.executable, str(path)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            cwd=tmp_path,
        )
        out = _result(result)
    finally:
        ms.chmod(0o755)
    assert len(out) == 3 and all("is read-only" in line and "\n" not in line for line in out)


# -------------------------------------------------------------------- build 6: timeouts


@pytest.mark.parametrize(
    "options",
    [
        {"timeout": 0},
        {"timeout": -1.0},
        {"timeout": float("nan")},
        {"timeout": "10"},
        {"timeout": True},
        {"lock_timeout": 0},
        {"lock_timeout": float("nan")},
        {"lock_timeout": None},
        {"lock_timeout": float("inf")},
    ],
)
def test_bad_timeouts_are_one_line_before_any_child(ms: Path, options: dict[str, Any]) -> None:
    """timeout / lock_timeout <= 0, NaN, infinite or not a number: InvalidInput, no child."""
    calls: list[Callable[[], Any]] = [
        lambda: casaguard.ft(vis=str(ms), complist="a.cl", **options),
        lambda: casaguard.run_task("clearcal", vis=str(ms), **options),
        lambda: casaguard.map_task("clearcal", [{"vis": str(ms)}], **options),
    ]
    if "timeout" in options:
        calls.append(lambda: casaguard.call(os.getpid, timeout=options["timeout"]))
    for call in calls:
        with capture_logs() as events, pytest.raises(casaguard.InvalidInput) as caught:
            call()
        assert "\n" not in str(caught.value) and "timeout" in str(caught.value)
        assert _started(events) == []


def test_template_start_up_does_not_count_towards_the_timeout(no_leaks: None) -> None:
    """A call whose timeout is shorter than the template's start-up still runs to its result."""
    _template.shutdown()
    with capture_logs() as events:
        value = casaguard.call(os.getpid, timeout=0.5, casa=False, mode="template")
    ready = [e for e in events if e["event"] == "template_ready"]
    assert ready and ready[0]["wait_s"] > 0.5, "the template must have started in this call"
    assert isinstance(value, int) and value != os.getpid()


# ---------------------------------------------------- build 7: exceptions callers keep catching


PLAIN_FT_ERROR = """
import json, sys, casatasks
try:
    casatasks.ft(vis=sys.argv[1], complist=sys.argv[2], usescratch=True)
    print("RESULT " + json.dumps(None))
except Exception as error:
    print("RESULT " + json.dumps([c.__name__ for c in type(error).__mro__]))
"""

GUARDED_FT_ERROR = """
import json, pickle, sys, casaguard
try:
    casaguard.ft(vis=sys.argv[1], complist=sys.argv[2], usescratch=True, journal=False)
except {caught} as error:
    again = pickle.loads(pickle.dumps(error))
    print("RESULT " + json.dumps([isinstance(error, casaguard.CasaTaskError), error.kind,
                                  isinstance(again, {caught}), type(again).__name__]))
"""


def _plain_ft_mro(ms: Path, complist: str, *, drop_root: bool) -> list[str]:
    path = ms.parent / "plain.py"
    path.write_text(PLAIN_FT_ERROR)
    result = casa_script(
        f"import runpy, sys; sys.argv = ['plain', {str(ms)!r}, {complist!r}]; "
        f"runpy.run_path({str(path)!r}, run_name='__main__')",
        drop_root=drop_root,
    )
    mro: list[str] = _result(result)
    return mro


def _obeying_file_modes(tmp_path: Path, name: str, code: str, *args: str, **kw: Any) -> Any:
    """Run ``code`` as a script with root's override of file modes dropped; return RESULT."""
    path = tmp_path / name
    path.write_text(code)
    result = subprocess.run(
        [*DROP_ROOT_POWERS, sys.executable, str(path), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
        **kw,
    )
    return result


def test_except_runtimeerror_catches_a_casa_error_from_guarded_ft(
    ms: Path, complist: Path, tmp_path: Path
) -> None:
    """CASA's RuntimeError (unwritable table.dat) is caught by `except RuntimeError` either way."""
    (ms / "table.dat").chmod(0o444)
    assert _plain_ft_mro(ms, str(complist), drop_root=True)[0] == "RuntimeError"
    code = textwrap.dedent(GUARDED_FT_ERROR.format(caught="RuntimeError"))
    result = _obeying_file_modes(tmp_path, "guarded.py", code, str(ms), str(complist))
    assert _result(result) == [True, "casa-error", True, "CasaTaskError[RuntimeError]"]


GUARDED_FT_REFUSED = """
import json, sys, casaguard
try:
    casaguard.ft(vis=sys.argv[1], complist=sys.argv[2], usescratch=True)
    print("RESULT " + json.dumps(None))
except RuntimeError as error:
    print("RESULT " + json.dumps([isinstance(error, casaguard.ReadOnlyMs),
                                  isinstance(error, casaguard.InvalidInput), str(error)]))
"""


def _digest(ms: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(ms)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(ms.rglob("*"))
        if p.is_file()
    }


def test_except_runtimeerror_catches_the_preflight_refusal_of_a_read_only_table_dat(
    ms: Path, complist: Path, tmp_path: Path
) -> None:
    """Plain ft raises RuntimeError on a read-only table.dat; guarded ft (journal on) refuses it
    before anything is touched with a one-line ReadOnlyMs that `except RuntimeError` catches."""
    (ms / "table.dat").chmod(0o444)
    assert _plain_ft_mro(ms, str(complist), drop_root=True)[0] == "RuntimeError"
    before = _digest(ms)
    result = _obeying_file_modes(tmp_path, "refused.py", GUARDED_FT_REFUSED, str(ms), str(complist))
    read_only, invalid_input, message = _result(result)
    assert read_only and invalid_input and "\n" not in message
    assert "table.dat is not writable" in message and "nothing was changed" in message
    assert _digest(ms) == before


PLAIN_OR_GUARDED_FT = """
import json, sys
vis, complist, guarded = sys.argv[1], sys.argv[2], sys.argv[3] == "guarded"
if guarded:
    import casaguard as tasks
else:
    import casatasks as tasks
try:
    tasks.ft(vis=vis, complist=complist, usescratch=True)
    print("RESULT " + json.dumps("returned"))
except Exception as error:
    print("RESULT " + json.dumps(type(error).__name__))
"""


@pytest.mark.parametrize(
    ("read_only", "plain", "guarded"),
    [
        # Measured on this machine's CASA (a sweep over every file of the main table,
        # HISTORY and SOURCE): ft never opens most data files for writing; it opens
        # MODEL_DATA's tiles and returns having logged SEVERE (a silent failure, which
        # strict mode raises); it opens HISTORY's and SOURCE's storage for update and raises.
        ("table.f1", "returned", "returned"),
        ("table.f4_TSM1", "returned, SEVERE", "CasaSevereError"),
        ("HISTORY/table.f0", "RuntimeError", "CasaTaskError[RuntimeError]"),
        ("SOURCE/table.f0i", "RuntimeError", "CasaTaskError[RuntimeError]"),
    ],
)
def test_a_read_only_data_file_fails_guarded_ft_exactly_when_it_fails_plain_ft(
    ms: Path, complist: Path, tmp_path: Path, read_only: str, plain: str, guarded: str
) -> None:
    """A read-only file other than table.dat is CASA's to judge, not the pre-flight's: guarded ft
    returns where plain ft does, raises where plain ft raises or logs SEVERE, and CASA's next
    reader and writer accept the MS afterwards."""
    twin = tmp_path / "twin" / ms.name
    shutil.copytree(ms, twin)
    outcomes = {}
    for side, vis in (("plain", twin), ("guarded", ms)):
        (vis / read_only).chmod(0o444)
        result = _obeying_file_modes(
            tmp_path,
            f"{side}.py",
            PLAIN_OR_GUARDED_FT,
            str(vis),
            str(complist),
            side,
            env=casaenv.child_environment() if side == "plain" else None,
        )
        outcome = _result(result)
        # A plain ft that returned may have failed silently: CASA's log goes to /dev/null
        # in casaenv's environment, but its SEVERE lines still reach stderr.
        silent_failure = side == "plain" and outcome == "returned" and "SEVERE" in result.stderr
        outcomes[side] = outcome + (", SEVERE" if silent_failure else "")
        (vis / read_only).chmod(0o644)
    assert outcomes == {"plain": plain, "guarded": guarded}
    assert_casa_can_use(ms, complist)


def test_except_valueerror_catches_a_missing_complist_from_guarded_ft(
    ms: Path, tmp_path: Path
) -> None:
    """A missing complist is a ValueError from plain ft and from guarded ft alike."""
    missing = str(tmp_path / "missing.cl")
    plain = _plain_ft_mro(ms, missing, drop_root=False)
    assert plain[0] == "ValueError"
    with pytest.raises(ValueError) as caught:
        casaguard.ft(vis=str(ms), complist=missing, usescratch=True)
    error = caught.value
    assert isinstance(error, CasaTaskError) and error.restored and error.kind == "casa-error"
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is type(error) and again.casa_error == error.casa_error


def test_crashes_stay_casacrash_and_are_no_builtin_error(no_leaks: None) -> None:
    """A heap abort is a HeapCorruption, and not a RuntimeError that `except` would mistake."""
    with pytest.raises(casaguard.HeapCorruption) as caught:
        casaguard.call(Ref("casaguard.corpus.crashers", "double_free_out"), casa=False)
    assert not isinstance(caught.value, (RuntimeError, ValueError, AssertionError))


# -------------------------------------------------------- build 5: SIGTERM / SIGHUP to the caller

HALF_WRITE_CALLER = """
import os, signal, sys, time
import casaguard
from casaguard.journal import hook as journal
from casaguard.sandbox import callspec, runner

vis, marker, app_handler = sys.argv[1], sys.argv[2], sys.argv[3] == "app"
signal.signal(signal.SIGHUP, signal.SIG_DFL)  # even if the test runs under nohup
if app_handler:
    def stop(signum, frame):
        raise SystemExit(3)
    signal.signal(signal.SIGTERM, stop)

def half_write(vis, marker):
    import numpy as np
    from casatools import table
    tb = table()
    tb.open(vis, nomodify=False)
    rows = tb.nrows() // 2
    data = tb.getcol("DATA", 0, rows)
    tb.putcol("DATA", np.zeros_like(data), 0, rows)
    tb.flush()
    with open(marker, "w") as handle:
        handle.write(str(os.getpid()))
    time.sleep(120)

spec = callspec.CallSpec(func=half_write, args=(vis, marker), name="half_write", vis=vis,
                       may_write=True)
runner.run(journal.journaled(spec, ["DATA"]))
"""

READ_DATA = """
import sys, numpy
from casacore.tables import table
t = table(sys.argv[1], ack=False)
print(float(numpy.abs(t.getcol("DATA")).sum()))
t.close()
"""


def _data_sum(ms: Path) -> float:
    code = f"import sys; sys.argv = ['read', {str(ms)!r}]\n" + READ_DATA
    return float(casacore_script(code).strip())


@pytest.mark.parametrize(
    ("signum", "handler", "status"),
    [
        (signal.SIGTERM, "default", -signal.SIGTERM),
        (signal.SIGHUP, "default", -signal.SIGHUP),
        (signal.SIGTERM, "app", 3),
    ],
)
def test_signal_to_the_caller_mid_write_restores_and_cleans_up(
    ms: Path, complist: Path, tmp_path: Path, signum: int, handler: str, status: int
) -> None:
    """kill -TERM/-HUP mid-write: child dead, MS restored, no job dir, the signal's own exit."""
    before = _data_sum(ms)
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    marker = tmp_path / "written"
    script = tmp_path / "caller.py"
    script.write_text(textwrap.dedent(HALF_WRITE_CALLER))
    caller = subprocess.Popen(
        [sys.executable, str(script), str(ms), str(marker), handler],
        env={**os.environ, "TMPDIR": str(jobs)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not marker.exists() and time.monotonic() < deadline and caller.poll() is None:
        time.sleep(0.02)
    assert marker.exists(), caller.stderr.read() if caller.stderr else ""
    while not marker.read_text():  # created, pid not yet written
        time.sleep(0.01)
    child = int(marker.read_text())
    subprocess.run(["kill", f"-{signal.Signals(signum).name[3:]}", str(caller.pid)], check=True)
    assert caller.wait(timeout=60) == status
    assert not pids.pid_alive(child), "the child must be dead"
    assert [p.name for p in jobs.iterdir()] == [], "the job dir must be gone"
    assert not [p for p in ms.parent.iterdir() if "casaguard-journal" in p.name]
    assert _data_sum(ms) == before, "the half-write must be undone"
    assert_casa_can_use(ms, complist)


@pytest.fixture
def default_stop_handlers() -> Iterator[None]:
    """SIGTERM and SIGHUP at their defaults for the test, whatever the runner inherited.

    A runner started under ``nohup`` (or from a shell job that ignores SIGHUP)
    inherits SIGHUP ignored, and casaguard rightly leaves an ignored signal alone.
    """
    inherited = {signum: signal.getsignal(signum) for signum in signals.STOP_SIGNALS}
    for signum in signals.STOP_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    try:
        yield
    finally:
        for signum, handler in inherited.items():
            signal.signal(signum, handler)


def test_handlers_are_installed_only_during_a_call_from_the_main_thread(
    default_stop_handlers: None,
) -> None:
    """SIGTERM/SIGHUP handlers exist only inside a call in the main thread, then are restored."""
    with signals.signals_as_interrupts():
        inside = signal.getsignal(signal.SIGTERM)
    assert inside is not signal.SIG_DFL
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    seen: list[Any] = []

    def in_thread() -> None:
        with signals.signals_as_interrupts():
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()
    assert seen == [signal.SIG_DFL]
    casaguard.call(os.getpid, casa=False)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL


def test_an_ignored_sighup_stays_ignored_through_a_call(default_stop_handlers: None) -> None:
    """Under ``nohup`` the caller asked for SIGHUP to be ignored: a call must not undo that."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    with signals.signals_as_interrupts():
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    casaguard.call(os.getpid, casa=False)
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN


# -------------------------------------------------- build 5: job dirs a SIGKILLed caller left

SLEEPING_CALLER = """
import time, casaguard
casaguard.call(time.sleep, 120, casa=False)
"""


@pytest.fixture
def shared_tmp() -> Any:
    """A sticky, world-writable temp dir like /tmp, that a second user can reach."""
    path = Path(tempfile.mkdtemp(prefix="writepath-shared-", dir="/tmp"))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_job_dirs_of_a_killed_caller_are_removed_by_the_next_process(
    tmp_path: Path, shared_tmp: Path
) -> None:
    """A SIGKILLed caller's job dir is removed by the next casaguard process; others' are kept."""
    jobs = shared_tmp
    env = {**os.environ, "TMPDIR": str(jobs)}
    caller = subprocess.Popen([sys.executable, "-c", SLEEPING_CALLER], env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(jobs.glob("casaguard-*/progress")):
        time.sleep(0.05)
    left = [p.parent for p in jobs.glob("casaguard-*/progress")]
    assert left and left[0].name.startswith(f"casaguard-{caller.pid}-")
    caller.kill()
    caller.wait()
    assert left[0].exists()
    # The attacker, another user, plants a dead-owner dir, and a link to a dir of ours.
    dead = caller.pid
    namespace = os.readlink("/proc/self/ns/pid")
    ours = shared_tmp.parent / f"{shared_tmp.name}-precious"
    ours.mkdir()
    plant = textwrap.dedent(
        f"""
        import os
        os.mkdir("{jobs}/casaguard-{dead}-attacker")
        open("{jobs}/casaguard-{dead}-attacker/owner", "w").write("{dead} {namespace}")
        os.symlink("{ours}", "{jobs}/casaguard-{dead}-symlink0")
        """
    )
    subprocess.run([*UNPRIVILEGED, "/usr/bin/python3", "-c", plant], check=True)
    live = jobs / f"casaguard-{os.getpid()}-livelive"
    live.mkdir()
    (live / "owner").write_text(f"{os.getpid()} {namespace}")
    nxt = subprocess.run(
        [sys.executable, "-c", "import os, casaguard; casaguard.call(os.getpid, casa=False)"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert nxt.returncode == 0, nxt.stderr
    assert not left[0].exists(), "the dead caller's job dir must be removed"
    names = sorted(p.name for p in jobs.iterdir())
    assert names == sorted([f"casaguard-{dead}-attacker", f"casaguard-{dead}-symlink0", live.name])
    assert ours.is_dir()
    ours.rmdir()


BATCH_CALLER = """
import casaguard
from casaguard.corpus import crashers
casaguard.map_call(crashers.hang, [120.0, 120.0], casa=False, jobs=2)
"""


def test_sigterm_to_a_batch_caller_kills_every_child_and_removes_job_dirs(tmp_path: Path) -> None:
    """kill -TERM to a caller running a local batch: all children die, no job dir, exit -15."""
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    caller = subprocess.Popen(
        [sys.executable, "-c", BATCH_CALLER], env={**os.environ, "TMPDIR": str(jobs)}
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(jobs.glob("casaguard-*/progress"))) < 2:
        time.sleep(0.05)
    assert len(list(jobs.glob("casaguard-*/progress"))) == 2, "both items must be running"
    children = psutil.Process(caller.pid).children(recursive=True)
    subprocess.run(["kill", "-TERM", str(caller.pid)], check=True)
    assert caller.wait(timeout=60) == -signal.SIGTERM
    assert [p.name for p in jobs.iterdir()] == []
    # The sandbox children were killed by the handler; the template follows its caller.
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == []
