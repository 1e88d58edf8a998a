"""The warm template: fresh forks per call, restarts, no orphans, honest fallback to spawn."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from structlog.testing import capture_logs

import casaguard
from casaguard.sandbox import jobdir as _job
from casaguard.sandbox import spawn
from casaguard.sandbox.template import client as _template
from casaguard.sandbox.template import connection, flavors


@pytest.fixture
def template() -> Iterator[int]:
    """A running warm template; its pid."""
    pid = casaguard.warmup()
    assert pid is not None
    yield pid


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _wait_gone(pid: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


def _touch_heap(previous_key: str) -> object:
    """Return what an earlier call left in this process's module state, then leave a mark."""
    from casaguard.sandbox import child as _child

    seen = getattr(_child, previous_key, None)
    setattr(_child, previous_key, os.getpid())
    return seen


def test_each_call_is_a_fresh_fork_200_times(template: int, no_leaks: None) -> None:
    """200 consecutive template calls under a timeout succeed, each in its own pristine fork."""
    pids = set()
    with capture_logs() as events:
        for _ in range(200):
            seen = casaguard.call(_touch_heap, "casaguard_test_mark", mode="template", timeout=60)
            assert seen is None  # no call ever sees another call's state
    started = [e for e in events if e["event"] == "task_started"]
    pids = {e["pid"] for e in started}
    assert len(started) == 200 and len(pids) == 200
    assert {e["mode"] for e in started} == {"template"}
    # No restart, fallback or unresponsive fork (the one-off warm-up is no such event).
    assert not [
        e for e in events if e["event"].startswith("template_") and e["event"] != "template_warm"
    ]
    assert _template.template_pid() == template


def test_concurrent_calls_from_threads_get_their_own_outcome(template: int, no_leaks: None) -> None:
    """Calls from 4 threads share one template; each gets its own fork's value or crash."""
    from concurrent.futures import ThreadPoolExecutor

    from casaguard.corpus import crashers

    def one(i: int) -> str:
        if i % 3 == 0:
            try:
                casaguard.call(crashers.segfault, casa=False, mode="template", timeout=60)
            except casaguard.Segfault:
                return "segfault"
            return "no crash?"
        return str(casaguard.call(lambda: i * i, casa=False, mode="template", timeout=60))

    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(one, range(24)))
    assert outcomes == ["segfault" if i % 3 == 0 else str(i * i) for i in range(24)]
    assert _template.template_pid() == template


def test_ft_runs_in_a_template_fork(
    template: int, ms: Path, complist: Path, no_leaks: None
) -> None:
    """casaguard.ft in template mode writes MODEL_DATA through a fork of the template."""
    with capture_logs() as events:
        casaguard.ft(
            vis=str(ms), complist=str(complist), usescratch=True, mode="template", timeout=120
        )
    started = next(e for e in events if e["event"] == "task_started")
    assert started["mode"] == "template"
    assert psutil.Process(template).is_running()


def test_a_done_casa_task_returns_before_its_fork_exits_and_leaves_no_status_behind(
    template: int, ms: Path, complist: Path, monkeypatch: pytest.MonkeyPatch, no_leaks: None
) -> None:
    """A CASA task's fork that replied and holds no table lock says so on the job's FIFO:
    the caller lets go of it without waiting for its exit, and the template's exit report
    for it is dropped rather than kept for nobody."""
    detached: list[int] = []
    real_detach = _template.TemplateHandle.detach

    def recording(handle: _template.TemplateHandle) -> bool:
        detached.append(handle.pid)
        return real_detach(handle)

    monkeypatch.setattr(_template.TemplateHandle, "detach", recording)
    for _ in range(3):
        casaguard.ft(vis=str(ms), complist=str(complist), usescratch=True, mode="template")
    casaguard.call(len, "abc", mode="template")  # not a CASA task: waited for, not detached
    assert len(detached) == 3, detached
    for pid in detached:
        assert _wait_gone(pid, 5.0), pid
    connection_ = _template._templates["casa"]
    deadline = time.monotonic() + 5.0
    while (connection_._statuses or connection_._forgotten) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert connection_._statuses == {} and connection_._forgotten == set()


def _table_lock_open_while(opened: bool, vis: str) -> bool:
    """In a casacore fork: is a table.lock open, with ``vis`` open (or after closing it)?"""
    from casacore.tables import table

    from casaguard.sandbox.child import holds_table_lock_file

    main = table(vis, ack=False)
    if opened:
        return holds_table_lock_file()
    main.close()
    return holds_table_lock_file()


@pytest.mark.parametrize("opened", [True, False])
def test_a_child_with_a_table_open_does_not_say_it_is_done(
    ms: Path, opened: bool, no_leaks: None
) -> None:
    """holds_table_lock_file sees an open casacore table (its lock may be held: the caller
    must wait for the exit) and sees nothing once the table is closed."""
    held = casaguard.call(_table_lock_open_while, opened, str(ms), casa=False, flavor="casacore")
    assert held is opened


def test_restarts_after_the_template_is_killed(template: int, no_leaks: None) -> None:
    """A SIGKILLed template is noticed, reported, and replaced by a new one on the next call."""
    with capture_logs() as events:
        os.kill(template, signal.SIGKILL)
        assert _wait_gone(template)
        value = casaguard.call(os.getppid, casa=False, mode="template", timeout=120)
    new = _template.template_pid()
    assert new is not None and new != template
    assert value == new  # the call ran in a fork of the new template
    exited = next(e for e in events if e["event"] == "template_exited")
    assert exited["pid"] == template and exited["exit_code"] == -signal.SIGKILL


def test_a_fork_killed_with_its_template_reports_sigkill(template: int, no_leaks: None) -> None:
    """If the template dies mid-call, the running fork dies with it and the call raises Killed."""
    from casaguard.corpus import crashers

    with capture_logs() as events:
        proc = subprocess.Popen(  # kills the template once the call has started
            [sys.executable, "-c", f"import time, os; time.sleep(1.5); os.kill({template}, 9)"]
        )
        with pytest.raises(casaguard.Killed) as caught:
            casaguard.call(crashers.hang, casa=False, mode="template", timeout=60)
        proc.wait(timeout=30)
    assert caught.value.signal == "SIGKILL"
    assert any(e["event"] == "template_exited" for e in events)
    assert caught.value.pid is not None
    assert _wait_gone(caught.value.pid)


def test_caller_env_cwd_and_import_path_are_honoured(
    template: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_leaks: None
) -> None:
    """A fork sees the caller's environment, cwd and sys.path as of the call, not the template's."""
    package = tmp_path / "lib"
    package.mkdir()
    module = package / "casaguard_probe_mod.py"
    module.write_text("def answer():\n    return 'from caller path'\n")
    monkeypatch.setenv("CASAGUARD_TEST_SETTING", "set after warmup")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(package))

    def look() -> tuple[str | None, str, str]:
        import casaguard_probe_mod  # type: ignore[import-not-found]  # written by this test

        return os.environ.get("CASAGUARD_TEST_SETTING"), os.getcwd(), casaguard_probe_mod.answer()

    got = casaguard.call(look, casa=False, mode="template", timeout=60)
    assert got == ("set after warmup", str(tmp_path), "from caller path")


def test_template_holds_nothing_of_the_caller(template: int) -> None:
    """The template runs `python -P -c ...` in /, warm with casatools, without python-casacore."""
    proc = psutil.Process(template)
    assert proc.cmdline()[1:4] == ["-P", "-c", connection.TEMPLATE_CODE]
    assert proc.cwd() == "/"
    mapped = {m.path for m in proc.memory_maps()}
    assert any("casatools" in path for path in mapped)  # it is warm
    assert not [p for p in mapped if "/casacore/" in p or "python_casacore" in p]


def test_forks_refuse_python_casacore(template: int, no_leaks: None) -> None:
    """A fork (which holds casatools) cannot import python-casacore; spawn mode still can."""

    def use_casacore() -> str:
        import casacore.tables

        return str(casacore.tables.__name__)

    with pytest.raises(casaguard.ChildError) as caught:
        casaguard.call(use_casacore, casa=False, mode="template", timeout=60)
    assert caught.value.exc_type == "builtins.ImportError"
    assert caught.value.exc_message == flavors.CASACORE_IN_TEMPLATE
    assert casaguard.call(use_casacore, casa=False, mode="spawn", timeout=120) == "casacore.tables"


def test_casacore_flavor_forks_hold_casacore_and_refuse_casatools(no_leaks: None) -> None:
    """A fork of the python-casacore template has casacore loaded, refuses casatools, and is
    a different process tree from the CASA template."""

    def loaded() -> tuple[bool, bool, int]:
        import os
        import sys

        return "casacore.tables" in sys.modules, "casatools" in sys.modules, os.getppid()

    def use_casatools() -> None:
        import casatools  # noqa: F401

    has_casacore, has_casatools, parent = casaguard.call(
        loaded, casa=False, flavor="casacore", mode="template", timeout=120
    )
    assert has_casacore and not has_casatools
    assert parent == _template.template_pid("casacore") != _template.template_pid("casa")
    with pytest.raises(casaguard.ChildError) as caught:
        casaguard.call(use_casatools, casa=False, flavor="casacore", mode="template", timeout=60)
    assert caught.value.exc_message == flavors.CASA_IN_CASACORE_TEMPLATE


def test_mode_spawn_never_starts_a_template(monkeypatch: pytest.MonkeyPatch) -> None:
    """CASAGUARD_MODE=spawn makes calls (and warmup) use a fresh interpreter, with no template."""
    _template.shutdown()
    monkeypatch.setenv("CASAGUARD_MODE", "spawn")
    assert casaguard.warmup() is None
    with capture_logs() as events:
        casaguard.call(os.getpid, casa=False, timeout=60)
    assert next(e for e in events if e["event"] == "task_started")["mode"] == "spawn"
    assert _template.template_pid() is None


@pytest.fixture
def broken_casa_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A CASA site config whose measures path does not exist: casatools refuses to import."""
    config = tmp_path / "broken-site-config.py"
    config.write_text(
        f"measurespath = {str(tmp_path / 'no-measures')!r}\n"
        "measures_auto_update = False\ndata_auto_update = False\n"
    )
    _template.shutdown()
    monkeypatch.setenv("CASASITECONFIG", str(config))
    yield
    _template.shutdown()  # also forgets the failure, so later tests start a good template


def test_falls_back_to_spawn_when_the_template_cannot_start(
    broken_casa_config: None, no_leaks: None
) -> None:
    """A template that cannot import CASA is reported, and the call still runs, spawned."""
    with capture_logs() as events:
        value = casaguard.call(os.getpid, casa=False, timeout=180)
    assert isinstance(value, int)
    fallback = next(e for e in events if e["event"] == "template_fallback")
    assert "measures data is not available" in fallback["reason"]
    assert next(e for e in events if e["event"] == "task_started")["mode"] == "spawn"
    # Within the retry delay, the next call goes straight to spawn.
    with capture_logs() as events:
        casaguard.call(os.getpid, casa=False, timeout=180)
    assert [e["event"] for e in events].count("template_starting") == 0
    assert any(e["event"] == "template_fallback" for e in events)


def test_mode_template_raises_when_the_template_cannot_start(broken_casa_config: None) -> None:
    """mode="template" is a requirement: a template that cannot start raises SetupError."""
    with pytest.raises(casaguard.SetupError, match="measures data is not available"):
        casaguard.call(os.getpid, casa=False, mode="template", timeout=180)


def test_unresponsive_fork_is_killed_and_the_call_spawned(template: int, no_leaks: None) -> None:
    """A fork stuck before its handshake (blocked opening a FIFO) is killed; the call is spawned."""
    launcher = _template.launcher(fallback=spawn.SpawnLauncher(), required=True)
    with _job.JobDir() as job, capture_logs() as events:
        job.write_request(_job.Request(func=os.getpid, setup_casa_log=False))
        # Opening a FIFO for writing blocks until a reader comes: the fork never says alive.
        os.mkfifo(job.file(_job.OUTPUT))
        handle = launcher.start(job)
        assert handle.mode == "spawn"
        status = None
        deadline = time.monotonic() + 120
        while status is None and time.monotonic() < deadline:
            status = handle.exit_status()
        reply = job.read_reply()
    assert status == 0 and reply is not None and reply.value == handle.pid
    stuck = next(e for e in events if e["event"] == "template_fork_unresponsive")
    assert _wait_gone(stuck["pid"])
    assert any(e["event"] == "template_fallback" for e in events)


def test_no_orphans_after_the_parent_is_killed(tmp_path: Path) -> None:
    """SIGKILL of a caller mid-call takes its template and the running fork with it."""
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            """
            import casaguard, structlog
            from casaguard.corpus import crashers
            def report(logger, name, event):
                if event["event"] == "task_started":
                    template = casaguard.sandbox.template.client.template_pid()
                    print(event["pid"], template, flush=True)
                raise structlog.DropEvent
            structlog.configure(processors=[report])
            casaguard.call(crashers.hang, casa=False, mode="template")
            """
        )
    )
    # A parent killed hard cannot remove its job dir: keep it under tmp_path.
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    fork, template = map(int, proc.stdout.readline().split())
    assert _alive(fork) and _alive(template)
    assert psutil.Process(fork).parent().pid == template  # type: ignore[union-attr]
    proc.kill()
    proc.wait(timeout=10)
    assert _wait_gone(template) and _wait_gone(fork)


def test_template_exits_when_the_parent_exits_normally(tmp_path: Path) -> None:
    """A caller that simply returns leaves no template behind."""
    script = tmp_path / "parent.py"
    script.write_text(
        "import os, casaguard\n"
        "print(casaguard.warmup(), flush=True)\n"
        "print(casaguard.call(os.getppid, casa=False), flush=True)\n"
    )
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, check=True
    )
    lines = [line for line in result.stdout.split("\n") if line.strip().isdigit()]
    template, parent_of_call = map(int, lines[:2])
    assert parent_of_call == template
    assert _wait_gone(template)
