"""casaguard: call CASA safely. Every task runs in a child process; crashes become typed exceptions.

The calling process never imports casatools, casatasks or python-casacore.
"""

from __future__ import annotations

from casaguard._template import warmup
from casaguard.batch import ItemOutcome, map_call, map_probe, map_task
from casaguard.command import CommandResult, run_command, wsclean
from casaguard.errors import (
    AbortCrash,
    CasaCrash,
    CasaguardError,
    CasaSevereError,
    CasaTaskError,
    ChildError,
    HeapCorruption,
    InvalidInput,
    JournalError,
    Killed,
    MsLocked,
    RemoteTraceback,
    Segfault,
    SetupError,
    TaskTimeout,
    UnexpectedExit,
)
from casaguard.findings import Finding, ProbeReport
from casaguard.outcome import Outcome
from casaguard.probe import probe, probe_many
from casaguard.simulate import make_point_complist, simulate_ms
from casaguard.tasks import call, clearcal, ft, run_task

__version__ = "0.1.0"

__all__ = [
    "AbortCrash",
    "CasaCrash",
    "CasaSevereError",
    "CasaTaskError",
    "CasaguardError",
    "ChildError",
    "CommandResult",
    "Finding",
    "HeapCorruption",
    "InvalidInput",
    "ItemOutcome",
    "JournalError",
    "Killed",
    "MsLocked",
    "Outcome",
    "ProbeReport",
    "RemoteTraceback",
    "Segfault",
    "SetupError",
    "TaskTimeout",
    "UnexpectedExit",
    "__version__",
    "call",
    "clearcal",
    "ft",
    "make_point_complist",
    "map_call",
    "map_probe",
    "map_task",
    "probe",
    "probe_many",
    "run_command",
    "run_task",
    "simulate_ms",
    "warmup",
    "wsclean",
]
