"""``casaguard repair``: on real MS variants, plain CASA fails before and works after; DATA
stays byte-identical; a dry run and a variant without a safe fix change nothing.

Variants are made for real: WSClean run as another uid (nobody, via ``setpriv``) on an MS
in a directory that uid may write; WSClean predicting one spw of a two-spw MS (it writes a
fixed-shape MODEL_DATA of that spw's shape); a caller SIGKILLed mid-ft leaving an orphan
journal; a python-casacore writer SIGKILLed while holding a permanent table lock.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import DROP_ROOT_POWERS, casa_script, casacore_script
from next_reader import assert_casa_can_use
from probe_variants import WSCLEAN, Variants, remove_scratch_columns

import casaguard
from casaguard.journal import layout as journal_layout
from casaguard.journal import trust as journal_trust
from casaguard.repairs import journal as repair_journal
from casaguard.sandbox import pids

NOBODY = 65534
AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
#: Columns no repair may change (compared by value, in a casacore subprocess).
KEPT_COLUMNS = ("DATA", "FLAG", "UVW", "WEIGHT", "SIGMA", "ANTENNA1", "ANTENNA2", "TIME")

_DIGEST = r"""
import hashlib, json, sys
from casacore import tables as pt
t = pt.table(sys.argv[1], ack=False)
out = {}
for column in sys.argv[2:]:
    if t.isvarcol(column):
        cells = t.getvarcol(column)
        data = b"".join(cells[key].tobytes() for key in sorted(cells, key=lambda k: int(k[1:])))
    else:
        data = t.getcol(column).tobytes()
    out[column] = hashlib.sha256(data).hexdigest()
t.close()
print(json.dumps(out))
"""


# ----------------------------------------------------------------------------- helpers


def _tree(root: Path) -> dict[str, tuple[str, int, int, int]]:
    """Every file and directory of an MS: content hash, owner, mode, mtime."""
    state = {}
    for path in sorted([root, *root.rglob("*")]):
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        state[str(path.relative_to(root))] = (digest, st.st_uid, st.st_mode, st.st_mtime_ns)
    return state


def _bytes(root: Path, *, skip: tuple[str, ...] = ("table.lock",)) -> dict[str, str]:
    """Content hash of every file of an MS except ``skip`` names and casaguard's (empty)
    writer-lock file, which the first guarded write or repair --apply creates."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in (*skip, journal_layout.WRITER_LOCK_FILE)
    }


def _columns(ms: Path) -> dict[str, str]:
    result = subprocess.run(
        [sys.executable, "-c", _DIGEST, str(ms), *KEPT_COLUMNS],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    digests: dict[str, str] = json.loads(result.stdout)
    return digests


def _cli(
    args: list[str], *, prefix: list[str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*(prefix or []), sys.executable, "-m", "casaguard.cli.main", *args],
        capture_output=True, text=True, timeout=900, cwd=cwd, check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )  # fmt: skip


def _json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.stdout.strip(), result.stderr[-3000:]
    document: dict[str, Any] = json.loads(result.stdout)
    return document


_NEXT_READER_AS_USER = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from next_reader import assert_casa_can_use
try:
    assert_casa_can_use(Path({ms!r}), Path({complist!r}))
except AssertionError as error:
    print("REFUSED", str(error)[-2000:])
else:
    print("ACCEPTED")
"""


def _casa_without_root_powers(ms: Path, complist: Path) -> str:
    """The next-reader verdict, with every process of it obeying file modes (root minus DAC)."""
    script = _NEXT_READER_AS_USER.format(
        tests=str(Path(__file__).parent), ms=str(ms), complist=str(complist)
    )
    result = subprocess.run(
        [*DROP_ROOT_POWERS, sys.executable, "-c", script],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert "ACCEPTED" in result.stdout or "REFUSED" in result.stdout, result.stderr[-3000:]
    return result.stdout


def _copy_keeping_owners(source: Path, dest: Path) -> Path:
    subprocess.run(["cp", "-a", str(source), str(dest)], check=True)
    return dest


def _plain_casa_fails(ms: Path, complist: Path) -> str:
    with pytest.raises(AssertionError) as failure:
        assert_casa_can_use(ms, complist)
    return str(failure.value)


# ----------------------------------------------------------------------------- variants


@pytest.fixture(scope="session")
def variants(ms_factory: Any) -> Variants:
    """The probe's variant builders, sharing the session's simulated MSs."""
    return Variants(ms_factory)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory nobody may write in, like /tmp (tmp_path's parents are root's 0700)."""
    path = Path(tempfile.mkdtemp(prefix="casaguard-repair-test-"))
    # WSClean writes its reordering temp files beside the MS.
    path.chmod(0o1777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def wsclean_as_nobody(ms_factory: Any, where: Path) -> Path:
    """WSClean run as uid nobody on an MS whose directory and files nobody may write.

    casacore (in WSClean) rewrites table.dat and the StandardStMan index table.f1i by
    creating them anew, so they end up owned by nobody, mode 0644.
    """
    ms: Path = ms_factory(where / "ws.ms")
    remove_scratch_columns(ms)
    subprocess.run(["chmod", "-R", "a+rwX", str(ms)], check=True)
    images = where / "img"
    images.mkdir()
    images.chmod(0o777)
    result = subprocess.run(
        [*AS_NOBODY, WSCLEAN, "-size", "64", "64", "-scale", "30asec", "-niter", "10",
         "-mgain", "0.8", "-name", str(images / "img"), str(ms)],
        capture_output=True, text=True, timeout=300, cwd=images, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert (ms / "table.dat").stat().st_uid == NOBODY
    return ms


def wsclean_one_spw_model(ms_factory: Any, dest: Path) -> Path:
    """WSClean imaging spw 0 of a 4+16-channel MS: it adds MODEL_DATA fixed at spw 0's shape."""
    ms: Path = ms_factory(dest, nchan=(4, 16))
    remove_scratch_columns(ms)
    images = dest.parent / f"{dest.name}-img"
    images.mkdir()
    result = subprocess.run(
        [WSCLEAN, "-size", "64", "64", "-scale", "30asec", "-niter", "10", "-mgain", "0.8",
         "-spws", "0", "-name", str(images / "img"), str(ms)],
        capture_output=True, text=True, timeout=300, cwd=images, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:]
    return ms


# ----------------------------------------------------------------------------- foreign files


def test_wsclean_as_another_uid_is_repaired_for_a_user_without_root_powers(
    ms_factory: Any, shared_dir: Path, complist: Path
) -> None:
    """table.dat and table.f1i left owned by nobody: plain ft fails, repair --apply replaces
    them by byte-identical own copies, then plain ft + clearcal succeed; no byte changed."""
    ms = wsclean_as_nobody(ms_factory, shared_dir)
    witness = _copy_keeping_owners(ms, shared_dir / "witness.ms")
    refused = _casa_without_root_powers(witness, complist)
    assert "REFUSED" in refused and "Please make sure MS is writable" in refused, refused
    before_bytes, before_columns = _bytes(ms, skip=()), _columns(ms)

    result = _cli(["repair", "--apply", "--json", str(ms)], prefix=DROP_ROOT_POWERS)
    document = _json(result)
    assert result.returncode == 0, document
    report = document["reports"][0]
    applied = {f["code"]: f for f in report["fixes"] if f["status"] == "applied"}
    assert set(applied) == {"TABLE_DAT_NOT_WRITABLE", "TABLE_FILE_NOT_WRITABLE"}, report
    changes = [c for f in applied.values() for c in f["changes"]]
    assert {Path(c["path"]).name for c in changes} == {"table.dat", "table.f1i"}
    assert all(c["action"] == "replace-file" and "nobody" in c["before"]["owner"] for c in changes)
    assert report["verdict_before"] == "unsafe" and report["verdict_after"] == "safe"
    assert report["verified"] is True and report["canary"][0]["code"] == "CANARY_OK"

    assert _bytes(ms, skip=()) == before_bytes, "an own copy must be byte-identical"
    assert {p.stat().st_uid for p in ms.rglob("*")} == {0}
    assert _columns(ms) == before_columns
    assert "ACCEPTED" in _casa_without_root_powers(ms, complist)


def test_a_users_own_read_only_table_dat_is_planned_as_chmod_with_its_own_why(ms: Path) -> None:
    """A 0444 table.dat the user owns: the dry run plans chmod u+w (not a foreign-owner copy),
    says why in the user's own terms, and the same plan says the other user's why for nobody."""
    (ms / "table.dat").chmod(0o444)
    plans = []
    for owner in (0, 65534):
        os.chown(ms / "table.dat", owner, owner)
        document = _json(_cli(["repair", "--json", str(ms)], prefix=DROP_ROOT_POWERS))
        fix = next(f for f in document["reports"][0]["fixes"] if "table.dat" in f["finding"])
        plans.append((fix["changes"][0]["action"], fix["why"]))
    os.chown(ms / "table.dat", 0, 0)
    assert plans[0][0] == "chmod-own-file" and "this user's own" in plans[0][1]
    assert plans[1][0] == "replace-file" and "belong to another user" in plans[1][1]


def test_a_file_in_a_directory_the_user_may_not_write_has_no_fix(
    ms_factory: Any, shared_dir: Path
) -> None:
    """An MS directory owned by nobody, mode 0755: no own copy is possible, --apply changes
    nothing and says that only the owner or root can change it."""
    ms = wsclean_as_nobody(ms_factory, shared_dir)
    os.chown(ms, NOBODY, NOBODY)
    ms.chmod(0o755)
    before = _tree(ms)
    result = _cli(["repair", "--apply", "--json", str(ms)], prefix=DROP_ROOT_POWERS)
    report = _json(result)["reports"][0]
    assert result.returncode == 1, report
    assert _tree(ms) == before
    assert report["fixes"] == [] and report["backups"] == []
    unfixed = {u["code"]: u for u in report["unfixed"]}
    assert "MS_DIR_NOT_WRITABLE" in unfixed and "TABLE_DAT_NOT_WRITABLE" in unfixed, report
    assert "owner or root" in unfixed["TABLE_DAT_NOT_WRITABLE"]["why"]
    assert not list(shared_dir.glob(".ws.ms*")), "no backup for a repair that changed nothing"


# ----------------------------------------------------------------------------- MODEL_DATA


@pytest.mark.parametrize("maker", ["wsclean", "casacore"])
def test_fixed_shape_model_data_is_removed_and_casa_recreates_it(
    ms_factory: Any, variants: Variants, tmp_path: Path, complist: Path, maker: str
) -> None:
    """A fixed-shape MODEL_DATA of spw 0's shape on a 4+16-channel MS (written by WSClean, or
    with python-casacore as WSClean lays it out): plain ft fails; repair removes the column;
    plain ft + clearcal then succeed, and DATA, FLAG, UVW, WEIGHT are unchanged."""

    def build(dest: Path) -> Path:
        if maker == "wsclean":
            return wsclean_one_spw_model(ms_factory, dest)
        return variants.multi_spw_fixed_model(dest)

    _plain_casa_fails(build(tmp_path / "witness.ms"), complist)
    ms = build(tmp_path / "fixed.ms")
    before_columns = _columns(ms)
    report = casaguard.repair(ms, apply=True)
    assert report.exit_code == 0, report.to_dict()
    (fix,) = report.fixes
    assert (fix.code, fix.fix, fix.status) == (
        "MODEL_DATA_FIXED_SHAPE_MISMATCH",
        "remove-column",
        "applied",
    )
    assert "re-predict" in fix.consequence
    assert report.verdict_before == "unsafe" and report.verdict_after == "safe"
    assert report.verified and [f.code for f in report.canary] == ["CANARY_OK"]
    assert report.after is not None and "MODEL_DATA_ABSENT" in report.after.codes()
    assert _columns(ms) == before_columns
    assert_casa_can_use(ms, complist)


def test_fixed_shape_corrected_data_is_removed_and_clearcal_recreates_it(
    variants: Variants, tmp_path: Path, complist: Path
) -> None:
    """A fixed-shape CORRECTED_DATA of spw 0's shape on a 4+16-channel MS: plain ft + clearcal
    fail; repair removes the column (verified by the canary); plain ft + clearcal then succeed,
    and DATA, FLAG, UVW, WEIGHT, ANTENNA1/2 are unchanged."""
    _plain_casa_fails(variants.corrected_fixed_multi_spw(tmp_path / "witness.ms"), complist)
    ms = variants.corrected_fixed_multi_spw(tmp_path / "fixed.ms")
    before_columns = _columns(ms)
    report = casaguard.repair(ms, apply=True)
    assert report.exit_code == 0, report.to_dict()
    assert [(f.code, f.fix, f.status) for f in report.fixes] == [
        ("CORRECTED_DATA_FIXED_SHAPE_MISMATCH", "remove-column", "applied")
    ]
    assert report.fixes[0].changes[0]["before"]["column"] == "CORRECTED_DATA"
    assert "applycal" in report.fixes[0].consequence
    assert report.verified and [f.code for f in report.canary] == ["CANARY_OK"]
    assert _columns(ms) == before_columns
    assert_casa_can_use(ms, complist)


def test_every_fatal_code_has_a_fix_or_says_why_not_in_code_and_docs() -> None:
    """Every fatal probe code that is not bad input has a fix or a "no fix" reason with the
    human step in the planner, and docs/repair.md names it."""
    from casaguard.preflight.findings import CODES
    from casaguard.repairs.plan import FIXES, NO_FIX

    docs = (Path(__file__).parents[1] / "docs" / "repair.md").read_text()
    fatal = [c for c, i in CODES.items() if i.severity == "fatal" and i.group != "input"]
    assert "CORRECTED_DATA_FIXED_SHAPE_MISMATCH" in fatal and "JOURNAL_PENDING" in fatal
    unplanned = [c for c in fatal if c not in FIXES and c not in NO_FIX]
    undocumented = [c for c in fatal if f"`{c}`" not in docs]
    assert unplanned == [] and undocumented == [], (unplanned, undocumented)
    assert all(why and human for why, human in NO_FIX.values())


def test_a_float_model_data_is_removed_and_casa_recreates_it(
    ms_factory: Any, tmp_path: Path, complist: Path
) -> None:
    """MODEL_DATA rewritten as a float column: plain ft fails; repair removes it; plain ft +
    clearcal then succeed, with DATA, FLAG, UVW, WEIGHT unchanged."""

    def build(dest: Path) -> Path:
        ms: Path = ms_factory(dest)
        casacore_script(
            f"""
            import numpy as np
            from casacore import tables as pt
            t = pt.table({str(ms)!r}, readonly=False, ack=False)
            t.removecols("MODEL_DATA")
            desc = pt.makearrcoldesc("MODEL_DATA", 0.0, ndim=2, valuetype="float",
                                     datamanagertype="TiledShapeStMan",
                                     datamanagergroup="ModelTiled")
            t.addcols(pt.maketabdesc(desc))
            shape = t.getcell("DATA", 0).shape
            t.putcol("MODEL_DATA", np.zeros((t.nrows(),) + shape, dtype="float32"))
            t.close()
            """
        )
        return ms

    _plain_casa_fails(build(tmp_path / "witness.ms"), complist)
    ms = build(tmp_path / "float.ms")
    before_columns = _columns(ms)
    report = casaguard.repair(ms, apply=True)
    assert report.exit_code == 0, report.to_dict()
    assert [(f.code, f.fix, f.status) for f in report.fixes] == [
        ("MODEL_DATA_BAD_TYPE", "remove-column", "applied")
    ]
    assert "float" in report.fixes[0].changes[0]["text"]
    assert _columns(ms) == before_columns
    assert_casa_can_use(ms, complist)


def test_restore_journal_undoes_a_column_removal_and_the_table_stays_writable(
    variants: Variants, tmp_path: Path
) -> None:
    """After repair --apply, `casaguard restore-journal BACKUP` puts every byte back (table.lock
    included), the probe finds the original cause again, and casacore can write the table."""
    ms = variants.multi_spw_fixed_model(tmp_path / "fixed.ms")
    before = _bytes(ms, skip=())
    report = casaguard.repair(ms, apply=True, verify=False)
    assert report.exit_code == 0 and len(report.backups) == 1, report.to_dict()
    undo = _cli(["restore-journal", report.backups[0]])
    assert undo.returncode == 0, undo.stderr
    assert _bytes(ms, skip=()) == before
    assert "MODEL_DATA_FIXED_SHAPE_MISMATCH" in casaguard.probe(ms).codes()
    # A table.dat put back without its table.lock: 'Table::lock cannot sync table'.
    again = casaguard.repair(ms, apply=True, verify=False)
    assert again.exit_code == 0 and again.fixes[0].status == "applied", again.to_dict()


def test_a_guarded_write_after_a_repair_runs_and_then_the_backup_refuses_to_undo_it(
    variants: Variants, tmp_path: Path, complist: Path
) -> None:
    """A repair backup is not a pending journal: a guarded ft after repair --apply succeeds;
    restore-journal BACKUP then refuses in one line (exit 1, nothing changed) because the MS
    was written after the repair, and --force undoes the repair anyway."""
    ms = variants.multi_spw_fixed_model(tmp_path / "fixed.ms")
    report = casaguard.repair(ms, apply=True, verify=False)
    assert report.exit_code == 0 and len(report.backups) == 1, report.to_dict()
    backup = Path(report.backups[0])
    assert journal_trust.pending_journals(ms) == []
    assert "JOURNAL_PENDING" not in casaguard.probe(ms).codes()
    time.sleep(journal_layout.LATER_WRITE_MARGIN_S + 0.5)
    casaguard.ft(vis=str(ms), complist=str(complist), usescratch=True)
    after_ft = _bytes(ms)
    refused = _cli(["restore-journal", str(backup)])
    lines = [line for line in refused.stderr.splitlines() if line.startswith("casaguard:")]
    assert refused.returncode == 1 and len(lines) == 1, refused.stderr
    assert "was written after" in lines[0] and backup.is_dir()
    assert _bytes(ms) == after_ft
    forced = _cli(["restore-journal", str(backup), "--force"])
    assert forced.returncode == 0, forced.stderr
    assert not backup.exists()
    assert "MODEL_DATA_FIXED_SHAPE_MISMATCH" in casaguard.probe(ms).codes()


# ----------------------------------------------------------------------------- dry run


def test_dry_run_changes_nothing_and_names_every_change(
    ms_factory: Any, variants: Variants, shared_dir: Path
) -> None:
    """A dry run (the default) leaves every file and directory byte-, owner-, mode- and
    mtime-identical, creates nothing beside the MS, and prints each exact change and why."""
    foreign = wsclean_as_nobody(ms_factory, shared_dir)
    fixed = variants.multi_spw_fixed_model(shared_dir / "fixed.ms")
    before = {ms: _tree(ms) for ms in (foreign, fixed)}
    neighbours = sorted(p.name for p in shared_dir.iterdir())
    result = _cli(["repair", str(foreign), str(fixed)], prefix=DROP_ROOT_POWERS)
    assert result.returncode == 1, result.stdout + result.stderr
    assert {ms: _tree(ms) for ms in (foreign, fixed)} == before
    assert sorted(p.name for p in shared_dir.iterdir()) == neighbours
    out = result.stdout
    assert "dry run" in out
    assert f"replace {foreign}/table.dat (owner nobody (uid {NOBODY}), mode 0644)" in out
    assert "remove column MODEL_DATA (complex, fixed shape [4, 4])" in out
    assert out.count("why: ") >= 3 and "the model in MODEL_DATA is lost" in out
    assert "2 items: 2 ok" in out  # the batch's outcome table


# ----------------------------------------------------------------------------- no safe fix


@pytest.mark.parametrize(
    ("variant", "code", "exit_code"),
    # A damaged MS is an MS: its findings are unsafe (exit 1), as the probe says since issue 14.
    [("mangled_spw", "SPW_NUM_CHAN_MISMATCH", 1), ("missing_subtable", "SUBTABLE_MISSING", 1)],
)
def test_a_cause_without_a_safe_fix_changes_nothing_and_says_why(
    variants: Variants, tmp_path: Path, variant: str, code: str, exit_code: int
) -> None:
    """--apply on a variant without a safe fix leaves it byte-identical, makes no backup, and
    the report says why there is no fix and what a human must do."""
    ms = getattr(variants, variant)(tmp_path / "bad.ms")
    before = _tree(ms)
    report = casaguard.repair(ms, apply=True)
    assert report.exit_code == exit_code, report.to_dict()
    assert _tree(ms) == before
    assert report.fixes == [] and report.backups == []
    (item,) = [u for u in report.unfixed if u.code == code]
    assert item.why and item.human
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.ms"]


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """A path that is not an MS: exit 2, one line on stderr, nothing created."""
    result = _cli(["repair", "--apply", str(tmp_path / "missing.ms")], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "PATH_MISSING" in result.stderr
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- locks


def test_lock_left_by_a_sigkilled_writer_needs_no_fix(
    ms: Path, complist: Path, tmp_path: Path
) -> None:
    """A python-casacore writer SIGKILLed while holding a permanent write lock: the kernel drops
    its fcntl lock, the probe finds nothing, repair has nothing to do, and plain CASA works."""
    writer = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(
            f"""
            import time
            from casacore import tables as pt
            t = pt.table({str(ms)!r}, readonly=False, ack=False, lockoptions="permanent")
            t.putcol("MODEL_DATA", t.getcol("MODEL_DATA") + 1)
            t.flush()
            print("locked", flush=True)
            time.sleep(600)
            """
        )],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert writer.stdout is not None and writer.stdout.readline().strip() == "locked"
    assert "MS_LOCKED" in casaguard.probe(ms).codes(), "the live lock must be seen"
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    before = _tree(ms)
    report = casaguard.repair(ms, apply=True)
    assert report.exit_code == 0 and report.fixes == [] and report.unfixed == []
    assert report.before is not None and report.before.verdict == "safe"
    assert _tree(ms) == before
    assert_casa_can_use(ms, complist)


# ----------------------------------------------------------------------------- journals


_KILLED_CALLER = """
import sys
import casaguard
casaguard.ft(vis=sys.argv[1], complist=sys.argv[2], usescratch=True)
"""


def _stat(path: Path) -> list[int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino]


@pytest.fixture
def big_ms(ms_factory: Any, tmp_path: Path) -> Path:
    """An MS large enough (16,800 rows) that a SIGKILL can land in the middle of ft's write."""
    path: Path = ms_factory(tmp_path / "big.ms", n_times=600)
    return path


def _orphan_journal(ms: Path, complist: Path, tmp_path: Path) -> Path:
    """SIGKILL a caller of guarded ft mid-write: the journal stays, orphaned."""
    caller = subprocess.Popen(
        [sys.executable, "-c", _KILLED_CALLER, str(ms), str(complist)],
        cwd=tmp_path, env={**os.environ, "TMPDIR": str(tmp_path)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    manifest = None
    deadline = time.monotonic() + 120
    while manifest is None and time.monotonic() < deadline:
        ready = list(
            ms.parent.glob(f".{ms.name}{journal_layout.JOURNAL_MARK}*/{journal_layout.MANIFEST}")
        )
        manifest = ready[0] if ready else None
        time.sleep(0.002)
    assert manifest is not None
    snapshot = json.loads(manifest.read_text())
    child = snapshot["pid"]
    # Kill the caller once the task has begun to write: then the MS really is half-written.
    model = [rel for rel in snapshot["saved"] if rel.startswith("table.f4_TSM")]  # MODEL_DATA
    assert model, snapshot["saved"]
    while time.monotonic() < deadline and all(
        _stat(ms / rel) == snapshot["stat"].get(rel) for rel in model
    ):
        time.sleep(0.002)
    caller.kill()
    caller.wait(timeout=30)
    deadline = time.monotonic() + 30
    while pids.pid_alive(child) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert repair_journal.pending_journals(str(ms)) == [manifest.parent]
    return manifest.parent


def test_orphan_journal_is_finished_and_the_ms_is_as_before_the_dead_call(
    big_ms: Path, complist: Path, tmp_path: Path
) -> None:
    """A caller SIGKILLed mid-ft leaves an orphan journal and a half-written MS: the dry run
    plans to finish it (exit 1, nothing changed); --apply restores the MS to before the dead
    call and removes the journal."""
    ms = big_ms
    before = _bytes(ms)
    orphan = _orphan_journal(ms, complist, tmp_path)
    half = _tree(ms)
    assert _bytes(ms) != before, "the SIGKILL must land after ft began to write"
    dry = casaguard.repair(ms)
    assert dry.exit_code == 1 and [f.fix for f in dry.fixes] == ["finish-journal"]
    assert dry.before is not None
    (pending,) = [f for f in dry.before.findings if f.code == "JOURNAL_PENDING"]
    assert dry.fixes[0].code == "JOURNAL_PENDING" and dry.fixes[0].finding == pending.message
    assert _tree(ms) == half and orphan.is_dir()
    report = casaguard.repair(ms, apply=True)
    assert report.exit_code == 0, report.to_dict()
    assert [f.status for f in report.fixes] == ["applied"] and report.verified
    assert not orphan.exists() and repair_journal.pending_journals(str(ms)) == []
    assert _bytes(ms) == before
    backup = Path(report.backups[0])
    assert not (backup / repair_journal.ORPHAN_COPIES).exists()
    assert_casa_can_use(ms, complist)


def test_an_orphan_the_ms_was_written_after_gets_no_fix(
    big_ms: Path, complist: Path, tmp_path: Path
) -> None:
    """When plain casatasks.ft wrote the MS after the caller died, finishing the orphan would
    undo that newer work: --apply changes nothing and names JOURNAL_PENDING as unfixed (why,
    and what to choose); --discard-journal plans the discard, proven newer."""
    ms = big_ms
    orphan = _orphan_journal(ms, complist, tmp_path)
    time.sleep(journal_layout.LATER_WRITE_MARGIN_S + 0.5)
    done = casa_script(
        f"import casatasks\n"
        f"casatasks.ft(vis={str(ms)!r}, complist={str(complist)!r}, usescratch=True)\n"
    )
    assert done.returncode == 0, done.stderr
    newer = _tree(ms)
    report = casaguard.repair(ms, apply=True)
    assert report.exit_code == 1 and report.fixes == [] and report.backups == [], report.to_dict()
    (item,) = [u for u in report.unfixed if u.code == "JOURNAL_PENDING"]
    assert "newer work" in item.why and "--discard-journal" in item.human
    assert _tree(ms) == newer and orphan.is_dir()
    dry = casaguard.repair(ms, discard_journal=True)
    assert [(f.fix, f.changes[0]["before"]["proven_newer"]) for f in dry.fixes] == [
        ("discard-journal", True)
    ]


def test_discard_journal_keeps_the_ms_and_the_journal_stays_restorable(
    big_ms: Path, complist: Path, tmp_path: Path
) -> None:
    """--discard-journal keeps the half-written MS as it is (CASA accepts it) and moves the
    orphan into the backup; moved back beside the MS it is an orphan again, and repair
    --apply then rolls the MS back to before the dead call."""
    ms = big_ms
    before = _bytes(ms)
    orphan = _orphan_journal(ms, complist, tmp_path)
    half = _bytes(ms)
    assert half != before, "the SIGKILL must land after ft began to write"
    result = _cli(["repair", "--apply", "--discard-journal", "--json", str(ms)])
    report = _json(result)["reports"][0]
    assert result.returncode == 0, report
    assert [f["fix"] for f in report["fixes"]] == ["discard-journal"]
    assert _bytes(ms) == half and not orphan.exists()
    assert repair_journal.pending_journals(str(ms)) == []
    moved = Path(report["backups"][0]) / repair_journal.DISCARDED / orphan.name
    assert moved.is_dir()
    os.replace(moved, orphan)
    again = casaguard.repair(ms, apply=True)
    assert again.exit_code == 0 and [f.fix for f in again.fixes] == ["finish-journal"]
    assert _bytes(ms) == before
    assert_casa_can_use(ms, complist)


# ----------------------------------------------------------------------------- batch


def test_map_repair_reports_each_ms_with_progress(variants: Variants, tmp_path: Path) -> None:
    """map_repair dry-runs three MSs on the batch engine: one outcome each, in order, each a
    RepairReport with its own plan, and the progress callback sees every one."""
    paths = [
        variants.clean(tmp_path / "clean.ms"),
        variants.multi_spw_fixed_model(tmp_path / "fixed.ms"),
        variants.mangled_spw(tmp_path / "mangled.ms"),
    ]
    seen: list[int] = []
    outcomes = casaguard.map_repair(paths, progress=lambda o, done, total: seen.append(done))
    assert sorted(seen) == [1, 2, 3]
    reports = [o.value for o in outcomes]
    assert all(isinstance(r, casaguard.RepairReport) for r in reports)
    assert [r.ms for r in reports] == [str(p) for p in paths]
    assert [r.exit_code for r in reports] == [0, 1, 1]
    assert [[f.fix for f in r.fixes] for r in reports] == [[], ["remove-column"], []]
    assert "SPW_NUM_CHAN_MISMATCH" in [u.code for u in reports[2].unfixed]


def test_vis_list_prints_the_outcome_table(variants: Variants, tmp_path: Path) -> None:
    """casaguard repair --vis-list FILE: one table row per MS and the exit code of the worst."""
    paths = [variants.clean(tmp_path / "a.ms"), variants.mangled_spw(tmp_path / "b.ms")]
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{p}\n" for p in paths))
    result = _cli(["repair", "--vis-list", str(listing)])
    assert result.returncode == 1, result.stderr
    rows = [line for line in result.stdout.splitlines() if re.match(r"\s*\d+  ", line)]
    assert len(rows) == 2 and "safe; no fixes" in rows[0]
    assert "no fix: " in rows[1] and "SPW_NUM_CHAN_MISMATCH" in rows[1]


# ----------------------------------------------------------------------------- rollback


_NEARLY_FULL = r"""
set -eu
mount -t tmpfs -o size=2m tmpfs "$MNT"
cp -r "$SRC" "$MNT/obs.ms"
# Room for the backup (table.dat + the SSM files + the journal's margin), but not for the
# MODEL_DATA that CASA would have to create once the misfit one is gone.
avail=$(df --output=avail -B1 "$MNT" | tail -1)
fallocate -l $((avail - 250 * 1024)) "$MNT/filler"
# casaguard's writer-lock file (empty, made by --apply) is not the MS's data.
sha() { (cd "$MNT/obs.ms" && find . -type f ! -name .casaguard-writer.lock -exec sha1sum {} + \
         | sort); }
sha > "$OUT/before"
set +e
"$PY" -m casaguard.cli.main repair --apply --no-verify --json "$MNT/obs.ms" > "$OUT/report"
echo $? > "$OUT/rc"
set -e
sha > "$OUT/after"
"""


def test_a_repair_that_verification_rejects_is_rolled_back(
    variants: Variants, tmp_path: Path
) -> None:
    """On a nearly full disk, removing the misfit MODEL_DATA would leave no room for CASA to
    create a new one: the re-probe finds DISK_SPACE_LOW, and the removal is rolled back to the
    last byte (table.lock included)."""
    ms = variants.multi_spw_fixed_model(tmp_path / "fixed.ms")
    mnt, out = tmp_path / "mnt", tmp_path / "out"
    mnt.mkdir()
    out.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(sys.path),
        "MNT": str(mnt),
        "SRC": str(ms),
        "OUT": str(out),
        "PY": sys.executable,
    }
    subprocess.run(
        ["unshare", "--mount", "bash", "-c", _NEARLY_FULL],
        check=True, env=env, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    report = json.loads((out / "report").read_text())["reports"][0]
    assert (out / "rc").read_text().strip() == "1", report
    assert report["rolled_back"] is True and report["verified"] is False, report
    assert [f["status"] for f in report["fixes"]] == ["rolled-back"]
    assert any("DISK_SPACE_LOW" in note for note in report["notes"]), report["notes"]
    assert "MODEL_DATA_FIXED_SHAPE_MISMATCH" in report["codes_after"]
    assert (out / "before").read_text() == (out / "after").read_text()
