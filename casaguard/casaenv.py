"""Offline CASA configuration for child processes, kept where no other local user can plant it.

casatools 6.7 refuses to start without network unless its config points
``measurespath`` at measures data on disk and turns auto-update off. Unless
the user already set ``CASASITECONFIG``, casaguard writes a site config that
points at the installed ``casadata`` package and hands it to every child
through the environment. The parent never imports casatools; it only finds
casadata's directory (``importlib.util.find_spec`` does not execute it).

CASA ``exec()``s its site config and the user's ``~/.casa/config.py`` as the
caller, so both are code. On a shared node (one ``/tmp``, ``HOME=/tmp`` in
containers and CI) another user could plant either (docs/security.md):

- casaguard's site config lives in a directory that is the caller's own and
  that no one else can change: the directory and every ancestor are owned by
  the caller or root and writable by no one else (a sticky directory such as
  ``/tmp`` is allowed as an ancestor, since others cannot rename what is in it);
  directories casaguard creates are 0700. The file is created 0600 with
  ``O_EXCL`` and renamed into place; an existing one is reused only if it is a
  regular file owned by the caller, mode <= 0600, holding exactly the text
  casaguard would write -- anything else in that private directory is replaced.
- when the cache directory (``$XDG_CACHE_HOME`` or ``~/.cache``) is unsafe, the
  config goes to ``$XDG_RUNTIME_DIR/casaguard`` if that is safe, else to a
  fresh ``mkdtemp`` directory for this process (removed at exit), with a
  ``site_config_fallback`` warning: the call works, and nothing planted runs.
- a ``CASASITECONFIG`` the user set, and ``~/.casa/config.py`` (which CASA
  loads after the site config), must be owned by the caller or root, writable
  by no one else, below directories that pass the same checks (the user config
  may also be absent); otherwise every call raises ``SetupError`` with one line
  naming the file (silently dropping what may be the user's real config would
  change results). When there is no user config, children start CASA with
  ``--noconfig`` (``CASA_ARGS_ENV``), so one planted after the check is never read.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import importlib.util
import os
import shutil
import stat
import tempfile
from pathlib import Path

from casaguard.errors import SetupError

SITE_CONFIG_ENV = "CASASITECONFIG"
#: casaconfig reads flags such as ``--noconfig`` from ``sys.argv`` at import: a child
#: appends this variable's words to its ``sys.argv`` before it imports CASA.
CASA_ARGS_ENV = "CASAGUARD_CASA_ARGS"
MISSING_CASADATA = (
    "casadata is not installed, so CASA has no measures data offline: "
    "pip install casadata (or set CASASITECONFIG to your own CASA site config)"
)
#: A directory (or an ancestor) someone else could change: ``{problem}`` names it.
UNSAFE_DIR = "{problem}: another local user could plant files there that CASA runs as you"
#: CASA's user config is not provably the caller's: ``{path}``, ``{why}``.
UNSAFE_USER_CONFIG = (
    "CASA would execute {path} as you, but {problem}: remove it, or make it and "
    "its directories yours and writable only by you"
)
UNSAFE_SITE_CONFIG = (
    "CASASITECONFIG={path} would be executed by CASA as you, but {problem}: point it at "
    "a file that only you (or root) can change"
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


def site_config_text() -> str:
    """The exact site config casaguard writes (and the only content it reuses)."""
    return _SITE_CONFIG_TEMPLATE.format(measurespath=str(casadata_dir()))


def site_config_name(text: str | None = None) -> str:
    """The site config's file name: predictable (it hashes ``text``), hence kept private."""
    digest = hashlib.sha256((text or site_config_text()).encode()).hexdigest()[:12]
    return f"casasiteconfig-{digest}.py"


def site_config_path() -> Path:
    """Return a site config for offline CASA in a private directory, writing it if needed.

    Its name depends on the casadata path, so two virtual environments never
    share one. See the module docstring for where it lives and what is reused.

    Raises:
        SetupError: casadata is missing, or no private directory can be made.
    """
    text = site_config_text()
    name = site_config_name(text)
    for attempt in range(2):
        directory = _config_dir(str(_cache_dir()))
        path = directory / name
        if _holds_exactly(path, text):
            return path
        try:
            _write_private(directory, name, text)
            return path
        except FileNotFoundError:
            if attempt:
                raise SetupError(f"cannot write CASA's site config in {directory}") from None
            _config_dir.cache_clear()  # the directory went away since it was checked
        except OSError as error:
            raise SetupError(f"cannot write CASA's site config in {directory}: {error}") from None
    raise AssertionError("unreachable")


def private_dir(path: Path) -> Path:
    """Create or check a directory that only the caller can change; return its real path.

    Missing components are created 0700. The directory must be owned by the
    caller and writable by no one else; every ancestor must be owned by the
    caller or root and writable by no one else unless it is sticky (``/tmp``).
    Symlinks are followed only when owned by the caller or root, and their
    targets pass the same checks.

    Raises:
        SetupError: one line naming the component another user could change.
    """
    try:
        real = _walk(Path(path), create=True)
        _check_own(real, os.stat(real))
    except _Unsafe as unsafe:
        raise SetupError(UNSAFE_DIR.format(problem=unsafe.problem)) from None
    return real


def check_user_config(home: str | None = None) -> list[str]:
    """Check CASA's user config (``~/.casa/config.py``); return the arguments CASA needs.

    Returns:
        ``[]`` when the file is the caller's (CASA loads it as usual), or
        ``["--noconfig"]`` when there is none (so that one planted between this
        check and CASA's start is never read).

    Raises:
        SetupError: the file, or a directory above it, belongs to or is writable by
            another user.
    """
    root = Path(home) if home else Path(os.path.expanduser("~"))
    path = root / ".casa" / "config.py"
    try:
        os.lstat(path)
    except FileNotFoundError:
        return ["--noconfig"]
    except OSError as error:
        raise SetupError(UNSAFE_USER_CONFIG.format(path=path, problem=error.strerror)) from None
    try:
        _check_code_file(path)
    except _Unsafe as unsafe:
        raise SetupError(UNSAFE_USER_CONFIG.format(path=path, problem=unsafe.problem)) from None
    return []


def check_site_config(path: str) -> None:
    """Refuse a ``CASASITECONFIG`` that someone other than the caller or root could change.

    Raises:
        SetupError: one line naming the file or directory at fault.
    """
    try:
        _check_code_file(Path(path))
    except _Unsafe as unsafe:
        raise SetupError(UNSAFE_SITE_CONFIG.format(path=path, problem=unsafe.problem)) from None


def child_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """Return the environment for a CASA child: ``base`` plus offline CASA settings.

    An existing ``CASASITECONFIG`` is respected. ``LIBC_FATAL_STDERR_=1`` makes
    older glibc write its abort message to stderr instead of the tty.

    Raises:
        SetupError: the site config cannot be kept private, or CASA's user config
            is not the caller's (see the module docstring).
    """
    env = dict(os.environ if base is None else base)
    env[CASA_ARGS_ENV] = " ".join(check_user_config(env.get("HOME") or None))
    if env.get(SITE_CONFIG_ENV):
        check_site_config(env[SITE_CONFIG_ENV])
    else:
        env[SITE_CONFIG_ENV] = str(site_config_path())
    env["LIBC_FATAL_STDERR_"] = "1"
    env.setdefault("PYTHONFAULTHANDLER", "1")
    return env


def cache_dir() -> Path:
    """casaguard's private per-user directory (site configs, default crash evidence).

    ``$XDG_CACHE_HOME/casaguard`` or ``~/.cache/casaguard`` when that is safe,
    else the fallback described in the module docstring.

    Raises:
        SetupError: not even a fresh temporary directory could be made.
    """
    return _config_dir(str(_cache_dir()))


def _cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "casaguard"


@functools.lru_cache(maxsize=8)
def _config_dir(preferred: str) -> Path:
    """The private directory for ``preferred``, or a safe fallback (cached per process)."""
    try:
        return private_dir(Path(preferred))
    except SetupError as unsafe:
        reason = str(unsafe)
    # Imported here: a spawned child imports this module for one constant and
    # should not pay for structlog.
    from casaguard import events

    log = events.get_logger()
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        try:
            directory = private_dir(Path(runtime) / "casaguard")
        except SetupError:
            pass
        else:
            log.warning("site_config_fallback", reason=reason, directory=str(directory))
            return directory
    try:
        directory = Path(tempfile.mkdtemp(prefix="casaguard-private-"))
    except OSError as error:
        raise SetupError(f"{reason}; and no private temp dir: {error.strerror}") from None
    atexit.register(shutil.rmtree, directory, True)
    log.warning("site_config_fallback", reason=reason, directory=str(directory))
    return directory


def _holds_exactly(path: Path, text: str) -> bool:
    """True when ``path`` is a regular file of ours, mode <= 0600, containing ``text``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        info = os.fstat(fd)
        if (
            not stat.S_ISREG(info.st_mode)
            or info.st_uid != os.geteuid()
            or info.st_mode & 0o177
            or info.st_size != len(text.encode())
        ):
            return False
        with os.fdopen(os.dup(fd), "rb") as handle:
            return handle.read() == text.encode()
    finally:
        os.close(fd)


def _write_private(directory: Path, name: str, text: str) -> None:
    # mkstemp: O_EXCL, mode 0600. Renaming over whatever held the name (only the
    # caller can write this directory) means concurrent callers never see half a file.
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".casasiteconfig-")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, directory / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _Unsafe(Exception):
    """A path component another user could change; ``problem`` says which and why."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


def _walk(path: Path, *, create: bool) -> Path:
    """Check every component of ``path`` as an ancestor (creating missing ones 0700).

    Returns:
        The real path. Raises ``_Unsafe`` for a component another user could change.
    """
    path = Path(os.path.abspath(path))
    current = Path(path.anchor)
    _check_ancestor(current, os.lstat(current))
    parts = path.parts[1:]
    for index, part in enumerate(parts):
        current = current / part
        try:
            info = os.lstat(current)
        except FileNotFoundError:
            if not create:
                raise _Unsafe(f"{current} does not exist") from None
            try:
                os.mkdir(current, 0o700)
            except FileExistsError:
                pass  # someone made it first: judged below like any existing one
            except OSError as error:
                raise _Unsafe(f"{current} cannot be created ({error.strerror})") from None
            info = os.lstat(current)
        if stat.S_ISLNK(info.st_mode):
            _check_owner(current, info)
            current = _walk(Path(os.path.realpath(current)), create=False)
            continue
        if index < len(parts) - 1 or stat.S_ISDIR(info.st_mode):
            _check_ancestor(current, info)
    return current


def _check_owner(path: Path, info: os.stat_result) -> None:
    if info.st_uid not in (os.geteuid(), 0):
        raise _Unsafe(f"{path} is owned by uid {info.st_uid}")


def _check_ancestor(path: Path, info: os.stat_result) -> None:
    _check_owner(path, info)
    if not stat.S_ISDIR(info.st_mode):
        raise _Unsafe(f"{path} is not a directory")
    if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
        raise _Unsafe(f"{path} is writable by others (mode {stat.S_IMODE(info.st_mode):o})")


def _check_code_file(path: Path) -> None:
    """A file CASA will exec: owned by the caller or root, writable by no one else, in safe dirs."""
    real = _walk(path, create=False)
    info = os.stat(real)
    if not stat.S_ISREG(info.st_mode):
        raise _Unsafe(f"{real} is not a regular file")
    _check_owner(real, info)
    if info.st_mode & 0o022:
        raise _Unsafe(f"{real} is writable by others (mode {stat.S_IMODE(info.st_mode):o})")


def _check_own(path: Path, info: os.stat_result) -> None:
    """The last component: the caller's own, writable by no one else."""
    if info.st_uid != os.geteuid():
        raise _Unsafe(f"{path} is owned by uid {info.st_uid}, not by you")
    if info.st_mode & 0o022:
        raise _Unsafe(f"{path} is writable by others (mode {stat.S_IMODE(info.st_mode):o})")
