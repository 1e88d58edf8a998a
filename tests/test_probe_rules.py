"""Unit tests of the pure probe rules on facts recorded from real static-child runs.

The facts under tests/data/probe_facts/ are what ``casaguard.remote.casacore.static`` read
on real MS variants (tests/data/probe_facts/record_facts.py says how they were made);
no casacore and no child runs here. Where a test derives facts from a recording, the
change is the one a real variant makes (the recordings show both sides).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from casaguard.preflight import rules as probe_rules
from casaguard.preflight import table_rules
from casaguard.preflight.findings import CODES, Finding, ProbeReport

FACTS = Path(__file__).parent / "data" / "probe_facts"
MS = "<TMP>/variant.ms"

# recording, verdict of the static rules alone, codes that must be among the findings,
# codes that must not be (false alarms).
EXPECTED: list[tuple[str, str, set[str], set[str]]] = [
    ("clean", "safe", {"MODEL_DATA_BY_CASA"}, set()),
    ("after_wsclean", "safe", {"MODEL_DATA_BY_WSCLEAN"}, set()),
    ("nan_model", "safe", {"MODEL_DATA_NONFINITE"}, set()),
    ("multi_spw_fixed_model", "unsafe", {"MODEL_DATA_FIXED_SHAPE_MISMATCH"}, set()),
    ("mangled_spw", "unsafe", {"SPW_NUM_CHAN_MISMATCH", "DATA_SHAPE_MISMATCH"}, set()),
    ("empty", "unsafe", {"MS_EMPTY"}, set()),
    ("spw_rows_removed", "unsafe", {"COLUMN_UNREADABLE"}, {"DDID_BAD_SPW", "SUBTABLE_EMPTY"}),
    ("spw_zero_rows", "unsafe", {"SUBTABLE_EMPTY"}, {"DDID_BAD_SPW"}),
    ("feed_zero_rows", "unsafe", {"SUBTABLE_EMPTY"}, set()),
    ("keyword_missing", "unsafe", {"SUBTABLE_KEYWORD_MISSING"}, {"DDID_BAD_SPW"}),
    ("keyword_elsewhere", "safe", {"SUBTABLE_ELSEWHERE"}, set()),
    ("keyword_to_missing_table", "unsafe", {"SUBTABLE_MISSING"}, set()),
    ("subtable_table_dat_missing", "unsafe", {"SUBTABLE_MISSING"}, set()),
    ("truncated_main_table_dat", "unsafe", {"MAIN_TABLE_UNREADABLE"}, {"TABLE_UNREADABLE"}),
    ("truncated_pointing", "safe", set(), {"COLUMN_UNREADABLE", "SUBTABLE_UNREADABLE"}),
    ("ddid_out_of_range", "unsafe", {"MAIN_ID_OUT_OF_RANGE"}, set()),
    ("field_id_out_of_range", "unsafe", {"MAIN_ID_OUT_OF_RANGE"}, set()),
    ("antenna1_out_of_range", "safe", {"ANTENNA_ID_OUT_OF_RANGE"}, {"MAIN_ID_OUT_OF_RANGE"}),
    ("model_variable_multi_spw", "safe", {"MODEL_DATA_BY_CASA"}, {"MODEL_DATA_SHAPE_MISMATCH"}),
    ("lock_newer_than_data", "unsafe", {"LOCK_SYNC_MISMATCH"}, set()),
    ("corrected_fixed_multi_spw", "unsafe", {"CORRECTED_DATA_FIXED_SHAPE_MISMATCH"}, set()),
    ("main_column_missing", "unsafe", {"REQUIRED_COLUMN_MISSING"}, set()),
    ("spw_column_missing", "unsafe", {"REQUIRED_COLUMN_MISSING"}, set()),
    ("keyword_wrong_table", "unsafe", {"REQUIRED_COLUMN_MISSING"}, set()),
]


def load(name: str) -> dict[str, Any]:
    facts: dict[str, Any] = json.loads((FACTS / f"{name}.json").read_text())
    return facts


def verdict(findings: list[Finding]) -> str:
    return ProbeReport(ms=MS, findings=findings).verdict


def test_every_recording_is_covered() -> None:
    """Each recorded facts file has an expectation here, and each expectation a recording."""
    assert {p.stem for p in FACTS.glob("*.json")} == {name for name, *_ in EXPECTED}


@pytest.mark.parametrize(
    ("name", "expected", "present", "absent"), EXPECTED, ids=[e[0] for e in EXPECTED]
)
def test_rules_on_recorded_facts(
    name: str, expected: str, present: set[str], absent: set[str]
) -> None:
    """The rules turn each real variant's facts into its measured verdict and named cause."""
    findings = probe_rules.static_findings(MS, load(name))
    codes = {f.code for f in findings}
    assert verdict(findings) == expected, [f.to_dict() for f in findings]
    assert present <= codes, codes
    assert not absent & codes, codes
    assert not any(CODES[c].group in ("probe", "input") for c in codes), codes


def test_column_unreadable_is_one_finding_per_table_with_every_column() -> None:
    """All unreadable columns of a subtable make one finding that lists them in casacore's words."""
    facts = load("spw_rows_removed")
    [finding] = [f for f in probe_rules.static_findings(MS, facts) if f.code == "COLUMN_UNREADABLE"]
    failed = {e["column"] for e in facts["read_errors"] if e["table"] == "SPECTRAL_WINDOW"}
    assert set(finding.data["columns"]) == failed and "NUM_CHAN" in failed
    assert finding.data["table"] == "SPECTRAL_WINDOW"
    assert finding.message.startswith(
        f"column {finding.data['column']} of subtable SPECTRAL_WINDOW"
    )
    assert "SSMIndex::getIndex - access to non-existing row 0" in finding.message


def test_unreadable_main_table_with_subtables_is_damage_without_them_bad_input() -> None:
    """An unopenable main table beside subtables is a damaged MS; on its own it is bad input."""
    facts = load("truncated_main_table_dat")
    assert facts["subtable_dirs"], "the recording must show the subtables"
    [damaged] = probe_rules.static_findings(MS, facts)
    assert (damaged.code, damaged.group) == ("MAIN_TABLE_UNREADABLE", "storage")
    bare = {**facts, "subtable_dirs": []}
    [bad] = probe_rules.static_findings(MS, bare)
    assert (bad.code, bad.group) == ("TABLE_UNREADABLE", "input")


def test_required_subtable_without_keyword_is_fatal_for_each_of_them() -> None:
    """Removing any required subtable's keyword from clean facts gives SUBTABLE_KEYWORD_MISSING."""
    clean = load("clean")
    for name in table_rules.REQUIRED:
        facts = copy.deepcopy(clean)
        facts["subtables"][name].update(keyword=False, keyword_is_table=False, path=None)
        findings = probe_rules.static_findings(MS, facts)
        missing = [f for f in findings if f.code == "SUBTABLE_KEYWORD_MISSING"]
        assert [f.data["subtable"] for f in missing] == [name]
        assert verdict(findings) == "unsafe"


def test_only_subtables_casa_reads_rows_of_must_have_rows() -> None:
    """A zero-row POINTING/STATE/OBSERVATION is fine (measured); ANTENNA/FEED/... is fatal."""
    clean = load("clean")
    for name in table_rules.REQUIRED:
        facts = copy.deepcopy(clean)
        facts["subtables"][name]["nrows"] = 0
        codes = {f.code for f in probe_rules.static_findings(MS, facts)}
        assert ("SUBTABLE_EMPTY" in codes) == (name in table_rules.NEEDS_ROWS), name


def test_clean_facts_give_no_warning_or_fatal() -> None:
    """On a clean MS's facts every finding is information: the rules raise no false alarm."""
    findings = probe_rules.static_findings(MS, load("clean"))
    assert [f.code for f in findings if f.severity != "info"] == []


def test_lock_sync_mismatch_needs_a_column_count_that_differs() -> None:
    """Only a recorded column count unlike table.dat's is fatal; rows-only sync data is not."""
    facts = load("lock_newer_than_data")
    sync = facts["lock_sync"]
    assert sync["nrcolumn"] != len(facts["columns"]), "the recording must show the mismatch"
    clean = load("clean")
    assert clean["lock_sync"]["nrcolumn"] == len(clean["columns"])
    rows_only = copy.deepcopy(facts)
    rows_only["lock_sync"]["nrcolumn"] = -1  # TableSyncData::write(nrrow) leaves -1
    assert "LOCK_SYNC_MISMATCH" not in {f.code for f in probe_rules.static_findings(MS, rows_only)}
