"""``casaguard restore-journal MS``: roll an MS back from a journal its dead caller left behind.

A journal outlives its call only when the calling process itself was killed
mid-write or a restore failed; the next guarded write to the MS then refuses
with the command to run. ``restore-journal JOURNAL`` picks one of several
pending journals; ``restore-journal BACKUP`` (a ``casaguard repair`` backup,
``.<ms>-repair.casaguard-journal-...``) undoes that repair. Exit codes: 0
restored, 1 refused or failed (one line says why; the journal is kept), 2 bad
input (not an MS, no journal).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from casaguard.errors import InvalidInput, JournalError
from casaguard.exits import EXIT_BAD_INPUT, EXIT_OK, EXIT_REFUSED
from casaguard.journal import layout as journal_layout
from casaguard.journal import recovery as journal_recovery
from casaguard.journal import trust as journal_trust
from casaguard.repairs import journal as repair_journal

DONE_MESSAGE = "restored {count} paths of {vis} from {journal}"


def register(commands: Any) -> None:
    """Add the ``restore-journal`` sub-command to the CLI's sub-parsers."""
    parser = commands.add_parser(
        "restore-journal",
        help="roll an MS back from a journal left by a guarded write that died mid-write",
        description=(
            "Put back every file a killed guarded call snapshotted (table.lock sync data "
            "included), delete what it created, then remove the journal. Give the MS; its "
            "journal is found beside it or in the per-user journal directory. Refuses when "
            "the writer still lives, the MS is locked, or the MS was written after the call "
            "died (--force restores anyway). Give a journal instead to choose one of several, "
            "or a `casaguard repair` backup (.<ms>-repair.casaguard-journal-...) to undo that "
            "repair."
        ),
    )
    parser.add_argument(
        "ms", help="the Measurement Set (or a journal, or a repair backup, kept beside it)"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="restore even if the MS was written after the call died or its pid looks alive",
    )
    parser.set_defaults(handler=_restore)


def _restore(args: argparse.Namespace) -> int:
    target = Path(args.ms)
    if repair_journal.backup_ms(target.absolute()) is not None:
        return _undo_repair(target, force=args.force)
    ms, chosen = target, None
    if journal_layout.JOURNAL_MARK in target.name:
        found = journal_trust.ms_of_journal(target.absolute())
        if found is None:
            return _fail(
                EXIT_BAD_INPUT, f"{target}: give the MS, not a journal outside its directory"
            )
        ms, chosen = found, target
    try:
        done = journal_recovery.recover(ms, journal=chosen, force=args.force)
    except InvalidInput as error:
        return _fail(EXIT_BAD_INPUT, str(error))
    except JournalError as error:
        return _fail(EXIT_REFUSED, str(error))
    print(DONE_MESSAGE.format(count=len(done), vis=ms, journal=chosen or "its journal"))
    return EXIT_OK


def _undo_repair(backup: Path, *, force: bool) -> int:
    try:
        ms, done = repair_journal.undo_backup(backup, force=force)
    except InvalidInput as error:
        return _fail(EXIT_BAD_INPUT, str(error))
    except JournalError as error:
        return _fail(EXIT_REFUSED, str(error))
    print(DONE_MESSAGE.format(count=len(done), vis=ms, journal=backup))
    return EXIT_OK


def _fail(code: int, message: str) -> int:
    print(f"casaguard: {' '.join(message.split())}", file=sys.stderr)
    return code
