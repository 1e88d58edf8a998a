"""Exit statuses as names, the way loky writes them: ``SIGSEGV(-11)``, ``EXIT(3)``.

Separate so that the classifier and the message renderer share one naming of a
status without either importing the other.
"""

from __future__ import annotations

import signal as _signal


def signal_name(exit_code: int | None) -> str | None:
    """Name the signal of a raw exit status (negative = signal), e.g. -6 -> ``SIGABRT``."""
    if exit_code is None or exit_code >= 0:
        return None
    try:
        return _signal.Signals(-exit_code).name
    except ValueError:
        return f"SIG{-exit_code}"


def describe_status(exit_code: int | None) -> str:
    """Render an exit status the way loky does: ``SIGSEGV(-11)``, ``EXIT(3)``."""
    if exit_code is None:
        return "no exit status"
    name = signal_name(exit_code)
    return f"{name}({exit_code})" if name else f"EXIT({exit_code})"


def normalise_shell_status(exit_code: int) -> int:
    """Turn a shell's ``128+N`` into ``-N`` so a shell-run child classifies alike."""
    if 128 < exit_code <= 128 + 64:
        return -(exit_code - 128)
    return exit_code
