"""The environment CASA will run in: versions, measures data, known-bad combinations.

Everything here is found without importing casatools, casatasks or
python-casacore into the calling process: versions come from package
metadata and ``wsclean --version`` (``casaguard.preflight.versions`` owns both), measures
data from the casadata package's directory. Only ``casa_check`` (CASA started with
the effective configuration, reading a real measure) and ``deep_check`` load the
libraries -- in throwaway sandbox children.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import sys
from typing import Any

from casaguard import casaenv
from casaguard.errors import CasaCrash, CasaguardError, SetupError
from casaguard.preflight import versions
from casaguard.preflight.findings import Finding

PACKAGES = ("casatools", "casatasks", "casaconfig", "casadata", "python-casacore")
#: python-casacore releases before this crash when casatools is in the same process.
FIRST_SAFE_CASACORE = (3, 8, 1)
IN_PROCESS_MODULES = ("casacore", "casatools", "casatasks")
_MEASURES_DIRS = ("geodetic", "ephemerides")
#: The live check's epoch and the TAI - UTC it must give there (leap seconds since 2017).
MEASURES_EPOCH = "2020/01/01/00:00:00"
TAI_MINUS_UTC_S = 37.0
CASA_CHECK_WRONG = (
    "CASA started but TAI - UTC at {epoch} came out {offset:.3f} s, not {expected:.0f} s: "
    "the leap-second table {leap_second_table} under measurespath {measurespath} "
    "is missing or unreadable"
)


def package_versions() -> dict[str, str | None]:
    """Installed versions of the CASA stack (None: not installed)."""
    return {name: versions.package_version(name) for name in PACKAGES}


def wsclean() -> dict[str, Any]:
    """WSClean on PATH: its path and version, or ``{"path": None, "version": None}``."""
    path = shutil.which("wsclean")
    return {"path": path, "version": versions.wsclean_version() if path else None}


def measures() -> dict[str, Any]:
    """Where CASA's measures data comes from and whether it looks complete."""
    site = os.environ.get(casaenv.SITE_CONFIG_ENV)
    if site:
        return {"source": "CASASITECONFIG", "path": site, "found": os.path.isfile(site)}
    try:
        directory = casaenv.casadata_dir()
    except SetupError as error:
        return {"source": "casadata", "path": None, "found": False, "error": str(error)}
    missing = [d for d in _MEASURES_DIRS if not (directory / d).is_dir()]
    return {"source": "casadata", "path": str(directory), "found": not missing, "missing": missing}


def casa_check(*, timeout: float = 120.0) -> dict[str, Any]:
    """Start CASA in a child with the configuration every call gets, and read a real measure.

    The child converts an epoch UTC -> TAI, which reads the leap-second table
    from CASA's measures data; the static ``measures()`` look at directories
    cannot see a site config whose ``measurespath`` does not exist.

    Returns:
        ``{"ok", "error", "tai_minus_utc_s", "measurespath", "leap_second_table",
        "config_files"}``; ``error`` is one line when ``ok`` is False.
    """
    from casaguard.api import tasks
    from casaguard.sandbox.jobdir import Ref

    result: dict[str, Any] = {"ok": False, "error": None}
    try:
        reply = tasks.call(
            Ref("casaguard.remote.casa.measures", "tai_minus_utc"), MEASURES_EPOCH, timeout=timeout
        )
    except CasaguardError as error:
        result["error"] = _one_line(str(error))
        return result
    result.update(reply)
    offset = float(reply["tai_minus_utc_s"])
    if abs(offset - TAI_MINUS_UTC_S) > 1e-3:
        result["error"] = CASA_CHECK_WRONG.format(
            offset=offset, expected=TAI_MINUS_UTC_S, epoch=MEASURES_EPOCH, **reply
        )
        return result
    result["ok"] = True
    return result


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else text


def _version_tuple(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def clash_risk(versions: dict[str, str | None]) -> bool:
    """True when python-casacore < 3.8.1 and casatools are both installed."""
    casacore = versions.get("python-casacore")
    return bool(
        casacore and versions.get("casatools") and _version_tuple(casacore) < FIRST_SAFE_CASACORE
    )


def loaded_in_caller() -> list[str]:
    """CASA libraries already imported into this process."""
    return [name for name in IN_PROCESS_MODULES if name in sys.modules]


@functools.lru_cache(maxsize=1)
def _static_environment() -> dict[str, Any]:
    versions = package_versions()
    return {
        "python": sys.version.split()[0],
        "packages": versions,
        "wsclean": wsclean(),
        "measures": measures(),
        "clash_risk": clash_risk(versions),
    }


def environment() -> dict[str, Any]:
    """The environment section of every probe report (cached; cheap after the first call)."""
    return {**_static_environment(), "loaded_in_caller": loaded_in_caller()}


def environment_findings(env: dict[str, Any]) -> list[Finding]:
    """Warnings about the calling environment that every report carries."""
    findings = []
    if env.get("loaded_in_caller"):
        findings.append(
            Finding(
                "CALLER_HAS_CASA",
                f"this process has {', '.join(env['loaded_in_caller'])} loaded; casaguard's "
                "children do not, but your own in-process CASA calls share its heap",
                "import CASA libraries only inside casaguard calls",
            )
        )
    if env.get("clash_risk"):
        findings.append(
            Finding(
                "CASACORE_CLASH_RISK",
                f"python-casacore {env['packages'].get('python-casacore')} and casatools "
                f"{env['packages'].get('casatools')} are installed: < 3.8.1 crashes in one process",
                "pip install 'python-casacore>=3.8.1', or never import both in one process",
            )
        )
    return findings


def deep_check(table: str | None = None, *, timeout: float = 120.0) -> list[dict[str, Any]]:
    """Load python-casacore and casatools in one throwaway child, in both orders.

    Args:
        table: optionally a casacore table both libraries open read-only.
        timeout: seconds per child.

    Returns:
        One entry per order: ``{"order", "ok", "kind", "signal", "detail", "versions"}``.
    """
    from casaguard.api import tasks
    from casaguard.sandbox.jobdir import Ref

    results = []
    for casacore_first in (True, False):
        order = "casacore, then casatools" if casacore_first else "casatools, then casacore"
        try:
            versions = tasks.call(
                Ref("casaguard.remote.casacore.clash", "import_both"),
                casacore_first,
                table,
                casa=False,
                # A fresh interpreter, so that the import order is ours to choose
                # (a warm-template fork already holds casatools).
                mode="spawn",
                timeout=timeout,
            )
        except CasaCrash as error:
            results.append(
                {
                    "order": order,
                    "ok": False,
                    "kind": error.kind,
                    "signal": error.signal,
                    "detail": error.detail,
                    "versions": None,
                }
            )
        else:
            results.append(
                {
                    "order": order,
                    "ok": True,
                    "kind": "ok",
                    "signal": None,
                    "detail": "",
                    "versions": versions,
                }
            )
    return results
