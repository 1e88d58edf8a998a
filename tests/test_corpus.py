"""Every reproducer of the crash corpus really ends in the crash kind it promises, leaking nothing.

Runs the whole corpus: real glibc, C++, CASA, WSClean and python-casacore crashes.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest

from casaguard.corpus import casacore_cache, regression, reproducers
from casaguard.corpus.workspace import Workspace
from casaguard.errors import EXCEPTION_FOR_KIND, InvalidInput


@pytest.fixture(scope="module")
def workspace() -> Iterator[Workspace]:
    """One corpus workspace for the module: each simulated MS is built once."""
    with Workspace() as space:
        yield space


@pytest.mark.parametrize("name", [r.name for r in reproducers.CORPUS])
def test_reproducer_ends_as_promised(name: str, workspace: Workspace, no_leaks: None) -> None:
    """The reproducer's guarded run ends in one of its expected kinds, with its evidence."""
    (result,) = regression.run(reproducers.select([name]), workspace=workspace)
    crash = result.outcome.crash
    assert crash is not None, f"{name} returned normally: {result.outcome.value!r}"
    assert crash.kind in result.reproducer.expect, str(crash)
    assert isinstance(crash, EXCEPTION_FOR_KIND[crash.kind])
    assert result.matched, f"{name}: evidence {result.reproducer.text!r} missing from {crash}"
    assert crash.signature


def test_every_reproducer_states_what_it_proves() -> None:
    """Names and claims are unique, each claim is one sentence, and each expects known kinds."""
    names = [r.name for r in reproducers.CORPUS]
    assert len(names) == len(set(names))
    claims = [r.proves for r in reproducers.CORPUS]
    assert len(claims) == len(set(claims)), "two reproducers claim the same thing"
    for reproducer in reproducers.CORPUS:
        # Quoted crash text (`corrupted size vs. prev_size`) may hold a full stop.
        prose = re.sub(r"`[^`]*`", "`...`", reproducer.proves)
        assert prose.strip() and "\n" not in prose, reproducer.name
        assert not re.search(r"[.!?](?:\s|$)", prose), f"{reproducer.name}: not one sentence"
        assert reproducer.expect, reproducer.name
        assert set(reproducer.expect) <= set(EXCEPTION_FOR_KIND), reproducer.name


CI_RUN = Path(__file__).parent.parent / ".ci" / "run"


def test_every_debian_package_a_reproducer_needs_is_installed_by_ci() -> None:
    """A reproducer's Debian library (libc++, tcmalloc) is on CI's apt-get install line."""
    installs = [line for line in CI_RUN.read_text().splitlines() if "apt-get install" in line]
    packages = {word for line in installs for word in line.split()}
    needed = {need for r in reproducers.CORPUS for need in r.needs} - {"casa", "wsclean"}
    assert {"libc++1-14", "libtcmalloc-minimal4"} <= needed
    assert needed <= packages, needed - packages


def test_unknown_reproducer_name_is_refused() -> None:
    """Asking for a reproducer that does not exist is an InvalidInput naming the known ones."""
    with pytest.raises(InvalidInput, match="glibc-double-free-out"):
        reproducers.select(["no-such-crash"])


def test_clash_package_stays_out_of_the_venv() -> None:
    """python-casacore 3.7.1 lives in a cache dir; the venv keeps its own python-casacore."""
    target = casacore_cache.casacore_clash_dir()
    assert (target / "python_casacore-3.7.1.dist-info").is_dir()
    assert not target.resolve().is_relative_to(Path(sys.prefix).resolve())
    assert metadata.version("python-casacore") != casacore_cache.CASACORE_CLASH_VERSION
    assert "casacore" not in sys.modules
