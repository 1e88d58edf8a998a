"""Terminal output of the ``casaguard`` command: log records, progress bar and tables (rich).

The library only emits events (``casaguard.events``); the command decides how
they look. Log records and the live progress bar share one rich console on
``stderr`` (a record is printed *above* the bar, never into it); tables are
printed to stdout as text (``casaguard.cli.batch.render_table`` renders the batch
summary with rich). The live bar draws only when stderr is a terminal (a pipe
or a log file gets no cursor movement at all);
colors only when stdout and stderr are terminals, never with ``--json`` or
under ``NO_COLOR`` (https://no-color.org).

Registered by ``casaguard.cli.main``; this module never imports it.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import IO

import structlog
from rich.console import Console
from rich.text import Text

from casaguard import events

#: Style of a log record's line, by level name.
LEVEL_STYLES = {"WARNING": "yellow", "ERROR": "bold red", "CRITICAL": "bold red"}


class _State:
    plain = False  # --json: no colors
    stderr: Console | None = None


def colors_allowed() -> bool:
    """Colors only when stdout and stderr are terminals, without NO_COLOR or --json."""
    if _State.plain or "NO_COLOR" in os.environ:
        return False
    return sys.stdout.isatty() and sys.stderr.isatty()


def _own_width(stream: IO[str]) -> int | None:
    """The width of ``stream``'s own terminal (rich would ask stdin's first), else None."""
    try:
        return os.get_terminal_size(stream.fileno()).columns or None
    except (OSError, ValueError):
        return None


def _console(*, stderr: bool) -> Console:
    color = colors_allowed()
    return Console(
        stderr=stderr,  # follows sys.stderr/sys.stdout when they are swapped (tests)
        width=_own_width(sys.stderr if stderr else sys.stdout),
        color_system="auto" if color else None,
        no_color=not color,
        highlight=False,
        emoji=False,
        markup=False,
    )


def stderr_console() -> Console:
    """The console for log records and the progress bar."""
    if _State.stderr is None:
        _State.stderr = _console(stderr=True)
    return _State.stderr


def live_allowed(console: Console) -> bool:
    """Whether a live display (progress bar) may draw on ``console``: only on a terminal.

    ``--json`` keeps the bar on a terminal's stderr (stdout holds the document);
    it only turns colors off.
    """
    return console.is_terminal


def console_for(stream: IO[str]) -> Console:
    """A console writing to ``stream``; a terminal only if the stream is one."""
    tty = stream.isatty()
    return Console(
        file=stream,
        width=_own_width(stream),
        force_terminal=tty,
        color_system="standard" if tty and colors_allowed() else None,
        highlight=False,
        markup=False,
    )


class ConsoleLogHandler(logging.Handler):
    """Print each record as one line on a rich console, above any live progress bar."""

    def __init__(self, console: Console | None = None) -> None:
        super().__init__()
        self._console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            console = self._console or stderr_console()
            console.print(Text(line, style=LEVEL_STYLES.get(record.levelname, "")), soft_wrap=True)
        except Exception:  # noqa: BLE001 -- logging must never raise into a CASA call
            self.handleError(record)


def configure(verbosity: int, *, json_logs: bool = False, plain: bool = False) -> None:
    """Show casaguard's events on stderr: WARNING by default, INFO with -v, DEBUG with -vv.

    Args:
        verbosity: the count of ``-v``.
        json_logs: one JSON object per event instead of aligned text.
        plain: no colors (``--json``).
    """
    _State.plain = plain
    _State.stderr = None
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if json_logs
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    handler = ConsoleLogHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.add_log_level,
                structlog.processors.TimeStamper(fmt="iso"),
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                renderer,
            ]
        )
    )
    logger = logging.getLogger(events.LOGGER_NAME)
    for old in [h for h in logger.handlers if isinstance(h, ConsoleLogHandler)]:
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(max(logging.WARNING - 10 * verbosity, logging.DEBUG))
    logger.propagate = False
