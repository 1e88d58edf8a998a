"""No one else's journal: a second local user cannot plant, steer or block a guarded write.

The attacker is a real second user (uid 65534 through ``setpriv``, groups
cleared); the victim is the test process (root, which is exactly the user an
attacker most wants to fool: root ignores file modes, so only casaguard's own
owner checks stand in the way). Every test ends by checking the victim's MS
with CASA's next reader and the victim's dotfile byte for byte.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ATTACKER
from next_reader import assert_casa_can_use

from casaguard.journal import layout as journal_layout

BASHRC = "# the victim's own shell start-up\n"
PLANTED = "obs.ms.casaguard-journal-999999-deadbeef"

PLANT = """
import json, os, sys
where, name, vis, target = sys.argv[1:]
journal = os.path.join(where, name)
os.mkdir(journal)
os.chmod(journal, 0o777)
os.mkdir(os.path.join(journal, "files"))
evil = os.path.normpath(os.path.join(journal, "files", target))
os.makedirs(os.path.dirname(evil), exist_ok=True)
with open(evil, "w") as out:
    out.write("echo attacker code runs as the victim\\n")
os.chmod(evil, 0o666)
manifest = {
    "version": 1, "vis": vis, "task": "ft", "pid": 999999, "parent_pid": 999999,
    "saved": [target], "subtables": {}, "main_entries": [], "subtable_entries": {},
    "stat": {},
}
with open(os.path.join(journal, "manifest.json"), "w") as out:
    json.dump(manifest, out)
os.chmod(os.path.join(journal, "manifest.json"), 0o666)
print("planted", journal)
"""


def _as_attacker(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ATTACKER, sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd="/",
    )


def _cli(args: list[str], home: Path, tmpdir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "casaguard.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=home,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(sys.path),
            "HOME": str(home),
            "TMPDIR": str(tmpdir),
        },
    )


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("casaguard:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


class Node:
    """A shared node: a world-writable /tmp-like directory and the victim's private home."""

    def __init__(self, shared: Path, home: Path) -> None:
        self.shared = shared
        self.home = home
        self.bashrc = home / ".bashrc"


@pytest.fixture
def node() -> Iterator[Node]:
    """A 1777 shared directory and a 0755 victim home outside pytest's private tmp tree."""
    shared = Path(tempfile.mkdtemp(prefix="casaguard-shared-", dir="/tmp"))
    home = Path(tempfile.mkdtemp(prefix="casaguard-victim-", dir="/tmp"))
    shared.chmod(0o1777)
    home.chmod(0o755)
    (home / ".bashrc").write_text(BASHRC)
    yield Node(shared, home)
    shutil.rmtree(shared, ignore_errors=True)
    shutil.rmtree(home, ignore_errors=True)


def _assert_untouched(node: Node) -> None:
    assert node.bashrc.read_text() == BASHRC
    st = node.bashrc.stat()
    assert st.st_uid == os.geteuid() and st.st_mode & 0o777 == 0o644


def test_journal_planted_in_tmp_is_never_used(node: Node, ms: Path, complist: Path) -> None:
    """The issue's attack: a journal planted in the victim's TMPDIR naming the victim's MS with
    saved=["../.bashrc"] and main_entries=[] is not found by the next guarded ft, and
    restore-journal on it refuses in one line; the MS and ~/.bashrc are untouched."""
    vis = node.home / "obs.ms"
    shutil.copytree(ms, vis)
    planted = _as_attacker(PLANT, str(node.shared), PLANTED, str(vis), "../.bashrc")
    assert planted.returncode == 0, planted.stderr
    ft = _cli(["ft", str(vis), "--complist", str(complist), "--usescratch"], node.home, node.shared)
    assert ft.returncode == 0, ft.stderr
    assert PLANTED not in ft.stderr
    for target in (node.shared / PLANTED, vis):
        refused = _cli(["restore-journal", str(target)], node.home, node.shared)
        assert refused.returncode == 2, refused.stderr
        _one_error_line(refused)
    _assert_untouched(node)
    assert (node.shared / PLANTED / "manifest.json").exists(), "not ours to delete either"
    assert_casa_can_use(vis, complist)


def test_journal_planted_beside_a_shared_ms_is_not_trusted(
    node: Node, ms: Path, complist: Path
) -> None:
    """An MS in a sticky world-writable directory: a journal the attacker plants beside the MS
    is ignored by ft (journal_untrusted) and refused by restore-journal (exit 1, one line
    naming the owner); the victim's own journal lives beside the MS, not in ~/.cache."""
    vis = node.shared / "obs.ms"
    shutil.copytree(ms, vis)
    target = os.path.relpath(node.bashrc, vis)
    planted = _as_attacker(PLANT, str(node.shared), "." + PLANTED, str(vis), target)
    assert planted.returncode == 0, planted.stderr
    ft = _cli(["ft", str(vis), "--complist", str(complist), "--usescratch"], node.home, node.shared)
    assert ft.returncode == 0, ft.stderr
    assert "journal_untrusted" in ft.stderr
    assert not (node.home / ".cache" / "casaguard" / "journals").exists()
    refused = _cli(["restore-journal", str(node.shared / ("." + PLANTED))], node.home, node.shared)
    assert refused.returncode == 1, refused.stderr
    assert "owned by uid 65534" in _one_error_line(refused)
    _assert_untouched(node)
    assert_casa_can_use(vis, complist)


def _own_journal(vis: Path, manifest: dict[str, object]) -> Path:
    """Write a journal beside ``vis`` as the victim itself (trusted by ownership)."""
    path = vis.parent / f".{vis.name}{journal_layout.JOURNAL_MARK}999999-0badf00d"
    (path / journal_layout.FILES).mkdir(parents=True, mode=0o700)
    path.chmod(0o700)
    (path / journal_layout.MANIFEST).write_text(json.dumps(manifest))
    (path / journal_layout.MANIFEST).chmod(0o600)
    return path


@pytest.mark.parametrize(
    ("saved", "why"),
    [
        ("../.bashrc", "is not a path inside"),
        ("/etc/passwd", "is not a path inside"),
        ("escape/.bashrc", "resolves outside"),
    ],
)
def test_manifest_paths_outside_the_ms_are_refused(
    node: Node, ms: Path, complist: Path, saved: str, why: str
) -> None:
    """A manifest (even the victim's own) naming a path outside the MS -- by '..', absolutely, or
    through a symlink inside the MS -- is refused in one line, exit 1; nothing is written."""
    vis = node.home / "obs.ms"
    shutil.copytree(ms, vis)
    (vis / "escape").symlink_to(node.home)
    entries = sorted(p.name for p in vis.iterdir())
    path = _own_journal(
        vis,
        {"vis": str(vis), "saved": [saved], "main_entries": entries, "stat": {}, "subtables": {}},
    )
    (path / journal_layout.FILES / "x").write_text("attacker\n")
    result = _cli(["restore-journal", str(vis)], node.home, node.shared)
    assert result.returncode == 1, result.stderr
    assert why in _one_error_line(result)
    assert path.is_dir(), "a refused journal is kept"
    _assert_untouched(node)
    (vis / "escape").unlink()
    assert_casa_can_use(vis, complist)


def test_restore_never_deletes_what_the_snapshot_did_not_see_born(
    node: Node, ms: Path, complist: Path
) -> None:
    """A manifest that omits most of the MS's files (main_entries lists only table.dat) makes a
    restore delete nothing: a file is removed only if it was born after the snapshot."""
    vis = node.home / "obs.ms"
    shutil.copytree(ms, vis)
    before = sorted(str(p.relative_to(vis)) for p in vis.rglob("*"))
    time.sleep(journal_layout.CLOCK_SLACK_NS / 1e9 + 0.5)
    _own_journal(
        vis,
        {
            "vis": str(vis),
            "saved": [],
            "main_entries": ["table.dat"],
            "subtables": {},
            "stat": {},
            "taken_ns": time.time_ns(),
        },
    )
    result = _cli(["restore-journal", str(vis)], node.home, node.shared)
    assert result.returncode == 0, result.stderr
    after = sorted(str(p.relative_to(vis)) for p in vis.rglob("*"))
    assert [p for p in before if p not in after] == []
    assert_casa_can_use(vis, complist)


HOLD_READ_ACCESS = """
import fcntl, json, os, sys
vis = sys.argv[1]
fd = os.open(vis, os.O_RDONLY | os.O_DIRECTORY)
fcntl.flock(fd, fcntl.LOCK_EX)  # what blocked every guarded write before
tried = {}
for name in (".casaguard-writer.lock",):
    for flags in (os.O_RDONLY, os.O_RDWR):
        try:
            os.close(os.open(os.path.join(vis, name), flags))
            tried[f"{name}:{flags}"] = "opened"
        except OSError as error:
            tried[f"{name}:{flags}"] = error.strerror
print(json.dumps(tried), flush=True)
sys.stdin.read()
"""


def test_a_reader_cannot_block_guarded_writes(node: Node, ms: Path, complist: Path) -> None:
    """A second user with read access to the MS flocks its directory and tries to open the writer
    lock file: it cannot open it, and the victim's guarded ft still runs at once."""
    vis = node.home / "obs.ms"
    shutil.copytree(ms, vis)
    subprocess.run(["chmod", "-R", "a+rX", str(vis)], check=True)
    first = _cli(["clearcal", str(vis)], node.home, node.shared)  # creates the lock file
    assert first.returncode == 0, first.stderr
    lock_file = vis / journal_layout.WRITER_LOCK_FILE
    assert lock_file.stat().st_mode & 0o777 == 0o600
    reader = subprocess.Popen(
        [*ATTACKER, sys.executable, "-c", textwrap.dedent(HOLD_READ_ACCESS), str(vis)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd="/",
    )
    try:
        assert reader.stdout is not None
        tried = json.loads(reader.stdout.readline())
        assert set(tried.values()) == {"Permission denied"}, tried
        ft = _cli(
            ["ft", str(vis), "--complist", str(complist), "--usescratch", "--lock-timeout", "2"],
            node.home,
            node.shared,
        )
        assert ft.returncode == 0, ft.stderr
    finally:
        reader.communicate("", timeout=30)
    assert_casa_can_use(vis, complist)


MAKE_OPEN_DIR = """
import os, sys
os.mkdir(sys.argv[1])
os.chmod(sys.argv[1], 0o777)
"""


def test_attacker_cache_dir_cannot_deny_guarded_writes(
    node: Node, ms: Path, complist: Path
) -> None:
    """With HOME in a shared sticky dir, an attacker's pre-made ~/.cache neither stops the
    victim's guarded ft on an MS there nor receives casaguard's files (journal or config)."""
    vis = node.shared / "obs.ms"
    shutil.copytree(ms, vis)
    planted = _as_attacker(MAKE_OPEN_DIR, str(node.shared / ".cache"))
    assert planted.returncode == 0, planted.stderr
    ft = _cli(
        ["ft", str(vis), "--complist", str(complist), "--usescratch"], node.shared, node.shared
    )
    assert ft.returncode == 0, ft.stderr
    # (CASA's matplotlib may cache fonts there, as plain CASA does: not casaguard's doing.)
    assert not (node.shared / ".cache" / "casaguard").exists(), "the attacker's directory was used"
    assert not list(node.shared.glob(".obs.ms.casaguard-journal-*")), "journal left behind"
    assert_casa_can_use(vis, complist)
