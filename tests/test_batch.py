"""Batches: one outcome per input, in input order; a real crash never aborts the batch.

Engines under test: local threads, a caller's concurrent.futures executor, and a
real two-worker ``distributed.LocalCluster`` (worker processes, no mocks), where
a CASA-style crash must kill only a sandbox child, never the Dask worker.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import pty
import signal
import subprocess
import sys
import termios
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import distributed
import psutil
import pytest
from conftest import casacore_script

import casaguard
from casaguard import exits
from casaguard.cli import batch as cli_batch
from casaguard.corpus import crashers
from casaguard.errors import RemoteTraceback

MODEL_AMPLITUDE = """
    import sys
    import numpy as np
    from casacore.tables import table
    with table(sys.argv[1], ack=False) as t:
        model = np.abs(t.getcol("MODEL_DATA"))  # rows x channels x correlations
        print(float(model[..., 0].mean()))  # XX of a 1 Jy unpolarised point source
"""

CLI = [sys.executable, "-m", "casaguard.cli.main"]


def _model_amplitude(ms: Path) -> float:
    code = MODEL_AMPLITUDE.replace("sys.argv[1]", repr(str(ms)))
    return float(casacore_script(code).strip())


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[distributed.LocalCluster]:
    """A real Dask cluster: two worker processes with one thread each."""
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        local_directory=str(tmp_path_factory.mktemp("dask")),
    ) as local_cluster:
        yield local_cluster


@pytest.fixture
def client(cluster: distributed.LocalCluster) -> Iterator[distributed.Client]:
    """A client of the module's cluster."""
    with distributed.Client(cluster) as dask_client:
        yield dask_client


def _rendezvous_work(flag: Path) -> Any:
    """Items for the order test: 'wait' returns only after 'signal' has run; two crash."""

    def work(item: str) -> str:
        import time

        from casaguard.corpus import crashers

        if item == "wait":
            deadline = time.monotonic() + 60
            while not flag.exists():
                if time.monotonic() > deadline:
                    raise TimeoutError("the 'signal' item never ran alongside")
                time.sleep(0.02)
        elif item == "double-free":
            crashers.double_free_out()
        elif item == "raise":
            raise ValueError("bad item")
        elif item == "signal":
            flag.write_text("go")
        return item.upper()

    return work


def test_outcomes_in_input_order_and_crashes_do_not_abort(tmp_path: Path, no_leaks: None) -> None:
    """Two calls run at once, outcomes come back in input order, a real double free is just one."""
    work = _rendezvous_work(tmp_path / "flag")
    finished: list[int] = []
    outcomes = casaguard.map_call(
        work,
        ["wait", "double-free", "raise", "signal"],
        casa=False,
        jobs=2,
        timeout=120,
        progress=lambda outcome, done, total: finished.append(outcome.index),
    )
    assert [o.index for o in outcomes] == [0, 1, 2, 3]
    assert [o.input for o in outcomes] == ["wait", "double-free", "raise", "signal"]
    # "wait" could only finish once "signal" ran on the other thread, after items 1 and 2.
    assert finished[-1] in (0, 3) and finished[:2] == [1, 2]
    assert [o.kind for o in outcomes] == ["ok", "double-free", "python-error", "ok"]
    assert outcomes[0].value == "WAIT" and outcomes[3].value == "SIGNAL"
    crash = outcomes[1].error
    assert isinstance(crash, casaguard.HeapCorruption) and crash.signal == "SIGABRT"
    assert isinstance(outcomes[1], casaguard.Outcome) and outcomes[1].crash is crash
    assert outcomes[1].signature == crash.signature and outcomes[2].crash is outcomes[2].error
    assert crash.detail == "double free or corruption (out)"
    with pytest.raises(casaguard.ChildError) as caught:
        outcomes[2].unwrap()
    assert isinstance(caught.value.__cause__, RemoteTraceback)
    assert "ValueError: bad item" in caught.value.__cause__.tb
    document = json.loads(json.dumps([o.facts() for o in outcomes]))
    assert document[1]["error"]["kind"] == "double-free"
    assert document[1]["error"]["pid"] == crash.pid


def test_map_task_runs_ft_on_each_ms(
    ms_factory: Any, complist: Path, tmp_path: Path, no_leaks: None
) -> None:
    """Guarded ft over two real MSs and a missing path: MSs get the model, the path InvalidInput."""
    good = [ms_factory(tmp_path / f"{name}.ms") for name in ("a", "b")]
    missing = tmp_path / "missing.ms"
    outcomes = casaguard.map_task(
        "ft",
        [{"vis": str(p), "complist": str(complist), "usescratch": True} for p in [*good, missing]],
        jobs=2,
        timeout=300,
    )
    assert [o.kind for o in outcomes] == ["ok", "ok", "invalid-input"]
    assert [o.label for o in outcomes] == [str(p) for p in [*good, missing]]
    error = outcomes[2].error
    # The same pre-flight as casaguard.ft: one line, before any CASA child.
    assert isinstance(error, casaguard.InvalidInput) and "no such Measurement Set" in str(error)
    for ms in good:
        assert _model_amplitude(ms) == pytest.approx(1.0, rel=1e-3)


def test_a_callers_process_pool_gets_outcomes_back_pickled(no_leaks: None) -> None:
    """A caller's ProcessPoolExecutor runs the items; a TaskTimeout travels back intact."""
    # The timeout must also hold the quick item's child (forked, unpickled, replying) on a
    # loaded shared machine: 3 s was missed there, 10 s still proves the hang is cut short.
    with concurrent.futures.ProcessPoolExecutor(max_workers=2) as pool:
        outcomes = casaguard.map_call(
            crashers.hang, [0.0, 3600.0], casa=False, timeout=10, executor=pool
        )
    assert [o.kind for o in outcomes] == ["ok", "timeout"]
    assert isinstance(outcomes[1].error, casaguard.TaskTimeout)
    assert all(not o.where.endswith(f":{os.getpid()}") for o in outcomes)  # ran in pool workers


def test_ctrl_c_kills_the_running_children(tmp_path: Path) -> None:
    """SIGINT to a process in the middle of a batch kills every sandbox child and ends the batch."""
    script = tmp_path / "batch.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, sys, time
            import casaguard

            def hang(item):
                with open(os.path.join({str(tmp_path)!r}, f"pid-{{item}}"), "w") as f:
                    f.write(str(os.getpid()))
                time.sleep(3600)

            try:
                casaguard.map_call(hang, [1, 2, 3], casa=False, jobs=2)
            except KeyboardInterrupt:
                sys.exit(130)
            """
        )
    )
    proc = subprocess.Popen([sys.executable, str(script)], stderr=subprocess.DEVNULL)
    try:
        pid_files = [tmp_path / "pid-1", tmp_path / "pid-2"]
        deadline = time.monotonic() + 60
        while not all(p.exists() and p.read_text() for p in pid_files):
            assert time.monotonic() < deadline, "the batch never started its children"
            time.sleep(0.05)
        children = [int(p.read_text()) for p in pid_files]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not any(psutil.pid_exists(pid) for pid in children)
    assert not (tmp_path / "pid-3").exists()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: casaguard.map_task("not a task", [{}]), "identifier"),
        (lambda: casaguard.map_task("ft", ["a.ms"]), "mapping"),  # type: ignore[list-item]
        (lambda: casaguard.map_call(len, [1], jobs=0), "positive"),
        (lambda: casaguard.map_call(len, [1], executor=42), "executor must be"),
        (lambda: casaguard.map_call(42, [1]), "callable"),  # type: ignore[arg-type]
    ],
)
def test_bad_arguments_raise_invalid_input(call: Any, message: str) -> None:
    """Unusable batch arguments are rejected before any child starts."""
    with pytest.raises(casaguard.InvalidInput, match=message):
        call()


def test_empty_batch_is_empty() -> None:
    """No inputs, no outcomes, on every engine kind."""
    assert casaguard.map_task("ft", []) == []
    assert casaguard.map_call(len, [], executor="tcp://127.0.0.1:9") == []


def test_unreachable_scheduler_is_invalid_input() -> None:
    """A scheduler address nobody listens on is a one-line InvalidInput naming the address."""
    with pytest.raises(casaguard.InvalidInput, match=r"tcp://127\.0\.0\.1:9"):
        casaguard.map_call(len, [1], executor="tcp://127.0.0.1:9")


def test_dask_worker_survives_a_real_crash(client: distributed.Client, no_leaks: None) -> None:
    """On a real LocalCluster a double free kills a sandbox child, never the Dask worker."""
    workers_before = client.run(os.getpid)

    def work(item: str) -> str:
        from casaguard.corpus import crashers

        if item == "double-free":
            crashers.double_free_out()
        if item == "segfault":
            crashers.segfault()
        return f"{item} done"

    items = ["a", "double-free", "b", "segfault", "c"]
    outcomes = casaguard.map_call(work, items, casa=False, executor=client, timeout=120)
    assert [o.kind for o in outcomes] == ["ok", "double-free", "ok", "segfault", "ok"]
    assert [o.value for o in outcomes if o.ok] == ["a done", "b done", "c done"]
    assert client.run(os.getpid) == workers_before
    worker_pids = set(workers_before.values())
    for outcome in outcomes:
        assert int(outcome.where.rpartition(":")[2]) in worker_pids
    for crash in (outcomes[1].error, outcomes[3].error):
        assert isinstance(crash, casaguard.CasaCrash) and crash.pid not in worker_pids
    assert outcomes[1].error.signal == "SIGABRT"  # type: ignore[union-attr]


def test_dask_map_task_by_scheduler_address(
    cluster: distributed.LocalCluster,
    client: distributed.Client,
    ms_factory: Any,
    complist: Path,
    tmp_path: Path,
    no_leaks: None,
) -> None:
    """Given only the scheduler's address, ft runs on the workers; a bad path gets its error."""
    workers_before = client.run(os.getpid)
    good = ms_factory(tmp_path / "good.ms")
    missing = tmp_path / "missing.ms"
    outcomes = casaguard.map_task(
        "ft",
        [{"vis": str(p), "complist": str(complist), "usescratch": True} for p in (good, missing)],
        executor=cluster.scheduler_address,
        timeout=300,
    )
    assert [o.kind for o in outcomes] == ["ok", "invalid-input"]
    assert "no such Measurement Set" in str(outcomes[1].error)
    assert client.run(os.getpid) == workers_before
    assert _model_amplitude(good) == pytest.approx(1.0, rel=1e-3)


def _run_cli_with_tty_stderr(args: list[str]) -> tuple[int, str, str]:
    """Run the CLI with stderr on a pseudo-terminal; return (exit code, stdout, terminal text)."""
    master, slave = pty.openpty()
    termios.tcsetwinsize(slave, (24, 400))  # wide enough that no line is clipped
    proc = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=slave, text=True)
    os.close(slave)
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: every writer closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        stdout, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
        reader.join(timeout=30)
        os.close(master)
    return proc.returncode, stdout, b"".join(chunks).decode(errors="replace")


def test_cli_run_json_progress_and_exit_code(
    ms_factory: Any, complist: Path, tmp_path: Path
) -> None:
    """`casaguard run ft` draws a bar on a TTY, prints one JSON document, exits 2 on a bad input."""
    good = ms_factory(tmp_path / "good.ms")
    missing = tmp_path / "missing.ms"
    code, stdout, terminal = _run_cli_with_tty_stderr(
        ["run", "ft", "--vis", str(good), str(missing), "--param", f"complist={complist}",
         "--param", "usescratch=true", "--jobs", "2", "--json", "--timeout", "300"]
    )  # fmt: skip
    # A missing MS is refused by ft's pre-flight (as `casaguard ft` does): bad input, exit 2.
    assert code == exits.EXIT_BAD_INPUT, terminal
    document = json.loads(stdout)
    totals = (document["task"], document["total"], document["ok"], document["failed"])
    assert totals == ("ft", 2, 1, 1)
    assert [o["kind"] for o in document["outcomes"]] == ["ok", "invalid-input"]
    assert document["outcomes"][1]["input"]["vis"] == str(missing)
    assert document["outcomes"][0]["input"]["usescratch"] is True
    assert "2/2" in terminal and f"FAILED {missing}: invalid-input" in terminal
    assert _model_amplitude(good) == pytest.approx(1.0, rel=1e-3)


@pytest.mark.parametrize(
    "args",
    [
        ["run", "ft"],
        ["run", "ft", "--vis", "a.ms", "--param", "complist"],
        ["run", "ft", "--vis", "a.ms", "--param", "vis=b.ms"],
        ["run", "ft", "--vis", "a.ms", "--jobs", "0"],
        ["run", "ft", "--vis", "a.ms", "--jobs", "2", "--scheduler", "tcp://127.0.0.1:9"],
        ["run", "ft", "--vis-list", "/nonexistent/list.txt"],
    ],
)
def test_cli_run_bad_input_exits_2(args: list[str]) -> None:
    """A run command that cannot start says why on one line and exits 2, without a traceback."""
    result = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == exits.EXIT_BAD_INPUT
    assert "Traceback" not in result.stderr and result.stderr.startswith("casaguard: ")


def test_cli_run_unknown_task_exits_2(tmp_path: Path) -> None:
    """A task casatasks does not have is bad input (exit 2): one line for the batch, no table."""
    result = subprocess.run(
        [*CLI, "run", "nosuchtask", "--vis", str(tmp_path / "a.ms"), str(tmp_path / "b.ms")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == exits.EXIT_BAD_INPUT
    assert result.stderr == "casaguard: casatasks has no task named 'nosuchtask'\n"
    assert result.stdout == ""


def test_summary_table_names_every_input(tmp_path: Path, no_leaks: None) -> None:
    """The human table has one row per input with its outcome kind and glibc's words."""
    outcomes = casaguard.map_call(
        _rendezvous_work(tmp_path / "flag"), ["signal", "double-free", "raise"], casa=False
    )
    table = cli_batch.render_table(outcomes, elapsed_s=2.0, width=200)
    rows = table.splitlines()
    assert rows[0].split() == ["#", "input", "outcome", "time", "detail"]
    assert rows[1].split()[:3] == ["1", "signal", "ok"]
    assert rows[2].split()[:3] == ["2", "double-free", "double-free"]
    assert rows[2].endswith("SIGABRT double free or corruption (out)")
    assert rows[3].endswith("ValueError: bad item")
    assert rows[4] == (
        "3 items: 1 ok, 2 failed (double-free 1, python-error 1) in 2.0 s, 1.50 items/s"
    )
    assert cli_batch.exit_code(outcomes) == exits.EXIT_FAILED


def test_map_probe_in_input_order(
    ms_factory: Any, tmp_path: Path, client: distributed.Client, no_leaks: None
) -> None:
    """map_probe gives one ProbeReport per MS in input order, locally and on Dask."""
    good = ms_factory(tmp_path / "good.ms")
    for engine in ({"jobs": 2}, {"executor": client}):
        outcomes = casaguard.map_probe([good, tmp_path / "missing.ms"], **engine)
        assert [o.ok for o in outcomes] == [True, True]  # bad input is a report, not a raise
        assert outcomes[0].value.verdict == "safe"
        assert outcomes[1].value.bad_input
