"""Is a process alive? One answer for the job dirs, the journal and the template client.

``pid_alive``: the pid exists (a zombie too: its owner has not reaped it yet).
``running``: it exists and has not exited (a zombie has).
"""

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


def running(pid: int) -> bool:
    """True if ``pid`` exists and has not exited (a zombie has exited: only its status is left)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            # "pid (comm) S ...": the state follows the last ')' (comm may hold one).
            return handle.read().rpartition(b")")[2].split()[0] != b"Z"
    except (OSError, IndexError):
        return False
