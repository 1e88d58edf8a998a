"""Pre-flight probe: predict, before CASA writes, whether an MS is unsafe -- and why.

::

    caller (no casacore, no casatools)          throwaway children
    ----------------------------------          ------------------
    probe(ms)
     |- path checks (probe_host)
     |- locks, write access, ownership:  stat + /proc, judged with the
     |  credentials the CASA child will have (probe_host, access)
     |- static facts -- call(flavor=casacore) -> python-casacore only, read-only,
     |                                           lockoptions=usernoread
     |   a crash here = the MS kills casacore -> PROBE_CRASHED (fatal)
     |- rules: facts -> findings (probe_rules, pure); disk space
     '- canary (optional) -- call / ft / clearcal -> casatools only, on a
                                                 slice copy in a temp dir

Every open of the MS happens in a child; the calling process never imports
python-casacore or casatools. The report's verdict is ``unsafe`` on any fatal
finding, ``unknown`` when the probe could not finish, else ``safe``.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any

from casaguard import events
from casaguard.api import tasks
from casaguard.errors import CasaCrash, ChildError, TaskTimeout
from casaguard.ms import access
from casaguard.preflight import doctor, table_rules
from casaguard.preflight import host as probe_host
from casaguard.preflight import rules as probe_rules
from casaguard.preflight.findings import Finding, ProbeReport
from casaguard.sandbox.jobdir import Ref

log = events.get_logger()

DEFAULT_STATIC_TIMEOUT_S = 120.0
_MARKER = re.compile(r"^casaguard-probe: (?P<step>.+)$", re.MULTILINE)


def probe(
    ms: str | os.PathLike[str], *, canary: bool = False, timeout: float | None = None
) -> ProbeReport:
    """Probe one MS: static checks in a python-casacore child, optionally a CASA canary.

    Args:
        ms: path of the MeasurementSet.
        canary: also run guarded ft and clearcal on a slice copy (slower: three CASA children).
        timeout: seconds per child (default 120 for the static child, 300 per canary child).

    Returns:
        A ProbeReport; bad input is reported as findings of group ``input``, never raised.
    """
    started = time.monotonic()
    path = os.path.abspath(os.fspath(ms))
    report = ProbeReport(ms=path, canary=canary, environment=doctor.environment())
    report.findings += doctor.environment_findings(report.environment)
    bad = probe_host.input_findings(path)
    if bad:
        report.findings += bad
        return _finish(report, started)
    creds = access.current_credentials()
    # Locks first: before our own child opens the MS, every holder is someone else.
    report.findings += probe_host.lock_findings(path)
    report.findings += probe_host.access_findings(path, creds)
    facts, static = _static(path, timeout)
    report.facts = facts
    report.findings += static
    if facts:
        report.findings += probe_host.disk_findings(path, facts)
    if canary:
        report.findings += _canary(path, report, timeout)
    return _finish(report, started)


def _finish(report: ProbeReport, started: float) -> ProbeReport:
    report.elapsed_s = time.monotonic() - started
    report.sort()
    log.info(
        "probe_finished",
        vis=report.ms,
        verdict=report.verdict,
        codes=[f.code for f in report.findings if f.severity != "info"],
        elapsed_s=round(report.elapsed_s, 4),
    )
    return report


def _static(path: str, timeout: float | None) -> tuple[dict[str, Any], list[Finding]]:
    """Run the python-casacore child; a crash of that child is a finding, not an error."""
    try:
        facts = tasks.call(
            Ref("casaguard.remote.casacore.static", "inspect_ms"),
            path,
            casa=False,
            # A fork of the python-casacore template: never the CASA template,
            # whose forks hold casatools (the two must not share a process).
            flavor="casacore",
            timeout=timeout or DEFAULT_STATIC_TIMEOUT_S,
        )
    except TaskTimeout as error:
        return {}, [
            Finding(
                "PROBE_TIMEOUT",
                f"the static probe ran past {error.elapsed_s:.0f} s{_last_step(error)}",
                "retry with a longer --timeout; a hang while reading can mean a stuck file system",
                path=path,
            )
        ]
    except ChildError as error:
        return {}, [
            Finding(
                "PROBE_ERROR",
                f"the static probe failed: {error.exc_type}: {error.exc_message}",
                "report this as a casaguard bug, with the MS's table.dat if you can",
                path=path,
                data={"exc_type": error.exc_type},
            )
        ]
    except CasaCrash as error:
        return {}, [
            Finding(
                "PROBE_CRASHED",
                f"reading the MS killed the python-casacore child ({error.kind}"
                f"{', ' + error.signal if error.signal else ''}){_last_step(error)}",
                table_rules.FIX_REBUILD,
                path=path,
                data={"kind": error.kind, "signal": error.signal, "log_path": error.log_path},
            )
        ]
    return facts, probe_rules.static_findings(path, facts)


def _last_step(error: CasaCrash) -> str:
    steps = _MARKER.findall(error.stderr_tail or "")
    return f" while it was at: {steps[-1].strip()}" if steps else ""


def _canary(path: str, report: ProbeReport, timeout: float | None) -> list[Finding]:
    from casaguard.preflight import canary

    if report.bad_input or "MS_LOCKED" in report.codes() or "PROBE_CRASHED" in report.codes():
        # A locked MS would hang the copy; one that kills casacore kills CASA's copy too.
        return []
    return canary.run_canary(path, timeout=timeout)
