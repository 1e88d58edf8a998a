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
from typing import Any

import pytest
from conftest import casa_script, casacore_script
from next_reader import assert_casa_can_use
from structlog.testing import capture_logs

import casaguard
from casaguard.journal import layout as journal_layout
from casaguard.sandbox import pids

CompletedText = subprocess.CompletedProcess[str]


def _tree(root: Path) -> dict[str, str]:
    """Content hash of every file of an MS except the lock files (casacore's and casaguard's)."""
    return {
        str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in ("table.lock", journal_layout.WRITER_LOCK_FILE)
    }


def _journals(vis: Path) -> list[Path]:
    return sorted(vis.parent.glob(f".{vis.name}{journal_layout.JOURNAL_MARK}*"))


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
        [sys.executable, "-m", "casaguard.cli.main", *args],
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
        ready = [
            p / journal_layout.MANIFEST
            for p in _journals(ms)
            if (p / journal_layout.MANIFEST).exists()
        ]
        manifest = ready[0] if ready else None
        time.sleep(0.002)
    assert manifest is not None, "the caller's task never started"
    child = json.loads(manifest.read_text())["pid"]
    caller.kill()
    caller.wait(timeout=60)
    deadline = time.monotonic() + 60
    while pids.pid_alive(child) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not pids.pid_alive(child), "the child must die with its caller"
    return manifest.parent


def test_orphan_blocks_the_next_write_until_restore_journal(
    ms: Path, complist: Path, tmp_path: Path
) -> None:
    """After the caller is SIGKILLed mid-ft, the next guarded ft is refused naming the journal and
    the restore command (the CLI: one line, exit 1 -- the MS is unsafe, as probe says), probe
    calls the MS unsafe (JOURNAL_PENDING), and restore-journal rolls it back to a state CASA's
    next ft and clearcal accept."""
    before = _tree(ms)
    orphan = _kill_caller_mid_ft(ms, complist, tmp_path)
    with pytest.raises(casaguard.JournalError) as caught:
        casaguard.ft(vis=str(ms), complist=str(complist), usescratch=True)
    assert str(orphan) in str(caught.value)
    assert f"`casaguard restore-journal {ms}`" in str(caught.value)
    assert orphan.is_dir()
    half = _tree(ms)
    refused = _cli(["ft", str(ms), "--complist", str(complist), "--usescratch"], tmp_path)
    lines = _error_lines(refused)
    assert refused.returncode == 1 and len(lines) == 1, refused.stderr
    assert str(orphan) in lines[0] and _tree(ms) == half
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


def _assert_restore_refused(ms: Path, orphan: Path, tmp_path: Path, words: str) -> None:
    """restore-journal refuses in one line naming ``words``, exit 1, and changes nothing."""
    newer = _tree(ms)
    result = _cli(["restore-journal", str(ms)], tmp_path)
    assert result.returncode == 1, result.stderr
    lines = _error_lines(result)
    assert len(lines) == 1 and words in lines[0], result.stderr
    assert _tree(ms) == newer and orphan.is_dir()


def test_restore_journal_refuses_to_undo_a_later_write(
    ms: Path, complist: Path, tmp_path: Path
) -> None:
    """A later write the journal cannot see (plain casatasks.ft after the caller died) makes
    restore-journal refuse in one line, exit 1, nothing changed; --force then restores."""
    orphan = _kill_caller_mid_ft(ms, complist, tmp_path)
    time.sleep(journal_layout.LATER_WRITE_MARGIN_S + 0.5)
    done = casa_script(
        PLAIN_FT.replace("sys.argv[1]", repr(str(ms))).replace("sys.argv[2]", repr(str(complist)))
    )
    assert done.returncode == 0, done.stderr
    _assert_restore_refused(ms, orphan, tmp_path, "was written after the call")
    forced = _cli(["restore-journal", str(ms), "--force"], tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert not orphan.exists()
    assert_casa_can_use(ms, complist)


def test_restore_journal_refuses_a_write_that_lands_just_after_the_call_died(
    ms: Path, complist: Path, tmp_path: Path
) -> None:
    """A write to MODEL_DATA's tiles landing LATER_WRITE_MARGIN_S + 0.1 s after the dead call's
    last heartbeat is someone else's newer work: restore-journal refuses to undo it."""
    orphan = _kill_caller_mid_ft(ms, complist, tmp_path)
    last_beat = (orphan / journal_layout.HEARTBEAT).stat().st_mtime
    time.sleep(max(0.0, last_beat + journal_layout.LATER_WRITE_MARGIN_S + 0.1 - time.time()))
    tiles = ms / "table.f4_TSM1"
    with tiles.open("r+b") as later_writer:  # the same byte back: a write, content unchanged
        first = later_writer.read(1)
        later_writer.seek(0)
        later_writer.write(first)
    _assert_restore_refused(ms, orphan, tmp_path, "table.f4_TSM1")


# --- disk full: during the snapshot, during the restore (tmpfs in a private mount namespace) --


def _in_mount_namespace(script: str, env: dict[str, str], cwd: Path) -> None:
    """Run bash ``script`` in a private mount namespace: its tmpfs mounts vanish with it."""
    unshare = ["unshare", "--mount"] if os.geteuid() == 0 else ["unshare", "-rm"]
    subprocess.run(
        [*unshare, "bash", "-c", textwrap.dedent(script)],
        check=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "PY": sys.executable, **env},
        cwd=cwd,
        timeout=900,
    )


SNAPSHOT_DISK_FULL = r"""
set -eu
mount -t tmpfs -o size=64m tmpfs "$MS_FS"
# The journal's file system (the victim's home) runs out of inodes after the journal
# directory exists: the copy itself hits ENOSPC, although statvfs shows free blocks.
mount -t tmpfs -o size=16m,nr_inodes=12 tmpfs "$HOME_FS"
# World-writable without the sticky bit: the journal may not live beside the MS, so it
# goes to the victim's home -- another file system, the case under test.
mkdir -m 0777 "$MS_FS/shared"
cp -r "$SRC" "$MS_FS/shared/obs.ms"
sha() { (cd "$MS_FS/shared/obs.ms" && find . -type f ! -name table.lock \
    ! -name .casaguard-writer.lock -exec sha1sum {} + | sort); }
sha > "$OUT/before"
set +e
HOME="$HOME_FS" "$PY" -m casaguard ft "$MS_FS/shared/obs.ms" --complist "$CL" --usescratch \
    2> "$OUT/stderr"
echo $? > "$OUT/rc"
set -e
sha > "$OUT/after"
find "$HOME_FS" -name '*casaguard-journal*' > "$OUT/journals"
"$PY" -c "import sys; sys.path.insert(0, '$TESTS'); from next_reader import assert_casa_can_use
from pathlib import Path; assert_casa_can_use(Path('$MS_FS/shared/obs.ms'), Path('$CL'))" \
    2> "$OUT/next_reader" && echo ok > "$OUT/next_reader_ok"
"""


def test_disk_full_during_the_snapshot(ms: Path, complist: Path, tmp_path: Path) -> None:
    """When the journal's file system fills during the snapshot copy (tmpfs out of inodes), ft is
    refused with one line, exit 2, the MS untouched, no journal left, and CASA can use the MS."""
    out = tmp_path / "out"
    mounts = {name: tmp_path / name for name in ("ms_fs", "home_fs")}
    for path in (out, *mounts.values()):
        path.mkdir()
    env = {
        "MS_FS": str(mounts["ms_fs"]),
        "HOME_FS": str(mounts["home_fs"]),
        "SRC": str(ms),
        "CL": str(complist),
        "OUT": str(out),
        "TESTS": str(Path(__file__).parent),
    }
    _in_mount_namespace(SNAPSHOT_DISK_FULL, env, tmp_path)
    assert (out / "rc").read_text().strip() == "2", (out / "stderr").read_text()
    lines = [x for x in (out / "stderr").read_text().splitlines() if x.startswith("casaguard:")]
    assert len(lines) == 1 and "not enough free space to journal" in lines[0], lines
    assert (out / "before").read_text() == (out / "after").read_text()
    assert (out / "journals").read_text() == ""
    assert (out / "next_reader_ok").exists(), (out / "next_reader").read_text()


RESTORE_DISK_FULL = r"""
set -eu
mount -t tmpfs -o size=32m tmpfs "$MS_FS"
# World-writable without the sticky bit: the journal may not live beside the MS, so it
# goes to the victim's home -- another file system, the case under test.
mkdir -m 0777 "$MS_FS/shared"
cp -r --sparse=never "$SRC" "$MS_FS/shared/obs.ms"
"$PY" - <<'PYEOF'
import json, os, sys
from pathlib import Path
sys.path.insert(0, os.environ["TESTS"])
from structlog.testing import capture_logs
from casaguard.journal import hook as journal
from casaguard.journal import layout as journal_layout
from casaguard.journal import trust as journal_trust
from casaguard.sandbox import callspec, runner
from casaguard.sandbox.jobdir import Ref
from next_reader import assert_casa_can_use
import subprocess

vis = Path(os.environ["MS_FS"]) / "shared" / "obs.ms"
out = Path(os.environ["OUT"])
def tree():
    import hashlib
    return {str(p.relative_to(vis)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(vis.rglob("*"))
            if p.is_file() and p.name not in ("table.lock", journal_layout.WRITER_LOCK_FILE)}
before = tree()
filler = Path(os.environ["MS_FS"]) / "filler"
stats = os.statvfs(vis)
# Leave 256 kB: the write in place fits, a restoring copy of MODEL_DATA's tiles does not.
subprocess.run(["fallocate", "-l", str(stats.f_bavail * stats.f_frsize - 262144), str(filler)],
               check=True)
spec = callspec.CallSpec(
    func=Ref("casaguard.remote.casa.crash_write", "write_then_double_free"),
    args=(str(vis), "MODEL_DATA", 0.5), name="write_then_double_free", vis=str(vis))
facts = {}
with capture_logs() as events:
    try:
        runner.run(journal.journaled(spec, ["MODEL_DATA"]))
        facts["error"] = None
    except Exception as error:
        facts["error"] = type(error).__name__
        facts["message"] = str(error)
        facts["cause"] = type(error.__cause__).__name__
facts["events"] = [e["event"] for e in events]
facts["temp_files"] = [str(p) for p in vis.rglob("*casaguard-restore*")]
facts["pending"] = [str(p) for p in journal_trust.pending_journals(vis)]
facts["changed_before_restore"] = tree() != before
filler.unlink()
done = subprocess.run([sys.executable, "-m", "casaguard.cli.main", "restore-journal", str(vis)],
                      capture_output=True, text=True)
facts["restore_rc"] = done.returncode
facts["restore_stderr"] = done.stderr
facts["same_as_before"] = tree() == before
facts["pending_after"] = [str(p) for p in journal_trust.pending_journals(vis)]
try:
    assert_casa_can_use(vis, Path(os.environ["CL"]))
    facts["next_reader"] = "ok"
except AssertionError as error:
    facts["next_reader"] = str(error)
(out / "facts.json").write_text(json.dumps(facts))
PYEOF
"""


def test_disk_full_during_the_restore_keeps_the_journal(
    ms_factory: Any, complist: Path, tmp_path: Path
) -> None:
    """A real heap abort after a flushed half-write on a full file system, the journal on another
    one: the restore's copy hits ENOSPC, so the caller gets JournalError (from the crash) naming the
    snapshot and `casaguard restore-journal MS`, no temp file is left in the MS, the journal is kept
    (never journal_dropped); once space is freed restore-journal puts every byte back and CASA can
    use the MS."""
    source = ms_factory(tmp_path / "src.ms", n_times=100)
    out, ms_fs, home = tmp_path / "out", tmp_path / "ms_fs", tmp_path / "home"
    for path in (out, ms_fs, home):
        path.mkdir()
    env = {
        "MS_FS": str(ms_fs),
        "HOME": str(home),
        "SRC": str(source),
        "CL": str(complist),
        "OUT": str(out),
        "TESTS": str(Path(__file__).parent),
    }
    _in_mount_namespace(RESTORE_DISK_FULL, env, tmp_path)
    facts = json.loads((out / "facts.json").read_text())
    vis = ms_fs / "shared" / "obs.ms"
    assert facts["error"] == "JournalError" and facts["cause"] == "HeapCorruption", facts
    assert f"`casaguard restore-journal {vis}`" in facts["message"]
    assert facts["pending"] and facts["pending"][0] in facts["message"]
    assert "No space left on device" in facts["message"]
    assert facts["changed_before_restore"], "the crasher must really have half-written the MS"
    assert facts["temp_files"] == []
    assert "journal_kept" in facts["events"] and "journal_dropped" not in facts["events"]
    assert facts["restore_rc"] == 0, facts["restore_stderr"]
    assert facts["same_as_before"] and facts["pending_after"] == []
    assert facts["next_reader"] == "ok", facts["next_reader"]


FILE_SIZE_LIMITED_CALLER = """
import json, resource, sys
import casaguard
vis, complist, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
# Python ignores SIGXFSZ, so a write past the limit fails with EFBIG inside casacore,
# exactly like a quota running out in the middle of MODEL_DATA.
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
try:
    casaguard.ft(vis=vis, complist=complist, usescratch=True, mode="spawn")
    print(json.dumps({"error": None}))
except casaguard.CasaCrash as error:
    # The class is CasaTaskError[RuntimeError] (also a RuntimeError, as CASA raised it).
    print(json.dumps({"error": type(error).__name__, "kind": error.kind,
                      "task_error": isinstance(error, casaguard.CasaTaskError),
                      "restored": error.restored, "message": str(error)}))
"""

REMOVE_SCRATCH = """
from casacore.tables import table
t = table({path!r}, readonly=False, ack=False)
t.removecols([c for c in ("MODEL_DATA", "CORRECTED_DATA") if c in t.colnames()])
t.close()
"""


def test_casa_error_mid_write_leaves_a_working_ms(
    ms_factory: Any, complist: Path, tmp_path: Path
) -> None:
    """ft creating MODEL_DATA fails mid-write with CASA's own write error (file size limit hit
    in the new tile file); the journal removes what it created, puts table.dat back, and CASA's
    next ft and clearcal accept the MS."""
    vis = ms_factory(tmp_path / "obs.ms", n_times=100)
    casacore_script(REMOVE_SCRATCH.format(path=str(vis)))
    before = _tree(vis)
    data_bytes = max(p.stat().st_size for p in vis.glob("table.f*"))
    limit = str(data_bytes // 2)
    code = textwrap.dedent(FILE_SIZE_LIMITED_CALLER)
    result = subprocess.run(
        [sys.executable, "-c", code, str(vis), str(complist), limit],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        check=False,
    )
    facts = json.loads(result.stdout.strip().splitlines()[-1])
    assert facts["task_error"] and facts["kind"] == "casa-error", facts
    assert "write error" in facts["message"] and facts["restored"], facts
    assert _tree(vis) == before
    assert _journals(vis) == []
    assert_casa_can_use(vis, complist)
