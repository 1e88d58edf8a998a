"""Versions of everything a crash set depends on, found without importing CASA.

The compatibility matrix (``casaguard regress --json``) records, next to each
crash signature, the versions of casatools, casatasks, python-casacore, the
system casacore and WSClean, so CI can tell which upgrade changed a crash set.
Package versions come from installed metadata: importing casatools or
python-casacore here would defeat the sandbox.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from importlib import metadata

from casaguard.version import __version__

_PACKAGES = {
    "casatools": "casatools",
    "casatasks": "casatasks",
    "casadata": "casadata",
    "python-casacore": "python-casacore",
}


def package_version(distribution: str) -> str | None:
    """Installed version of ``distribution``, or None when it is not installed."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


@functools.cache
def wsclean_version(executable: str = "wsclean") -> str | None:
    """WSClean's version from ``wsclean --version`` (e.g. ``3.1.0``), or None."""
    found = shutil.which(executable)
    if found is None:
        return None
    try:
        result = subprocess.run(
            [found, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"WSClean version (\S+)", result.stdout + result.stderr)
    return match.group(1) if match else None


@functools.cache
def system_casacore_version(executable: str = "wsclean") -> str | None:
    """Version of the system casacore WSClean links (Debian package of libcasa_tables).

    casatools bundles its own casacore and does not report its version; the
    casacore that matters for WSClean is the one its binary loads.
    """
    found = shutil.which(executable)
    dpkg = shutil.which("dpkg-query")
    if found is None or dpkg is None or shutil.which("ldd") is None:
        return None
    try:
        libraries = subprocess.run(
            ["ldd", found], capture_output=True, text=True, timeout=30, check=False
        ).stdout
        match = re.search(r"=> (\S*libcasa_tables\S*)", libraries)
        if not match:
            return None
        library = os.path.realpath(match.group(1))
        owner = subprocess.run(
            [dpkg, "-S", library], capture_output=True, text=True, timeout=30, check=False
        ).stdout
        package = owner.split(":", 1)[0].strip()
        if not package:
            return None
        version = subprocess.run(
            [dpkg, "-W", "-f", "${Version}", package],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return version or None


def glibc_version() -> str | None:
    """The C library's version, e.g. ``glibc 2.36``."""
    try:
        return os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError):
        return None


def versions() -> dict[str, str | None]:
    """Every version the compatibility matrix records (None: not installed or unknown)."""
    found: dict[str, str | None] = {"casaguard": __version__}
    found.update({key: package_version(dist) for key, dist in _PACKAGES.items()})
    found["casacore"] = system_casacore_version()
    found["wsclean"] = wsclean_version()
    found["glibc"] = glibc_version()
    return found
