"""``casaguard run TASK --vis A.ms B.ms ...``: one guarded casatask over many MSs at once.

Also the parts any batch-shaped command shares (``casaguard probe`` takes the
same ``--jobs`` / ``--scheduler``; ``casaguard repair`` the same ``--vis-list``):
``add_engine_arguments`` and ``engine_options``, the ``--vis-list`` reader
``vis_paths``, the live ``ProgressBar``, the summary ``render_table`` (both rich),
the ``--json`` document ``batch_document``, and ``exit_code``.

Registered by ``casaguard.cli.main``; this module never imports it (``cli`` is the top).
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import IO, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from casaguard.batch import mapping as batch
from casaguard.batch.item import ItemOutcome
from casaguard.cli import output as cli_output
from casaguard.cli.options import add_task_options
from casaguard.errors import CasaCrash, ChildError, InvalidInput
from casaguard.exits import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK

RUN_EPILOG = (
    "Exit codes: 0 every MS ok; 1 any MS failed (crash, CASA error, SEVERE); "
    "2 bad input (bad option, unknown task or parameter, unreachable scheduler)."
)


# ----------------------------------------------------------------------------- shared parts


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--jobs N`` and ``--scheduler ADDRESS`` (see ``engine_options``)."""
    parser.add_argument(
        "-j",
        "--jobs",
        type=int,
        default=None,
        metavar="N",
        help="guarded calls at once on this machine (default: the number of CPUs)",
    )
    parser.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="run on a Dask cluster instead, e.g. tcp://head:8786 (needs casaguard[dask])",
    )


def engine_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``executor`` and ``jobs`` keywords of the batch API, from ``--scheduler`` / ``--jobs``.

    Raises:
        InvalidInput: ``--jobs`` below 1, or both options at once.
    """
    if args.jobs is not None and args.jobs < 1:
        raise InvalidInput(f"--jobs must be at least 1, got {args.jobs}")
    if args.jobs is not None and args.scheduler:
        raise InvalidInput("--jobs is for this machine; with --scheduler the cluster decides")
    return {"executor": args.scheduler or None, "jobs": args.jobs}


class ProgressBar:
    """A live progress bar (rich) on a terminal; silent on a pipe or a file.

    Use it as the batch API's ``progress`` callback. A failed item gets its own
    line above the bar, so failures stay visible while the batch goes on; log
    records printed meanwhile (``cli_output``'s handler) also land above it.
    """

    def __init__(self, total: int, stream: IO[str] | None = None) -> None:
        if stream is None:
            self.console = cli_output.stderr_console()
            self.enabled = cli_output.live_allowed(self.console)
        else:
            self.console = cli_output.console_for(stream)
            self.enabled = cli_output.live_allowed(self.console)
        self.total = total
        self.failed = 0
        self.started = time.monotonic()
        self._progress = Progress(
            BarColumn(bar_width=28),
            MofNCompleteColumn(),
            TextColumn("ok {task.fields[ok]}  failed {task.fields[failed]}"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
            disable=not self.enabled,
        )
        self._task = self._progress.add_task("", total=total, ok=0, failed=0, rate="")
        if self.enabled:
            self._progress.start()

    def __call__(self, outcome: ItemOutcome, done: int, total: int) -> None:
        if not outcome.ok:
            self.failed += 1
            if self.enabled:
                line = f"FAILED {outcome.label}: {outcome.kind} {outcome_detail(outcome)}"
                self.console.print(Text(line, style="red"), no_wrap=True, overflow="ellipsis")
        elapsed = time.monotonic() - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        self._progress.update(
            self._task,
            completed=done,
            ok=done - self.failed,
            failed=self.failed,
            rate=f"{rate:.2f} items/s",
            refresh=True,
        )

    def close(self) -> None:
        """Remove the bar (the failure lines above it stay)."""
        if self.enabled:
            self._progress.stop()


def outcome_detail(outcome: ItemOutcome) -> str:
    """One line on why an item failed: signal and glibc's words, CASA's own error, or the
    exception."""
    error = outcome.error
    if outcome.ok or error is None:
        return ""
    if isinstance(error, ChildError):
        # casa_error is CASA's message without the log line's timestamp and priority.
        message = error.casa_error or error.exc_message or error.detail
        text = f"{error.exc_type.rpartition('.')[2]}: {message}"
    elif isinstance(error, CasaCrash):
        text = " ".join(part for part in (error.signal, error.detail) if part)
        if error.casa_error:
            text += f' after CASA error "{error.casa_error}"'
    else:
        text = f"{type(error).__name__}: {error}"
    lines = text.strip().splitlines()
    return lines[0] if lines else ""


def render_table(
    outcomes: Sequence[ItemOutcome],
    *,
    elapsed_s: float,
    detail: Callable[[ItemOutcome], str] = outcome_detail,
    width: int | None = None,
) -> str:
    """The human summary (a rich table): one row per input, then totals by outcome kind.

    Args:
        outcomes: the batch's outcomes, in input order.
        elapsed_s: the batch's wall time, for the throughput line.
        detail: the last column's text for an outcome.
        width: clip rows to this many characters (default: the terminal's width
            when stdout is a terminal; else rows are never clipped, for logs).
    """
    colors = width is None and cli_output.colors_allowed()
    if width is None:
        width = _columns() if sys.stdout.isatty() else _UNCLIPPED
    table = Table(box=None, pad_edge=False, header_style="bold" if colors else "")
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("input", no_wrap=True)
    table.add_column("outcome", no_wrap=True)
    table.add_column("time", justify="right", no_wrap=True)
    table.add_column("detail", no_wrap=True, overflow="ellipsis")
    for o in outcomes:
        table.add_row(
            str(o.index + 1),
            _clip(o.label, _LABEL_WIDTH, left=True),
            Text(o.kind, style=("green" if o.ok else "red") if colors else ""),
            f"{o.elapsed_s:.1f} s",
            detail(o),
        )
    buffer = io.StringIO()
    console = Console(
        file=buffer,
        width=width,
        force_terminal=colors,
        color_system="standard" if colors else None,
        highlight=False,
        markup=False,
    )
    console.print(table)
    rows = [row.rstrip() for row in buffer.getvalue().splitlines()]
    return "\n".join([*rows, summary_line(outcomes, elapsed_s)])


def summary_line(outcomes: Sequence[ItemOutcome], elapsed_s: float) -> str:
    """``3 items: 2 ok, 1 failed (double-free 1) in 4.2 s, 0.71 items/s``."""
    kinds = Counter(o.kind for o in outcomes if not o.ok)
    failed = sum(kinds.values())
    by_kind = ", ".join(f"{kind} {count}" for kind, count in sorted(kinds.items()))
    rate = len(outcomes) / elapsed_s if elapsed_s > 0 else 0.0
    return (
        f"{len(outcomes)} items: {len(outcomes) - failed} ok, {failed} failed"
        + (f" ({by_kind})" if by_kind else "")
        + f" in {elapsed_s:.1f} s, {rate:.2f} items/s"
    )


def batch_document(
    outcomes: Sequence[ItemOutcome], *, elapsed_s: float, **header: Any
) -> dict[str, Any]:
    """The ``--json`` document: header fields, totals, and every outcome's ``facts()``."""
    kinds = Counter(o.kind for o in outcomes)
    failed = sum(not o.ok for o in outcomes)
    return {
        **header,
        "total": len(outcomes),
        "ok": len(outcomes) - failed,
        "failed": failed,
        "kinds": dict(sorted(kinds.items())),
        "elapsed_s": round(elapsed_s, 4),
        "items_per_s": round(len(outcomes) / elapsed_s, 4) if elapsed_s > 0 else None,
        "outcomes": [o.facts() for o in outcomes],
    }


def exit_code(outcomes: Sequence[ItemOutcome]) -> int:
    """2 if any input was rejected as invalid, else 1 if any item failed, else 0."""
    if any(isinstance(o.error, InvalidInput) for o in outcomes):
        return EXIT_BAD_INPUT
    if any(not o.ok for o in outcomes):
        return EXIT_FAILED
    return EXIT_OK


#: Rows are never clipped when stdout is not a terminal (a log, a pipe).
_UNCLIPPED = 100_000
#: An input's label is clipped on the left beyond this, keeping a path's informative end.
_LABEL_WIDTH = 60


def vis_paths(given: Sequence[str], vis_list: str | None, *, usage: str) -> list[str]:
    """The MSs a batch-shaped command got: those named, then those of ``--vis-list``.

    Args:
        given: the paths named on the command line.
        vis_list: the ``--vis-list`` file (one path a line, blank lines skipped;
            ``-`` for stdin), or ``None``.
        usage: how to name MSs, for the message when there are none.

    Returns:
        The paths, in the order given.

    Raises:
        InvalidInput: the list cannot be read, or no MS was given at all.
    """
    paths = list(given)
    if vis_list:
        try:
            if vis_list == "-":
                text = sys.stdin.read()
            else:
                with open(vis_list, encoding="utf-8") as handle:
                    text = handle.read()
        except OSError as error:
            raise InvalidInput(f"cannot read --vis-list {vis_list}: {error}") from error
        paths += [line.strip() for line in text.splitlines() if line.strip()]
    if not paths:
        raise InvalidInput(f"no MS given: {usage} or --vis-list FILE")
    return paths


def _columns() -> int:
    return shutil.get_terminal_size((120, 24)).columns


def _clip(text: str, width: int, *, left: bool = False) -> str:
    if len(text) <= width:
        return text
    if left:  # keep a path's informative end
        return "..." + text[-(width - 3) :]
    return text[: width - 3] + "..."


# ----------------------------------------------------------------------------- casaguard run


def register(commands: Any) -> None:
    """Add ``casaguard run`` to the CLI's sub-commands."""
    run = commands.add_parser(
        "run",
        help="run one guarded casatask over many MSs at once",
        description=(
            "Run casatasks.TASK on every MS, each in its own sandbox child, several at "
            "once (or on a Dask cluster). A crash of one MS never stops the others; "
            "the end is a table of what happened to each. Parameter values are JSON, "
            "else strings: --param complist=model.cl --param usescratch=true"
        ),
        epilog=RUN_EPILOG,
    )
    run.add_argument("task", help="casatask name, e.g. ft")
    run.add_argument("--vis", nargs="+", default=[], metavar="MS", help="the Measurement Sets")
    run.add_argument(
        "--vis-list",
        metavar="FILE",
        help="read more MS paths from FILE, one per line ('-' for stdin)",
    )
    run.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a task parameter for every MS (repeat)",
    )
    run.add_argument(
        "--probe-first",
        action="store_true",
        help="probe each MS first (read-only) and skip those it calls unsafe",
    )
    add_engine_arguments(run)
    add_task_options(run, json_help="print one JSON document instead of the table")
    run.set_defaults(handler=_cmd_run)


def parse_params(items: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings to a dict; values are JSON when they parse, else strings.

    Raises:
        InvalidInput: an item without ``=``, or a ``vis`` (use ``--vis``).
    """
    params: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise InvalidInput(f"parameter {item!r} is not KEY=VALUE")
        if key == "vis":
            raise InvalidInput("give the MSs with --vis, not --param vis=...")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def _cmd_run(args: argparse.Namespace) -> int:
    params = parse_params(args.param)
    paths = vis_paths(args.vis, args.vis_list, usage="use --vis A.ms B.ms ...")
    engine = engine_options(args)
    bar = ProgressBar(len(paths))
    started = time.monotonic()
    try:
        outcomes = batch.map_task(
            args.task,
            [{"vis": path, **params} for path in paths],
            timeout=args.timeout,
            lock_timeout=args.lock_timeout,
            strict=args.strict,
            mode=args.mode,
            progress=bar,
            probe_first=args.probe_first,
            **engine,
        )
    finally:
        bar.close()
    elapsed = time.monotonic() - started
    if args.json:
        document = batch_document(
            outcomes,
            elapsed_s=elapsed,
            task=args.task,
            engine="dask" if engine["executor"] else "local",
            scheduler=engine["executor"],
        )
        print(json.dumps(document, default=str))
    else:
        print(render_table(outcomes, elapsed_s=elapsed))
    return exit_code(outcomes)
