"""Attacks by a second local user on a shared node, run for real (issue 12).

The attacker's step runs as uid 65534 (``setpriv --reuid``); the victim runs
as root with its DAC powers dropped (``DROP_ROOT_POWERS``), so file modes and
owners bind it as they bind an ordinary user. The shared directory plays
``/tmp`` (mode 1777) and is the victim's ``HOME``, as in containers and CI.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from conftest import ATTACKER, DROP_ROOT_POWERS

from casaguard import casaenv
from casaguard.crash import evidence as crashdir
from casaguard.errors import SetupError
from casaguard.sandbox.template import client as _template

ATTACKER_UID = 65534

_VICTIM_FT = r"""
import json, os, sys
import casaguard
from casaguard import casaenv
from casaguard.errors import SetupError

vis, complist = sys.argv[1], sys.argv[2]
try:
    casaguard.ft(vis=vis, complist=complist, usescratch=True)
except SetupError as error:
    result = {"outcome": "refused", "message": str(error)}
else:
    site = casaenv.child_environment()[casaenv.SITE_CONFIG_ENV]
    info = os.stat(site)
    result = {"outcome": "ok", "site_config": site, "uid": info.st_uid, "mode": info.st_mode}
print("RESULT " + json.dumps(result))
"""


@pytest.fixture
def shared_home() -> Iterator[Path]:
    """A world-writable sticky directory directly under /tmp (the attacker can reach it)."""
    path = Path(tempfile.mkdtemp(prefix="casaguard-shared-", dir="/tmp"))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def as_attacker(code: str) -> None:
    """Run ``code`` with the system Python as uid 65534, from a directory it can enter."""
    subprocess.run(
        [*ATTACKER, "/usr/bin/python3", "-c", textwrap.dedent(code)],
        check=True,
        cwd="/",
        env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"},
        capture_output=True,
        timeout=60,
    )


def run_victim(home: Path, ms: Path, complist: Path) -> dict[str, object]:
    """A guarded ft as the victim with ``HOME=home`` and nothing else telling it where to go."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("XDG_CACHE_HOME", "XDG_RUNTIME_DIR", casaenv.SITE_CONFIG_ENV)
    }
    env["HOME"] = str(home)
    result = subprocess.run(
        [*DROP_ROOT_POWERS, sys.executable, "-c", _VICTIM_FT, str(ms), str(complist)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ms.parent,  # not the shared dir: ``-c`` puts the cwd on sys.path
        timeout=300,
        check=False,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert result.returncode == 0 and lines, result.stdout + result.stderr
    victim: dict[str, object] = json.loads(lines[-1][len("RESULT ") :])
    # Unconfigured structlog prints to stdout (issue 17 item 1 routes it to logging).
    victim["output"] = result.stdout + result.stderr
    return victim


def planted_config(marker: Path) -> str:
    """A working site config that also proves it ran, and as whom, by writing ``marker``."""
    payload = f"import os\nopen({str(marker)!r}, 'w').write(str(os.getuid()))\n"
    return payload + casaenv.site_config_text()


def test_planted_site_config_in_shared_home_is_never_executed(
    shared_home: Path, ms: Path, complist: Path
) -> None:
    """A site config another user planted at the predictable path never runs; ft uses its own."""
    marker = shared_home / "pwned"
    planted_dir = shared_home / ".cache" / "casaguard"
    planted = planted_dir / casaenv.site_config_name()
    text = planted_config(marker)
    as_attacker(
        f"""
        import os
        os.makedirs({str(planted_dir)!r}, mode=0o777)
        os.chmod({str(shared_home / ".cache")!r}, 0o777)
        os.chmod({str(planted_dir)!r}, 0o777)
        with open({str(planted)!r}, "w") as f:
            f.write({text!r})
        os.chmod({str(planted)!r}, 0o666)
        """
    )
    assert planted.stat().st_uid == ATTACKER_UID

    victim = run_victim(shared_home, ms, complist)

    assert not marker.exists(), "the planted site config was executed by the victim"
    assert planted.read_text() == text
    if victim["outcome"] == "refused":
        assert "\n" not in str(victim["message"])
    else:
        site = Path(str(victim["site_config"]))
        assert not site.is_relative_to(shared_home)
        assert victim["uid"] == os.geteuid()
        assert stat.S_IMODE(int(str(victim["mode"]))) == 0o600
        assert "site_config_fallback" in str(victim["output"])


def test_planted_casa_user_config_is_refused_in_one_line(
    shared_home: Path, ms: Path, complist: Path
) -> None:
    """A ~/.casa/config.py planted by another user is refused in one line and never run."""
    marker = shared_home / "pwned"
    casa_dir = shared_home / ".casa"
    as_attacker(
        f"""
        import os
        os.makedirs({str(casa_dir)!r}, mode=0o755)
        with open({str(casa_dir / "config.py")!r}, "w") as f:
            f.write({planted_config(marker)!r})
        """
    )
    before = sorted(p.name for p in ms.iterdir())

    victim = run_victim(shared_home, ms, complist)

    assert victim["outcome"] == "refused"
    message = str(victim["message"])
    assert "\n" not in message
    assert str(casa_dir) in message and f"uid {ATTACKER_UID}" in message
    assert not marker.exists()
    assert sorted(p.name for p in ms.iterdir()) == before


def test_victim_own_cache_dir_is_private_and_reused(tmp_path: Path) -> None:
    """In a HOME of its own, casaguard makes cache dirs 0700 and a 0600 site config it reuses."""
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    code = (
        "from casaguard import casaenv; "
        "a = casaenv.site_config_path(); b = casaenv.site_config_path(); "
        "assert a == b; print(a)"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_CACHE_HOME",)}
    env["HOME"] = str(home)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    site = Path(out.stdout.strip().splitlines()[-1])
    assert site.parent == home / ".cache" / "casaguard"
    for directory in (home / ".cache", home / ".cache" / "casaguard"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(site.stat().st_mode) == 0o600
    assert site.read_text() == casaenv.site_config_text()


@pytest.mark.parametrize(
    ("mode", "content"),
    [(0o644, None), (0o600, "measurespath = '/elsewhere'\n"), (0o666, None)],
    ids=["too-open", "other-content", "world-writable"],
)
def test_existing_site_config_is_reused_only_when_exact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: int, content: str | None
) -> None:
    """A site config with a looser mode or other content is replaced by the exact 0600 text."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    directory = casaenv.private_dir(cache / "casaguard")
    path = directory / casaenv.site_config_name()
    path.write_text(content or casaenv.site_config_text())
    path.chmod(mode)
    casaenv._config_dir.cache_clear()

    assert casaenv.site_config_path() == path
    assert path.read_text() == casaenv.site_config_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_private_dir_refuses_a_group_writable_directory(tmp_path: Path) -> None:
    """A directory writable by others is refused with one line naming it and its mode."""
    loose = tmp_path / "loose"
    loose.mkdir()
    loose.chmod(0o775)
    with pytest.raises(SetupError) as caught:
        casaenv.private_dir(loose / "casaguard")
    assert str(loose) in str(caught.value) and "775" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert not (loose / "casaguard").exists()


def _tcp_listeners(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket ``pid`` holds in LISTEN state."""
    return [
        (c.laddr.ip, c.laddr.port)
        for c in psutil.Process(pid).net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN
    ]


def _my_listeners() -> list[tuple[str, int]]:
    """What the calling process listens on (run inside a guarded child)."""
    return _tcp_listeners(os.getpid())


def _non_loopback(listeners: list[tuple[str, int]]) -> list[tuple[str, int]]:
    return [(ip, port) for ip, port in listeners if not ipaddress.ip_address(ip).is_loopback]


def test_casatools_grpc_registry_is_casatools_own_listener(tmp_path: Path) -> None:
    """Plain casatools listens on all interfaces at import: the finding the template must undo."""
    code = (
        "import os, sys, psutil, casatools; "
        "print([(c.laddr.ip, c.status) for c in psutil.Process().net_connections(kind='tcp')])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "--noconfig"],
        capture_output=True,
        text=True,
        env=casaenv.child_environment(),
        cwd=tmp_path,
        timeout=300,
        check=True,
    )
    assert "'LISTEN'" in result.stdout.splitlines()[-1]
    assert "'::'" in result.stdout or "'0.0.0.0'" in result.stdout


@pytest.mark.parametrize("mode", ["template", "spawn"])
def test_no_network_listener_in_template_or_child(
    ms: Path, complist: Path, mode: str, no_leaks: None
) -> None:
    """After a guarded ft, neither the warm template (its warm-up done) nor a child listens on a
    non-loopback port: a fork inherits no listener, so it does not look for one."""
    import casaguard

    casaguard.ft(vis=str(ms), complist=str(complist), usescratch=True, mode=mode)
    if mode == "template":
        template = _template._templates["casa"]
        assert template.wait_warm(180), template.stderr_tail()
    in_child = casaguard.call(_my_listeners, mode=mode)
    assert _non_loopback(in_child) == [], in_child
    if mode == "template":
        pid = _template.template_pid()
        assert pid is not None
        assert _non_loopback(_tcp_listeners(pid)) == []
    casaguard.clearcal(vis=str(ms), addmodel=True, mode=mode)


def _crash_once() -> None:
    """One real guarded crash (SIGSEGV in the child), so the runner keeps evidence."""
    import casaguard
    from casaguard.corpus import crashers
    from casaguard.errors import Segfault

    with pytest.raises(Segfault):
        casaguard.call(crashers.segfault, casa=False)


def test_pruning_removes_only_casaguard_evidence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Crashes past KEEP prune old evidence; 12 user folders in the same crash dir all survive."""
    root = tmp_path / "shared-crash-dir"
    root.mkdir()
    users = []
    for index in range(12):
        folder = root / f"2000010{index % 10}T000000-user-project-{index}"
        folder.mkdir()
        (folder / "notes.txt").write_text(f"user data {index}")
        users.append(folder)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("not casaguard's")
    (root / "0000-link").symlink_to(outside)
    monkeypatch.setenv(crashdir.CRASH_DIR_ENV, str(root))
    monkeypatch.setattr(crashdir, "KEEP", 2)

    for _ in range(4):
        _crash_once()

    for index, folder in enumerate(users):
        assert (folder / "notes.txt").read_text() == f"user data {index}"
    assert (outside / "keep.txt").exists() and (root / "0000-link").is_symlink()
    evidence = [p for p in root.iterdir() if (p / crashdir.MARKER).exists() and not p.is_symlink()]
    assert len(evidence) == 2
    assert len(list(root.iterdir())) == 12 + 1 + 2


def test_evidence_is_private_to_the_caller(
    shared_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Crash folders are 0700 and their files 0600: another user can neither list nor read them."""
    root = shared_home / "crashes"
    root.mkdir(mode=0o755)
    root.chmod(0o755)  # a deliberately shared location: the folders must still be private
    monkeypatch.setenv(crashdir.CRASH_DIR_ENV, str(root))

    _crash_once()

    (folder,) = list(root.iterdir())
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted([crashdir.MARKER, "casa.log", "facts.json", "stderr-tail.txt"])
    for path in folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert "segfault" in (folder / "facts.json").read_text()
    probe = f"""
        import os, sys
        for action in (lambda: os.listdir({str(folder)!r}),
                       lambda: open({str(folder / "facts.json")!r}).read()):
            try:
                action()
            except PermissionError:
                continue
            sys.exit("readable by another user")
        """
    as_attacker(probe)


def test_explicit_site_config_writable_by_others_is_refused(
    shared_home: Path, ms: Path, complist: Path
) -> None:
    """A CASASITECONFIG another user can rewrite is refused in one line before any child starts."""
    marker = shared_home / "pwned"
    site = shared_home / "site.py"
    as_attacker(
        f"""
        import os
        with open({str(site)!r}, "w") as f:
            f.write({planted_config(marker)!r})
        os.chmod({str(site)!r}, 0o666)
        """
    )
    code = _VICTIM_FT
    env = dict(os.environ, **{casaenv.SITE_CONFIG_ENV: str(site)})
    result = subprocess.run(
        [*DROP_ROOT_POWERS, sys.executable, "-c", code, str(ms), str(complist)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ms.parent,
        timeout=300,
        check=False,
    )
    line = next(x for x in result.stdout.splitlines() if x.startswith("RESULT "))
    victim = json.loads(line[len("RESULT ") :])
    assert victim["outcome"] == "refused", victim
    assert "\n" not in victim["message"] and f"uid {ATTACKER_UID}" in victim["message"]
    assert not marker.exists()


def test_site_config_is_rewritten_when_its_private_dir_vanishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A private cache dir removed after its check is made and checked again: no OSError."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    casaenv._config_dir.cache_clear()
    first = casaenv.site_config_path()
    shutil.rmtree(tmp_path / "cache")
    assert casaenv.site_config_path() == first
    assert first.read_text() == casaenv.site_config_text()
    assert stat.S_IMODE((tmp_path / "cache").stat().st_mode) == 0o700
