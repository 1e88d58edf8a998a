"""casaguard: call CASA safely. Every task runs in a child process; crashes become typed exceptions.

The calling process never imports casatools, casatasks or python-casacore.

The public names are loaded on first use (PEP 562): a sandbox child starts
with ``import casaguard.sandbox.child`` and must not pay for the whole package
(runner, template, batch engines, structlog) before it can run one task --
that import cost is paid by every spawned child and every static probe.

Where things live (docs/architecture.md has the picture of one guarded call)::

    api/        ft, clearcal, run_task, call: the one write path
    sandbox/    one guarded call: runner, spawn, template client + server, child
    journal/    snapshot before a write, restore after a death
    crash/      what a death means: classify, evidence, outcome
    ms/         parent-side MS facts: checks, locks, access
    preflight/  the probe, doctor;   repairs/  fixes for probe findings
    batch/      map_* over many MSs; corpus/   real crash reproducers
    cli/        the casaguard command; remote/  code that runs only in a child
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from casaguard.version import __version__

#: public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "AbortCrash": "casaguard.errors",
    "CasaCrash": "casaguard.errors",
    "CasaSevereError": "casaguard.errors",
    "CasaTaskError": "casaguard.errors",
    "CasaguardError": "casaguard.errors",
    "ChildError": "casaguard.errors",
    "CommandResult": "casaguard.sandbox.command",
    "Finding": "casaguard.preflight.findings",
    "HeapCorruption": "casaguard.errors",
    "InvalidInput": "casaguard.errors",
    "ItemOutcome": "casaguard.batch.mapping",
    "JournalError": "casaguard.errors",
    "Killed": "casaguard.errors",
    "MsLocked": "casaguard.errors",
    "Outcome": "casaguard.crash.outcome",
    "ProbeReport": "casaguard.preflight.findings",
    "ReadOnlyMs": "casaguard.errors",
    "RemoteTraceback": "casaguard.errors",
    "RepairReport": "casaguard.repairs.report",
    "Segfault": "casaguard.errors",
    "SetupError": "casaguard.errors",
    "Source": "casaguard.api.complist",
    "TaskTimeout": "casaguard.errors",
    "UnexpectedExit": "casaguard.errors",
    "call": "casaguard.api.tasks",
    "clearcal": "casaguard.api.tasks",
    "ft": "casaguard.api.tasks",
    "make_complist": "casaguard.api.complist",
    "make_point_complist": "casaguard.corpus.simulate",
    "map_call": "casaguard.batch.mapping",
    "map_probe": "casaguard.batch.mapping",
    "map_repair": "casaguard.batch.mapping",
    "map_task": "casaguard.batch.mapping",
    "probe": "casaguard.preflight.probe",
    "repair": "casaguard.repairs.run",
    "run_command": "casaguard.sandbox.command",
    "run_task": "casaguard.api.tasks",
    "simulate_ms": "casaguard.corpus.simulate",
    "warmup": "casaguard.sandbox.template.client",
    "wsclean": "casaguard.sandbox.command",
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
    "ReadOnlyMs",
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
    from casaguard.api.complist import Source, make_complist
    from casaguard.api.tasks import call, clearcal, ft, run_task
    from casaguard.batch.mapping import ItemOutcome, map_call, map_probe, map_repair, map_task
    from casaguard.corpus.simulate import make_point_complist, simulate_ms
    from casaguard.crash.outcome import Outcome
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
        ReadOnlyMs,
        RemoteTraceback,
        Segfault,
        SetupError,
        TaskTimeout,
        UnexpectedExit,
    )
    from casaguard.preflight.findings import Finding, ProbeReport
    from casaguard.preflight.probe import probe
    from casaguard.repairs.report import RepairReport
    from casaguard.repairs.run import repair
    from casaguard.sandbox.command import CommandResult, run_command, wsclean
    from casaguard.sandbox.template.client import warmup
