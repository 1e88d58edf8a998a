"""Command-line options shared by every sub-command that runs guarded tasks."""

from __future__ import annotations

import argparse

from casaguard.sandbox.callspec import DEFAULT_LOCK_TIMEOUT_S


def add_task_options(parser: argparse.ArgumentParser, *, json_help: str) -> None:
    """Add --timeout, --lock-timeout, --no-strict, --mode and --json to ``parser``."""
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds before a child is killed"
    )
    parser.add_argument(
        "--lock-timeout",
        type=float,
        default=DEFAULT_LOCK_TIMEOUT_S,
        help="seconds to wait while another process holds an MS's lock "
        f"(default {DEFAULT_LOCK_TIMEOUT_S:g})",
    )
    parser.add_argument(
        "--no-strict",
        dest="strict",
        action="store_false",
        help="accept a normal return even if CASA logged SEVERE lines",
    )
    parser.add_argument(
        "--mode",
        choices=["spawn", "template"],
        default=None,
        help="spawn: a fresh interpreter per call; template: a fork of a warm template "
        "(default: $CASAGUARD_MODE, else template)",
    )
    parser.add_argument("--json", action="store_true", help=json_help)
