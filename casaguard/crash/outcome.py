"""The outcome of one guarded run as data, and its human-readable crash report.

Crash-regression code (the pytest plugin, the corpus, ``casaguard regress``)
wants "what happened" as a value rather than as an exception to catch:
``Outcome`` holds either the value or the ``CasaCrash``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from casaguard.errors import CasaCrash

#: Lines of the child's stderr shown in a crash report.
REPORT_STDERR_LINES = 30


@dataclass
class Outcome:
    """What a guarded run did.

    Attributes:
        value: the return value when the run finished normally.
        crash: the classified ``CasaCrash`` when it did not.
        elapsed_s: wall time, parent side.
    """

    value: Any = None
    crash: CasaCrash | None = None
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        """True when the run returned normally."""
        return self.crash is None

    @property
    def kind(self) -> str:
        """``"ok"``, or the crash kind (``"double-free"``, ``"segfault"``...)."""
        return "ok" if self.crash is None else self.crash.kind

    @property
    def signature(self) -> str:
        """The crash's stable signature, or ``""`` when the run returned normally."""
        return "" if self.crash is None else self.crash.signature

    @property
    def signal(self) -> str | None:
        """The signal that killed the child (``"SIGABRT"``), if any."""
        return None if self.crash is None else self.crash.signal


def capture(func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Outcome:
    """Call ``func`` (something that runs guarded work) and return its Outcome.

    Only ``CasaCrash`` is turned into an outcome; any other exception is a bug
    of the caller's and propagates.
    """
    started = time.monotonic()
    try:
        value = func(*args, **kwargs)
    except CasaCrash as crash:
        return Outcome(crash=crash, elapsed_s=time.monotonic() - started)
    return Outcome(value=value, elapsed_s=time.monotonic() - started)


def crash_report(crash: CasaCrash) -> str:
    """Render a crash for a test report: kind, signal, CASA error, log path, stderr tail."""
    lines = [
        f"kind:       {crash.kind}",
        f"signal:     {crash.signal or '-'} (exit status {crash.exit_code})",
        f"detail:     {crash.detail or '-'}",
        f"casa_error: {crash.casa_error or '-'}",
        f"signature:  {crash.signature or '-'}",
        f"CASA log:   {crash.log_path or '-'}",
    ]
    lines += [f"SEVERE:     {line}" for line in crash.severe_lines[:5]]
    tail = crash.stderr_tail.rstrip().splitlines()[-REPORT_STDERR_LINES:]
    if tail:
        lines.append(f"stderr (last {len(tail)} lines):")
        lines += [f"  {line[:300]}" for line in tail]
    return "\n".join(lines)
