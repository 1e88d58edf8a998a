"""The canary: real guarded ``ft`` and ``clearcal`` on a slice copy of the MS.

Three sandbox children, all casatools-only: one copies a slice of the MS
(every subtable; the first rows of every DATA_DESC_ID, columns in their
original data managers and shapes) and writes a one-source component list
into a private temp dir; then guarded ``ft(usescratch=True)`` and guarded
``clearcal`` run on the copy. The original MS is only ever opened read-only.

What the canary cannot see: the copy belongs to this process, so ownership and
permission problems of the original (the field report's case) are invisible to
it -- the static access checks cover those. Locks likewise.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from casaguard.api import tasks
from casaguard.errors import CasaCrash
from casaguard.preflight.findings import Finding
from casaguard.sandbox.jobdir import Ref

DEFAULT_TIMEOUT_S = 300.0
ROWS_PER_DDID = 8


def run_canary(ms: str, *, timeout: float | None = None) -> list[Finding]:
    """Copy a slice of ``ms`` and run guarded ft and clearcal on it.

    Returns:
        ``CANARY_OK`` or the failures (``CANARY_SLICE_FAILED`` / ``CANARY_FAILED``),
        each carrying the crash facts in ``data``.
    """
    limit = timeout or DEFAULT_TIMEOUT_S
    with tempfile.TemporaryDirectory(prefix="casaguard-canary-") as scratch:
        dest = os.path.join(scratch, "slice.ms")
        complist = os.path.join(scratch, "model.cl")
        try:
            made = tasks.call(
                Ref("casaguard.remote.casa.canary", "make_slice"),
                ms,
                dest,
                complist,
                ROWS_PER_DDID,
                timeout=limit,
            )
        except CasaCrash as error:
            return [
                Finding(
                    "CANARY_SLICE_FAILED",
                    f"copying a slice of the MS failed in CASA: {_summary(error)}",
                    "the MS cannot be read by CASA; see the static findings and the crash log",
                    path=ms,
                    data=_facts(error),
                )
            ]
        outcomes: dict[str, Any] = {}
        failures = []
        for name in ("ft", "clearcal"):
            try:
                if name == "ft":
                    tasks.ft(vis=dest, complist=complist, usescratch=True, timeout=limit)
                else:
                    tasks.clearcal(vis=dest, timeout=limit)
            except CasaCrash as error:
                outcomes[name] = _facts(error)
                failures.append(
                    Finding(
                        "CANARY_FAILED",
                        f"guarded {name} on a {made['rows']}-row slice copy: {_summary(error)}",
                        "fix the fatal static findings first; the crash log has CASA's own words",
                        path=ms,
                        data={"task": name, **_facts(error)},
                    )
                )
            else:
                outcomes[name] = {"kind": "ok"}
    if failures:
        return failures
    return [
        Finding(
            "CANARY_OK",
            f"guarded ft(usescratch=True) and clearcal succeeded on a {made['rows']}-row slice "
            "copy",
            data={"slice": made, "outcomes": outcomes},
        )
    ]


def _summary(error: CasaCrash) -> str:
    detail = (
        error.casa_error or (error.severe_lines[0] if error.severe_lines else "") or error.detail
    )
    signal = f" {error.signal}" if error.signal else ""
    return (
        f"{error.kind}{signal}: {detail.strip().splitlines()[0][:240] if detail.strip() else '?'}"
    )


def _facts(error: CasaCrash) -> dict[str, Any]:
    return {
        "kind": error.kind,
        "signal": error.signal,
        "casa_error": error.casa_error,
        "severe_lines": list(error.severe_lines)[:5],
        "log_path": error.log_path,
    }
