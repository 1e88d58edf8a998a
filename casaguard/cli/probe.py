"""``casaguard probe`` and ``casaguard doctor``: the command-line face of the probe.

Exit codes of ``probe``: 0 every MS safe; 1 any MS unsafe (a damaged MS -- missing
or empty subtable, empty main table, unreadable column -- is unsafe); 2 bad input
(missing path, not a table, not an MS) or a probe that could not finish (verdict
``unknown``). 2 wins over 1. Many MSs run on the batch engine
(``casaguard.batch.mapping.map_probe``: ``--jobs`` threads, or ``--scheduler`` for Dask), with
the shared terminal progress bar of ``casaguard.cli.batch``. ``doctor`` exits 0, or 1
when it found a problem (no measures data, CASA unable to start with its configuration
and read a measure, a known-bad combination, a clash reproduced).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from casaguard.batch import mapping as batch
from casaguard.batch.item import ItemOutcome
from casaguard.cli import batch as cli_batch
from casaguard.exits import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, EXIT_SAFE, EXIT_UNSAFE
from casaguard.preflight import doctor
from casaguard.preflight.findings import SCHEMA_VERSION, Finding, ProbeReport

_MARK = {"fatal": "x", "warn": "!", "info": "-"}


def register(commands: Any) -> None:
    """Add the ``probe`` and ``doctor`` sub-commands to the ``casaguard`` parser."""
    probe = commands.add_parser(
        "probe",
        help="predict, read-only, whether CASA's ft/clearcal would fail on MSs, and why",
        description=(
            "Probe MSs before CASA writes to them. Every open happens in a throwaway child "
            "(python-casacore only; with --canary, CASA on a slice copy). The MSs are never "
            "written."
        ),
        epilog="Exit codes: 0 all safe, 1 any unsafe, 2 bad input or probe failure.",
    )
    probe.add_argument("ms", nargs="+", help="MeasurementSet directories")
    probe.add_argument(
        "--json", action="store_true", help="print one JSON document (schema in docs/probe.md)"
    )
    probe.add_argument(
        "--canary", action="store_true", help="also run guarded ft+clearcal on a slice copy"
    )
    # The same --jobs / --scheduler as every batch-shaped command (casaguard.cli.batch).
    cli_batch.add_engine_arguments(probe)
    probe.add_argument("--timeout", type=float, default=None, help="seconds per probe child")
    probe.add_argument("--verbose-findings", action="store_true", help="also list info findings")
    probe.set_defaults(handler=cmd_probe)

    doc = commands.add_parser(
        "doctor",
        help="versions of the CASA stack, measures data, known-bad combinations",
        description="Check the environment CASA runs in, without loading CASA into this process.",
    )
    doc.add_argument(
        "--deep", action="store_true", help="load python-casacore + casatools together in a child"
    )
    doc.add_argument("--json", action="store_true", help="print JSON")
    doc.set_defaults(handler=cmd_doctor)


def exit_code(reports: list[ProbeReport]) -> int:
    """2 if any input is bad or any verdict unknown, else 1 if any is unsafe, else 0."""
    if any(r.bad_input or r.verdict == "unknown" for r in reports):
        return EXIT_BAD_INPUT
    if any(r.verdict == "unsafe" for r in reports):
        return EXIT_UNSAFE
    return EXIT_SAFE


def cmd_probe(args: argparse.Namespace) -> int:
    bar = cli_batch.ProgressBar(len(args.ms))
    try:
        outcomes = batch.map_probe(
            args.ms,
            progress=bar,
            canary=args.canary,
            timeout=args.timeout,
            **cli_batch.engine_options(args),
        )
    finally:
        bar.close()
    reports = [_report(path, outcome) for path, outcome in zip(args.ms, outcomes, strict=True)]
    if args.json:
        print(json.dumps(json_document(reports), indent=2, default=str))
    else:
        for report in reports:
            if report.bad_input:
                # Bad input is one line on stderr, never a table or a traceback.
                first = next(f for f in report.findings if f.group == "input")
                print(f"casaguard: {first.message} ({first.code})", file=sys.stderr)
            else:
                print(render(report, verbose=args.verbose_findings))
    return exit_code(reports)


def _report(path: str, outcome: ItemOutcome) -> ProbeReport:
    """The probe's report, or a PROBE_ERROR report when the probe call itself failed."""
    if outcome.ok and isinstance(outcome.value, ProbeReport):
        return outcome.value
    return ProbeReport(
        ms=os.path.abspath(path),
        findings=[
            Finding(
                "PROBE_ERROR",
                f"the probe failed: {outcome.kind}: {outcome.error}",
                "report this as a casaguard bug",
            )
        ],
    )


def json_document(reports: list[ProbeReport]) -> dict[str, Any]:
    """The ``--json`` document: schema version, exit code, environment, one entry per MS."""
    return {
        "schema": SCHEMA_VERSION,
        "exit_code": exit_code(reports),
        "environment": reports[0].environment if reports else doctor.environment(),
        "reports": [r.to_dict() for r in reports],
    }


def render(report: ProbeReport, *, verbose: bool = False) -> str:
    """A compact table for one MS: verdict line, then one line per finding."""
    lines = [f"{report.ms}: {report.verdict.upper()} ({report.elapsed_s:.2f} s)"]
    shown = [f for f in report.findings if verbose or f.severity != "info" or f.group == "canary"]
    width = max((len(f.code) for f in shown), default=0)
    for finding in shown:
        lines.append(
            f"  {_MARK[finding.severity]} {finding.severity:<5} {finding.code:<{width}}  "
            f"{finding.message}"
        )
        if finding.fix and finding.severity != "info":
            lines.append(f"    {'':<5} {'':<{width}}  fix: {finding.fix}")
    if len(shown) < len(report.findings):
        lines.append(
            f"  ({len(report.findings) - len(shown)} info findings; --verbose-findings lists them)"
        )
    return "\n".join(lines)


def cmd_doctor(args: argparse.Namespace) -> int:
    env = doctor.environment()
    findings = doctor.environment_findings(env)
    casa = doctor.casa_check()
    deep = doctor.deep_check() if args.deep else None
    problem = (
        bool(findings)
        or not env["measures"].get("found")
        or not casa["ok"]
        or bool(deep and not all(d["ok"] for d in deep))
    )
    if args.json:
        print(
            json.dumps(
                {
                    "environment": env,
                    "casa": casa,
                    "findings": [f.to_dict() for f in findings],
                    "deep": deep,
                },
                indent=2,
                default=str,
            )
        )
        return EXIT_FAILED if problem else EXIT_OK
    for name, version in env["packages"].items():
        print(f"{name:<16} {version or 'not installed'}")
    ws = env["wsclean"]
    print(
        f"{'wsclean':<16} {ws['version'] or '?'} ({ws['path']})"
        if ws["path"]
        else f"{'wsclean':<16} not on PATH"
    )
    measures = env["measures"]
    state = (
        ("found" if casa["ok"] else "NOT usable by CASA (see casa start)")
        if measures.get("found")
        else f"NOT found {measures.get('missing') or measures.get('error', '')}"
    )
    print(f"{'measures':<16} {state} ({measures.get('source')}: {measures.get('path')})")
    if casa["ok"]:
        print(
            f"{'casa start':<16} ok: TAI-UTC {casa['tai_minus_utc_s']:.0f} s at "
            f"{doctor.MEASURES_EPOCH} from {casa['measurespath']}"
        )
    else:
        print(f"{'casa start':<16} FAILED: {casa['error']}")
    print(
        f"{'clash risk':<16} "
        f"{'YES: python-casacore < 3.8.1 with casatools' if env['clash_risk'] else 'no'}"
    )
    for finding in findings:
        print(f"! {finding.code}: {finding.message}\n  fix: {finding.fix}")
    if deep is not None:
        for entry in deep:
            outcome = (
                "clean"
                if entry["ok"]
                else f"CRASHED: {entry['kind']} {entry['signal'] or ''} {entry['detail']}"
            )
            print(f"{'deep':<16} {entry['order']}: {outcome}")
    return EXIT_FAILED if problem else EXIT_OK
