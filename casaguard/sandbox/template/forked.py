"""Runs only in a fork of the template: a fresh fork's first steps, then the caller's job.

Two kinds of fork end here: one made on the spot for a call (``in_fork``), and
the spare made ahead of time (``in_spare``), idle until a job arrives on its
pipe. Each leads its own session, takes a name, arms its parent-death signal,
takes the caller's environment and says "!" on its pipe, then runs the job
(``sandbox.child.run_job``); it leaves only through ``os._exit``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

from casaguard.sandbox.template import prefault, warm
from casaguard.sandbox.template.flavors import EXIT_FORK_FAILED, FORK_NAME, SPARE_NAME

_PR_SET_NAME = 15


def prctl(option: int, value: int | bytes) -> None:
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)


def _become_child(template: int, close: tuple[int, ...], name: bytes) -> None:
    """A fresh fork's first steps: own session, a name, default signals, parent-death signal."""
    os.setsid()
    prctl(_PR_SET_NAME, name)  # what ps and top show
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for fd in close:
        os.close(fd)
    from casaguard.sandbox import child as _child

    _child.die_with_parent(template)


def _take_job(message: dict[str, Any]) -> Path:
    """Take the caller's environment and import path; send fd 1/2 to the job's output file."""
    from casaguard.sandbox import child as _child

    env = message["env"]
    os.environ.clear()
    os.environ.update(env)
    # The caller's import path as of this call, ahead of the template's own.
    extra = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]
    sys.path[:0] = extra
    directory = Path(message["job"])
    _child.redirect_output(directory)
    warm.settle_openmp_in_fork(env)
    return directory


def in_fork(
    message: dict[str, Any], alive_w: int, template: int, close: tuple[int, ...]
) -> NoReturn:
    """A fork made for one call: become a clean child, take the job, say alive, run it."""
    try:
        from casaguard.sandbox import child as _child

        _become_child(template, close, FORK_NAME)
        directory = _take_job(message)
        os.write(alive_w, b"!")
        os.close(alive_w)
        _child.run_job(directory)
    finally:
        os._exit(EXIT_FORK_FAILED)


def in_spare(alive_w: int, jobs_r: int, template: int, close: tuple[int, ...]) -> NoReturn:
    """A spare's whole life: become a clean child, say alive, wait for a job, run it."""
    try:
        from casaguard.sandbox import child as _child

        _become_child(template, close, SPARE_NAME)
        os.write(alive_w, b"!")
        prefault.touch_ahead(jobs_r)
        chunks = []
        while chunk := os.read(jobs_r, 1 << 16):
            chunks.append(chunk)
        os.close(jobs_r)
        if not chunks:
            os._exit(0)  # the template let this spare go without a job
        prctl(_PR_SET_NAME, FORK_NAME)
        directory = _take_job(json.loads(b"".join(chunks)))
        os.write(alive_w, b"!")
        os.close(alive_w)
        _child.run_job(directory)
    finally:
        os._exit(EXIT_FORK_FAILED)
