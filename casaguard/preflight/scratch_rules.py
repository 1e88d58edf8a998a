"""Rules on the scratch columns ft and clearcal write: MODEL_DATA and CORRECTED_DATA.

Does each exist, have the right type, fit DATA's shape in every spectral window, hold
finite values; and provenance: who made MODEL_DATA (CASA or WSClean, told apart by its
data manager), and the last application HISTORY records. Apart from the table and
metadata rules because an MS can be whole and self-consistent and still fail here: these
are about the columns the guarded tasks write. Shapes in the facts are numpy-ordered:
``[channels, correlations]``.
"""

from __future__ import annotations

from typing import Any

from casaguard.preflight.findings import Finding

FIX_RECREATE_MODEL = (
    "recreate MODEL_DATA with CASA (remove the column, then ft(usescratch=True)), "
    "or run ft before WSClean"
)


def _spw_of(facts: dict[str, Any], ddid: int) -> int | None:
    dds = list(facts.get("data_description") or [])
    return int(dds[ddid]["spw"]) if 0 <= ddid < len(dds) else None


def model_findings(facts: dict[str, Any]) -> list[Finding]:
    findings: list[Finding] = []
    use = facts.get("ddid_use", [])
    model = facts.get("coldesc", {}).get("MODEL_DATA")
    if model is None:
        findings.append(
            Finding(
                "MODEL_DATA_ABSENT", "MODEL_DATA does not exist; ft(usescratch=True) will create it"
            )
        )
        shapes = {tuple(u["data_shape"]) for u in use if u.get("data_shape")}
        channels = sorted({s[0] for s in shapes})
        if len(shapes) > 1:
            findings.append(
                Finding(
                    "WSCLEAN_MIXED_SPW_NO_MODEL",
                    f"spectral windows differ in shape ({', '.join(map(str, channels))} channels) "
                    "and "
                    "MODEL_DATA is absent: WSClean 3.1 crashes creating it",
                    "create MODEL_DATA with CASA first (ft(usescratch=True) or "
                    "clearcal(addmodel=True))",
                    data={"shapes": [list(s) for s in sorted(shapes)]},
                )
            )
        return findings
    if model["value_type"] != "complex" or model["ndim"] not in (2, -1):
        findings.append(
            Finding(
                "MODEL_DATA_BAD_TYPE",
                f"MODEL_DATA is a {model['value_type']} column of ndim {model['ndim']}, "
                "not a 2-d complex array",
                FIX_RECREATE_MODEL,
            )
        )
    kind = f"{model['dm_type']} ('{model['dm_group']}')"
    fixed = model["fixed_shape"] and model.get("shape")
    if fixed:
        for u in use:
            if u.get("data_shape") and u["data_shape"] != model["shape"]:
                spw = _spw_of(facts, u["ddid"])
                findings.append(
                    Finding(
                        "MODEL_DATA_FIXED_SHAPE_MISMATCH",
                        f"MODEL_DATA is a fixed-shape {kind} column of {model['shape'][0]} chan x "
                        f"{model['shape'][1]} corr (WSClean-style), but spw {spw} (DATA_DESC_ID "
                        f"{u['ddid']}) has {u['data_shape'][0]} x {u['data_shape'][1]}",
                        FIX_RECREATE_MODEL,
                        data={
                            "ddid": u["ddid"],
                            "spw": spw,
                            "model": model["shape"],
                            "data": u["data_shape"],
                        },
                    )
                )
    else:
        mismatched = [
            u
            for u in use
            if u.get("data_shape")
            and u.get("model_data_shape")
            and u["data_shape"] != u["model_data_shape"]
        ]
        sample = facts.get("model_sample", {}).get("shape_mismatches", [])
        if mismatched or sample:
            first = (
                {
                    "row": mismatched[0]["first_row"],
                    "model": mismatched[0]["model_data_shape"],
                    "data": mismatched[0]["data_shape"],
                }
                if mismatched
                else sample[0]
            )
            findings.append(
                Finding(
                    "MODEL_DATA_SHAPE_MISMATCH",
                    f"MODEL_DATA row {first['row']} is {first['model']} but DATA is "
                    f"{first['data']} "
                    "(ft logs SEVERE 'conformance error' and writes nothing)",
                    FIX_RECREATE_MODEL,
                    data=first,
                )
            )
    sample = facts.get("model_sample", {})
    if sample.get("nonfinite"):
        findings.append(
            Finding(
                "MODEL_DATA_NONFINITE",
                f"{sample['nonfinite']} NaN/Inf values in a {sample['rows']}-row sample of "
                "MODEL_DATA",
                "re-run ft (or clearcal(addmodel=True)) to reset MODEL_DATA",
            )
        )
    return findings


def corrected_findings(facts: dict[str, Any]) -> list[Finding]:
    """A fixed-shape CORRECTED_DATA that some DATA_DESC_ID's DATA does not fit (clearcal fails)."""
    corrected = facts.get("coldesc", {}).get("CORRECTED_DATA")
    if not corrected or not (corrected["fixed_shape"] and corrected.get("shape")):
        return []
    findings = []
    for use in facts.get("ddid_use", []):
        if use.get("data_shape") and use["data_shape"] != corrected["shape"]:
            spw = _spw_of(facts, use["ddid"])
            findings.append(
                Finding(
                    "CORRECTED_DATA_FIXED_SHAPE_MISMATCH",
                    f"CORRECTED_DATA is a fixed-shape column of {corrected['shape'][0]} chan x "
                    f"{corrected['shape'][1]} corr, but spw {spw} (DATA_DESC_ID {use['ddid']}) "
                    f"has {use['data_shape'][0]} x {use['data_shape'][1]} (clearcal: 'Table "
                    "array conformance error')",
                    "remove CORRECTED_DATA and let clearcal(addcorr=True) recreate it",
                    data={
                        "ddid": use["ddid"],
                        "spw": spw,
                        "corrected": corrected["shape"],
                        "data": use["data_shape"],
                    },
                )
            )
    return findings


def provenance_findings(facts: dict[str, Any]) -> list[Finding]:
    findings = []
    model = facts.get("coldesc", {}).get("MODEL_DATA")
    if model is not None:
        kind = f"{model['dm_type']} '{model['dm_group']}'"
        if model["dm_type"] == "StandardStMan" and model["fixed_shape"]:
            findings.append(
                Finding(
                    "MODEL_DATA_BY_WSCLEAN",
                    f"MODEL_DATA is a fixed-shape {kind} column: WSClean creates it so",
                    data={"data_manager": model["dm_type"], "group": model["dm_group"]},
                )
            )
        elif model["dm_type"].startswith("Tiled") or model["comment"] == "The model data column":
            findings.append(
                Finding(
                    "MODEL_DATA_BY_CASA",
                    f"MODEL_DATA is a variable-shape {kind} column: CASA creates it so",
                    data={"data_manager": model["dm_type"], "group": model["dm_group"]},
                )
            )
    history = facts.get("history") or {}
    if history.get("nrows"):
        findings.append(
            Finding(
                "HISTORY_LAST",
                f"HISTORY has {history['nrows']} rows; the last from "
                f"{history.get('application') or history.get('origin') or '?'}",
                data={k: history.get(k) for k in ("nrows", "application", "origin", "message")},
            )
        )
    return findings
