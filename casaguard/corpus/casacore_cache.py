"""The python-casacore 3.7.1 the clash reproducer imports, installed once into a cache dir.

Only a child puts it on sys.path; the venv keeps its own python-casacore.
Separate because it is an installer (pip, a cache directory, an environment
variable), not a crash, and the tests that need the clash package use it alone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from casaguard.errors import InvalidInput

CASACORE_CLASH_VERSION = "3.7.1"
CACHE_ENV = "CASAGUARD_TEST_CACHE"


def casacore_clash_dir() -> Path:
    """python-casacore 3.7.1 installed with ``pip --target`` in a cache dir (never the venv).

    The directory is ``$CASAGUARD_TEST_CACHE`` (default ``~/.cache/casaguard-test``)
    ``/python-casacore-3.7.1``; CI caches it. Only a child puts it on sys.path.

    Raises:
        InvalidInput: pip cannot install it.
    """
    cache = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "casaguard-test")
    target = cache / f"python-casacore-{CASACORE_CLASH_VERSION}"
    if (target / "casacore" / "tables").is_dir():
        return target
    partial = cache / f".partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(partial),
            f"python-casacore=={CASACORE_CLASH_VERSION}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise InvalidInput(
            f"cannot install python-casacore {CASACORE_CLASH_VERSION}: "
            f"{result.stderr.strip()[-500:]}"
        )
    os.replace(partial, target)
    return target
