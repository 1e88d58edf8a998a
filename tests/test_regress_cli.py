"""``casaguard regress`` writes a diffable compatibility matrix; ``casaguard wsclean`` guards it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

CHEAP = "glibc-double-free-out,segfault,cxx-terminate,sigkill"


def casaguard_cli(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run the casaguard CLI in a subprocess, with crash evidence under tmp_path."""
    env = {**os.environ, "CASAGUARD_CRASH_DIR": str(tmp_path / "crashes")}
    return subprocess.run(
        [sys.executable, "-m", "casaguard.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )


def regress(tmp_path: Path, out: str) -> dict[str, Any]:
    result = casaguard_cli("regress", "--only", CHEAP, "--json", tmp_path=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    (tmp_path / out).write_text(result.stdout)  # stdout is the JSON document alone
    matrix: dict[str, Any] = json.loads((tmp_path / out).read_text())
    return matrix


def test_matrix_records_kinds_signatures_and_versions(tmp_path: Path) -> None:
    """The JSON holds each reproducer's kind, signal and signature, and the installed versions."""
    matrix = regress(tmp_path, "a.json")
    assert set(matrix["reproducers"]) == set(CHEAP.split(","))
    double_free = matrix["reproducers"]["glibc-double-free-out"]
    assert (double_free["kind"], double_free["signal"], double_free["matched"]) == (
        "double-free",
        "SIGABRT",
        True,
    )
    assert len(double_free["signature"]) == 12
    versions = matrix["versions"]
    assert versions["casatools"] == metadata.version("casatools")
    assert versions["python-casacore"] == metadata.version("python-casacore")
    assert versions["wsclean"] == "3.1.0"
    assert versions["casacore"] and versions["glibc"].startswith("glibc ")


def test_two_runs_of_the_same_versions_diff_to_nothing(tmp_path: Path) -> None:
    """The matrix has no pids, paths or times: the same environment gives the same file."""
    assert regress(tmp_path, "a.json") == regress(tmp_path, "b.json")


def test_unknown_reproducer_is_a_usage_error(tmp_path: Path) -> None:
    """--only with a name that is not in the corpus exits 2 and names the known reproducers."""
    result = casaguard_cli("regress", "--only", "no-such-crash", tmp_path=tmp_path)
    assert result.returncode == 2 and "glibc-double-free-out" in result.stderr


def test_cli_wsclean_reports_a_failed_run(tmp_path: Path) -> None:
    """`casaguard wsclean -- ARGS` exits 1 with WSClean's own error and casaguard's verdict."""
    result = casaguard_cli("wsclean", "--json", "--", "-no-such-option", tmp_path=tmp_path)
    assert result.returncode == 1
    facts = json.loads(result.stdout)
    assert (facts["ok"], facts["kind"], facts["exit_code"], facts["task"]) == (
        False,
        "exit",
        255,
        "wsclean",
    )
