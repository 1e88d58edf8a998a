"""Every reproducer of the crash corpus really ends in the crash kind it promises, leaking nothing.

Runs the whole corpus: real glibc, C++, CASA, WSClean and python-casacore crashes.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest

from casaguard import corpus
from casaguard.errors import EXCEPTION_FOR_KIND, InvalidInput


@pytest.fixture(scope="module")
def workspace() -> Iterator[corpus.Workspace]:
    """One corpus workspace for the module: each simulated MS is built once."""
    with corpus.Workspace() as space:
        yield space


@pytest.mark.parametrize("name", [r.name for r in corpus.CORPUS])
def test_reproducer_ends_as_promised(
    name: str, workspace: corpus.Workspace, no_leaks: None
) -> None:
    """The reproducer's guarded run ends in one of its expected kinds, with its evidence."""
    (result,) = corpus.run(corpus.select([name]), workspace=workspace)
    crash = result.outcome.crash
    assert crash is not None, f"{name} returned normally: {result.outcome.value!r}"
    assert crash.kind in result.reproducer.expect, str(crash)
    assert isinstance(crash, EXCEPTION_FOR_KIND[crash.kind])
    assert result.matched, f"{name}: evidence {result.reproducer.text!r} missing from {crash}"
    assert crash.signature


def test_every_reproducer_states_what_it_proves() -> None:
    """Names are unique and every reproducer says what it proves and expects a known kind."""
    names = [r.name for r in corpus.CORPUS]
    assert len(names) == len(set(names))
    for reproducer in corpus.CORPUS:
        assert len(reproducer.proves) > 40
        assert set(reproducer.expect) <= set(EXCEPTION_FOR_KIND)


def test_unknown_reproducer_name_is_refused() -> None:
    """Asking for a reproducer that does not exist is an InvalidInput naming the known ones."""
    with pytest.raises(InvalidInput, match="glibc-double-free-out"):
        corpus.select(["no-such-crash"])


def test_clash_package_stays_out_of_the_venv() -> None:
    """python-casacore 3.7.1 lives in a cache dir; the venv keeps its own python-casacore."""
    target = corpus.casacore_clash_dir()
    assert (target / "python_casacore-3.7.1.dist-info").is_dir()
    assert not target.resolve().is_relative_to(Path(sys.prefix).resolve())
    assert metadata.version("python-casacore") != corpus.CASACORE_CLASH_VERSION
    assert "casacore" not in sys.modules
