"""The pytest plugin works in a fresh project that only pip-installed casaguard.

A new virtual environment gets casaguard by ``pip install`` of a wheel built
from this checkout (no editable install, no PYTHONPATH); its dependencies
(CASA is large) are borrowed read-only from this venv through a ``.pth`` line.
A temporary project with one test file (no conftest, no plugin option) is run
by that venv's pytest in a subprocess: the plugin must arrive through the
``pytest11`` entry point, and the outcomes and report text are checked from
the JUnit XML and the terminal report.
"""

from __future__ import annotations

import os
import shutil
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

from casaguard.corpus import crashers


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


@pytest.mark.casaguard(timeout=120)
def test_casacore_with_casatasks_in_a_template_fork():
    import casacore.tables  # noqa: F401
    import casatasks  # noqa: F401


@pytest.mark.casaguard(mode="spawn", timeout=120)
def test_casacore_with_casatasks_spawned():
    import casacore.tables  # noqa: F401
    import casatasks  # noqa: F401
    import os
    assert os.getppid() != 1


@pytest.mark.casaguard(mode="fork-please", casa=False)
def test_unknown_mode():
    pass


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
    "test_casacore_with_casatasks_in_a_template_fork": "failed",
    "test_casacore_with_casatasks_spawned": "passed",
    "test_unknown_mode": "failed",
    "test_sandbox_fixture": "passed",
}


def fresh_venv(root: Path) -> Path:
    """Make a venv with casaguard pip-installed from a wheel of this checkout; return its python."""
    checkout = Path(casaguard.__file__).resolve().parent.parent
    source = root / "source"
    shutil.copytree(checkout / "casaguard", source / "casaguard")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(checkout / name, source / name)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site_packages = venv / "lib" / version / "site-packages"
    borrowed = next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
    (site_packages / "borrowed-deps.pth").write_text(borrowed + "\n")
    # pip runs *in the fresh venv* (it is among the borrowed packages): it installs there and
    # refuses to touch the borrowed casaguard, which lies outside that environment.
    subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            str(source),
        ],
        check=True,
        capture_output=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    return venv / "bin" / "python"


@pytest.fixture(scope="module")
def user_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], str]:
    """Run the user project once; return each test's outcome and pytest's terminal report."""
    python = fresh_venv(tmp_path_factory.mktemp("fresh-venv"))
    project = tmp_path_factory.mktemp("user-project")
    (project / "test_crashes.py").write_text(textwrap.dedent(USER_TESTS))
    junit = project / "report.xml"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST") and k != "PYTHONPATH"}
    env["CASAGUARD_CRASH_DIR"] = str(project / "crashes")
    result = subprocess.run(
        [str(python), "-m", "pytest", "-rA", "-p", "no:cacheprovider", f"--junitxml={junit}"],
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


def test_the_fresh_venv_runs_the_installed_copy(tmp_path: Path) -> None:
    """The fresh venv imports casaguard from its own site-packages, not from this checkout."""
    python = fresh_venv(tmp_path)
    where = subprocess.run(
        [str(python), "-c", "import casaguard; print(casaguard.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        cwd=tmp_path,
    ).stdout.strip()
    assert where.startswith(str(tmp_path / "venv")), where


def test_each_user_test_ends_as_designed(user_run: tuple[dict[str, str], str]) -> None:
    """Expected crashes pass, a vanished crash and unexpected crashes fail, fine tests pass."""
    outcomes, report = user_run
    assert outcomes == EXPECTED, report
    assert "7 failed, 6 passed" in report


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


def test_marker_mode_spawn_runs_what_a_fork_refuses(user_run: tuple[dict[str, str], str]) -> None:
    """mode='spawn' on the marker runs a test importing python-casacore with casatasks (a CASA
    template fork refuses it, advising mode='spawn'); an unknown mode fails naming the choices."""
    outcomes, report = user_run
    assert outcomes["test_casacore_with_casatasks_spawned"] == "passed", report
    assert outcomes["test_casacore_with_casatasks_in_a_template_fork"] == "failed"
    assert "run this call with mode='spawn'" in report
    assert f"casaguard mode='fork-please': use one of {testing.MODES}" in report


def test_unpicklable_fixture_is_named(user_run: tuple[dict[str, str], str]) -> None:
    """A fixture value that cannot travel to the child is named in the failure."""
    _, report = user_run
    assert "its fixture values must be picklable; fixture 'request' (" in report
