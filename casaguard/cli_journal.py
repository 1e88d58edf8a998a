"""``casaguard restore-journal DIR``: roll an MS back from a journal its dead caller left behind.

A journal outlives its call only when the calling process itself was killed
mid-write (the child dies with it). Guarded calls then log ``journal_orphan``
with the command to run.
"""

from __future__ import annotations

import argparse
from typing import Any

from casaguard import journal

EXIT_OK = 0


def register(commands: Any) -> None:
    """Add the ``restore-journal`` sub-command to the CLI's sub-parsers."""
    parser = commands.add_parser(
        "restore-journal",
        help="roll an MS back from a journal left by a caller that died mid-write",
        description=(
            "Put back every file a killed guarded call snapshotted, delete what it "
            "created, then remove the journal. Find journals beside the MS: "
            ".<ms>.casaguard-journal-*"
        ),
    )
    parser.add_argument("journal", help="the journal directory")
    parser.set_defaults(handler=_restore)


def _restore(args: argparse.Namespace) -> int:
    done = journal.recover(args.journal)
    print(f"restored {len(done)} paths from {args.journal}")
    for path in done:
        print(f"  {path}")
    return EXIT_OK
