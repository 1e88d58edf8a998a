"""Rules on the MS's description of its own data: do its metadata agree with each other.

Each SPECTRAL_WINDOW row's channel arrays against its NUM_CHAN, each POLARIZATION row's
CORR_TYPE against its NUM_CORR, each DATA_DESCRIPTION row's links, the main table's ID
ranges against their subtables, and DATA's cells against NUM_CHAN x NUM_CORR. Apart
from the table rules because these read rows, and stay silent on a subtable whose
trouble (not reached, partly unreadable, empty) the table rules report already.
Shapes in the facts are numpy-ordered: ``[channels, correlations]``.
"""

from __future__ import annotations

from typing import Any

from casaguard.preflight.findings import Finding

ID_TARGETS = {
    "DATA_DESC_ID": "DATA_DESCRIPTION",
    "FIELD_ID": "FIELD",
    "ANTENNA1": "ANTENNA",
    "ANTENNA2": "ANTENNA",
}
#: Main-table IDs out of range that ft and clearcal survive (measured): a warning only.
WARN_ONLY_IDS = ("ANTENNA1", "ANTENNA2")


def _unreadable(facts: dict[str, Any]) -> set[str]:
    """Tables whose rows the static child could not all read (their row lists are partial)."""
    return {str(e.get("table", "")) for e in facts.get("read_errors", [])}


def _empty(facts: dict[str, Any], name: str) -> bool:
    return bool(facts.get("subtables", {}).get(name, {}).get("nrows") == 0)


def _spw_rows(facts: dict[str, Any]) -> list[dict[str, Any]]:
    return list(facts.get("spw") or [])


def structure_findings(facts: dict[str, Any]) -> list[Finding]:
    findings: list[Finding] = []
    spws = _spw_rows(facts)
    pols = list(facts.get("polarization") or [])
    dds = list(facts.get("data_description") or [])
    for spw in spws:
        wrong = {c: n for c, n in spw["lengths"].items() if n is not None and n != spw["num_chan"]}
        if wrong:
            listing = ", ".join(f"{c} has {n}" for c, n in wrong.items())
            findings.append(
                Finding(
                    "SPW_NUM_CHAN_MISMATCH",
                    f"SPECTRAL_WINDOW row {spw['row']}: NUM_CHAN is {spw['num_chan']} but "
                    f"{listing}",
                    "make NUM_CHAN equal the channel arrays' length (ft silently writes nothing "
                    "otherwise)",
                    data={"spw": spw["row"], "num_chan": spw["num_chan"], "lengths": wrong},
                )
            )
        bad = spw.get("freq_nonfinite", 0) + spw.get("freq_nonpositive", 0)
        if bad:
            findings.append(
                Finding(
                    "SPW_BAD_FREQ",
                    f"SPECTRAL_WINDOW row {spw['row']}: {spw.get('freq_nonfinite', 0)} non-finite "
                    "and "
                    f"{spw.get('freq_nonpositive', 0)} non-positive CHAN_FREQ values",
                    "repair CHAN_FREQ; imaging and calibration need real frequencies",
                    data={"spw": spw["row"]},
                )
            )
    for pol in pols:
        if pol["corr_type_len"] is not None and pol["corr_type_len"] != pol["num_corr"]:
            findings.append(
                Finding(
                    "POL_NUM_CORR_MISMATCH",
                    f"POLARIZATION row {pol['row']}: NUM_CORR is {pol['num_corr']} but CORR_TYPE "
                    f"has {pol['corr_type_len']} entries",
                    "make NUM_CORR equal the length of CORR_TYPE",
                    data={"pol": pol["row"]},
                )
            )
    partial = _unreadable(facts)
    # A subtable not reached, partly unreadable or empty has its own finding already.
    check_spw = (
        facts.get("spw") is not None
        and "SPECTRAL_WINDOW" not in partial
        and not _empty(facts, "SPECTRAL_WINDOW")
    )
    check_pol = (
        facts.get("polarization") is not None
        and "POLARIZATION" not in partial
        and not _empty(facts, "POLARIZATION")
    )
    for dd in dds:
        if check_spw and not 0 <= dd["spw"] < len(spws):
            findings.append(
                Finding(
                    "DDID_BAD_SPW",
                    f"DATA_DESCRIPTION row {dd['row']} points at SPECTRAL_WINDOW row {dd['spw']}, "
                    f"which does not exist ({len(spws)} rows)",
                    "repair SPECTRAL_WINDOW_ID in DATA_DESCRIPTION",
                    data={"ddid": dd["row"], "spw": dd["spw"]},
                )
            )
        if check_pol and not 0 <= dd["pol"] < len(pols):
            findings.append(
                Finding(
                    "DDID_BAD_POL",
                    f"DATA_DESCRIPTION row {dd['row']} points at POLARIZATION row {dd['pol']}, "
                    f"which does not exist ({len(pols)} rows)",
                    "repair POLARIZATION_ID in DATA_DESCRIPTION",
                    data={"ddid": dd["row"], "pol": dd["pol"]},
                )
            )
    subtables = facts.get("subtables", {})
    for column, (low, high) in facts.get("id_ranges", {}).items():
        target = ID_TARGETS.get(column)
        size = subtables.get(target, {}).get("nrows")
        if target and size and (low < 0 or high >= size):
            # An empty target is SUBTABLE_EMPTY's finding, not this one's.
            warn = column in WARN_ONLY_IDS
            findings.append(
                Finding(
                    "ANTENNA_ID_OUT_OF_RANGE" if warn else "MAIN_ID_OUT_OF_RANGE",
                    f"main-table {column} spans {low}..{high} but {target} has {size} rows"
                    + (" (ft and clearcal do not look the antennas up)" if warn else ""),
                    f"repair {column} or the {target} subtable",
                    data={"column": column, "min": low, "max": high, "rows": size},
                )
            )
    for use in facts.get("ddid_use", []):
        expected = expected_shape(facts, use["ddid"])
        shape = use.get("data_shape")
        if expected and shape and shape != expected:
            findings.append(
                Finding(
                    "DATA_SHAPE_MISMATCH",
                    f"DATA_DESC_ID {use['ddid']}: DATA cells are {shape[0]} chan x {shape[1]} corr "
                    f"but its SPECTRAL_WINDOW/POLARIZATION say {expected[0]} x {expected[1]}",
                    "repair NUM_CHAN / NUM_CORR (ft logs SEVERE and writes nothing otherwise)",
                    data={"ddid": use["ddid"], "data_shape": shape, "expected": expected},
                )
            )
    return findings


def expected_shape(facts: dict[str, Any], ddid: int) -> list[int] | None:
    """``[NUM_CHAN, NUM_CORR]`` of a DATA_DESC_ID, or None when a link is broken."""
    dds = list(facts.get("data_description") or [])
    spws = _spw_rows(facts)
    pols = list(facts.get("polarization") or [])
    if not 0 <= ddid < len(dds):
        return None
    dd = dds[ddid]
    if not (0 <= dd["spw"] < len(spws) and 0 <= dd["pol"] < len(pols)):
        return None
    return [int(spws[dd["spw"]]["num_chan"]), int(pols[dd["pol"]]["num_corr"])]
