"""The pytest plugin works in a fresh project that only installed casaguard.

A temporary project with one test file (no conftest, no plugin option) is run
by pytest in a subprocess with this venv's python: the plugin must arrive
through the ``pytest11`` entry point, and the outcomes and report text are
checked from the JUnit XML and the terminal report.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import casaguard
from casaguard import testing

USER_TESTS = """
import pytest

from casaguard import crashers


@pytest.mark.casaguard(expect="double-free", timeout=60, casa=False)
def test_known_double_free():
    crashers.double_free_out()


@pytest.mark.casaguard(expect="double-free", timeout=60, casa=False)
def test_crash_fixed_upstream():
    return None


@pytest.mark.casaguard(expect=["segfault", "heap-corruption"], timeout=60, casa=False)
def test_one_of_several_kinds():
    crashers.segfault()


@pytest.mark.casaguard(timeout=60, casa=False)
def test_isolated_and_fine(tmp_path):
    (tmp_path / "written-in-the-child").write_text("ok")
    assert (tmp_path / "written-in-the-child").read_text() == "ok"


@pytest.mark.casaguard(timeout=60)
def test_isolated_crash_with_casa_log():
    import casatools  # noqa: F401 - a CASA process, so the report names a CASA log
    crashers.segfault()


@pytest.mark.casaguard(timeout=60, casa=False)
def test_assertion_in_the_child():
    assert 1 + 1 == 3


@pytest.mark.casaguard(expect="segfault", timeout=60, casa=False)
def test_wrong_kind():
    crashers.abort()


@pytest.mark.casaguard(timeout=60, casa=False)
def test_fixture_not_picklable(request):
    pass


@pytest.mark.casaguard(timeout=60, casa=False)
def test_child_never_imports_this_module():
    import sys
    assert "test_crashes" not in sys.modules


def test_sandbox_fixture(casaguard_sandbox):
    crashed = casaguard_sandbox(crashers.invalid_pointer, casa=False)
    assert not crashed.ok and crashed.kind == "invalid-pointer" and crashed.signal == "SIGABRT"
    assert crashed.signature == crashed.crash.signature
    fine = casaguard_sandbox(lambda x: x + 1, 41, casa=False)
    assert fine.ok and fine.value == 42 and fine.kind == "ok"
"""

EXPECTED = {
    "test_known_double_free": "passed",
    "test_crash_fixed_upstream": "failed",
    "test_one_of_several_kinds": "passed",
    "test_isolated_and_fine": "passed",
    "test_isolated_crash_with_casa_log": "failed",
    "test_assertion_in_the_child": "failed",
    "test_wrong_kind": "failed",
    "test_fixture_not_picklable": "failed",
    "test_child_never_imports_this_module": "passed",
    "test_sandbox_fixture": "passed",
}


@pytest.fixture(scope="module")
def user_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], str]:
    """Run the user project once; return each test's outcome and pytest's terminal report."""
    project = tmp_path_factory.mktemp("user-project")
    (project / "test_crashes.py").write_text(textwrap.dedent(USER_TESTS))
    junit = project / "report.xml"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    # The package under test (this checkout) wins over the venv's install, as in our own runs;
    # the plugin itself is found through the installed pytest11 entry point.
    env["PYTHONPATH"] = str(Path(casaguard.__file__).resolve().parent.parent)
    env["CASAGUARD_CRASH_DIR"] = str(project / "crashes")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-rA", "-p", "no:cacheprovider", f"--junitxml={junit}"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    outcomes: dict[str, str] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        failed = case.find("failure") is not None or case.find("error") is not None
        outcomes[case.attrib["name"]] = "failed" if failed else "passed"
    return outcomes, result.stdout + result.stderr


def test_plugin_arrives_through_the_entry_point(user_run: tuple[dict[str, str], str]) -> None:
    """pytest lists casaguard among its plugins in a project that never named it."""
    _, report = user_run
    assert "casaguard-" in next(line for line in report.splitlines() if line.startswith("plugins:"))


def test_each_user_test_ends_as_designed(user_run: tuple[dict[str, str], str]) -> None:
    """Expected crashes pass, a vanished crash and unexpected crashes fail, fine tests pass."""
    outcomes, report = user_run
    assert outcomes == EXPECTED, report
    assert "5 failed, 5 passed" in report


def test_vanished_crash_fails_loudly(user_run: tuple[dict[str, str], str]) -> None:
    """A crash that no longer happens fails with the 'CASA may have fixed it' message."""
    _, report = user_run
    assert testing.RETURNED_NORMALLY.format(expect="double-free") in report


def test_crash_report_has_kind_signal_casa_log_and_stderr(
    user_run: tuple[dict[str, str], str],
) -> None:
    """A crashed test's report shows kind, signal name, CASA log path and the stderr tail."""
    _, report = user_run
    section = report.split("Captured casaguard call", 1)[1]
    assert "kind:       segfault" in section
    assert "signal:     SIGSEGV (exit status -11)" in section
    assert "casa_error: -" in section
    log_line = next(line for line in section.splitlines() if line.startswith("CASA log:"))
    assert log_line.rstrip().endswith("casa.log")
    assert "Fatal Python error: Segmentation fault" in section


def test_wrong_kind_and_child_assertion_are_explained(user_run: tuple[dict[str, str], str]) -> None:
    """A different crash kind names both kinds; an assert in the child shows its traceback."""
    _, report = user_run
    assert "expected segfault but the sandbox child ended in abort" in report
    assert "the test raised in its sandbox child" in report
    assert "assert 1 + 1 == 3" in report


def test_unpicklable_fixture_is_named(user_run: tuple[dict[str, str], str]) -> None:
    """A fixture value that cannot travel to the child is named in the failure."""
    _, report = user_run
    assert "its fixture values must be picklable; fixture 'request' (" in report
