"""The ``casaguard`` command line. The only module that configures logging.

Exit codes: 0 success, 1 a guarded task failed (or an MS is unsafe: a task
refused because of a pending journal, as ``probe`` calls it unsafe), 2 bad
input or a failure of casaguard itself, 130 interrupted, 141 stdout closed (`| head`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import casaguard
from casaguard.cli import output as cli_output
from casaguard.cli.options import add_casa_parameters, add_task_options, casa_arguments
from casaguard.errors import CasaCrash, CasaguardError, InvalidInput, JournalError
from casaguard.exits import (
    EXIT_BAD_INPUT,
    EXIT_BROKEN_PIPE,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
)

Handler = Callable[[argparse.Namespace], int]


def configure_logging(verbosity: int, *, json_logs: bool = False, plain: bool = False) -> None:
    """Send casaguard's events to stderr (WARNING by default, -v for INFO); see cli_output."""
    cli_output.configure(verbosity, json_logs=json_logs, plain=plain)


def _add_journal_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-journal",
        dest="journal",
        action="store_false",
        help="no safety copy and no pre-flight checks: a crash mid-write is not undone",
    )
    parser.add_argument(
        "--discard-orphan-journal",
        action="store_true",
        help="delete a pending journal that a dead guarded write left on the MS and keep "
        "the MS as that call left it (the alternative: casaguard restore-journal MS)",
    )


def _task_outcome(args: argparse.Namespace, run: Callable[[], Any]) -> int:
    try:
        result = run()
    except CasaCrash as error:
        if args.json:
            print(json.dumps({"ok": False, **error.facts()}, default=str))
        else:
            print(f"casaguard: {error}", file=sys.stderr)
        return EXIT_FAILED
    except JournalError as error:
        # A pending journal (or a restore that failed): the MS is unsafe, as probe says.
        if args.json:
            print(json.dumps({"ok": False, "error": "JournalError", "message": str(error)}))
        else:
            print(f"casaguard: {' '.join(str(error).split())}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps({"ok": True, "result": result}, default=str))
    elif result is not None:
        print(result)
    return EXIT_OK


def _guard_options(args: argparse.Namespace) -> dict[str, Any]:
    """casaguard's own options of a task command (``add_task_options`` + the journal's)."""
    return {
        "timeout": args.timeout,
        "lock_timeout": args.lock_timeout,
        "strict": args.strict,
        "mode": args.mode,
        "journal": args.journal,
        "discard_orphan_journal": args.discard_orphan_journal,
    }


def _drop_in_handler(drop_in: Callable[..., Any]) -> Handler:
    """The handler of ``casaguard ft`` / ``clearcal``: the drop-in, with the parsed options."""

    def handle(args: argparse.Namespace) -> int:
        return _task_outcome(
            args,
            lambda: drop_in(**casa_arguments(args, drop_in), **_guard_options(args)),
        )

    return handle


def _cmd_task(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidInput(f"parameter {item!r} is not KEY=VALUE")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return _task_outcome(
        args,
        lambda: casaguard.run_task(
            args.name,
            **_guard_options(args),
            writes=args.writes.split(",") if args.writes else None,
            **params,
        ),
    )


def _cmd_demo(args: argparse.Namespace) -> int:
    from casaguard.cli.demo import run_demo

    return run_demo(args.dir, keep=args.keep)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="casaguard",
        description=(
            "Call CASA safely: every task runs in a sandbox child process, and a crash "
            "(double free, segfault, C++ terminate, hang...) becomes a classified error "
            "instead of taking your pipeline down."
        ),
        epilog="Exit codes: 0 ok, 1 task failed / MS unsafe, 2 bad input, 130 interrupted, "
        "141 stdout closed (| head).",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log events (-v, -vv)"
    )
    parser.add_argument(
        "--log-json", action="store_true", help="log events as JSON lines on stderr"
    )
    parser.add_argument("--version", action="version", version=f"casaguard {casaguard.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = commands.add_parser(
        "demo",
        help="simulate a small MS and run the guarded workflow on it (no data needed)",
        description="Simulate a small MS, run guarded CASA tasks on it, show a classified crash.",
    )
    demo.add_argument(
        "--dir",
        default="casaguard-demo",
        help="where to write the demo MS (default ./casaguard-demo)",
    )
    demo.add_argument("--keep", action="store_true", help="keep the demo directory afterwards")
    demo.set_defaults(handler=_cmd_demo)

    for drop_in in (casaguard.ft, casaguard.clearcal):
        name = drop_in.__name__
        command = commands.add_parser(
            name, help=f"guarded casatasks.{name}", description=f"Guarded casatasks.{name}."
        )
        add_casa_parameters(command, drop_in)
        add_task_options(command, json_help="print the outcome as JSON")
        _add_journal_option(command)
        command.set_defaults(handler=_drop_in_handler(drop_in))

    task = commands.add_parser(
        "task",
        help="run any casatask by name, guarded",
        description="Run casatasks.NAME(**params) in a sandbox child. Values: JSON, else strings.",
    )
    task.add_argument("name", help="casatask name, e.g. flagdata")
    task.add_argument("param", nargs="*", help="KEY=VALUE parameters, e.g. vis=my.ms mode=summary")
    task.add_argument(
        "--writes",
        default=None,
        help="comma-separated columns/subtables of vis the task changes (journaled): FLAG,FLAG_ROW",
    )
    add_task_options(task, json_help="print the outcome as JSON")
    _add_journal_option(task)
    task.set_defaults(handler=_cmd_task)

    for register in _feature_commands():
        register(commands)
    return parser


def _feature_commands() -> list[Callable[[Any], None]]:
    """Sub-commands owned by feature modules (each module has ``register(commands)``)."""
    from casaguard.cli import batch as cli_batch
    from casaguard.cli import journal as cli_journal
    from casaguard.cli import probe as cli_probe
    from casaguard.cli import regress as cli_regress
    from casaguard.cli import repair as cli_repair

    return [
        cli_regress.register,
        cli_batch.register,
        cli_probe.register,
        cli_journal.register,
        cli_repair.register,
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(
        args.verbose, json_logs=args.log_json, plain=bool(getattr(args, "json", False))
    )
    try:
        code: int = args.handler(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except BrokenPipeError:
        # Whoever read our stdout stopped (`casaguard probe --json | head`): stop as
        # quietly as a program that dies of SIGPIPE; nothing more goes to the pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        print("casaguard: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except CasaguardError as error:
        print(f"casaguard: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
