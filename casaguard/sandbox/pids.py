"""Is a process alive? One answer for the job dirs and the journal (both judge dead owners)."""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists (also when it is another user's: signalling it is refused)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
