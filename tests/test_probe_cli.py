"""``casaguard probe`` / ``casaguard doctor`` on real MSs, and the probe's parts on real files."""

from __future__ import annotations

import importlib.metadata
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import structlog
from probe_variants import Variants, remove_scratch_columns

import casaguard
from casaguard.cli import main as cli
from casaguard.cli.probe import exit_code
from casaguard.ms import access
from casaguard.preflight import doctor
from casaguard.preflight import host as probe_host
from casaguard.preflight.findings import CODES

PROBE_DOC = Path(__file__).resolve().parent.parent / "docs" / "probe.md"


@pytest.fixture(scope="session")
def variants(ms_factory: Any) -> Variants:
    """The variant builders, sharing the session's simulated MSs."""
    return Variants(ms_factory)


@pytest.fixture
def main() -> Any:
    """``casaguard.cli.main.main`` in-process; structlog's global config is reset afterwards."""
    yield cli.main
    # cli.main configures structlog to print to the (captured, soon closed) stderr.
    structlog.reset_defaults()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the real command line in a fresh interpreter (tracebacks would show on stderr)."""
    return subprocess.run(
        [sys.executable, "-m", "casaguard.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize("kind", ["missing", "file", "not_a_table", "garbage_table_dat"])
def test_bad_input_is_one_line_and_exit_2(variants: Variants, tmp_path: Path, kind: str) -> None:
    """Each kind of bad input gives exactly one line on stderr, exit code 2, and no traceback."""
    target = tmp_path / "target.ms"
    expected = {
        "missing": "PATH_MISSING",
        "file": "NOT_A_DIRECTORY",
        "not_a_table": "NOT_A_TABLE",
        "garbage_table_dat": "TABLE_UNREADABLE",
    }[kind]
    if kind == "file":
        target.write_text("not an MS\n")
    elif kind == "not_a_table":
        target.mkdir()
    elif kind == "garbage_table_dat":
        target.mkdir()
        (target / "table.dat").write_bytes(bytes(range(256)))
    result = _cli("probe", str(target))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    assert len(lines) == 1 and lines[0].startswith("casaguard: ") and f"({expected})" in lines[0]


def test_exit_codes_and_json_schema(variants: Variants, tmp_path: Path) -> None:
    """--json prints one document of the docs/probe.md schema; exit 0 all safe, 1 any unsafe."""
    clean = variants.clean(tmp_path / "clean.ms")
    fixed = variants.multi_spw_fixed_model(tmp_path / "fixed.ms")
    safe = _cli("probe", "--json", str(clean))
    assert safe.returncode == 0, safe.stderr
    doc = json.loads(safe.stdout)
    assert doc["schema"] == 1 and doc["exit_code"] == 0
    assert doc["reports"][0]["verdict"] == "safe"
    mixed = _cli("probe", "--json", "--jobs", "2", str(clean), str(fixed))
    assert mixed.returncode == 1, mixed.stderr
    doc = json.loads(mixed.stdout)
    assert set(doc) == {"schema", "exit_code", "environment", "reports"}
    assert [r["ms"] for r in doc["reports"]] == [str(clean), str(fixed)]
    assert [r["verdict"] for r in doc["reports"]] == ["safe", "unsafe"]
    report = doc["reports"][1]
    assert set(report) == {"ms", "verdict", "bad_input", "canary", "elapsed_s", "findings"}
    finding = next(f for f in report["findings"] if f["code"] == "MODEL_DATA_FIXED_SHAPE_MISMATCH")
    assert set(finding) == {"code", "severity", "group", "message", "fix", "path", "data"}
    assert finding["severity"] == "fatal" and finding["data"]["spw"] == 1
    assert doc["environment"]["packages"]["casatools"] == importlib.metadata.version("casatools")


def test_human_table_names_cause_and_fix(
    variants: Variants, tmp_path: Path, capsys: pytest.CaptureFixture[str], main: Any
) -> None:
    """The human output is a compact table: verdict line, then code, message and fix per finding."""
    ms = variants.mangled_spw(tmp_path / "mangled.ms")
    assert main(["probe", str(ms)]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith(f"{ms}: UNSAFE")
    assert re.search(r"x fatal SPW_NUM_CHAN_MISMATCH +SPECTRAL_WINDOW row 0: NUM_CHAN is 16", out)
    assert "fix: make NUM_CHAN equal" in out


def test_probe_timeout_gives_unknown_and_exit_2(variants: Variants, tmp_path: Path) -> None:
    """A static child killed by its timeout makes the verdict unknown (exit 2), not safe."""
    ms = variants.clean(tmp_path / "clean.ms")
    # A warm fork reads a small MS in tens of ms: a 1 ms deadline passes before it can reply.
    report = casaguard.probe(ms, timeout=0.001)
    assert "PROBE_TIMEOUT" in report.codes()
    assert report.verdict == "unknown"
    assert exit_code([report]) == 2


def test_map_probe_keeps_order_in_parallel(variants: Variants, tmp_path: Path) -> None:
    """map_probe with jobs=2 probes MSs concurrently, reports each as it completes, and
    returns the reports in the order given."""
    paths = [variants.clean(tmp_path / f"m{i}.ms") for i in range(3)]
    paths.insert(1, tmp_path / "missing.ms")
    seen: list[str] = []
    outcomes = casaguard.map_probe(
        paths, jobs=2, progress=lambda outcome, done, total: seen.append(outcome.value.ms)
    )
    reports = [outcome.value for outcome in outcomes]
    assert [r.ms for r in reports] == [str(p) for p in paths]
    assert sorted(seen) == sorted(str(p) for p in paths)
    assert [r.verdict for r in reports] == ["safe", "unsafe", "safe", "safe"]


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_only_on_a_terminal(variants: Variants, tmp_path: Path) -> None:
    """Many MSs draw the shared batch progress bar on a terminal, and nothing on a pipe."""
    from casaguard.batch import mapping as batch
    from casaguard.cli import batch as cli_batch

    paths = [variants.clean(tmp_path / f"m{i}.ms") for i in range(2)]
    tty, pipe = _Tty(), io.StringIO()
    for stream in (tty, pipe):
        bar = cli_batch.ProgressBar(len(paths), stream)
        outcomes = batch.map_probe(paths, progress=bar, jobs=2)
        bar.close()
        assert [o.value.verdict for o in outcomes] == ["safe", "safe"]
    assert "2/2" in tty.getvalue()
    assert pipe.getvalue() == ""


def test_doctor_reports_versions_without_loading_casa(
    capsys: pytest.CaptureFixture[str], main: Any
) -> None:
    """doctor's versions come from package metadata; the calling process loads no CASA library."""
    assert main(["doctor", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    for name in doctor.PACKAGES:
        assert doc["environment"]["packages"][name] == importlib.metadata.version(name)
    assert doc["environment"]["wsclean"]["path"] == "/usr/bin/wsclean"
    assert doc["environment"]["wsclean"]["version"].startswith("3.1")
    assert doc["environment"]["measures"]["found"] is True
    assert not {"casacore", "casatools", "casatasks"} & set(sys.modules)


def test_doctor_deep_loads_both_libraries_in_a_child(no_leaks: None) -> None:
    """--deep loads python-casacore and casatools together in children: clean with 3.8.1."""
    results = doctor.deep_check()
    assert [r["order"] for r in results] == ["casacore, then casatools", "casatools, then casacore"]
    # python-casacore 3.8.1 is installed here: the clash of < 3.8.1 must not happen.
    assert all(r["ok"] for r in results), results
    assert results[0]["versions"]["python-casacore"] == importlib.metadata.version(
        "python-casacore"
    )
    assert not {"casacore", "casatools"} & set(sys.modules)


def test_clash_risk_rule() -> None:
    """python-casacore below 3.8.1 next to casatools is flagged; 3.8.1 or no casatools is not."""
    assert doctor.clash_risk({"python-casacore": "3.7.1", "casatools": "6.7.0.31"})
    assert not doctor.clash_risk({"python-casacore": "3.8.1", "casatools": "6.7.0.31"})
    assert not doctor.clash_risk({"python-casacore": "3.5.0", "casatools": None})


def test_caller_with_casa_loaded_is_warned() -> None:
    """A calling process that already holds casacore gets a CALLER_HAS_CASA warning."""
    code = (
        "import casacore.tables, casaguard.preflight.doctor as d;"
        "print([f.code for f in d.environment_findings(d.environment())])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert "CALLER_HAS_CASA" in result.stdout


def test_write_access_follows_capabilities(tmp_path: Path) -> None:
    """Modes decide for a process without CAP_DAC_OVERRIDE; with it, everything is writable."""
    foreign = tmp_path / "table.dat"
    foreign.write_text("x")
    os.chown(foreign, 65534, 65534)
    foreign.chmod(0o644)
    locked_dir = tmp_path / "ro"
    locked_dir.mkdir(mode=0o555)
    powerless = access.Credentials(uid=0, gids=frozenset({0}), cap_eff=0)
    powerful = access.Credentials(uid=0, gids=frozenset({0}), cap_eff=1 << access.CAP_DAC_OVERRIDE)
    verdict = access.judge_write(foreign, powerless)
    assert not verdict.writable and "owner nobody" in verdict.reason
    assert access.judge_write(foreign, powerful).writable
    assert not access.judge_write(locked_dir, powerless).writable
    assert access.judge_write(tmp_path, powerless).writable  # root owns tmp_path: owner bits
    assert access.current_credentials().dac_override  # the tests run as full root


def test_every_code_is_documented_in_docs_probe() -> None:
    """docs/probe.md lists every finding code of findings.py with its severity and a fix hint."""
    text = PROBE_DOC.read_text()
    for code, info in CODES.items():
        row = re.search(rf"^\| `{code}` \| {info.severity} \| [^|]+ \| [^|]+ \|$", text, re.M)
        assert row, code


def test_disk_need_is_the_new_model_data_column(variants: Variants, tmp_path: Path) -> None:
    """Without MODEL_DATA, ft needs rows x channels x correlations x 8 bytes for each DDID."""
    ms = variants.ms_factory(tmp_path / "multi.ms", nchan=(4, 16))
    remove_scratch_columns(ms)
    facts = casaguard.probe(ms).facts
    assert probe_host.model_bytes_needed(facts) == 168 * 4 * 4 * 8 + 168 * 16 * 4 * 8
    with_model = casaguard.probe(variants.clean(tmp_path / "clean.ms")).facts
    assert probe_host.model_bytes_needed(with_model) == 0
