"""Prediction against reality: the probe's verdict on real MS variants agrees with what
guarded ft and clearcal actually do on copies of them, for the reason the probe names.

Every variant is built for real: simulated with casatools (``ms_factory``), altered with
python-casacore in a subprocess or through the file system, or written by the real WSClean.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import DROP_ROOT_POWERS
from probe_variants import (
    Builder,
    Variants,
    real_verdict,
    reality,
    remove_scratch_columns,
    run_wsclean,
)

import casaguard


@pytest.fixture(scope="session")
def variants(ms_factory: Any) -> Variants:
    """The variant builders, sharing the session's simulated MSs."""
    return Variants(ms_factory)


CASES = [
    # variant, expected verdict, the finding that must explain it
    ("clean", "safe", "MODEL_DATA_BY_CASA"),
    ("after_wsclean", "safe", "MODEL_DATA_BY_WSCLEAN"),
    ("nan_model", "safe", "MODEL_DATA_NONFINITE"),
    ("multi_spw_fixed_model", "unsafe", "MODEL_DATA_FIXED_SHAPE_MISMATCH"),
    ("mangled_spw", "unsafe", "SPW_NUM_CHAN_MISMATCH"),
    ("missing_subtable", "unsafe", "SUBTABLE_MISSING"),
    ("truncated_storage", "unsafe", "PROBE_CRASHED"),
    ("empty", "unsafe", "MS_EMPTY"),
]


@pytest.mark.parametrize(("variant", "verdict", "code"), CASES, ids=[c[0] for c in CASES])
def test_prediction_matches_reality(
    variants: Variants,
    tmp_path: Path,
    complist: Path,
    variant: str,
    verdict: str,
    code: str,
    no_leaks: None,
) -> None:
    """The static probe's verdict equals what guarded ft+clearcal really do, and names the cause."""
    build: Builder = getattr(variants, variant)
    report = casaguard.probe(build(tmp_path / "probed.ms"))
    measured = reality(build, tmp_path, complist)
    assert code in report.codes(), report.to_dict()
    assert report.verdict == verdict, report.to_dict()
    assert real_verdict(measured) == verdict, measured
    assert "PROBE_ERROR" not in report.codes(), report.to_dict()


DROP_ROOT_CASES = [
    ("clean", "safe", None),
    ("read_only_dir", "unsafe", "MS_DIR_NOT_WRITABLE"),
    ("foreign_table_dat", "unsafe", "TABLE_DAT_NOT_WRITABLE"),
    ("read_only_history", "unsafe", "SUBTABLE_NOT_WRITABLE"),
]

_DROP_ROOT_SCRIPT = """
import json, casaguard
report = casaguard.probe({probed!r})
out = {{"verdict": report.verdict, "codes": report.codes()}}
for task, ms in (("ft", {ft_ms!r}), ("clearcal", {cc_ms!r})):
    try:
        if task == "ft":
            casaguard.ft(
                vis=ms, complist={complist!r}, usescratch=True, lock_timeout=3, journal=False
            )
        else:
            casaguard.clearcal(vis=ms, timeout=300, lock_timeout=3, journal=False)
        out[task] = "ok"
    except casaguard.CasaCrash as error:
        out[task] = error.kind
        out[task + "_casa_error"] = error.casa_error
print("RESULT", json.dumps(out))
"""


@pytest.mark.parametrize(
    ("variant", "verdict", "code"), DROP_ROOT_CASES, ids=[c[0] for c in DROP_ROOT_CASES]
)
def test_prediction_matches_reality_without_root_powers(
    variants: Variants, tmp_path: Path, complist: Path, variant: str, verdict: str, code: str | None
) -> None:
    """Probe and CASA both run as root without CAP_DAC_OVERRIDE (so modes count): verdicts agree."""
    build: Builder = getattr(variants, variant)
    # tmp_path is 0700 root's: root without DAC override still passes as owner.
    script = _DROP_ROOT_SCRIPT.format(
        probed=str(build(tmp_path / "probed.ms")),
        ft_ms=str(build(tmp_path / "ft.ms")),
        cc_ms=str(build(tmp_path / "cc.ms")),
        complist=str(complist),
    )
    result = subprocess.run(
        [*DROP_ROOT_POWERS, sys.executable, "-c", script],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, result.stderr[-3000:]
    out = json.loads(lines[0][len("RESULT ") :])
    assert out["verdict"] == verdict, out
    assert real_verdict({t: out[t] for t in ("ft", "clearcal")}) == verdict, out
    if code is not None:
        assert code in out["codes"], out
    else:
        assert not [
            c for c in out["codes"] if casaguard.preflight.findings.CODES[c].severity == "fatal"
        ], out
    if variant == "foreign_table_dat":
        # The field report's exact error, predicted before CASA ran.
        assert "Please make sure MS is writable" in (out.get("ft_casa_error") or ""), out


def test_root_with_dac_override_may_write_a_foreign_table_dat(
    variants: Variants, tmp_path: Path
) -> None:
    """Full root (CAP_DAC_OVERRIDE) may write a table.dat owned by nobody: no access finding."""
    report = casaguard.probe(variants.foreign_table_dat(tmp_path / "probed.ms"))
    assert "TABLE_DAT_NOT_WRITABLE" not in report.codes()
    assert "FOREIGN_OWNER" in report.codes()


@pytest.fixture
def write_locked_ms(variants: Variants, tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """An MS write-locked by another live process (python-casacore, permanent lock)."""
    ms = variants.clean(tmp_path / "locked.ms")
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(
            f"""
            import sys, time
            from casacore import tables as pt
            t = pt.table({str(ms)!r}, readonly=False, ack=False, lockoptions="permanent")
            print("locked", flush=True)
            time.sleep(600)
            """
        )],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "locked"
    try:
        yield ms, holder.pid
    finally:
        holder.kill()
        holder.wait()


def test_write_locked_ms_prediction_matches_reality(
    write_locked_ms: tuple[Path, int], complist: Path, no_leaks: None
) -> None:
    """A live write lock: the probe names the holder's pid; guarded ft and clearcal are blocked."""
    ms, holder_pid = write_locked_ms
    started = time.monotonic()
    report = casaguard.probe(ms)
    assert time.monotonic() - started < 30, "the probe must never wait for the lock"
    locked = [f for f in report.findings if f.code == "MS_LOCKED"]
    assert report.verdict == "unsafe"
    assert locked and locked[0].data["pid"] == holder_pid and locked[0].data["lock_type"] == "write"
    assert str(holder_pid) in locked[0].message
    # Reality, on the locked MS itself: CASA cannot get in (nothing is written).
    with pytest.raises(casaguard.MsLocked):
        casaguard.ft(vis=str(ms), complist=str(complist), usescratch=True, lock_timeout=2)
    with pytest.raises(casaguard.MsLocked):
        casaguard.clearcal(vis=str(ms), lock_timeout=2)


def test_wsclean_warning_predicts_the_wsclean_crash(variants: Variants, tmp_path: Path) -> None:
    """SPWs of different widths, no MODEL_DATA: the probe warns, and WSClean 3.1 really crashes."""
    ms = variants.ms_factory(tmp_path / "multi.ms", nchan=(4, 16))
    remove_scratch_columns(ms)
    report = casaguard.probe(ms)
    assert "WSCLEAN_MIXED_SPW_NO_MODEL" in report.codes()
    assert report.verdict == "safe"  # a warning for WSClean, not for CASA
    result = run_wsclean(ms, tmp_path / "img")
    assert result.returncode != 0, "WSClean 3.1 was expected to crash creating MODEL_DATA"


# --- canary -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variant", "verdict", "code"),
    [("clean", "safe", "CANARY_OK"), ("multi_spw_fixed_model", "unsafe", "CANARY_FAILED")],
)
def test_canary_agrees_with_the_static_verdict(
    variants: Variants, tmp_path: Path, variant: str, verdict: str, code: str, no_leaks: None
) -> None:
    """The canary (real ft+clearcal on a slice copy) reaches the verdict; the original is intact."""
    ms = getattr(variants, variant)(tmp_path / "probed.ms")
    before = _snapshot(ms)
    report = casaguard.probe(ms, canary=True)
    assert _snapshot(ms) == before
    assert code in report.codes(), report.to_dict()
    assert report.verdict == verdict
    if code == "CANARY_FAILED":
        failed = [f for f in report.findings if f.code == "CANARY_FAILED"]
        assert {f.data["task"] for f in failed} == {"ft"}
        assert failed[0].data["kind"] == "casa-severe"


# --- read-only -----------------------------------------------------------------------------


def _snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """(size, mtime_ns, sha256) of every file, and mtime_ns of every directory, under root."""
    state: dict[str, tuple[int, int, str]] = {}
    for path in sorted([root, *root.rglob("*")]):
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        state[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns, digest)
    return state


@pytest.mark.parametrize("variant", ["clean", "after_wsclean", "multi_spw_fixed_model"])
def test_probe_changes_no_byte_and_no_mtime(
    variants: Variants, tmp_path: Path, variant: str
) -> None:
    """After a probe every file (table.lock included) and directory is byte- and mtime-identical."""
    ms = getattr(variants, variant)(tmp_path / "probed.ms")
    before = _snapshot(ms)
    report = casaguard.probe(ms)
    assert report.facts.get("nrows"), "the probe must really have read the MS"
    assert _snapshot(ms) == before


def test_static_child_has_casacore_but_never_casatools(variants: Variants, tmp_path: Path) -> None:
    """The static child runs python-casacore without casatools; the caller loads neither."""
    report = casaguard.probe(variants.clean(tmp_path / "probed.ms"))
    assert report.facts["casacore_version"]
    assert report.facts["casatools_loaded"] is False
    assert not {"casacore", "casatools", "casatasks"} & set(sys.modules)


def test_truncated_storage_crash_names_where_it_died(variants: Variants, tmp_path: Path) -> None:
    """A storage file cut short kills the casacore child; the finding says what it was reading."""
    report = casaguard.probe(variants.truncated_storage(tmp_path / "probed.ms"))
    crashed = [f for f in report.findings if f.code == "PROBE_CRASHED"]
    assert crashed and crashed[0].data["signal"] == "SIGSEGV"
    assert "while it was at: read column" in crashed[0].message
