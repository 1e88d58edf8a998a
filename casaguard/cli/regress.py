"""``casaguard regress`` (the version compatibility matrix) and ``casaguard wsclean``.

``regress`` runs the crash corpus and writes, per reproducer, the crash kind,
signature and signal, next to the versions of casatools, casatasks,
python-casacore, the system casacore and WSClean. Two such files from two
environments diff to exactly the crashes an upgrade fixed or introduced.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from casaguard.corpus import regression, reproducers
from casaguard.errors import CasaCrash
from casaguard.exits import EXIT_FAILED, EXIT_OK
from casaguard.preflight import versions
from casaguard.sandbox import command

MATRIX_FORMAT = 1


def register(commands: Any) -> None:
    """Add the ``regress`` and ``wsclean`` sub-commands to the CLI."""
    regress = commands.add_parser(
        "regress",
        help="run the crash corpus; write kinds, signatures and versions (compatibility matrix)",
        description=(
            "Run the crash corpus (real glibc, C++, CASA and WSClean crashes) under casaguard and "
            "report each reproducer's crash kind and signature with the versions of casatools, "
            "casatasks, python-casacore, casacore and WSClean. Exit 1 if a reproducer did not "
            "end as expected (a crash fixed upstream, or a new one)."
        ),
    )
    regress.add_argument(
        "--json",
        action="store_true",
        help="print the matrix as JSON on stdout (the per-reproducer rows go to stderr); "
        "save it with: casaguard regress --json > matrix.json",
    )
    regress.add_argument(
        "--only",
        metavar="NAMES",
        action="append",
        help="comma-separated reproducer names (repeatable); default: all",
    )
    regress.add_argument("--list", action="store_true", help="list the reproducers and exit")
    regress.set_defaults(handler=_cmd_regress)

    wsclean = commands.add_parser(
        "wsclean",
        help="run WSClean under casaguard's guard",
        description="Run WSClean as a guarded child: output captured, timeout, crash classified.",
        usage="casaguard wsclean [--timeout S] [--json] -- WSCLEAN_ARGS...",
    )
    wsclean.add_argument(
        "--timeout", type=float, default=None, help="seconds before WSClean is killed"
    )
    wsclean.add_argument("--json", action="store_true", help="print the outcome as JSON")
    wsclean.add_argument("args", nargs=argparse.REMAINDER, help="WSClean's arguments (after --)")
    wsclean.set_defaults(handler=_cmd_wsclean)


def matrix(results: list[regression.Result]) -> dict[str, Any]:
    """The compatibility matrix of one run: versions plus each reproducer's facts."""
    return {
        "format": MATRIX_FORMAT,
        "versions": versions.versions(),
        "reproducers": {r.reproducer.name: r.facts() for r in results},
    }


def _cmd_regress(args: argparse.Namespace) -> int:
    if args.list:
        for reproducer in reproducers.CORPUS:
            print(f"{reproducer.name:42s} {'|'.join(reproducer.expect):18s} {reproducer.proves}")
        return EXIT_OK
    names = None
    if args.only:
        names = [n.strip() for group in args.only for n in group.split(",") if n.strip()]
    chosen = reproducers.select(names)
    # One convention for every command: with --json, stdout holds only the JSON document.
    rows = sys.stderr if args.json else sys.stdout
    print(
        f"{'reproducer':42s} {'kind':16s} {'signal':8s} {'signature':12s} {'time':>6s}  ok",
        file=rows,
    )

    def show(result: regression.Result) -> None:
        outcome = result.outcome
        expected = "|".join(result.reproducer.expect)
        verdict = "yes" if result.matched else f"NO (expected {expected})"
        print(
            f"{result.reproducer.name:42s} {outcome.kind:16s} {outcome.signal or '-':8s} "
            f"{outcome.signature or '-':12s} {outcome.elapsed_s:5.1f}s  "
            f"{verdict}",
            file=rows,
            flush=True,
        )

    results = regression.run(chosen, on_result=show)
    report = matrix(results)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    unmatched = [r.reproducer.name for r in results if not r.matched]
    print(
        f"{len(results) - len(unmatched)}/{len(results)} reproducers ended as expected"
        + (f"; unexpected: {', '.join(unmatched)}" if unmatched else ""),
        file=sys.stderr,
    )
    return EXIT_FAILED if unmatched else EXIT_OK


def _cmd_wsclean(args: argparse.Namespace) -> int:
    wsclean_args = list(args.args)
    if wsclean_args[:1] == ["--"]:
        wsclean_args = wsclean_args[1:]
    try:
        result = command.wsclean(wsclean_args, timeout=args.timeout)
    except CasaCrash as error:
        if args.json:
            print(json.dumps({"ok": False, **error.facts()}, default=str))
        else:
            print(error.stderr_tail[-4000:], end="")
            print(f"casaguard: {error}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps({"ok": True, "args": result.args, "output_tail": result.output_tail}))
    else:
        print(result.output_tail, end="")
    return EXIT_OK
