"""Where the evidence of failed calls is kept after their temporary job dir is gone.

A crash's CASA log and stderr tail are copied to
``$CASAGUARD_CRASH_DIR`` (default ``~/.cache/casaguard/crashes``), one folder
per failed call, newest ``KEEP`` kept. Temporary job dirs are always removed;
this folder is the one deliberate exception, so that ``log_path`` in an
exception still opens after the call.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

CRASH_DIR_ENV = "CASAGUARD_CRASH_DIR"
KEEP = 200


def crash_root() -> Path:
    configured = os.environ.get(CRASH_DIR_ENV)
    if configured:
        return Path(configured)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "casaguard" / "crashes"


def keep_evidence(
    *, task: str, pid: int | None, casa_log: Path, output_tail: str, facts: dict[str, Any]
) -> Path | None:
    """Copy one failed call's evidence to the crash dir; return the kept CASA log path.

    Never raises: failing to keep evidence must not hide the crash itself.
    """
    try:
        root = crash_root()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        folder = root / f"{stamp}-{_safe(task)}-{pid or 0}-{time.monotonic_ns() % 1_000_000}"
        folder.mkdir(parents=True, exist_ok=True)
        kept_log = folder / "casa.log"
        if casa_log.exists():
            shutil.copyfile(casa_log, kept_log)
        else:
            kept_log.write_text("")
        (folder / "stderr-tail.txt").write_text(output_tail)
        (folder / "facts.json").write_text(json.dumps(facts, indent=2, default=str))
        _prune(root)
        return kept_log
    except OSError:
        return None


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:40] or "call"


def _prune(root: Path) -> None:
    folders = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.name)
    for old in folders[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
