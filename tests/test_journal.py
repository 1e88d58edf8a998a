"""Nothing lost: a crash or kill in the middle of a write never leaves the MS worse than before.

Real CASA writes, real SIGKILLs at seeded random moments, a real heap abort
after a real partial write; every check of the MS runs python-casacore in a
subprocess (``casacore_script``), never in this process.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import ATTACKER, DROP_ROOT_POWERS, casacore_script
from next_reader import assert_casa_can_use
from structlog.testing import capture_logs

import casaguard
from casaguard import casaenv
from casaguard.journal import hook as journal
from casaguard.journal import layout as journal_layout
from casaguard.journal import recovery
from casaguard.journal import trust as journal_trust
from casaguard.ms import locks
from casaguard.sandbox import callspec, pids, runner
from casaguard.sandbox.jobdir import Ref

#: ~100k rows: 8 antennas (28 baselines) x 3572 integrations.
BIG_TIMES = 3572
#: ~17k rows for the kill trials.
KILL_TIMES = 600
KILL_TRIALS = 20
NEW_FLUX_JY = 2.5


def _tree(root: Path) -> dict[str, str]:
    """Content hash of every file of an MS except the lock files (casacore's and casaguard's)."""
    return {
        str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in ("table.lock", journal_layout.WRITER_LOCK_FILE)
    }


def _journals(vis: Path) -> list[Path]:
    return sorted(vis.parent.glob(f".{vis.name}{journal_layout.JOURNAL_MARK}*"))


VERIFY = """
import json, sys
import numpy as np
from casacore.tables import table

pristine, reference, *trials = sys.argv[1:]
def columns(path):
    t = table(path, ack=False)
    try:
        return {c: t.getcol(c) for c in ("DATA", "FLAG", "UVW", "MODEL_DATA")}
    finally:
        t.close()
old = columns(pristine)
new = table(reference, ack=False).getcol("MODEL_DATA")
report = {}
for path in trials:
    t = table(path, readonly=False, ack=False, lockoptions="user")
    # A second process takes the write lock at once: no lock of the dead child is in force.
    t.lock(write=True, nattempts=1)  # raises if another process still holds a lock
    locked = bool(t.haslock(write=True))
    got = {c: t.getcol(c) for c in ("DATA", "FLAG", "UVW", "MODEL_DATA")}
    t.unlock()
    t.close()
    model = got["MODEL_DATA"]
    rows_old = int(np.all(model == old["MODEL_DATA"], axis=(1, 2)).sum())
    if model.tobytes() == old["MODEL_DATA"].tobytes():
        state = "old"
    elif model.tobytes() == new.tobytes():
        state = "new"
    else:
        state = "mixed"
    report[path] = {
        "locked": locked,
        "same": {c: got[c].tobytes() == old[c].tobytes() for c in ("DATA", "FLAG", "UVW")},
        "model": state,
        "rows_old": rows_old,
        "rows": int(model.shape[0]),
    }
print(json.dumps(report))
"""


def _verify(pristine: Path, reference: Path, trials: list[Path]) -> dict[str, Any]:
    """Run VERIFY with python-casacore in a subprocess; return its report per trial MS."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(VERIFY), str(pristine), str(reference)]
        + [str(t) for t in trials],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


RANDOMISE_MODEL = """
import numpy as np
from casacore.tables import table
t = table({path!r}, readonly=False, ack=False)
shape = t.getcol("MODEL_DATA").shape
rng = np.random.default_rng(42)
values = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
t.putcol("MODEL_DATA", values.astype(np.complex64))
t.close()
"""


class BigMs:
    """A ~100k-row MS with seeded random MODEL_DATA, and the MS after a clean ft."""

    def __init__(self, root: Path, pristine: Path, reference: Path, complist: Path, ft_s: float):
        self.root = root
        self.pristine = pristine
        self.reference = reference
        self.complist = complist
        self.ft_s = ft_s

    def copy(self, name: str) -> Path:
        dest = self.root / name / "obs.ms"
        dest.parent.mkdir()
        shutil.copytree(self.pristine, dest)
        return dest


def _build(ms_factory: Any, root: Path, n_times: int) -> BigMs:
    """Simulate an MS with seeded random MODEL_DATA and the MS after one clean guarded ft."""
    pristine = ms_factory(root / "pristine.ms", n_times=n_times)
    casacore_script(RANDOMISE_MODEL.format(path=str(pristine)))
    complist = root / "new.cl"
    casaguard.make_point_complist(complist, flux_jy=NEW_FLUX_JY)
    reference = root / "reference" / "obs.ms"
    reference.parent.mkdir()
    shutil.copytree(pristine, reference)
    started, ended, error = _ft_watched(reference, complist, kill_after=None)
    assert error is None and started is not None
    return BigMs(root, pristine, reference, complist, ended - started)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """CASA's OpenMP threads spin when the CPUs are shared: ft on 100k rows takes
    1.2 s on an idle 2-core machine, ~30 s beside four busy processes, 1.5 s
    with one thread. One thread keeps the kill moments meaningful."""
    previous = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    yield
    if previous is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = previous


@pytest.fixture(scope="module")
def big(
    ms_factory: Any, tmp_path_factory: pytest.TempPathFactory, one_thread: None
) -> Iterator[BigMs]:
    """The ~100k-row MS, simulated once per module; trials get copies."""
    built = _build(ms_factory, tmp_path_factory.mktemp("journal-big"), BIG_TIMES)
    yield built
    shutil.rmtree(built.root, ignore_errors=True)


@pytest.fixture(scope="module")
def kill_ms(
    ms_factory: Any, tmp_path_factory: pytest.TempPathFactory, one_thread: None
) -> Iterator[BigMs]:
    """A ~17k-row MS for the many kill trials: ft still takes long enough to be hit
    mid-write, and CASA's next-reader check on each trial stays cheap."""
    built = _build(ms_factory, tmp_path_factory.mktemp("journal-kill"), KILL_TIMES)
    yield built
    shutil.rmtree(built.root, ignore_errors=True)


def _ft_watched(
    vis: Path, complist: Path, *, kill_after: float | None
) -> tuple[float | None, float, BaseException | None]:
    """Run guarded ft; from the moment the snapshot is complete (the task starts), optionally
    SIGKILL the child after ``kill_after`` seconds. Returns (task start, end, exception)."""
    outcome: dict[str, BaseException | None] = {"error": None}

    def work() -> None:
        try:
            casaguard.ft(vis=str(vis), complist=str(complist), usescratch=True, timeout=300)
        except BaseException as error:  # noqa: BLE001 - handed to the test thread
            outcome["error"] = error

    thread = threading.Thread(target=work)
    thread.start()
    task_started = None
    while thread.is_alive() and task_started is None:
        manifests = [p / journal_layout.MANIFEST for p in _journals(vis)]
        ready = [m for m in manifests if m.exists()]
        if ready:
            task_started = time.monotonic()
            pid = json.loads(ready[0].read_text())["pid"]
            if kill_after is not None:
                time.sleep(kill_after)
                with contextlib.suppress(ProcessLookupError):  # ft may have finished
                    os.kill(pid, signal.SIGKILL)
        else:
            time.sleep(0.002)
    thread.join()
    return task_started, time.monotonic(), outcome["error"]


@pytest.mark.slow
def test_sigkill_at_random_moments_never_leaves_a_mix(kill_ms: BigMs, record_property: Any) -> None:
    """SIGKILL at 20 seeded random moments of ft: every trial MS opens, a second process locks it at
    once, DATA/FLAG/UVW are byte-identical, MODEL_DATA is all old or all new, and CASA's next ft
    and clearcal accept it; at least 3 kills land mid-write."""
    rng = np.random.default_rng(42)
    delays = rng.uniform(0.0, 1.2, size=KILL_TRIALS) * kill_ms.ft_s
    trials: list[Path] = []
    mid_write = 0
    outcomes = []
    for index, delay in enumerate(delays):
        vis = kill_ms.copy(f"trial{index:02d}")
        lock_inode = (vis / "table.lock").stat().st_ino
        with capture_logs() as events:
            started, _, error = _ft_watched(vis, kill_ms.complist, kill_after=float(delay))
        assert started is not None, f"trial {index}: the task never started"
        if error is not None:
            assert isinstance(error, casaguard.Killed), repr(error)
            restored = next(e for e in events if e["event"] == "journal_restored")
            assert error.restored, repr(error)
            # A kill before ft's first write (a short delay on a busy machine) finds
            # nothing to put back; any other puts table.dat back with the rest.
            if restored["restored"]:
                assert str(vis / "table.dat") in error.restored_paths, error.restored_paths
            else:
                assert restored["note"] == "nothing changed" and not error.restored_paths
            # Mid-write: the snapshot was complete and the MS had changed when the child died.
            mid_write += bool(restored.get("changed") or restored.get("created"))
        outcomes.append("killed" if error else "finished")
        # The dead child holds no lock, the lock file is the same file, no journal remains.
        assert locks.lock_holders(vis, include_self=True) == []
        assert (vis / "table.lock").stat().st_ino == lock_inode
        assert _journals(vis) == []
        trials.append(vis)
    report = _verify(kill_ms.pristine, kill_ms.reference, trials)
    for index, vis in enumerate(trials):
        result = report[str(vis)]
        assert result["locked"], f"trial {index}: a stale lock survived"
        assert all(result["same"].values()), f"trial {index}: {result}"
        assert result["model"] in ("old", "new"), f"trial {index} ({outcomes[index]}): {result}"
        assert (result["model"] == "old") == (outcomes[index] == "killed"), result
        assert_casa_can_use(vis, kill_ms.complist)
    record_property("killed", outcomes.count("killed"))
    record_property("mid_write", mid_write)
    record_property("ft_s", round(kill_ms.ft_s, 3))
    # The kills must really land while the MS is being written, or this proves nothing.
    assert mid_write >= 3, f"only {mid_write} of {KILL_TRIALS} kills landed mid-write"


def _write_then_crash(vis: Path, *, journaled: bool) -> casaguard.CasaCrash:
    spec = callspec.CallSpec(
        func=Ref("casaguard.remote.casa.crash_write", "write_then_double_free"),
        args=(str(vis), "MODEL_DATA", 0.5),
        name="write_then_double_free",
        vis=str(vis),
    )
    if journaled:
        spec = journal.journaled(spec, ["MODEL_DATA"])
    with pytest.raises(casaguard.HeapCorruption) as caught:
        runner.run(spec)
    return caught.value


def test_heap_abort_after_a_partial_write_is_rolled_back(kill_ms: BigMs) -> None:
    """A real double free after half of MODEL_DATA was written and flushed: unjournaled the MS
    is left mixed; journaled it is restored, lockable at once, and CASA's next reader and
    writer accept it."""
    bare = kill_ms.copy("heap-bare")
    error = _write_then_crash(bare, journaled=False)
    assert error.kind == "double-free" and not error.restored
    guarded = kill_ms.copy("heap-journaled")
    lock_inode = (guarded / "table.lock").stat().st_ino
    error = _write_then_crash(guarded, journaled=True)
    assert error.kind == "double-free" and error.restored
    assert {str(guarded / "table.f4_TSM1"), str(guarded / "table.dat")} <= set(error.restored_paths)
    assert (guarded / "table.lock").stat().st_ino == lock_inode
    report = _verify(kill_ms.pristine, kill_ms.reference, [bare, guarded])
    bare_result, guarded_result = report[str(bare)], report[str(guarded)]
    # The crasher really leaves half the rows rewritten when nothing protects the MS...
    assert bare_result["model"] == "mixed"
    assert bare_result["rows_old"] == bare_result["rows"] - bare_result["rows"] // 2
    # ...and the journal puts every byte back.
    assert guarded_result["locked"] and all(guarded_result["same"].values())
    assert guarded_result["model"] == "old"
    # casacore copes with the dead writer's lock file: a guarded ft then writes normally.
    casaguard.ft(vis=str(guarded), complist=str(kill_ms.complist), usescratch=True)
    assert _verify(kill_ms.pristine, kill_ms.reference, [guarded])[str(guarded)]["model"] == "new"
    assert_casa_can_use(guarded, kill_ms.complist)


REMOVE_SCRATCH = """
from casacore.tables import table
t = table({path!r}, readonly=False, ack=False)
t.removecols(["MODEL_DATA", "CORRECTED_DATA"])
t.close()
"""


@pytest.mark.parametrize(
    ("task", "params", "writes"),
    [
        ("ft", {"usescratch": True}, ("MODEL_DATA", "SOURCE")),
        ("clearcal", {"addmodel": True}, ("MODEL_DATA", "CORRECTED_DATA", "SOURCE")),
    ],
)
def test_columns_created_before_a_crash_are_removed(
    ms: Path, complist: Path, task: str, params: dict[str, Any], writes: tuple[str, ...]
) -> None:
    """A task that creates MODEL_DATA/CORRECTED_DATA and then dies of a heap abort leaves every
    file of the MS as it was: table.dat back, the new storage-manager files gone."""
    casacore_script(REMOVE_SCRATCH.format(path=str(ms)))
    before = _tree(ms)
    if task == "ft":
        params = {**params, "complist": str(complist)}
    spec = callspec.CallSpec(
        func=Ref("casaguard.remote.casa.crash_write", "task_then_double_free"),
        args=(task, {"vis": str(ms), **params}),
        name=task,
        is_casa_task=True,
        vis=str(ms),
    )
    with pytest.raises(casaguard.HeapCorruption) as caught:
        runner.run(journal.journaled(spec, writes))
    assert caught.value.restored
    removed = [p for p in caught.value.restored_paths if not Path(p).exists()]
    assert removed and all(Path(p).name.startswith("table.f") for p in removed)
    assert _tree(ms) == before
    assert _journals(ms) == []
    assert_casa_can_use(ms, complist)


def test_a_subtable_swapped_for_a_symlink_after_a_cached_plan_is_still_left_out(
    big: BigMs, tmp_path: Path
) -> None:
    """SOURCE moved out of the MS and linked back leaves table.dat as it was: the reused table
    structure must not journal SOURCE through the link (the restore would refuse the whole
    journal). A timeout kill mid-ft then restores the MS, and CASA can use it."""
    vis = big.copy("symlinked-source")
    casaguard.clearcal(vis=str(vis))  # records the table structure, SOURCE inside the MS
    outside = tmp_path / "outside" / "SOURCE"
    outside.parent.mkdir()
    shutil.move(str(vis / "SOURCE"), str(outside))
    (vis / "SOURCE").symlink_to(outside)
    with capture_logs() as events, pytest.raises(casaguard.TaskTimeout) as caught:
        casaguard.ft(vis=str(vis), complist=str(big.complist), usescratch=True, timeout=0.3)
    assert caught.value.restored, caught.value
    assert _journals(vis) == []
    assert not [e for e in events if e["event"] == "journal_restore_failed"]
    assert_casa_can_use(vis, big.complist)


CALLER_KEEPS_TABLE_OPEN = """
import json, os, sys
from casacore import tables
import casaguard

ms, complist = sys.argv[1], sys.argv[2]
held = tables.table(ms, ack=False)
held.unlock()  # only casacore's "in use" byte stays locked: ft may run, CASA does not wait


def my_locks():
    me = str(os.getpid())
    return sorted(" ".join(l.split()[1:4] + l.split()[6:8])
                  for l in open("/proc/locks").read().splitlines() if l.split()[4] == me)


out = {"before": my_locks()}
try:
    casaguard.ft(vis=ms, complist=complist, usescratch=True, timeout=0.3)
    out["outcome"] = "returned"
except casaguard.TaskTimeout as error:
    out["outcome"] = "restored" if error.restored else "not restored"
out["after"] = my_locks()
held.close()
print("RESULT " + json.dumps(out))
"""


def test_a_restore_keeps_the_locks_of_a_caller_that_has_the_table_open(
    big: BigMs, tmp_path: Path
) -> None:
    """A caller with the MS open but unlocked (its "in use" lock held) whose ft is killed
    mid-write gets the MS restored and still holds its own locks: the restore, which opens
    table.lock in the caller's process, never closes a descriptor that would drop them."""
    vis = big.copy("caller-keeps-open")
    script = tmp_path / "caller.py"
    script.write_text(textwrap.dedent(CALLER_KEEPS_TABLE_OPEN))
    result = subprocess.run(
        [sys.executable, str(script), str(vis), str(big.complist)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, result.stdout + result.stderr
    out = json.loads(lines[-1][len("RESULT ") :])
    assert out["outcome"] == "restored", out
    assert out["before"], "casacore took no lock: the test would prove nothing"
    assert out["after"] == out["before"], out
    assert_casa_can_use(vis, big.complist)


def test_timeout_journal_false_takes_no_snapshot(big: BigMs) -> None:
    """journal=False takes no snapshot: a timeout kill during ft on 100k rows reports
    restored=False and leaves no journal."""
    vis = big.copy("timeout-unjournaled")
    with pytest.raises(casaguard.TaskTimeout) as caught:
        casaguard.ft(
            vis=str(vis), complist=str(big.complist), usescratch=True, timeout=0.3, journal=False
        )
    assert caught.value.restored is False
    assert _journals(vis) == []


@pytest.mark.slow
@pytest.mark.parametrize("timeout", [0.1, 0.3, 1.5])
def test_timeout_restores_a_working_ms(big: BigMs, timeout: float) -> None:
    """A timeout at 0.1, 0.3 or 1.5 s into ft on 100k rows restores every file (restored=True),
    or ft finished first; either way CASA's next reader and writer accept the MS."""
    vis = big.copy(f"timeout-{timeout}")
    try:
        casaguard.ft(vis=str(vis), complist=str(big.complist), usescratch=True, timeout=timeout)
    except casaguard.TaskTimeout as error:
        assert error.restored
        assert _tree(vis) == _tree(big.pristine)
    else:
        assert _tree(vis)["table.f4_TSM1"] == _tree(big.reference)["table.f4_TSM1"]
    assert _journals(vis) == []
    assert_casa_can_use(vis, big.complist)


def test_success_drops_the_journal(ms: Path, complist: Path, no_leaks: None) -> None:
    """A journaled ft that succeeds writes MODEL_DATA, copied exactly MODEL_DATA's files plus
    table.dat, table.info, HISTORY and SOURCE (not DATA) and the three tables' table.lock (their
    sync data), and leaves no journal behind."""
    before = _tree(ms)
    expected = [ms / "table.dat", ms / "table.info", *ms.glob("table.f4*")] + [
        p for sub in ("HISTORY", "SOURCE") for p in (ms / sub).iterdir() if p.name != "table.lock"
    ]
    lock_files = [ms / "table.lock", ms / "HISTORY" / "table.lock", ms / "SOURCE" / "table.lock"]
    expected_bytes = sum(p.stat().st_size for p in expected + lock_files)
    with capture_logs() as events:
        casaguard.ft(vis=str(ms), complist=str(complist), usescratch=True)
    assert _tree(ms)["table.f4_TSM1"] != before["table.f4_TSM1"]
    assert _journals(ms) == []
    assert [e["event"] for e in events if e["event"].startswith("journal_")] == ["journal_dropped"]
    dropped = next(e for e in events if e["event"] == "journal_dropped")
    assert dropped["files"] == len(expected)
    assert dropped["bytes"] == expected_bytes
    assert sum(dropped["copied_by"].values()) == len(expected) + len(lock_files)


def test_the_journal_reuses_the_table_structure_until_table_dat_changes(
    ms: Path, complist: Path, no_leaks: None
) -> None:
    """The second journaled ft on an MS plans from the structure the first recorded; once
    table.dat changes (MODEL_DATA dropped, then created again), the next child reads the table
    again and journals the column it creates -- the write still lands."""

    def reused() -> object:
        with capture_logs() as events:
            casaguard.ft(vis=str(ms), complist=str(complist), usescratch=True)
        return next(e for e in events if e["event"] == "journal_dropped")["structure_reused"]

    assert [reused(), reused()] == [False, True]
    casaguard.call(Ref("casaguard.remote.casa.surgery", "remove_model_data"), str(ms))
    # That ft creates MODEL_DATA, so table.dat changes again under the structure its child
    # recorded before the task ran: the next child reads the table once more, then reuses.
    assert [reused(), reused(), reused()] == [False, False, True]
    model = casaguard.call(
        Ref("casaguard.remote.casa.inspect_ms", "column_summary"), str(ms), "MODEL_DATA"
    )
    assert model["present"] and model["mean_amplitude"] == pytest.approx(0.5)
    assert _journals(ms) == []


# --- bad input: one line, non-zero exit, nothing changed ---------------------------------


def _cli(
    args: list[str], cwd: Path, prefix: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*(prefix or []), sys.executable, "-m", "casaguard.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )


def _error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("casaguard:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_cli_missing_path(tmp_path: Path) -> None:
    """A missing MS is a one-line error with exit 2, before any child starts."""
    result = _cli(["ft", str(tmp_path / "nope.ms"), "--usescratch"], tmp_path)
    assert result.returncode == 2
    assert "nope.ms: no such Measurement Set" in _error_line(result)


def test_cli_not_an_ms(tmp_path: Path, complist: Path) -> None:
    """A casacore table that is not a Measurement Set (a component list) is refused, untouched."""
    fake = tmp_path / "model.cl"
    shutil.copytree(complist, fake)
    before = _tree(fake)
    result = _cli(["clearcal", str(fake)], tmp_path)
    assert result.returncode == 2
    assert "is not a Measurement Set" in _error_line(result)
    assert _tree(fake) == before and _journals(fake) == []


def test_cli_read_only_ms(ms: Path, complist: Path, tmp_path: Path) -> None:
    """A read-only MS (root's override dropped) is a one-line error; nothing is written."""
    subprocess.run(["chmod", "-R", "a-w", str(ms)], check=True)
    try:
        before = _tree(ms)
        result = _cli(
            ["ft", str(ms), "--complist", str(complist), "--usescratch"], tmp_path, DROP_ROOT_POWERS
        )
        assert result.returncode == 2
        assert "is read-only" in _error_line(result)
        assert _tree(ms) == before and _journals(ms) == []
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(ms)], check=True)


HOLD_LOCK = """
import sys
from casacore.tables import table
t = table(sys.argv[1], readonly=False, ack=False, lockoptions="user")
t.lock(write=True)
print("locked", flush=True)
sys.stdin.read()
"""


def test_cli_ms_locked_by_another_process(ms: Path, complist: Path, tmp_path: Path) -> None:
    """An MS write-locked by a live process: exit 1, one line naming the holder; its lock file
    is neither deleted nor replaced, and nothing is written."""
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(HOLD_LOCK), str(ms)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        lock_inode = (ms / "table.lock").stat().st_ino
        before = _tree(ms)
        result = _cli(
            ["ft", str(ms), "--complist", str(complist), "--usescratch", "--lock-timeout", "1"],
            tmp_path,
        )
        assert result.returncode == 1
        line = _error_line(result)
        assert f"is locked by pid {holder.pid} (" in line and "python" in line
        assert (ms / "table.lock").stat().st_ino == lock_inode
        assert _tree(ms) == before and _journals(ms) == []
    finally:
        holder.communicate("", timeout=30)


DISK_FULL = r"""
set -eu
mount -t tmpfs -o size=1m tmpfs "$MNT"
cp -r "$SRC" "$MNT/obs.ms"
# Leave less room than the journal of MODEL_DATA + HISTORY + SOURCE needs.
avail=$(df --output=avail -B1 "$MNT" | tail -1)
fallocate -l $((avail - 40960)) "$MNT/filler"
# Lock files aside (casacore's, and casaguard's writer lock made by the first guarded write).
sha() { (cd "$MNT/obs.ms" && find . -type f ! -name table.lock ! -name .casaguard-writer.lock \
    -exec sha1sum {} + | sort); }
sha > "$OUT/before"
set +e
"$PY" -m casaguard.cli.main ft "$MNT/obs.ms" --complist "$CL" --usescratch 2> "$OUT/stderr"
echo $? > "$OUT/rc"
set -e
sha > "$OUT/after"
ls -a "$MNT" > "$OUT/entries"
"""


def test_cli_disk_full(ms: Path, complist: Path, tmp_path: Path) -> None:
    """On a full file system (a 1 MB tmpfs in a private mount namespace) ft is refused with a
    one-line error before anything is touched."""
    mnt, out = tmp_path / "mnt", tmp_path / "out"
    mnt.mkdir()
    out.mkdir()
    unshare = ["unshare", "--mount"] if os.geteuid() == 0 else ["unshare", "-rm"]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(sys.path),
        "MNT": str(mnt),
        "SRC": str(ms),
        "OUT": str(out),
        "PY": sys.executable,
        "CL": str(complist),
    }
    subprocess.run(
        [*unshare, "bash", "-c", DISK_FULL], check=True, env=env, cwd=tmp_path, timeout=300
    )
    assert (out / "rc").read_text().strip() == "2"
    lines = [x for x in (out / "stderr").read_text().splitlines() if x.startswith("casaguard:")]
    assert len(lines) == 1 and "not enough free space to journal" in lines[0], lines
    assert (out / "before").read_text() == (out / "after").read_text()
    assert (out / "entries").read_text().split() == [".", "..", "filler", "obs.ms"]
    assert not any(mnt.iterdir()), "the tmpfs must vanish with its namespace"


CTRL_C_PARENT = """
import glob, json, os, signal, sys, threading, time
import structlog
import casaguard

def report(logger, name, event):
    if event["event"] == "journal_restored":
        print("RESTORED", json.dumps([event["restored"], event.get("note")]), flush=True)
    raise structlog.DropEvent

structlog.configure(processors=[report])
vis, complist, delay = sys.argv[1:]
pattern = os.path.join(os.path.dirname(vis), "." + os.path.basename(vis) + "{mark}*/manifest.json")

def interrupt_once_the_task_runs():
    while not glob.glob(pattern):
        time.sleep(0.002)
    time.sleep(float(delay))
    os.kill(os.getpid(), signal.SIGINT)

threading.Thread(target=interrupt_once_the_task_runs, daemon=True).start()
try:
    casaguard.ft(vis=vis, complist=complist, usescratch=True)
    print("FINISHED", flush=True)
except KeyboardInterrupt:
    print("INTERRUPTED", flush=True)
"""


def test_ctrl_c_during_the_task_restores(kill_ms: BigMs, tmp_path: Path) -> None:
    """Ctrl-C in the caller half-way through ft kills the child and puts MODEL_DATA's tiles back
    before re-raising; no journal stays and CASA's next reader and writer accept the MS."""
    ms, complist = kill_ms.copy("ctrl-c"), kill_ms.complist
    before = _tree(ms)
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(CTRL_C_PARENT).replace("{mark}", journal_layout.JOURNAL_MARK),
            str(ms),
            str(complist),
            # Half-way through a clean ft: the task has written, and has far from finished.
            str(kill_ms.ft_s / 2),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        check=False,
    )
    assert "INTERRUPTED" in result.stdout, result.stdout + result.stderr
    restored, note = json.loads(result.stdout.split("RESTORED ", 1)[1].splitlines()[0])
    assert str(ms / "table.f4_TSM1") in restored, (restored, note)
    assert _tree(ms) == before and _journals(ms) == []
    assert_casa_can_use(ms, complist)


KILLED_PARENT = """
import sys
import casaguard
casaguard.ft(vis=sys.argv[1], complist=sys.argv[2], usescratch=True)
"""


def _kill_caller_mid_ft(ms: Path, complist: Path, tmp_path: Path) -> Path:
    """Start a caller's guarded ft on ``ms``, SIGKILL it once the journal is written, wait
    for its child to die with it; return the manifest it left."""
    caller = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(KILLED_PARENT), str(ms), str(complist)],
        cwd=tmp_path,
        # A caller killed by SIGKILL cannot remove its job directory: keep it under tmp_path.
        env={**os.environ, "TMPDIR": str(tmp_path)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    manifest = None
    deadline = time.monotonic() + 120
    # Beside the MS, or in the private directory when others may write its parent.
    private = Path(os.environ.get("XDG_RUNTIME_DIR", "/nonexistent"), "casaguard", "journals")
    while manifest is None and time.monotonic() < deadline:
        ready = [
            p / journal_layout.MANIFEST
            for p in [*_journals(ms), *private.glob(f"{ms.name}-*")]
            if (p / journal_layout.MANIFEST).exists()
        ]
        manifest = ready[0] if ready else None
        time.sleep(0.002)
    assert manifest is not None
    child = json.loads(manifest.read_text())["pid"]
    caller.kill()
    caller.wait(timeout=30)
    deadline = time.monotonic() + 30
    while pids.pid_alive(child) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not pids.pid_alive(child), "the child must die with its caller"
    return manifest


def test_caller_killed_mid_write_leaves_a_journal_to_recover(
    ms: Path, complist: Path, tmp_path: Path
) -> None:
    """If the caller itself is SIGKILLed mid-ft, the child dies with it, the journal stays, the
    next guarded write refuses naming it, and `casaguard restore-journal MS` rolls the MS back to
    a state CASA's next reader and writer accept."""
    before = _tree(ms)
    manifest = _kill_caller_mid_ft(ms, complist, tmp_path)
    assert journal_trust.pending_journals(ms) == [manifest.parent]
    with capture_logs() as events, pytest.raises(casaguard.JournalError) as refused:
        journal.MsJournal(str(ms), ["MODEL_DATA"], task="ft").before()
    assert f"casaguard restore-journal {ms}" in str(refused.value)
    assert [e["journal"] for e in events if e["event"] == "journal_pending"] == [
        str(manifest.parent)
    ]
    result = _cli(["restore-journal", str(ms)], tmp_path)
    assert result.returncode == 0, result.stderr
    assert _tree(ms) == before
    assert _journals(ms) == [] and journal_trust.pending_journals(ms) == []
    assert_casa_can_use(ms, complist)


def test_a_cli_user_meets_a_pending_journal_and_can_discard_it_from_the_cli(
    ms: Path, complist: Path, tmp_path: Path
) -> None:
    """`casaguard ft` on an MS a killed caller left mid-write: refused in one line that names
    both ways on (restore-journal, --discard-orphan-journal), nothing changed; with
    --discard-orphan-journal the journal goes, ft runs, and MODEL_DATA is ft's."""
    reference = tmp_path / "reference" / ms.name
    shutil.copytree(ms, reference)
    casaguard.ft(vis=str(reference), complist=str(complist), usescratch=True)
    _kill_caller_mid_ft(ms, complist, tmp_path)
    left = _tree(ms)
    command = ["ft", str(ms), "--complist", str(complist), "--usescratch"]
    refused = _cli(command, tmp_path)
    assert refused.returncode == 1, refused.stderr
    line = _error_line(refused)
    assert f"run `casaguard restore-journal {ms}`" in line, line
    assert "--discard-orphan-journal" in line and line.endswith("nothing was changed"), line
    assert _tree(ms) == left
    ran = _cli([*command, "--discard-orphan-journal"], tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert _journals(ms) == [] and journal_trust.pending_journals(ms) == []
    assert _tree(ms)["table.f4_TSM1"] == _tree(reference)["table.f4_TSM1"]
    assert_casa_can_use(ms, complist)


def test_two_guarded_writes_to_one_ms_never_interleave(
    ms_factory: Any, complist: Path, tmp_path: Path
) -> None:
    """A crashing half-write and an ft started together on one MS take turns: whichever runs
    first, the crash is undone and ft's MODEL_DATA is what remains."""
    reference = ms_factory(tmp_path / "reference.ms")
    casaguard.ft(vis=str(reference), complist=str(complist), usescratch=True)
    expected = _tree(reference)["table.f4_TSM1"]
    for trial in range(2):
        vis = ms_factory(tmp_path / f"trial{trial}.ms")
        crash_spec = journal.journaled(
            callspec.CallSpec(
                func=Ref("casaguard.remote.casa.crash_write", "write_then_double_free"),
                args=(str(vis), "MODEL_DATA", 0.5),
                name="write_then_double_free",
                vis=str(vis),
            ),
            ["MODEL_DATA"],
        )
        errors: list[BaseException] = []
        start = threading.Barrier(2)

        def crash(
            spec: callspec.CallSpec = crash_spec,
            errors: list[BaseException] = errors,
            start: threading.Barrier = start,
        ) -> None:
            start.wait()
            try:
                runner.run(spec)
            except casaguard.HeapCorruption as error:
                errors.append(error)

        def ft(vis: Path = vis, start: threading.Barrier = start) -> None:
            start.wait()
            casaguard.ft(vis=str(vis), complist=str(complist), usescratch=True)

        with capture_logs() as events:
            threads = [threading.Thread(target=work) for work in (crash, ft)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        assert len(errors) == 1 and errors[0].restored  # type: ignore[attr-defined]
        assert any(e["event"] == "journal_wait" for e in events), "the writes did not overlap"
        assert _tree(vis)["table.f4_TSM1"] == expected
        assert _journals(vis) == []


def test_a_snapshot_of_a_subtable_named_through_a_symlink_copies_its_files(
    tmp_path: Path,
) -> None:
    """A repair's backup names subtables unresolved: a symlinked one is still copied whole."""
    from casaguard.journal.snapshot import take_snapshot

    ms = tmp_path / "x.ms"
    (ms / "OTHER").mkdir(parents=True)
    (ms / "table.dat").write_bytes(b"main")
    (ms / "OTHER" / "table.dat").write_bytes(b"sub")
    (ms / "LINKSUB").symlink_to("OTHER")
    journal = tmp_path / "journal"
    journal.mkdir()
    manifest = take_snapshot(
        journal, str(ms), task="repair", files=["table.dat"], subtables=["LINKSUB"], growth_bytes=0
    )
    assert manifest["saved"] == ["table.dat", "LINKSUB/table.dat"]
    assert manifest["subtable_entries"] == {"LINKSUB": ["LINKSUB/table.dat"]}
    assert (journal / "files" / "LINKSUB" / "table.dat").read_bytes() == b"sub"


@pytest.mark.parametrize("size", [100, 3 * 1024 * 1024 + 7], ids=["small", "large"])
def test_a_journal_copy_keeps_content_mode_times_and_xattrs(tmp_path: Path, size: int) -> None:
    """What the restore renames back into the MS is the file as it was: same bytes, mode,
    mtime and extended attributes (as shutil.copystat kept them), whichever way it was copied;
    a large file by reflink or copy_file_range into pre-allocated blocks, a small one by read."""
    from casaguard.journal.snapshot import copy_file

    source, target = tmp_path / "table.f4_TSM1", tmp_path / "copy"
    data = os.urandom(size)
    source.write_bytes(data)
    source.chmod(0o640)
    os.utime(source, ns=(1_600_000_000_123_456_789, 1_500_000_000_987_654_321))
    try:
        os.setxattr(source, "user.casaguard-test", b"kept")
    except OSError:
        pytest.skip("this file system has no user xattrs")
    how = copy_file(source, target)
    assert (how == "read") if size < 64 * 1024 else (how in {"reflink", "copy_file_range"})
    assert target.read_bytes() == data
    assert target.stat().st_size == size
    assert oct(target.stat().st_mode & 0o7777) == oct(0o640)
    assert target.stat().st_mtime_ns == 1_500_000_000_987_654_321
    assert os.getxattr(target, "user.casaguard-test") == b"kept"
    with pytest.raises(FileExistsError):
        copy_file(source, target)


UNLISTABLE_CALLER = """
import json, logging, sys, casaguard, casatasks
logging.basicConfig(level=logging.DEBUG, format="EVENT %(message)s", stream=sys.stderr)
vis, complist, task, side = sys.argv[1:]
module = casatasks if side == "plain" else casaguard
try:
    if task == "ft":
        module.ft(vis=vis, complist=complist, usescratch=True)
    else:
        module.clearcal(vis=vis)
    print("RESULT " + json.dumps("returned"))
except Exception as error:
    print("RESULT " + json.dumps(f"{type(error).__name__}: {error}"))
    print(f"CAUGHT BY except RuntimeError: {isinstance(error, RuntimeError)}", file=sys.stderr)
"""


def _task_obeying_file_modes(
    tmp_path: Path, vis: Path, complist: Path, task: str, side: str
) -> tuple[str, str]:
    """``task`` on ``vis`` from a caller that obeys file modes (root without its overrides).

    Returns:
        What the call did ("returned" or the exception), and the caller's stderr
        (casaguard's events at DEBUG, one per line starting "EVENT ").
    """
    script = tmp_path / "unlistable.py"
    script.write_text(UNLISTABLE_CALLER)
    env = {**casaenv.child_environment(), "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run(
        [*DROP_ROOT_POWERS, sys.executable, str(script), str(vis), str(complist), task, side],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )
    lines = [x for x in result.stdout.splitlines() if x.startswith("RESULT ")]
    assert lines, result.stdout + result.stderr
    outcome: str = json.loads(lines[-1][len("RESULT ") :])
    return outcome, result.stderr


def _hidden_dir(vis: Path, layout: str) -> Path:
    """A directory in ``vis`` the caller may not enter: no permissions at all, or
    readable but not enterable with a file in it; or another user's, mode 0700."""
    where = vis / "HISTORY" / "theirs" if layout == "another-user" else vis / "private"
    where.mkdir()
    (where / "notes.txt").write_text("not CASA's")
    if layout == "another-user":
        os.chown(where / "notes.txt", 65534, 65534)
        os.chown(where, 65534, 65534)
    where.chmod({"no-permissions": 0o000, "readable-only": 0o444, "another-user": 0o700}[layout])
    return where


@pytest.mark.parametrize("task", ["ft", "clearcal"])
@pytest.mark.parametrize("layout", ["no-permissions", "readable-only", "another-user"])
def test_a_directory_the_caller_may_not_enter_does_not_stop_a_journaled_write(
    ms: Path, complist: Path, tmp_path: Path, task: str, layout: str
) -> None:
    """Plain CASA runs beside a directory in the MS that the caller may not enter (in the
    main table, or inside HISTORY, which every write journals); so does the guarded call,
    journal on (the lock check, the snapshot's walk and its stat used to raise)."""
    twin = tmp_path / "twin" / ms.name
    shutil.copytree(ms, twin)
    outcomes, events = {}, ""
    for side, vis in (("plain", twin), ("guarded", ms)):
        hidden = _hidden_dir(vis, layout)
        outcomes[side], stderr = _task_obeying_file_modes(tmp_path, vis, complist, task, side)
        events += stderr if side == "guarded" else ""
        hidden.chmod(0o755)
    assert outcomes == {"plain": "returned", "guarded": "returned"}
    assert "EVENT journal_dropped" in events, events  # the write was journaled
    assert journal_trust.pending_journals(str(ms)) == []
    assert_casa_can_use(ms, complist)


def test_a_journaled_subtable_that_can_be_entered_but_not_listed_is_refused_unchanged(
    ms: Path, complist: Path, tmp_path: Path
) -> None:
    """HISTORY with x but no r: plain ft still writes its history rows there, by name, but
    no snapshot can see its files: the guarded call is refused before the task runs."""
    twin = tmp_path / "twin" / ms.name
    shutil.copytree(ms, twin)
    before = _tree(ms)
    outcomes = {}
    for side, vis in (("plain", twin), ("guarded", ms)):
        (vis / "HISTORY").chmod(0o300)
        try:
            outcomes[side], _ = _task_obeying_file_modes(tmp_path, vis, complist, "ft", side)
        finally:
            (vis / "HISTORY").chmod(0o755)
    assert outcomes == {
        "plain": "returned",
        "guarded": f"InvalidInput: ft: cannot journal {ms}: HISTORY cannot be listed "
        "(permission denied); nothing was changed (journal=False runs without a safety copy)",
    }
    assert _tree(ms) == before
    assert journal_trust.pending_journals(str(ms)) == []
    assert_casa_can_use(ms, complist)


@pytest.mark.parametrize("task", ["ft", "clearcal"])
def test_an_ms_the_caller_may_not_list_is_refused_unchanged_as_plain_casa_refuses_it(
    ms: Path, complist: Path, tmp_path: Path, task: str
) -> None:
    """The MS directory with x but no r: plain CASA cannot open it (casacore's
    DirectoryIterator, a RuntimeError); the guarded call is refused before anything runs,
    with one line that `except RuntimeError` still catches, and the MS stays as it was."""
    twin = tmp_path / "twin" / ms.name
    shutil.copytree(ms, twin)
    before = _tree(ms)
    outcomes, caught = {}, {}
    for side, vis in (("plain", twin), ("guarded", ms)):
        vis.chmod(0o300)
        try:
            outcomes[side], stderr = _task_obeying_file_modes(tmp_path, vis, complist, task, side)
        finally:
            vis.chmod(0o755)
        caught[side] = "CAUGHT BY except RuntimeError: True" in stderr
    plain = outcomes["plain"]
    assert plain.startswith("RuntimeError: "), plain
    assert f"DirectoryIterator: error on directory {twin}: Permission denied" in plain, plain
    assert outcomes["guarded"] == (
        f"ReadOnlyMs: {task}: {ms} cannot be listed (permission denied), so CASA cannot open "
        "it; nothing was changed"
    )
    assert caught == {"plain": True, "guarded": True}
    assert _tree(ms) == before
    assert journal_trust.pending_journals(str(ms)) == []
    assert_casa_can_use(ms, complist)


def test_restore_journal_leaves_another_users_directories_and_puts_the_ms_back(
    ms: Path, complist: Path, tmp_path: Path
) -> None:
    """After a caller died mid-ft, another user's directories made meanwhile (one named like
    a data-manager file that nobody may enter, one in HISTORY readable but not enterable)
    are not the task's: `casaguard restore-journal` leaves them and puts the MS back."""
    before = _tree(ms)
    _kill_caller_mid_ft(ms, complist, tmp_path)
    theirs = [ms / "table.f99", ms / "HISTORY" / "rx"]
    for path in theirs:
        path.mkdir()
    (ms / "HISTORY" / "rx" / "f").write_text("theirs")
    for path in (*theirs, ms / "HISTORY" / "rx" / "f"):
        os.chown(path, 65534, 65534)
    theirs[0].chmod(0o000)
    theirs[1].chmod(0o444)
    # Their own directory in HISTORY, in which they, as themselves, write nested files
    # after the call died, dated in the past.
    own = ms / "HISTORY" / "att"
    own.mkdir()
    os.chown(own, 65534, 65534)
    files = [own / "top.txt", own / "notes" / "deep" / "thesis.txt"]
    _as_attacker_in(
        own,
        "mkdir -p notes/deep && for f in top.txt notes/deep/thesis.txt; do "
        "echo mine > $f; touch -d 2020-01-01 $f; done",
    )
    assert all(f.stat().st_uid == 65534 for f in files)
    result = _cli(["restore-journal", str(ms)], tmp_path, prefix=DROP_ROOT_POWERS)
    assert result.returncode == 0, result.stderr
    assert _journals(ms) == [] and journal_trust.pending_journals(ms) == []
    assert [f.read_text() for f in files] == ["mine\n", "mine\n"], "their files must stay"
    for path in (*theirs, own):
        assert path.is_dir(), f"{path} is another user's: the restore must leave it"
        path.chmod(0o755)
        shutil.rmtree(path)
    assert _tree(ms) == before
    assert_casa_can_use(ms, complist)


def test_a_failed_write_beside_a_symlink_out_of_history_is_put_back(
    ms: Path, complist: Path, tmp_path: Path
) -> None:
    """A symlink in HISTORY to a directory outside the MS (someone's notes link): ft with a
    missing component list fails as plain ft fails; the restore leaves the link alone
    (it names nothing the restore touches), so no journal is left pending."""
    link = ms / "HISTORY" / "notes-link"
    link.symlink_to(tmp_path)
    before = _tree(ms)
    with pytest.raises(casaguard.CasaTaskError) as failed:
        casaguard.ft(vis=str(ms), complist=str(tmp_path / "missing.cl"), usescratch=True)
    assert isinstance(failed.value, ValueError) and failed.value.restored
    assert journal_trust.pending_journals(str(ms)) == [] and _journals(ms) == []
    assert os.readlink(link) == str(tmp_path)
    link.unlink()
    assert _tree(ms) == before
    assert_casa_can_use(ms, complist)


def _as_attacker_in(directory: Path, script: str) -> None:
    """Run ``script`` (sh) as uid 65534 in ``directory``, reached by a descriptor: pytest's
    tmp tree above the MS is root's, mode 0700."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        attacker = subprocess.run(
            [*ATTACKER, "sh", "-c", f"cd /proc/self/fd/{fd} && {script}"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            pass_fds=(fd,),
        )
    finally:
        os.close(fd)
    assert attacker.returncode == 0, attacker.stderr


def test_restore_journal_leaves_a_file_another_user_made_in_a_shared_subtable(
    ms: Path, complist: Path, tmp_path: Path
) -> None:
    """HISTORY world-writable and sticky (a shared MS): after a caller died mid-ft, another
    user makes a file there named like a data-manager file, dated in the past. The task did
    not make it (it is not the caller's), so `casaguard restore-journal` leaves it and puts
    the MS back."""
    (ms / "HISTORY").chmod(0o1777)
    before = _tree(ms)
    _kill_caller_mid_ft(ms, complist, tmp_path)
    # Dated in the past: restore-journal refuses over a file newer than the dead call.
    _as_attacker_in(ms / "HISTORY", "echo mine > table.f9 && touch -d 2020-01-01 table.f9")
    theirs = ms / "HISTORY" / "table.f9"
    assert theirs.stat().st_uid == 65534
    result = _cli(["restore-journal", str(ms)], tmp_path, prefix=DROP_ROOT_POWERS)
    assert result.returncode == 0, result.stderr
    assert _journals(ms) == [] and journal_trust.pending_journals(ms) == []
    assert theirs.read_text() == "mine\n", "another user's file must stay"
    theirs.unlink()
    assert _tree(ms) == before
    assert_casa_can_use(ms, complist)


def test_a_failed_write_beside_another_users_directory_in_history_is_put_back(
    ms: Path, complist: Path, tmp_path: Path
) -> None:
    """Another user's readable directory with a file in it inside HISTORY: ft with a
    missing component list fails after the snapshot, as plain ft fails (ValueError); the
    restore leaves their directory alone (moving its file back there is not possible for
    the caller), so no journal is left pending and the MS is as before."""
    twin = tmp_path / "twin" / ms.name
    shutil.copytree(ms, twin)
    missing = tmp_path / "missing.cl"
    outcomes = {}
    for side, vis in (("plain", twin), ("guarded", ms)):
        theirs = vis / "HISTORY" / "att"
        theirs.mkdir()
        (theirs / "f").write_text("theirs")
        for path in (theirs / "f", theirs):
            os.chown(path, 65534, 65534)
        if side == "guarded":
            before = _tree(ms)
        outcomes[side], _ = _task_obeying_file_modes(tmp_path, vis, missing, "ft", side)
    assert outcomes["plain"].startswith("ValueError: "), outcomes
    assert outcomes["guarded"].startswith("CasaTaskError[ValueError]: "), outcomes
    assert outcomes["plain"][len("ValueError: ") :] in outcomes["guarded"], outcomes
    assert journal_trust.pending_journals(str(ms)) == [] and _journals(ms) == []
    assert _tree(ms) == before
    assert (ms / "HISTORY" / "att" / "f").read_text() == "theirs"
    shutil.rmtree(ms / "HISTORY" / "att")
    assert_casa_can_use(ms, complist)


SWAPPER = """
import ctypes, os, random, select, sys, time
fd, ctl, ack, name, target = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:]
os.chdir(f"/proc/self/fd/{fd}")
link = name + ".x"
os.symlink(target, link)
libc = ctypes.CDLL(None, use_errno=True)
def exchange():
    if libc.renameat2(-100, name.encode(), -100, link.encode(), 2) != 0:  # RENAME_EXCHANGE
        raise OSError(ctypes.get_errno(), "renameat2")
running, swaps = False, 0
os.write(ack, b"k")
while True:
    if select.select([ctl], [], [], None if not running else 0)[0]:
        order = os.read(ctl, 1)
        if order == b"g":
            running = True
        else:
            if os.path.islink(name):
                exchange()
            running = False
            if order != b"p":
                os.unlink(link)
                os.write(ack, str(swaps).encode())
                break
            os.write(ack, b"k")
    if running:
        # Either way for a random while, from a few microseconds to 3 ms: some swaps land
        # between two steps of a restore, whatever their spacing.
        time.sleep(random.choice((0, 0, 1e-4, 1e-3, 3e-3)) * random.random())
        exchange()
        swaps += 1
"""


@pytest.mark.parametrize(
    "swap", ["HISTORY for another directory", "HISTORY for ANTENNA", "the MS for another MS"]
)
def test_restore_journal_never_writes_elsewhere_while_a_directory_is_swapped(
    ms_factory: Any,
    complist: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    swap: str,
) -> None:
    """Another user (uid 65534, as itself) may write to the MS directory, or to the one it
    lies in. While the victim runs restore-journal after a dead call, they swap HISTORY, or
    the MS itself, with a symlink to another of the victim's directories (outside the MS,
    ANTENNA, another MS), again and again. Nothing there changes in any of 100 attempts:
    every rename and unlink goes through the directory that was checked, and only the very
    directories the snapshot copied from are written (some attempts are refused instead)."""
    shared = tmp_path / "shared"
    shared.mkdir()
    ms = ms_factory(shared / "test.ms")
    if swap == "the MS for another MS":
        # A parent others may write to, from the start: the journal goes to the caller's
        # private directory (one left beside the MS there would not be trusted).
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
        (tmp_path / "run").mkdir(mode=0o700)
        shared.chmod(0o777)
        where, name = shared, ms.name
        elsewhere = ms_factory(tmp_path / "other.ms")
    else:
        where, name = ms, "HISTORY"
        elsewhere = ms / "ANTENNA" if swap == "HISTORY for ANTENNA" else tmp_path / "elsewhere"
        if not elsewhere.exists():
            elsewhere.mkdir()
            for entry in os.listdir(ms / "HISTORY"):
                (elsewhere / entry).write_text("precious")
    before = _tree(ms)
    _kill_caller_mid_ft(ms, complist, tmp_path)
    [pending] = journal_trust.pending_journals(ms)
    backup = tmp_path / "backup"
    shutil.copytree(ms, backup / "ms", symlinks=True)
    shutil.copytree(pending, backup / "journal", symlinks=True)
    untouched = _tree(elsewhere)
    mode = where.stat().st_mode
    where.chmod(0o777)
    fd = os.open(where, os.O_RDONLY | os.O_DIRECTORY)
    ctl_read, ctl = os.pipe()
    ack, ack_write = os.pipe()
    attacker = subprocess.Popen(
        [
            *ATTACKER,
            sys.executable,
            "-c",
            SWAPPER,
            str(fd),
            str(ctl_read),
            str(ack_write),
            name,
            str(elsewhere),
        ],
        pass_fds=(fd, ctl_read, ack_write),
    )
    os.close(ctl_read)
    os.close(ack_write)
    outcomes: list[str] = []
    try:
        assert os.read(ack, 1) == b"k"
        for _ in range(100):
            shutil.rmtree(pending, ignore_errors=True)
            shutil.copytree(backup / "journal", pending, symlinks=True)
            shutil.copytree(backup / "ms", ms, symlinks=True, dirs_exist_ok=True)
            where.chmod(0o777)  # copytree gave the MS the backup's mode
            os.write(ctl, b"g")
            try:
                recovery.recover(ms, force=True)
                outcomes.append("restored")
            # Refused (JournalError; InvalidInput when the journal no longer looks like
            # this MS's), or a path that changed under os.path.realpath (EINVAL): either way
            # nothing was written.
            except (casaguard.CasaguardError, OSError):
                outcomes.append("refused")
            os.write(ctl, b"p")
            assert os.read(ack, 1) == b"k"
            assert _tree(elsewhere) == untouched, f"attempt {len(outcomes)} wrote in {elsewhere}"
        os.write(ctl, b"q")
        swaps = int(os.read(ack, 32))
    finally:
        os.close(ctl)
        os.close(fd)
        attacker.wait(timeout=60)
        where.chmod(stat.S_IMODE(mode))
    assert swaps > len(outcomes), "the attacker must have raced every attempt"
    assert "restored" in outcomes, outcomes
    assert not (where / name).is_symlink()
    shutil.rmtree(pending, ignore_errors=True)
    shutil.copytree(backup / "journal", pending, symlinks=True)
    shutil.copytree(backup / "ms", ms, symlinks=True, dirs_exist_ok=True)
    recovery.recover(ms, force=True)
    assert _tree(ms) == before
    assert_casa_can_use(ms, complist)


def test_a_restore_across_file_systems_never_writes_through_a_planted_temp_name(
    ms_factory: Any, complist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The journal on another file system (the MS's parent is writable by others, so it
    goes to the caller's private directory, here on tmpfs): the restore copies files back
    through temp files. Another user (as itself) who may write to the MS and HISTORY plants
    symlinks named like casaguard's temp files, pointing at a file of the victim's. A failed
    ft is put back as before, and the victim's file is left as it was."""
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    ms = ms_factory(shared / "test.ms")
    private = Path(tempfile.mkdtemp(prefix="casaguard-run-", dir="/dev/shm"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(private))
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    before = _tree(ms)
    for directory in (ms, ms / "HISTORY", ms / "SOURCE"):
        directory.chmod(0o777)
        # (A link named like a data-manager file, table.f4.casaguard-restore, makes the
        # snapshot refuse the call: see the test after this one.)
        names = " ".join(n for n in sorted(os.listdir(directory)) if not n.startswith("table.f"))
        _as_attacker_in(
            directory, f"for f in {names}; do ln -s {victim} $f.casaguard-restore; done"
        )
    try:
        with pytest.raises(casaguard.CasaTaskError) as failed:
            casaguard.ft(vis=str(ms), complist=str(tmp_path / "missing.cl"), usescratch=True)
        assert failed.value.restored
        assert journal_trust.pending_journals(str(ms)) == []
    finally:
        shutil.rmtree(private)
    assert victim.read_text() == "precious"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o644
    for directory in (ms, ms / "HISTORY", ms / "SOURCE"):
        for planted in directory.glob("*.casaguard-restore"):
            planted.unlink()
        directory.chmod(0o755)
    assert not [p for p in ms.rglob("*") if p.is_symlink()]
    assert _tree(ms) == before
    assert_casa_can_use(ms, complist)


def test_a_symlink_named_like_a_file_the_task_writes_is_refused_unchanged(
    ms: Path, complist: Path, tmp_path: Path
) -> None:
    """A symlink in the main table named like one of MODEL_DATA's files (a column moved to
    another disk and linked back, or someone's plant): a restore could only put it back by
    writing where it leads, so the guarded ft is refused in one line, nothing changed."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("not the MS's")
    link = ms / "table.f4.casaguard-restore"
    link.symlink_to(elsewhere)
    before = _tree(ms)
    with pytest.raises(casaguard.InvalidInput) as refused:
        casaguard.ft(vis=str(ms), complist=str(complist), usescratch=True)
    assert str(refused.value) == (
        f"ft: cannot journal {ms}: table.f4.casaguard-restore is a symlink; nothing was "
        "changed (journal=False runs without a safety copy)"
    )
    assert _tree(ms) == before and elsewhere.read_text() == "not the MS's"
    assert journal_trust.pending_journals(str(ms)) == [] and _journals(ms) == []
    link.unlink()
    assert_casa_can_use(ms, complist)


@pytest.mark.parametrize("plant", ["a hard link to another file", "a FIFO"])
def test_restore_journal_never_writes_a_lock_file_that_is_not_the_tables_own(
    ms: Path, complist: Path, tmp_path: Path, plant: str
) -> None:
    """After a caller died mid-ft, HISTORY/table.lock is moved aside and replaced by a hard
    link to someone's file (what another user can plant in a shared subtable where
    fs.protected_hardlinks is off; made here by the test, as this host has it on) or by a
    FIFO. restore-journal refuses in one line, writes nothing into that file, and keeps the
    journal; with the lock file put back it restores the MS."""
    before = _tree(ms)
    _kill_caller_mid_ft(ms, complist, tmp_path)
    lock = ms / "HISTORY" / "table.lock"
    aside = tmp_path / "table.lock.aside"
    shutil.move(lock, aside)
    someones = tmp_path / "someones.txt"
    someones.write_text("x" * 2000)
    if plant == "a FIFO":
        os.mkfifo(lock)
    else:
        os.link(someones, lock)
    result = _cli(["restore-journal", str(ms), "--force"], tmp_path)
    assert result.returncode == 1, result.stderr
    line = _error_line(result)
    assert "HISTORY" in line and "the snapshot is kept" in line, line
    assert someones.read_text() == "x" * 2000
    assert len(journal_trust.pending_journals(ms)) == 1
    lock.unlink()
    shutil.move(aside, lock)
    result = _cli(["restore-journal", str(ms), "--force"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert _tree(ms) == before
    assert_casa_can_use(ms, complist)


@pytest.mark.parametrize("shape", ["any directory", "shaped like an unstarted journal"])
def test_a_directory_given_a_journals_name_by_another_user_is_never_deleted(
    ms_factory: Any, complist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shape: str
) -> None:
    """The MS's parent is writable by others (mode 0777). Another user (as itself) renames
    one of the victim's directories there, which they cannot empty themselves, to the
    name of a journal whose task never started -- any directory, or one shaped like such
    a journal (0700, a heartbeat and a files/ directory: what a swap with a real one
    would present to a check made by path). The victim's next guarded ft and
    restore-journal look for journals there; neither deletes it."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    (tmp_path / "run").mkdir(mode=0o700)
    shared = tmp_path / "shared"
    shared.mkdir()
    ms = ms_factory(shared / "test.ms")
    precious = shared / "precious"
    (precious / "sub").mkdir(parents=True)
    (precious / "sub" / "secret").write_text("mine")
    (precious / "sub").chmod(0o700)
    if shape == "shaped like an unstarted journal":
        (precious / "sub").rename(precious / journal_layout.FILES)
        (precious / journal_layout.HEARTBEAT).write_text("")
        precious.chmod(0o700)
    shared.chmod(0o777)
    planted = shared / f".{ms.name}{journal_layout.JOURNAL_MARK}999999-deadbeef"
    _as_attacker_in(shared, f"mv precious {planted.name} && ! rm -rf {planted.name} 2>/dev/null")
    assert not pids.pid_alive(999999)
    casaguard.ft(vis=str(ms), complist=str(complist), usescratch=True)
    result = _cli(["restore-journal", str(ms)], tmp_path)
    assert result.returncode == 2, result.stderr
    kept = "sub" if shape == "any directory" else journal_layout.FILES
    assert (planted / kept / "secret").read_text() == "mine"
    shared.chmod(0o755)
    assert_casa_can_use(ms, complist)
