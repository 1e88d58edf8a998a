"""``map_task(..., probe_first=True)`` and ``casaguard run ... --probe-first``: a batch never
writes to an MS the probe calls unsafe, and reports it with the probe's findings."""

from __future__ import annotations

import hashlib
import json
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from next_reader import assert_casa_can_use
from probe_variants import Variants

import casaguard
from casaguard.preflight.findings import MsUnsafe


@pytest.fixture(scope="session")
def variants(ms_factory: Any) -> Variants:
    """The variant builders, sharing the session's simulated MSs."""
    return Variants(ms_factory)


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_map_task_skips_the_unsafe_ms_and_runs_the_safe_one(
    variants: Variants, tmp_path: Path, complist: Path, no_leaks: None
) -> None:
    """probe_first: the unsafe MS is skipped untouched with its findings; the safe one is run."""
    safe = variants.clean(tmp_path / "clean.ms")
    unsafe = variants.multi_spw_fixed_model(tmp_path / "fixed.ms")
    before = _digest(unsafe)
    outcomes = casaguard.map_task(
        "ft",
        [{"vis": str(ms), "complist": str(complist), "usescratch": True} for ms in (safe, unsafe)],
        probe_first=True,
        jobs=2,
    )
    assert outcomes[0].ok, outcomes[0].facts()
    assert not outcomes[1].ok and isinstance(outcomes[1].error, MsUnsafe)
    error = outcomes[1].error
    assert error.codes == ["MODEL_DATA_FIXED_SHAPE_MISMATCH"]
    assert error.report.verdict == "unsafe" and error.vis == str(unsafe)
    assert "MODEL_DATA_FIXED_SHAPE_MISMATCH" in str(error)
    assert _digest(unsafe) == before, "a skipped MS must not be written"
    # The error survives the trip back from a Dask worker.
    assert pickle.loads(pickle.dumps(error)).codes == error.codes
    assert_casa_can_use(safe, complist)


def test_without_probe_first_ft_really_fails_on_that_ms(
    variants: Variants, tmp_path: Path, complist: Path
) -> None:
    """The same unsafe MS without probe_first: real ft fails (so the skip prevented a failure)."""
    unsafe = variants.multi_spw_fixed_model(tmp_path / "fixed.ms")
    [outcome] = casaguard.map_task(
        "ft", [{"vis": str(unsafe), "complist": str(complist), "usescratch": True}]
    )
    assert not outcome.ok and isinstance(outcome.error, casaguard.CasaCrash)


def test_cli_probe_first_reports_the_skip_and_exits_1(
    variants: Variants, tmp_path: Path, complist: Path
) -> None:
    """casaguard run --probe-first: the JSON table names the skipped MS's codes; exit code 1."""
    safe = variants.clean(tmp_path / "clean.ms")
    unsafe = variants.spw_zero_rows(tmp_path / "zero.ms")
    result = subprocess.run(
        [sys.executable, "-m", "casaguard.cli.main", "run", "ft", "--vis", str(safe), str(unsafe),
         "--param", f"complist={complist}", "--param", "usescratch=true", "--probe-first",
         "--json"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    doc = json.loads(result.stdout)
    assert [o["ok"] for o in doc["outcomes"]] == [True, False]
    skipped = doc["outcomes"][1]
    assert skipped["kind"] == "error:MsUnsafe"
    assert skipped["error"]["type"] == "MsUnsafe"
    assert "SUBTABLE_EMPTY" in skipped["error"]["message"]
