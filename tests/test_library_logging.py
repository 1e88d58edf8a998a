"""casaguard behaves like a library: its events go through ``logging``, never to stdout.

Each user script runs in a fresh interpreter (its own logging and structlog
state), doing what a pipeline does: guarded ft + clearcal on a real MS, then
printing its own result.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from structlog.testing import capture_logs

import casaguard
from casaguard import events
from casaguard.corpus import crashers

PIPELINE = """
import casaguard
casaguard.ft(vis={ms!r}, complist={cl!r}, usescratch=True)
casaguard.clearcal(vis={ms!r})
print("DONE")
"""


def _user_script(
    tmp_path: Path, ms: Path, complist: Path, setup: str = ""
) -> subprocess.CompletedProcess[str]:
    code = textwrap.dedent(setup) + PIPELINE.format(ms=str(ms), cl=str(complist))
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        check=False,
    )


def test_guarded_pipeline_is_silent_on_success(ms: Path, complist: Path, tmp_path: Path) -> None:
    """A script doing guarded ft + clearcal then print("DONE") has stdout DONE and no stderr,
    template_exited at interpreter exit included."""
    result = _user_script(tmp_path, ms, complist)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "DONE\n"
    assert result.stderr == ""


def test_basic_config_shows_info_events_on_stderr(ms: Path, complist: Path, tmp_path: Path) -> None:
    """logging.basicConfig(level=INFO) shows casaguard's info events as one-line records on
    stderr, under the logger name casaguard; stdout stays the script's own."""
    setup = """
    import logging
    logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
    """
    result = _user_script(tmp_path, ms, complist, setup)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "DONE\n"
    finished = [line for line in result.stderr.splitlines() if " task_finished " in line]
    assert len(finished) == 2, result.stderr
    assert finished[0].startswith("casaguard INFO task_finished elapsed_s=")
    assert "outcome=ok pid=" in finished[0] and f"task=ft vis={ms}" in finished[0]
    assert "journal_dropped" not in result.stderr  # a debug event


def test_structlog_stdlib_recipe_gets_event_dicts(ms: Path, complist: Path, tmp_path: Path) -> None:
    """An application that configured structlog's stdlib integration (ProcessorFormatter)
    receives casaguard's events as dicts with their fields, rendered by its own chain."""
    setup = """
    import logging, sys, structlog
    structlog.configure(
        processors=[
            structlog.stdlib.add_logger_name,
            structlog.stdlib.add_log_level,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(processors=[
        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
        structlog.processors.JSONRenderer(),
    ]))
    logging.basicConfig(level=logging.DEBUG, handlers=[handler])
    """
    result = _user_script(tmp_path, ms, complist, setup)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "DONE\n"
    records = [json.loads(line) for line in result.stderr.splitlines()]
    finished = [r for r in records if r["event"] == "task_finished"]
    assert [r["task"] for r in finished] == ["ft", "clearcal"]
    assert finished[0]["logger"] == "casaguard" and finished[0]["level"] == "info"
    assert finished[0]["outcome"] == "ok" and finished[0]["vis"] == str(ms)
    assert isinstance(finished[0]["pid"], int) and finished[0]["elapsed_s"] > 0
    assert any(r["event"] == "journal_dropped" and r["level"] == "debug" for r in records)


def test_processor_formatter_alone_gets_event_dicts(
    ms: Path, complist: Path, tmp_path: Path
) -> None:
    """Without structlog.configure, a ProcessorFormatter on a plain logging handler still
    receives each event as a dict (the record's message is the event dict)."""
    setup = """
    import logging, sys, structlog
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(processors=[
        structlog.stdlib.add_log_level,
        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
        structlog.processors.JSONRenderer(),
    ]))
    logging.getLogger("casaguard").addHandler(handler)
    logging.getLogger("casaguard").setLevel(logging.INFO)
    """
    result = _user_script(tmp_path, ms, complist, setup)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "DONE\n"
    records = [json.loads(line) for line in result.stderr.splitlines()]
    started = [r for r in records if r["event"] == "task_started"]
    assert [(r["task"], r["vis"], r["level"]) for r in started] == [
        ("ft", str(ms), "info"),
        ("clearcal", str(ms), "info"),
    ]


def test_unconfigured_warning_goes_to_stderr_only(
    capsys: pytest.CaptureFixture[str], no_leaks: None
) -> None:
    """With nothing configured, a crash's warning reaches Python's last-resort handler on
    stderr, and capture_logs still sees the event dicts; stdout receives nothing."""
    with capture_logs() as captured, pytest.raises(casaguard.Segfault):
        casaguard.call(crashers.segfault, casa=False)
    classified = next(e for e in captured if e["event"] == "crash_classified")
    assert classified["kind"] == "segfault" and classified["signal"] == "SIGSEGV"
    code = textwrap.dedent(
        """
        import casaguard, casaguard.corpus.crashers as c
        try:
            casaguard.call(c.segfault, casa=False)
        except casaguard.Segfault:
            print("raised")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.stdout == "raised\n"
    assert "crash_classified" in result.stderr and "kind=segfault" in result.stderr
    assert capsys.readouterr().out == ""


def test_event_reads_as_one_line() -> None:
    """An Event reads as one line ``event key=value ...`` for a plain logging formatter."""
    line = str(events.Event(event="task_finished", task="ft", pid=7, _record=None))
    assert line == "task_finished pid=7 task=ft"
    assert events.LOGGER_NAME == "casaguard"
