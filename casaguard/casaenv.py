"""Offline CASA configuration for child processes.

casatools 6.7 refuses to start without network unless its config points
``measurespath`` at measures data on disk and turns auto-update off. Unless
the user already set ``CASASITECONFIG``, casaguard writes a site config that
points at the installed ``casadata`` package and hands it to every child
through the environment. The parent never imports casatools; it only finds
casadata's directory (``importlib.util.find_spec`` does not execute it).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from pathlib import Path

from casaguard.errors import SetupError

SITE_CONFIG_ENV = "CASASITECONFIG"
MISSING_CASADATA = (
    "casadata is not installed, so CASA has no measures data offline: "
    "pip install casadata (or set CASASITECONFIG to your own CASA site config)"
)

_SITE_CONFIG_TEMPLATE = """\
# Written by casaguard: offline CASA, measures from the installed casadata package.
measurespath = {measurespath!r}
measures_auto_update = False
data_auto_update = False
nologfile = True
# casatasks opens config.logfile at import whatever nologfile says: without this
# it would drop a casa-<date>.log into the caller's working directory. Each call
# then points the sink at its own job file.
logfile = "/dev/null"
nologger = True
log2term = False
"""


def casadata_dir() -> Path:
    """Return the measures directory shipped by the ``casadata`` package.

    Raises:
        SetupError: casadata is not installed or has no ``__data__`` directory.
    """
    spec = importlib.util.find_spec("casadata")
    if spec is None or not spec.submodule_search_locations:
        raise SetupError(MISSING_CASADATA)
    for location in spec.submodule_search_locations:
        data = Path(location) / "__data__"
        if data.is_dir():
            return data
    raise SetupError(MISSING_CASADATA)


def site_config_path() -> Path:
    """Return a site config for offline CASA, writing it on first use.

    The file lives in the user's cache directory and its name depends on the
    casadata path, so two virtual environments never share one.
    """
    measurespath = str(casadata_dir())
    text = _SITE_CONFIG_TEMPLATE.format(measurespath=measurespath)
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    directory = _cache_dir()
    path = directory / f"casasiteconfig-{digest}.py"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        # Write-then-rename: concurrent callers never see half a file.
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".casasiteconfig-")
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    return path


def child_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """Return the environment for a CASA child: ``base`` plus offline CASA settings.

    An existing ``CASASITECONFIG`` is respected. ``LIBC_FATAL_STDERR_=1`` makes
    older glibc write its abort message to stderr instead of the tty.
    """
    env = dict(os.environ if base is None else base)
    if not env.get(SITE_CONFIG_ENV):
        env[SITE_CONFIG_ENV] = str(site_config_path())
    env["LIBC_FATAL_STDERR_"] = "1"
    env.setdefault("PYTHONFAULTHANDLER", "1")
    return env


def _cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "casaguard"
