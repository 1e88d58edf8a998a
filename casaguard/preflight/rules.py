"""Pure rules: the static child's raw facts -> findings, in the order they run.

No I/O and no casacore: the facts dict comes from
``casaguard.remote.casacore.static.inspect_ms`` (read in a child), and every rule
is a plain function of it, so each can be checked against the facts of a real MS.
The rules live in three groups, each read alone:

- ``table_rules``: is each table there, reached as CASA reaches it, and readable;
- ``metadata_rules``: do SPECTRAL_WINDOW, POLARIZATION, DATA_DESCRIPTION and the main
  table's IDs and cell shapes agree;
- ``scratch_rules``: do MODEL_DATA and CORRECTED_DATA fit DATA, and who wrote them.

This module owns what no group can: the order the rules run in, and the two early
stops (a main table that does not open, a table that is not an MS at all). The order
is not group by group: ``table_rules``' input, reachability, column, lock and
read-error rules, then ``metadata_rules``, then ``table_rules.storage_findings``,
then ``scratch_rules``. ``ProbeReport.sort`` orders the findings afterwards.
"""

from __future__ import annotations

from typing import Any

from casaguard.preflight import metadata_rules, scratch_rules, table_rules
from casaguard.preflight.findings import Finding


def static_findings(ms: str, facts: dict[str, Any]) -> list[Finding]:
    """Turn the static child's facts into findings.

    Args:
        ms: the MS path (for messages and ``path`` fields).
        facts: what ``inspect_ms`` returned.

    Returns:
        The findings, unsorted.
    """
    if facts.get("open_error"):
        return [table_rules.open_error_finding(ms, facts)]
    findings: list[Finding] = []
    findings += table_rules.input_findings(ms, facts)
    if any(f.code == "NOT_AN_MS" for f in findings):
        return findings
    findings += table_rules.reachability_findings(ms, facts)
    findings += table_rules.required_column_findings(ms, facts)
    findings += table_rules.lock_sync_findings(ms, facts)
    findings += table_rules.read_error_findings(ms, facts)
    findings += metadata_rules.structure_findings(facts)
    findings += table_rules.storage_findings(ms, facts)
    findings += scratch_rules.model_findings(facts)
    findings += scratch_rules.corrected_findings(facts)
    findings += scratch_rules.provenance_findings(facts)
    return findings
