"""The journal judged by CASA's next call: after every failure it handles, the MS still works.

Each test makes a guarded write fail for real (a CASA error, a timeout, a
full file system...) and ends with ``assert_casa_can_use``: a fresh process
reads every table in full, then plain ``casatasks.ft`` + ``clearcal`` run on
the MS. Byte comparisons cannot see a stale ``table.lock``; this can.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import casa_script
from next_reader import assert_casa_can_use
from structlog.testing import capture_logs

import casaguard
from casaguard import journal

CompletedText = subprocess.CompletedProcess[str]


def _tree(root: Path) -> dict[str, str]:
    """Content hash of every file of an MS except the lock files (casacore's and casaguard's)."""
    return {
        str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in ("table.lock", journal.WRITER_LOCK_FILE)
    }


def _journals(vis: Path) -> list[Path]:
    return sorted(vis.parent.glob(f".{vis.name}{journal.JOURNAL_MARK}*"))


def test_casa_error_before_any_write_leaves_a_working_ms(ms: Path, complist: Path) -> None:
    """ft with a missing complist fails, is restored, and CASA's next ft and clearcal work."""
    with pytest.raises(casaguard.CasaTaskError) as caught:
        casaguard.ft(vis=str(ms), complist=str(ms.parent / "missing.cl"), usescratch=True)
    assert caught.value.restored
    assert _journals(ms) == []
    casaguard.ft(vis=str(ms), complist=str(complist), usescratch=True)
    assert_casa_can_use(ms, complist)


# --- a caller killed mid-write: the orphan blocks the next write; restore-journal ---------

KILLED_CALLER = """
import sys
import casaguard
casaguard.ft(vis=sys.argv[1], complist=sys.argv[2], usescratch=True)
"""


def _cli(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> CompletedText:
    return subprocess.run(
        [sys.executable, "-m", "casaguard.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **(env or {})},
    )


def _error_lines(result: CompletedText) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("casaguard:")]


def _kill_caller_mid_ft(ms: Path, complist: Path, tmp_path: Path) -> Path:
    """Start a caller running guarded ft, SIGKILL it once the task runs; return the journal."""
    caller = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(KILLED_CALLER), str(ms), str(complist)],
        cwd=tmp_path,
        # A caller killed by SIGKILL cannot remove its job directory: keep it under tmp_path.
        env={**os.environ, "TMPDIR": str(tmp_path)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    manifest = None
    deadline = time.monotonic() + 300
    while manifest is None and time.monotonic() < deadline:
        ready = [p / journal.MANIFEST for p in _journals(ms) if (p / journal.MANIFEST).exists()]
        manifest = ready[0] if ready else None
        time.sleep(0.002)
    assert manifest is not None, "the caller's task never started"
    child = json.loads(manifest.read_text())["pid"]
    caller.kill()
    caller.wait(timeout=60)
    deadline = time.monotonic() + 60
    while journal._alive(child) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not journal._alive(child), "the child must die with its caller"
    return manifest.parent


def test_orphan_blocks_the_next_write_until_restore_journal(
    ms: Path, complist: Path, tmp_path: Path
) -> None:
    """After the caller is SIGKILLed mid-ft, the next guarded ft is refused naming the journal and
    the restore command, probe calls the MS unsafe (JOURNAL_PENDING), and restore-journal rolls it
    back to a state CASA's next ft and clearcal accept."""
    before = _tree(ms)
    orphan = _kill_caller_mid_ft(ms, complist, tmp_path)
    with pytest.raises(casaguard.JournalError) as caught:
        casaguard.ft(vis=str(ms), complist=str(complist), usescratch=True)
    assert str(orphan) in str(caught.value)
    assert f"`casaguard restore-journal {ms}`" in str(caught.value)
    assert orphan.is_dir()
    report = casaguard.probe(str(ms))
    pending = [f for f in report.findings if f.code == "JOURNAL_PENDING"]
    assert pending and pending[0].severity == "fatal" and report.verdict == "unsafe"
    result = _cli(["restore-journal", str(ms)], tmp_path)
    assert result.returncode == 0, result.stderr
    assert _tree(ms) == before and _journals(ms) == []
    assert_casa_can_use(ms, complist)


def test_discarding_the_orphan_then_restore_journal_refuses(
    ms: Path, complist: Path, tmp_path: Path
) -> None:
    """discard_orphan_journal=True lets the next guarded ft run on the half-written MS (the
    journal is deleted); restore-journal then has nothing to undo and refuses in one line."""
    orphan = _kill_caller_mid_ft(ms, complist, tmp_path)
    with capture_logs() as events:
        casaguard.ft(
            vis=str(ms), complist=str(complist), usescratch=True, discard_orphan_journal=True
        )
    assert not orphan.exists()
    assert any(e["event"] == "journal_orphan_discarded" for e in events)
    after = _tree(ms)
    result = _cli(["restore-journal", str(ms)], tmp_path)
    assert result.returncode == 2, result.stderr
    lines = _error_lines(result)
    assert len(lines) == 1 and "no pending casaguard journal" in lines[0], result.stderr
    assert _tree(ms) == after
    assert_casa_can_use(ms, complist)


PLAIN_FT = """
import sys
import casatasks
casatasks.ft(vis=sys.argv[1], complist=sys.argv[2], usescratch=True)
"""


def test_restore_journal_refuses_to_undo_a_later_write(
    ms: Path, complist: Path, tmp_path: Path
) -> None:
    """A later write the journal cannot see (plain casatasks.ft after the caller died) makes
    restore-journal refuse in one line, exit 1, nothing changed; --force then restores."""
    orphan = _kill_caller_mid_ft(ms, complist, tmp_path)
    time.sleep(journal.LATER_WRITE_MARGIN_S + 0.5)
    done = casa_script(
        PLAIN_FT.replace("sys.argv[1]", repr(str(ms))).replace("sys.argv[2]", repr(str(complist)))
    )
    assert done.returncode == 0, done.stderr
    newer = _tree(ms)
    result = _cli(["restore-journal", str(ms)], tmp_path)
    assert result.returncode == 1, result.stderr
    lines = _error_lines(result)
    assert len(lines) == 1 and "was written after the call" in lines[0], result.stderr
    assert _tree(ms) == newer and orphan.is_dir()
    forced = _cli(["restore-journal", str(ms), "--force"], tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert not orphan.exists()
    assert_casa_can_use(ms, complist)
