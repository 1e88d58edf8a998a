"""Ending a child's whole process tree: its session's group, then any descendant that left it."""

from __future__ import annotations

import contextlib
import os
import signal

import psutil

from casaguard.sandbox.callspec import KILL_GRACE_S


def kill_tree(pid: int, grace: float = KILL_GRACE_S) -> None:
    """SIGTERM ``pid`` and all its descendants, then SIGKILL what is left after ``grace``."""
    try:
        root = psutil.Process(pid)
    except psutil.Error:
        return
    procs = [root, *_descendants(pid)]
    _terminate(procs)
    _reap(procs, grace)


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return list(psutil.Process(pid).children(recursive=True))
    except psutil.Error:
        return []


def _terminate(procs: list[psutil.Process]) -> None:
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGTERM)


def _reap(procs: list[psutil.Process], grace: float = KILL_GRACE_S) -> None:
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=grace)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
