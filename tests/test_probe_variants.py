"""Prediction against reality on MS variants built for issue 14: the MS read as CASA reads it.

Each variant is made for real (python-casacore surgery in a subprocess, the file system,
a SIGKILLed lock holder, real WSClean); reality is what real casatasks ft(usescratch=True)
and clearcal do, each in a fresh sandbox child on its own fresh copy
(``probe_variants.reality``). The probe must reach the same verdict, for the reason its
finding code names, and a damaged MS must never turn into a probe failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import DROP_ROOT_POWERS
from probe_variants import Builder, Variants, real_verdict, reality

import casaguard
from casaguard.cli.probe import exit_code
from casaguard.exits import EXIT_UNSAFE
from casaguard.preflight.findings import CODES

# variant, verdict measured with real CASA, the finding that must explain it (None: no
# fatal or warn finding at all -- a false alarm would be one).
CASES: list[tuple[str, str, str | None]] = [
    # Subtables as CASA reaches them: through the main table's keywords.
    ("keyword_missing", "unsafe", "SUBTABLE_KEYWORD_MISSING"),
    ("keyword_to_missing_table", "unsafe", "SUBTABLE_MISSING"),
    ("keyword_elsewhere", "safe", "SUBTABLE_ELSEWHERE"),
    ("subtable_renamed", "unsafe", "SUBTABLE_MISSING"),
    ("subtable_table_dat_missing", "unsafe", "SUBTABLE_MISSING"),
    ("truncated_subtable", "unsafe", "PROBE_CRASHED"),
    ("truncated_pointing", "safe", None),
    ("truncated_main_table_dat", "unsafe", "MAIN_TABLE_UNREADABLE"),
    ("keyword_wrong_table", "unsafe", "REQUIRED_COLUMN_MISSING"),
    ("main_column_missing", "unsafe", "REQUIRED_COLUMN_MISSING"),
    ("spw_column_missing", "unsafe", "REQUIRED_COLUMN_MISSING"),
    ("lock_newer_than_data", "unsafe", "LOCK_SYNC_MISMATCH"),
    ("no_lock_files", "safe", None),
    ("no_source", "safe", None),
    # Rows the main table refers to.
    ("spw_rows_removed", "unsafe", "COLUMN_UNREADABLE"),
    ("spw_zero_rows", "unsafe", "SUBTABLE_EMPTY"),
    ("pol_zero_rows", "unsafe", "SUBTABLE_EMPTY"),
    ("dd_zero_rows", "unsafe", "SUBTABLE_EMPTY"),
    ("field_zero_rows", "unsafe", "SUBTABLE_EMPTY"),
    ("antenna_zero_rows", "unsafe", "SUBTABLE_EMPTY"),
    ("feed_zero_rows", "unsafe", "SUBTABLE_EMPTY"),
    ("pointing_zero_rows", "safe", None),
    ("observation_zero_rows", "safe", None),
    ("state_zero_rows", "safe", None),
    ("ddid_out_of_range", "unsafe", "MAIN_ID_OUT_OF_RANGE"),
    ("field_id_out_of_range", "unsafe", "MAIN_ID_OUT_OF_RANGE"),
    ("antenna1_out_of_range", "safe", "ANTENNA_ID_OUT_OF_RANGE"),
    # Locks, paths: false alarms count as much as misses.
    ("stale_lock", "safe", None),
    ("via_symlink", "safe", None),
    # MODEL_DATA in other data managers and shapes.
    ("model_standard_stman", "safe", None),
    ("model_variable_multi_spw", "safe", None),
    ("model_cells_undefined", "safe", None),
    ("wsclean_predict", "safe", None),
    ("corrected_fixed_multi_spw", "unsafe", "CORRECTED_DATA_FIXED_SHAPE_MISMATCH"),
]


@pytest.fixture(scope="session")
def variants(ms_factory: Any) -> Variants:
    """The variant builders, sharing the session's simulated MSs."""
    return Variants(ms_factory)


def _assert_explained(report: casaguard.ProbeReport, verdict: str, code: str | None) -> None:
    assert report.verdict == verdict, report.to_dict()
    assert "PROBE_ERROR" not in report.codes(), report.to_dict()
    if code is None:
        assert not [f.code for f in report.findings if f.severity != "info"], report.to_dict()
    else:
        assert code in report.codes(), report.to_dict()


@pytest.mark.parametrize(("variant", "verdict", "code"), CASES, ids=[c[0] for c in CASES])
def test_prediction_matches_reality(
    variants: Variants,
    tmp_path: Path,
    complist: Path,
    variant: str,
    verdict: str,
    code: str | None,
    no_leaks: None,
) -> None:
    """The probe's verdict equals what real ft+clearcal do, names the cause, and never errs."""
    build: Builder = getattr(variants, variant)
    report = casaguard.probe(build(tmp_path / "probed.ms"))
    measured = reality(build, tmp_path, complist)
    assert real_verdict(measured) == verdict, measured
    _assert_explained(report, verdict, code)


def test_relative_path_is_safe(
    variants: Variants,
    tmp_path: Path,
    complist: Path,
    monkeypatch: pytest.MonkeyPatch,
    no_leaks: None,
) -> None:
    """An MS given relative to the working directory is safe for the probe and for CASA."""
    monkeypatch.chdir(tmp_path)

    def relative(dest: Path) -> Path:
        return Path(os.path.relpath(variants.relative_path(dest), tmp_path))

    report = casaguard.probe(relative(tmp_path / "probed.ms"))
    assert report.ms == str(tmp_path / "probed.ms")
    measured = reality(relative, tmp_path, complist)
    assert real_verdict(measured) == "safe", measured
    _assert_explained(report, "safe", None)


def test_subtable_findings_name_table_column_and_casacore_message(
    variants: Variants, tmp_path: Path
) -> None:
    """The issue's reproduction: an unreadable SPECTRAL_WINDOW row names table, column, message."""
    report = casaguard.probe(variants.spw_rows_removed(tmp_path / "probed.ms"))
    [finding] = [f for f in report.findings if f.code == "COLUMN_UNREADABLE"]
    assert finding.data["table"] == "SPECTRAL_WINDOW"
    assert "NUM_CHAN" in finding.data["columns"]
    assert "SSMIndex::getIndex - access to non-existing row 0" in finding.data["error"]
    assert finding.path == str(tmp_path / "probed.ms" / "SPECTRAL_WINDOW")
    assert report.verdict == "unsafe" and not report.bad_input


def test_keyword_missing_says_the_directory_is_there(variants: Variants, tmp_path: Path) -> None:
    """A subtable directory CASA cannot reach is reported as unreachable, not as absent."""
    report = casaguard.probe(variants.keyword_missing(tmp_path / "probed.ms"))
    [finding] = [f for f in report.findings if f.code == "SUBTABLE_KEYWORD_MISSING"]
    assert finding.data == {"subtable": "SPECTRAL_WINDOW", "dir_exists": True}
    assert "exists, but CASA does not look there" in finding.message
    # The unreachable SPECTRAL_WINDOW is not also misreported as a dangling DDID link.
    assert "DDID_BAD_SPW" not in report.codes()


def test_lock_sync_data_is_read_from_a_real_table_lock(ms: Path) -> None:
    """The sync data casacore left in a simulated MS's table.lock: its rows and columns."""
    from casaguard.remote.casacore.lock_sync import read_lock_sync

    sync = read_lock_sync(str(ms))
    assert sync is not None and sync["nrrow"] == 168
    facts = casaguard.probe(ms).facts
    assert sync["nrcolumn"] == len(facts["columns"]) == 24
    assert read_lock_sync(str(ms / "no-such-table")) is None


def test_keyword_elsewhere_records_the_path_relative_to_the_ms(
    variants: Variants, tmp_path: Path
) -> None:
    """A keyword pointing into another MS is followed (as CASA does) and its path reported."""
    report = casaguard.probe(variants.keyword_elsewhere(tmp_path / "probed.ms"))
    [finding] = [f for f in report.findings if f.code == "SUBTABLE_ELSEWHERE"]
    assert finding.data["relative"] == "../probed.ms.other/FIELD"
    assert report.facts["subtables"]["SPECTRAL_WINDOW"]["relative"] == "SPECTRAL_WINDOW"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "casaguard.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_batch_keeps_each_verdict_and_a_damaged_ms_is_exit_1(
    variants: Variants, tmp_path: Path
) -> None:
    """A batch with damaged MSs reports each verdict; exit 1 (unsafe), never 2 (probe failure)."""
    damaged = ["spw_rows_removed", "spw_zero_rows", "keyword_missing", "missing_subtable", "empty"]
    paths = [variants.clean(tmp_path / "clean.ms")]
    paths += [getattr(variants, name)(tmp_path / f"{name}.ms") for name in damaged]
    result = _cli("probe", "--json", "--jobs", "2", *map(str, paths))
    assert result.returncode == EXIT_UNSAFE, result.stderr
    doc = json.loads(result.stdout)
    assert doc["exit_code"] == EXIT_UNSAFE
    assert [r["verdict"] for r in doc["reports"]] == ["safe"] + ["unsafe"] * len(damaged)
    assert not any(r["bad_input"] for r in doc["reports"])


def test_every_damaged_variant_is_unsafe_not_bad_input(variants: Variants, tmp_path: Path) -> None:
    """No damaged MS of the corpus gives PROBE_ERROR, an unknown verdict or exit code 2."""
    damaged = [name for name, verdict, _ in CASES if verdict == "unsafe"]
    damaged += ["missing_subtable", "empty", "truncated_storage", "mangled_spw"]
    outcomes = casaguard.map_probe(
        [getattr(variants, name)(tmp_path / f"{name}.ms") for name in damaged], jobs=2
    )
    reports = [outcome.value for outcome in outcomes]
    for name, report in zip(damaged, reports, strict=True):
        assert report.verdict == "unsafe", (name, report.to_dict())
        assert not report.bad_input, (name, report.to_dict())
        assert not [f for f in report.findings if f.group == "probe"], (name, report.to_dict())
    assert exit_code(reports) == EXIT_UNSAFE


# Files of another user (uid 65534), judged by root without CAP_DAC_OVERRIDE: modes count.
DROP_ROOT_CASES: list[tuple[str, str, str | None]] = [
    # world-writable everywhere: CASA writes it, the probe must not object
    ("foreign_world_writable", "safe", None),
    # a subtable ft and clearcal never write (ANTENNA), read-only: CASA works
    ("foreign_read_only_antenna", "safe", None),
    # the main table.lock read-only: 'Error (Bad file descriptor) when acquiring lock'
    ("foreign_read_only_main_lock", "unsafe", "TABLE_FILE_NOT_WRITABLE"),
]

_DROP_ROOT_SCRIPT = """
import json, casaguard
report = casaguard.probe({probed!r})
out = {{"verdict": report.verdict, "codes": report.codes(),
        "severities": {{f.code: f.severity for f in report.findings}}}}
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
print("RESULT", json.dumps(out))
"""


@pytest.mark.parametrize(
    ("variant", "verdict", "code"), DROP_ROOT_CASES, ids=[c[0] for c in DROP_ROOT_CASES]
)
def test_foreign_owned_prediction_matches_reality_without_root_powers(
    variants: Variants, tmp_path: Path, complist: Path, variant: str, verdict: str, code: str | None
) -> None:
    """Foreign-owned files: probe and CASA run without DAC override, and their verdicts agree."""
    build: Builder = getattr(variants, variant)
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
    assert real_verdict({t: out[t] for t in ("ft", "clearcal")}) == verdict, out
    assert out["verdict"] == verdict, out
    assert "FOREIGN_OWNER" in out["codes"], out  # said, as information only
    assert CODES["FOREIGN_OWNER"].severity == "info"
    if code is None:
        assert [c for c, s in out["severities"].items() if s != "info"] == [], out
    else:
        assert code in out["codes"], out
