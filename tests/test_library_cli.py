"""The casaguard command's terminal output and conventions (rich output, --json, help)."""

from __future__ import annotations

import argparse
import inspect
import io
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from conftest import DROP_ROOT_POWERS

import casaguard
from casaguard import events, exits
from casaguard.batch.item import ItemOutcome
from casaguard.cli import batch as cli_batch
from casaguard.cli import main as cli
from casaguard.cli import options as cli_options
from casaguard.cli import output as cli_output
from casaguard.errors import Segfault

CLI = [sys.executable, "-m", "casaguard"]
_CSI = re.compile(r"\x1b\[(\??)([0-9;]*)([A-Za-z])")


def terminal_screen(raw: str) -> list[str]:
    """What a terminal shows after ``raw``: a minimal VT100 (\\r, \\n, cursor up, erase line)."""
    screen: list[list[str]] = [[]]
    row = col = 0
    i = 0
    while i < len(raw):
        match = _CSI.match(raw, i)
        if match:
            private, args, command = match.groups()
            count = int(args or "1") if args.isdigit() else 1
            if not private and command == "A":
                row = max(0, row - count)
            elif not private and command == "K":
                line = screen[row]
                if args in ("", "0"):
                    del line[col:]
                else:  # 1K / 2K
                    screen[row] = [" "] * col if args == "1" else []
            i = match.end()
            continue
        char = raw[i]
        i += 1
        if char == "\r":
            col = 0
        elif char == "\n":
            row, col = row + 1, 0
            while len(screen) <= row:
                screen.append([])
        elif char >= " ":
            line = screen[row]
            line.extend(" " * (col - len(line)))
            if col < len(line):
                line[col] = char
            else:
                line.append(char)
            col += 1
    return ["".join(line).rstrip() for line in screen]


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def handler_on() -> Iterator[logging.Logger]:
    """Attach a ConsoleLogHandler (as the CLI does) to the casaguard logger for one test,
    with structlog unconfigured as in the CLI (capture_logs elsewhere configures it)."""
    structlog.reset_defaults()
    logger = logging.getLogger(events.LOGGER_NAME)
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield logger
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]


def test_warning_prints_above_the_live_progress_bar(handler_on: logging.Logger) -> None:
    """A warning logged while the bar is live appears as one whole line of its own on the
    terminal: no leftover of the bar on it, and the bar is redrawn below it."""
    stream = _Tty()
    bar = cli_batch.ProgressBar(3, stream)
    assert bar.enabled
    handler = cli_output.ConsoleLogHandler(bar.console)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler_on.handlers[:] = [handler]
    handler_on.setLevel(logging.INFO)
    handler_on.propagate = False
    bar(ItemOutcome(index=0, input="a.ms"), 1, 3)
    events.get_logger().warning("journal_wait", vis="a.ms", holder_pid=7)
    crash = Segfault("ft child died", task="ft", pid=4242, signal="SIGSEGV")
    bar(ItemOutcome(index=1, input="b.ms", error=crash), 2, 3)
    screen_live = terminal_screen(stream.getvalue())
    bar.close()
    assert "WARNING journal_wait holder_pid=7 vis=a.ms" in screen_live
    failed = [line for line in screen_live if line.startswith("FAILED b.ms: segfault")]
    assert len(failed) == 1
    bars = [line for line in screen_live if "2/3" in line]
    assert len(bars) == 1 and "ok 1" in bars[0] and "failed 1" in bars[0]
    assert screen_live.index(bars[0]) > screen_live.index(failed[0])
    screen = terminal_screen(stream.getvalue())
    assert not any("/3" in line for line in screen)  # the bar is gone after close()
    assert "WARNING journal_wait holder_pid=7 vis=a.ms" in screen


def test_plain_output_off_a_terminal_and_under_no_color(ms: Path, tmp_path: Path) -> None:
    """`casaguard run` into pipes, and with NO_COLOR, writes no escape sequence at all."""
    for extra in ({}, {"NO_COLOR": "1"}):
        result = subprocess.run(
            [*CLI, "-v", "run", "clearcal", "--vis", str(ms), str(tmp_path / "missing.ms")],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
            env={**os.environ, **extra},
            check=False,
        )
        # A missing MS is rejected before CASA (bad input), like `casaguard clearcal` on it.
        assert result.returncode == exits.EXIT_BAD_INPUT, result.stderr
        assert "\x1b" not in result.stdout + result.stderr
        assert "task_finished" in result.stderr  # -v shows info records, plainly
        assert result.stdout.splitlines()[0].split() == ["#", "input", "outcome", "time", "detail"]


def _subcommand(name: str) -> argparse.ArgumentParser:
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sub: argparse.ArgumentParser = commands.choices[name]
    return sub


@pytest.mark.parametrize("command", ["ft", "clearcal"])
def test_every_task_option_has_help(command: str) -> None:
    """Every option of `casaguard ft` / `clearcal` has help text, the CASA parameters included."""
    missing = [a.dest for a in _subcommand(command)._actions if not a.help]
    assert missing == []


@pytest.mark.parametrize(
    "args", [["regress", "--list"], ["probe", "--json", "/nonexistent/missing.ms"]]
)
def test_a_closed_stdout_ends_the_command_quietly(args: list[str]) -> None:
    """With the reader of its stdout gone (`| head` that exited), a command exits 141, as a
    program killed by SIGPIPE would, and prints no traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "casaguard", *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 141, result.stderr
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr


@pytest.mark.parametrize("command", ["ft", "clearcal"])
def test_cli_options_are_the_drop_ins_parameters(command: str) -> None:
    """`casaguard ft` / `clearcal` take one option per CASA parameter of the drop-in, with the
    drop-in's defaults, and hand the parsed values to it by name."""
    drop_in = getattr(casaguard, command)
    params = [
        p
        for p in inspect.signature(drop_in).parameters.values()
        if p.kind is p.POSITIONAL_OR_KEYWORD
    ]
    sub = _subcommand(command)
    dests = {a.dest for a in sub._actions} - {"help"}
    assert {p.name for p in params} <= dests
    defaults = cli_options.casa_arguments(sub.parse_args(["x.ms"]), drop_in)
    assert defaults == {"vis": "x.ms", **{p.name: p.default for p in params[1:]}}
    flags = {
        "ft": ["--model", "a.im", "--model", "b.im", "--nterms", "2", "--usescratch"],
        "clearcal": ["--field", "0", "--addmodel"],
    }[command]
    given = cli_options.casa_arguments(sub.parse_args(["x.ms", *flags]), drop_in)
    expected = {
        "ft": {"model": ["a.im", "b.im"], "nterms": 2, "usescratch": True},
        "clearcal": {"field": "0", "addmodel": True},
    }[command]
    assert given == {**defaults, **expected}


@pytest.mark.parametrize("command", ["probe", "regress", "doctor", "run", "ft", "clearcal", "task"])
def test_json_is_one_flag_everywhere(command: str) -> None:
    """Every command that speaks JSON takes the same --json flag (no value): it prints the
    document on stdout."""
    option = next(a for a in _subcommand(command)._actions if "--json" in a.option_strings)
    assert option.nargs == 0 and option.dest == "json"


def test_run_json_is_plain_and_parses(ms: Path, tmp_path: Path) -> None:
    """`casaguard run --json` prints one JSON document on stdout and nothing else there."""
    result = subprocess.run(
        [*CLI, "run", "clearcal", "--json", "--vis", str(ms)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["ok"] == 1 and document["outcomes"][0]["kind"] == "ok"


def test_run_table_detail_is_the_clean_casa_error(ms: Path, complist: Path, tmp_path: Path) -> None:
    """`casaguard run ft` on an MS whose table.lock is read-only (as a user who obeys file
    modes) shows CASA's clean error in the detail column, not the SEVERE log line with its
    timestamp. (Only the lock file: a read-only table.dat is refused by the pre-flight
    before CASA runs.)"""
    (ms / "table.lock").chmod(0o444)
    try:
        result = subprocess.run(
            [
                *DROP_ROOT_POWERS,
                *CLI,
                "run",
                "ft",
                "--vis",
                str(ms),
                "--param",
                f"complist={complist}",
                "--param",
                "usescratch=true",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
            check=False,
        )
    finally:
        (ms / "table.lock").chmod(0o644)
    assert result.returncode == exits.EXIT_FAILED, result.stderr
    row = result.stdout.splitlines()[1]
    assert row.split()[2] == "casa-error"
    detail = re.split(r"\d+\.\d s  ", row, maxsplit=1)[1]
    assert detail.startswith(
        "RuntimeError: Caught Exception: Error (Bad file descriptor) when "
        "acquiring lock on " + str(ms / "table.lock")
    ), row
    assert "SEVERE" not in row


def test_probe_fix_for_own_read_only_table_dat_is_chmod(ms: Path, tmp_path: Path) -> None:
    """A 0444 table.dat the caller already owns gets the fix 'chmod u+w', never a chown to
    the caller; a table.dat of another user still gets the chown."""
    (ms / "table.dat").chmod(0o444)
    result = subprocess.run(
        [*DROP_ROOT_POWERS, *CLI, "probe", "--json", str(ms)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        check=False,
    )
    document = json.loads(result.stdout)
    report = document["reports"][0] if "reports" in document else document
    finding = next(f for f in report["findings"] if f["code"] == "TABLE_DAT_NOT_WRITABLE")
    assert finding["fix"].startswith("chmod u+w table.dat") and "chown" not in finding["fix"]
    os.chown(ms / "table.dat", 65534, 65534)
    result = subprocess.run(
        [*DROP_ROOT_POWERS, *CLI, "probe", "--json", str(ms)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        check=False,
    )
    document = json.loads(result.stdout)
    report = document["reports"][0] if "reports" in document else document
    finding = next(f for f in report["findings"] if f["code"] == "TABLE_DAT_NOT_WRITABLE")
    assert finding["fix"].startswith("chown -R root the MS")
