"""Read the kernel's OOM-kill counter for this process's cgroup (cgroup v2, or v1).

A child killed by SIGKILL that casaguard did not send was most likely killed by
the OOM killer; the counter rising during the call turns "likely" into "yes".
"""

from __future__ import annotations

from pathlib import Path

_CGROUP_ROOT = Path("/sys/fs/cgroup")


def oom_kill_count() -> int | None:
    """Return the ``oom_kill`` count of this process's cgroup, or None if unknown."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            candidates = [_CGROUP_ROOT / path.lstrip("/") / "memory.events"]
        elif "memory" in controllers.split(","):
            candidates = [_CGROUP_ROOT / "memory" / path.lstrip("/") / "memory.oom_control"]
        else:
            continue
        candidates.append(_CGROUP_ROOT / "memory.events")
        for candidate in candidates:
            count = _read_counter(candidate)
            if count is not None:
                return count
    return None


def _read_counter(path: Path) -> int | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill":
            try:
                return int(value)
            except ValueError:
                return None
    return None
