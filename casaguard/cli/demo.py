"""``casaguard demo``: the guarded workflow on a simulated MS, needing no data of the user's.

Steps: simulate a small MS, probe it, seed MODEL_DATA with a guarded ``ft``,
read it back, let WSClean (guarded) image it and write MODEL_DATA, probe again,
guarded ``ft`` again,
guarded ``clearcal``, then a real heap crash in a sandbox child that the demo
survives and explains.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from casaguard.api.tasks import call, clearcal, ft
from casaguard.corpus import crashers
from casaguard.corpus.simulate import make_point_complist, simulate_ms
from casaguard.errors import CasaCrash
from casaguard.exits import EXIT_FAILED, EXIT_OK
from casaguard.preflight.probe import probe
from casaguard.sandbox.command import wsclean
from casaguard.sandbox.jobdir import Ref


def _step(title: str, action: Callable[[], Any]) -> Any:
    print(f"==> {title}", flush=True)
    started = time.monotonic()
    result = action()
    print(f"    done in {time.monotonic() - started:.2f} s", flush=True)
    return result


def _probe(title: str, vis: str) -> None:
    report = _step(title, lambda: probe(vis))
    print(f"    verdict: {report.verdict}")
    for finding in report.findings:
        print(f"    {finding.severity:5} {finding.code}: {finding.message}")


def run_demo(directory: str, *, keep: bool = False) -> int:
    """Run the demo in a new folder under ``directory``; remove it unless ``keep``.

    Returns:
        ``EXIT_OK`` (0) when every step behaved as expected, ``EXIT_FAILED`` (1) otherwise.
    """
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    work = root / time.strftime("run-%Y%m%d-%H%M%S")
    work.mkdir()
    vis, cl = str(work / "demo.ms"), str(work / "point.cl")
    try:
        rows = _step(
            "simulate a small MS (casatools.simulator, in a child)", lambda: simulate_ms(vis)
        )
        print(f"    {vis}: {rows} rows")
        _probe("probe it before any write (python-casacore, in a throwaway child)", vis)
        _step("write a 1 Jy point-source component list", lambda: make_point_complist(cl))
        _step(
            "guarded ft(usescratch=True) seeds MODEL_DATA",
            lambda: ft(vis=vis, complist=cl, usescratch=True),
        )
        summary = call(Ref("casaguard.remote.casa.inspect_ms", "column_summary"), vis, "MODEL_DATA")
        print(
            f"    MODEL_DATA shape {summary['shape']}, "
            f"mean |V| = {summary['mean_amplitude']:.3f} Jy"
        )
        _step(
            "WSClean images the MS and writes MODEL_DATA (guarded: casaguard.wsclean)",
            lambda: wsclean(
                [
                    *("-size", "64", "64", "-scale", "20asec", "-niter", "20", "-mgain", "0.8"),
                    *("-name", str(work / "wsclean"), vis),
                ],
                timeout=600,
            ),
        )
        _probe("probe again, now that WSClean wrote MODEL_DATA", vis)
        _step(
            "guarded ft again, after WSClean (the field report's order)",
            lambda: ft(vis=vis, complist=cl, usescratch=True),
        )
        _step("guarded clearcal(addmodel=True)", lambda: clearcal(vis=vis, addmodel=True))
        print(
            "==> a real heap corruption in a sandbox child (glibc: double free or corruption (out))"
        )
        try:
            call(crashers.double_free_out, casa=False)
        except CasaCrash as error:
            print(f"    caught {type(error).__name__} kind={error.kind} signal={error.signal}")
            print(f"    {error}")
            print("    ...and this process is still alive.")
        else:
            print("    the crasher did not crash: unexpected")
            return EXIT_FAILED
        print(f"demo finished: {work}" + ("" if keep else " (removed; use --keep to keep it)"))
        return EXIT_OK
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
