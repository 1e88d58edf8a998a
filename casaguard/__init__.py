"""casaguard: call CASA safely. Every task runs in a child process; crashes become typed exceptions.

The calling process never imports casatools, casatasks or python-casacore.

The public names are loaded on first use (PEP 562): a sandbox child starts
with ``import casaguard._child`` and must not pay for the whole package
(runner, template, batch engines, structlog) before it can run one task --
that import cost is paid by every spawned child and every static probe.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "AbortCrash": "casaguard.errors",
    "CasaCrash": "casaguard.errors",
    "CasaSevereError": "casaguard.errors",
    "CasaTaskError": "casaguard.errors",
    "CasaguardError": "casaguard.errors",
    "ChildError": "casaguard.errors",
    "CommandResult": "casaguard.command",
    "Finding": "casaguard.findings",
    "HeapCorruption": "casaguard.errors",
    "InvalidInput": "casaguard.errors",
    "ItemOutcome": "casaguard.batch",
    "JournalError": "casaguard.errors",
    "Killed": "casaguard.errors",
    "MsLocked": "casaguard.errors",
    "Outcome": "casaguard.outcome",
    "ProbeReport": "casaguard.findings",
    "RemoteTraceback": "casaguard.errors",
    "RepairReport": "casaguard.repair_ms",
    "Segfault": "casaguard.errors",
    "SetupError": "casaguard.errors",
    "Source": "casaguard.complist",
    "TaskTimeout": "casaguard.errors",
    "UnexpectedExit": "casaguard.errors",
    "call": "casaguard.tasks",
    "clearcal": "casaguard.tasks",
    "ft": "casaguard.tasks",
    "make_complist": "casaguard.complist",
    "make_point_complist": "casaguard.simulate",
    "map_call": "casaguard.batch",
    "map_probe": "casaguard.batch",
    "map_repair": "casaguard.batch",
    "map_task": "casaguard.batch",
    "probe": "casaguard.preflight",
    "probe_many": "casaguard.preflight",
    "repair": "casaguard.repair_ms",
    "run_command": "casaguard.command",
    "run_task": "casaguard.tasks",
    "simulate_ms": "casaguard.simulate",
    "warmup": "casaguard._template",
    "wsclean": "casaguard.command",
}

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
    "RepairReport",
    "Segfault",
    "SetupError",
    "Source",
    "TaskTimeout",
    "UnexpectedExit",
    "__version__",
    "call",
    "clearcal",
    "ft",
    "make_complist",
    "make_point_complist",
    "map_call",
    "map_probe",
    "map_repair",
    "map_task",
    "probe",
    "probe_many",
    "repair",
    "run_command",
    "run_task",
    "simulate_ms",
    "warmup",
    "wsclean",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'casaguard' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:
    from casaguard._template import warmup
    from casaguard.batch import ItemOutcome, map_call, map_probe, map_repair, map_task
    from casaguard.command import CommandResult, run_command, wsclean
    from casaguard.complist import Source, make_complist
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
    from casaguard.preflight import probe, probe_many
    from casaguard.repair_ms import RepairReport, repair
    from casaguard.simulate import make_point_complist, simulate_ms
    from casaguard.tasks import call, clearcal, ft, run_task
