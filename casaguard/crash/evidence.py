"""Where the evidence of failed calls is kept after their temporary job dir is gone.

A crash's CASA log and stderr tail are copied to
``$CASAGUARD_CRASH_DIR`` (default ``crashes/`` in casaguard's private cache dir,
``~/.cache/casaguard``; see ``casaenv.cache_dir``), one folder per failed call,
newest ``KEEP`` kept. Temporary job dirs are always removed; this folder is the
one deliberate exception, so that ``log_path`` in an exception still opens
after the call.

Evidence is private: ``facts.json`` and ``casa.log`` hold paths and task
parameters. Each folder is created 0700 and each file 0600 (``O_EXCL``,
``O_NOFOLLOW``, written through the folder's own descriptor, so a folder renamed
or swapped by someone else cannot redirect the writes). Each folder also gets a
``MARKER`` file, and pruning removes only folders that carry it and belong to
the caller: a ``CASAGUARD_CRASH_DIR`` shared with the user's own folders keeps
them all.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import time
from pathlib import Path
from typing import Any

from casaguard import casaenv
from casaguard.errors import SetupError

CRASH_DIR_ENV = "CASAGUARD_CRASH_DIR"
KEEP = 200
#: The file that marks a folder as casaguard's evidence (and so as prunable).
MARKER = ".casaguard-evidence"
_MARKER_TEXT = "casaguard crash evidence: this folder may be pruned by casaguard\n"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def crash_root() -> Path:
    """The crash dir: ``$CASAGUARD_CRASH_DIR``, else ``crashes`` in casaguard's cache dir."""
    configured = os.environ.get(CRASH_DIR_ENV)
    if configured:
        return Path(configured)
    return casaenv.cache_dir() / "crashes"


def keep_evidence(
    *, task: str, pid: int | None, casa_log: Path, output_tail: str, facts: dict[str, Any]
) -> Path | None:
    """Copy one failed call's evidence to the crash dir; return the kept CASA log path.

    Never raises: failing to keep evidence must not hide the crash itself.
    """
    try:
        root = crash_root()
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not os.environ.get(CRASH_DIR_ENV):
            root.chmod(0o700)  # ours alone (an older casaguard made it 0755)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        name = f"{stamp}-{_safe(task)}-{pid or 0}-{time.monotonic_ns() % 1_000_000}"
        root_fd = os.open(root, _DIR_FLAGS)
        try:
            os.mkdir(name, 0o700, dir_fd=root_fd)
            folder_fd = os.open(name, _DIR_FLAGS, dir_fd=root_fd)
            try:
                _write(folder_fd, MARKER, _MARKER_TEXT.encode())
                try:
                    log_bytes = casa_log.read_bytes()
                except FileNotFoundError:
                    log_bytes = b""
                _write(folder_fd, "casa.log", log_bytes)
                _write(folder_fd, "stderr-tail.txt", output_tail.encode(errors="replace"))
                facts_text = json.dumps(facts, indent=2, default=str)
                _write(folder_fd, "facts.json", facts_text.encode())
            finally:
                os.close(folder_fd)
            _prune(root_fd)
        finally:
            os.close(root_fd)
        return root / name / "casa.log"
    except (OSError, SetupError):
        return None


def _write(folder_fd: int, name: str, data: bytes) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(name, flags, 0o600, dir_fd=folder_fd)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:40] or "call"


def _is_evidence(root_fd: int, name: str) -> bool:
    try:
        folder = os.stat(name, dir_fd=root_fd, follow_symlinks=False)
        if not stat.S_ISDIR(folder.st_mode) or folder.st_uid != os.geteuid():
            return False
        fd = os.open(name, _DIR_FLAGS, dir_fd=root_fd)
        try:
            marker = os.stat(MARKER, dir_fd=fd, follow_symlinks=False)
        finally:
            os.close(fd)
    except OSError:
        return False
    return stat.S_ISREG(marker.st_mode) and marker.st_uid == os.geteuid()


def _prune(root_fd: int) -> None:
    """Remove the oldest of casaguard's folders beyond ``KEEP``; nothing else is looked at twice."""
    ours = sorted(name for name in os.listdir(root_fd) if _is_evidence(root_fd, name))
    for old in ours[:-KEEP]:
        with contextlib.suppress(OSError):
            shutil.rmtree(old, dir_fd=root_fd)
