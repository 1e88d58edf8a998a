"""``casaguard doctor`` tells the truth: it starts CASA with the effective config (issue 17.8).

A site config whose ``measurespath`` does not exist used to pass doctor ("measures
found", exit 0) and then break every call with an opaque "EXIT(1) and no reply".
Each scenario runs in a fresh interpreter, so the bad configuration never reaches
this process's warm template.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from next_reader import assert_casa_can_use

from casaguard import casaenv
from casaguard.journal import layout as journal_layout
from casaguard.preflight import doctor
from casaguard.sandbox import child as _child

_DOCTOR = """
import sys
from casaguard.cli.main import main
sys.exit(main(["doctor"] + sys.argv[1:]))
"""

_FT = """
import json, sys
import casaguard
from casaguard.errors import CasaCrash, SetupError
try:
    casaguard.ft(vis=sys.argv[1], complist=sys.argv[2], usescratch=True, mode=sys.argv[3])
except SetupError as error:
    result = {"type": "SetupError", "message": str(error)}
except CasaCrash as error:
    result = {"type": type(error).__name__, "message": str(error), "restored": error.restored}
else:
    result = {"type": None}
print("RESULT " + json.dumps(result))
"""


@pytest.fixture
def missing_measures(tmp_path: Path) -> dict[str, str]:
    """An environment whose site config points measurespath at a directory that does not exist."""
    site = tmp_path / "casasiteconfig.py"
    text = casaenv.site_config_text().replace(
        repr(str(casaenv.casadata_dir())), repr(str(tmp_path / "no-such-measures"))
    )
    site.write_text(text)
    site.chmod(0o600)
    env = dict(os.environ)
    env[casaenv.SITE_CONFIG_ENV] = str(site)
    return env


def _run(code: str, *args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
        check=False,
    )


def test_doctor_starts_casa_and_reads_a_measure() -> None:
    """With the working configuration, doctor's CASA child converts an epoch: TAI - UTC is 37 s."""
    result = doctor.casa_check()
    assert result["ok"], result
    assert abs(result["tai_minus_utc_s"] - doctor.TAI_MINUS_UTC_S) < 1e-3
    assert Path(result["leap_second_table"]).is_dir()
    assert result["measurespath"] == str(casaenv.casadata_dir())
    assert not {"casatools", "casatasks"} & set(sys.modules)


def test_doctor_fails_in_one_line_when_measurespath_does_not_exist(
    missing_measures: dict[str, str], tmp_path: Path
) -> None:
    """doctor exits 1 naming the missing measurespath in one line; --json carries the same cause."""
    text = _run(_DOCTOR, env=missing_measures, cwd=tmp_path)
    assert text.returncode == 1, text.stdout + text.stderr
    line = next(x for x in text.stdout.splitlines() if x.startswith("casa start"))
    assert "FAILED" in line and "no-such-measures' does not exist" in line
    assert "measures         found" not in text.stdout

    as_json = _run(_DOCTOR, "--json", env=missing_measures, cwd=tmp_path)
    assert as_json.returncode == 1
    report = json.loads(as_json.stdout[as_json.stdout.index("{") :])
    assert report["casa"]["ok"] is False
    assert "\n" not in report["casa"]["error"]
    assert report["casa"]["error"] in line


def _mtimes(ms: Path) -> dict[str, int]:
    """Every file's mtime, except the single-writer lock file any guarded write creates."""
    return {
        str(p.relative_to(ms)): p.stat().st_mtime_ns
        for p in ms.rglob("*")
        if p.name != journal_layout.WRITER_LOCK_FILE
    }


@pytest.mark.parametrize("mode", ["template", "spawn"])
def test_call_with_missing_measures_raises_setup_error_and_touches_nothing(
    missing_measures: dict[str, str], ms: Path, complist: Path, tmp_path: Path, mode: str
) -> None:
    """A guarded ft under that configuration raises SetupError in doctor's one line; no restore."""
    before = _mtimes(ms)
    result = _run(_FT, str(ms), str(complist), mode, env=missing_measures, cwd=tmp_path)
    lines = [x for x in result.stdout.splitlines() if x.startswith("RESULT ")]
    assert lines, result.stdout + result.stderr
    outcome = json.loads(lines[-1][len("RESULT ") :])
    assert outcome["type"] == "SetupError", outcome
    message = outcome["message"]
    assert "\n" not in message
    assert message.startswith(_child.CASA_SETUP_FAILED.split("{")[0])
    assert "no-such-measures' does not exist" in message
    doctor_json = _run(_DOCTOR, "--json", env=missing_measures, cwd=tmp_path).stdout
    assert json.loads(doctor_json[doctor_json.index("{") :])["casa"]["error"] == message
    assert "journal_restored" not in result.stdout and "crash_classified" not in result.stdout
    assert _mtimes(ms) == before
    assert_casa_can_use(ms, complist)
