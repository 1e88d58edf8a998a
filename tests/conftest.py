"""Shared fixtures: real simulated MSs (built once, copied per test) and leak checks.

The test process itself never imports casatools, casatasks or python-casacore:
MSs are simulated in a sandbox child, and MS surgery runs python-casacore in a
subprocess (``casacore_script``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

import casaguard

#: How long a guarded child that said it was done may take to finish exiting.
EXIT_GRACE_S = 2.0

#: setpriv arguments that make root obey file modes (tests run as root).
DROP_ROOT_POWERS = [
    "setpriv",
    "--bounding-set=-dac_override,-dac_read_search,-fowner",
    "--inh-caps=-all",
]


#: setpriv arguments that run a command as a second, unprivileged local user (uid 65534).
ATTACKER = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.fixture(scope="session", autouse=True)
def crash_evidence_under_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Crash evidence goes under the session's temp area, never to the user's ~/.cache."""
    path = tmp_path_factory.mktemp("crash-evidence")
    previous = os.environ.get("CASAGUARD_CRASH_DIR")
    os.environ["CASAGUARD_CRASH_DIR"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("CASAGUARD_CRASH_DIR", None)
    else:
        os.environ["CASAGUARD_CRASH_DIR"] = previous


@pytest.fixture(scope="session")
def ms_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """Build each distinct simulated MS once per session; hand out fresh copies."""
    built: dict[tuple[object, ...], Path] = {}
    root = tmp_path_factory.mktemp("ms-cache")

    def make(dest: Path, **kwargs: object) -> Path:
        key = tuple(sorted(kwargs.items()))
        if key not in built:
            path = root / f"sim{len(built)}.ms"
            casaguard.simulate_ms(path, **kwargs)  # type: ignore[arg-type]
            built[key] = path
        shutil.copytree(built[key], dest)
        return dest

    yield make


@pytest.fixture
def ms(ms_factory: object, tmp_path: Path) -> Path:
    """A fresh copy of the default simulated MS: 168 rows, 1 spw of 8 channels, 4 corr."""
    return ms_factory(tmp_path / "test.ms")  # type: ignore[operator,no-any-return]


@pytest.fixture(scope="session")
def complist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A component list with one 1 Jy point source at the simulated field centre."""
    path = tmp_path_factory.mktemp("cl") / "point.cl"
    casaguard.make_point_complist(path)
    return path


def _descendants() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True) if _is_guarded_child(p)}


def _is_guarded_child(proc: psutil.Process) -> bool:
    try:
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        if _is_template(proc):
            # The warm template outlives tests by design; its forks (which share
            # its command line) do not, so they still count.
            # An idle pre-forked spare is the template's own, like the template.
            parent = proc.parent()
            spare = proc.name() == "casaguard-spare"
            return parent is not None and _is_template(parent) and not spare
        return True
    except psutil.Error:
        return False


def _is_template(proc: psutil.Process) -> bool:
    return "casaguard.sandbox.template" in " ".join(proc.cmdline())


@pytest.fixture
def no_leaks(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Fail the test if it leaves a child process or a casaguard temp dir behind.

    Job dirs go to a private temp root for the test, so other processes on the
    machine cannot make this check pass or fail.
    """
    private_tmp = tmp_path_factory.mktemp("jobdirs")
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    before = _descendants()
    yield
    # A fork that said it was done may still be in its exit teardown for a few
    # ms (the caller does not wait for it); a leak is a child still there later.
    deadline = time.monotonic() + EXIT_GRACE_S
    while (leaked := _descendants() - before) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not leaked, f"leaked child processes: {sorted(leaked)}"
    left = sorted(str(p) for p in private_tmp.iterdir())
    assert not left, f"leaked temp dirs: {left}"


def casacore_script(code: str, *, check: bool = True, timeout: float = 120) -> str:
    """Run python-casacore ``code`` in a subprocess (never in the test process).

    Returns:
        The subprocess's stdout.
    """
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"casacore script failed ({result.returncode}):\n{result.stderr}")
    return result.stdout


def casa_script(
    code: str, *, timeout: float = 300, drop_root: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a plain subprocess with offline CASA configured (no casaguard sandbox)."""
    from casaguard import casaenv

    command = [sys.executable, "-c", textwrap.dedent(code)]
    if drop_root:
        command = DROP_ROOT_POWERS + command
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=casaenv.child_environment(),
        check=False,
    )
