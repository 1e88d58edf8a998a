"""``casaguard repair MS...``: the command-line face of ``casaguard.repair``.

Dry run by default: for each cause with a safe fix, the exact change and why;
``--apply`` makes the changes (backup first, then re-probe and canary; rolled
back if that fails). Exit codes as for ``probe``: 0 nothing to do or repaired,
1 unsafe findings remain, 2 bad input (2 wins over 1). Many MSs run on the
batch engine (``casaguard.batch.mapping.map_repair``) with a progress bar and, for more
than one MS, the outcome table of ``casaguard run``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from casaguard.batch import mapping as batch
from casaguard.batch.item import ItemOutcome
from casaguard.cli import batch as cli_batch
from casaguard.exits import EXIT_BAD_INPUT, EXIT_OK, EXIT_UNSAFE
from casaguard.preflight.findings import SCHEMA_VERSION
from casaguard.repairs.report import RepairReport

EPILOG = (
    "Exit codes: 0 nothing to do or repaired; 1 unsafe findings remain (a dry run with fixes "
    "to make, or causes without a safe fix); 2 bad input. Undo an applied repair with "
    "`casaguard restore-journal BACKUP` (the report names BACKUP)."
)


def register(commands: Any) -> None:
    """Add the ``repair`` sub-command to the ``casaguard`` parser."""
    parser = commands.add_parser(
        "repair",
        help="fix what the probe finds, where a safe fix exists (dry run unless --apply)",
        description=(
            "Probe each MS and, for every cause with a known safe fix, show the exact change "
            "(files, columns, modes, owners) and why. --apply makes it: a backup first, then "
            "the fix, a re-probe and a guarded canary ft + clearcal on a slice copy; a failed "
            "verification rolls the fix back."
        ),
        epilog=EPILOG,
    )
    parser.add_argument("ms", nargs="*", help="MeasurementSet directories")
    parser.add_argument(
        "--vis-list", metavar="FILE", help="read more MS paths from FILE, one per line ('-': stdin)"
    )
    parser.add_argument("--apply", action="store_true", help="make the changes (default: dry run)")
    parser.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="skip the canary ft + clearcal after applying (the re-probe still runs)",
    )
    parser.add_argument(
        "--discard-journal",
        action="store_true",
        help="keep the MS as it is: move orphan journals into the backup instead of restoring",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per probe child")
    cli_batch.add_engine_arguments(parser)
    parser.set_defaults(handler=cmd_repair)


def exit_code(outcomes: list[ItemOutcome]) -> int:
    """2 if any input was bad (or its repair raised), else 1 if any MS stays unsafe, else 0."""
    codes = [r.exit_code if (r := _report(o)) is not None else EXIT_BAD_INPUT for o in outcomes]
    if EXIT_BAD_INPUT in codes:
        return EXIT_BAD_INPUT
    return EXIT_UNSAFE if EXIT_UNSAFE in codes else EXIT_OK


def _report(outcome: ItemOutcome) -> RepairReport | None:
    return outcome.value if outcome.ok and isinstance(outcome.value, RepairReport) else None


def cmd_repair(args: argparse.Namespace) -> int:
    paths = cli_batch.vis_paths(args.ms, args.vis_list, usage="casaguard repair A.ms B.ms ...")
    engine = cli_batch.engine_options(args)
    bar = cli_batch.ProgressBar(len(paths))
    started = time.monotonic()
    try:
        outcomes = batch.map_repair(
            paths,
            apply=args.apply,
            verify=args.verify,
            discard_journal=args.discard_journal,
            timeout=args.timeout,
            progress=bar,
            **engine,
        )
    finally:
        bar.close()
    elapsed = time.monotonic() - started
    if args.json:
        document = {
            "schema": SCHEMA_VERSION,
            "exit_code": exit_code(outcomes),
            "apply": args.apply,
            "reports": [
                r.to_dict() if (r := _report(o)) is not None else _failed(o) for o in outcomes
            ],
        }
        print(json.dumps(document, indent=2, default=str))
        return exit_code(outcomes)
    for outcome in outcomes:
        report = _report(outcome)
        if report is None:
            detail = cli_batch.outcome_detail(outcome)
            print(f"casaguard: repair of {outcome.label} failed: {detail}", file=sys.stderr)
        elif report.bad_input:
            first = report.unfixed[0] if report.unfixed else None
            text = f"{first.finding} ({first.code})" if first else "not a usable MS"
            print(f"casaguard: {text}", file=sys.stderr)
        else:
            print(render(report))
    if len(outcomes) > 1:
        print(cli_batch.render_table(outcomes, elapsed_s=elapsed, detail=_detail))
    return exit_code(outcomes)


def _failed(outcome: ItemOutcome) -> dict[str, Any]:
    return {
        "ms": os.path.abspath(str(outcome.input)),
        "exit_code": EXIT_BAD_INPUT,
        "error": cli_batch.outcome_detail(outcome),
    }


def _detail(outcome: ItemOutcome) -> str:
    report = _report(outcome)
    if report is None:
        return cli_batch.outcome_detail(outcome)
    after = f" -> {report.verdict_after}" if report.verdict_after else ""
    fixes = ", ".join(f"{f.code}:{f.status}" for f in report.fixes) or "no fixes"
    unfixed = f"; no fix: {', '.join(u.code for u in report.unfixed)}" if report.unfixed else ""
    return f"{report.verdict_before}{after}; {fixes}{unfixed}"


def render(report: RepairReport) -> str:
    """The human report for one MS: verdicts, each fix's exact changes and why, the rest."""
    head = f"{report.ms}: {report.verdict_before.upper()}"
    if report.verdict_after is not None:
        head += f" -> {report.verdict_after.upper()}"
    mode = "applied" if report.apply else "dry run; --apply makes these changes"
    if not report.apply and not report.fixes:
        mode = "dry run"
    lines = [f"{head} ({mode}, {report.elapsed_s:.1f} s)"]
    if not report.fixes and not report.unfixed:
        lines.append("  nothing to repair")
    for fix in report.fixes:
        lines.append(f"  fix {fix.code} [{fix.fix}, {fix.status}]: {fix.finding}")
        for change in fix.changes:
            lines.append(f"      change: {change['text']}")
        lines.append(f"      why: {fix.why}")
        lines.append(f"      consequence: {fix.consequence}")
        if fix.error:
            lines.append(f"      error: {fix.error}")
    for item in report.unfixed:
        lines.append(f"  no fix {item.code}: {item.finding}")
        lines.append(f"      why: {item.why}")
        lines.append(f"      a human must: {item.human}")
    for backup in report.backups:
        lines.append(f"  backup: {backup} (undo: casaguard restore-journal {backup})")
    if report.canary:
        lines.append("  canary: " + "; ".join(f"{f.code}: {f.message}" for f in report.canary))
    for note in report.notes:
        lines.append(f"  note: {note}")
    return "\n".join(lines)
