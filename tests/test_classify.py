"""The classifier, on stderr recorded from real crashes (tests/data/stderr/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from casaguard import classify
from casaguard.crashers import CRASHERS

RECORDED = Path(__file__).parent / "data" / "stderr"
SIGNAL_CRASHERS = [name for name, (_, _, sig) in CRASHERS.items() if sig]


def recorded(name: str) -> tuple[int, str]:
    status = int((RECORDED / f"{name}.status").read_text())
    return status, (RECORDED / f"{name}.txt").read_text(errors="replace")


@pytest.mark.parametrize("name", SIGNAL_CRASHERS)
def test_recorded_crash_classifies_to_its_kind(name: str) -> None:
    """Each real crash's recorded status and stderr give the crash kind and signal we expect."""
    _, expected_kind, expected_signal = CRASHERS[name]
    status, stderr = recorded(name)
    verdict = classify.classify(status, stderr)
    assert (verdict.kind, verdict.signal) == (expected_kind, expected_signal)


def test_double_free_detail_is_glibcs_own_text() -> None:
    """The detail is glibc's message exactly, so users can grep for it."""
    status, stderr = recorded("double_free_out")
    assert classify.classify(status, stderr).detail == "double free or corruption (out)"


def test_cxx_terminate_carries_the_exception_type_and_what() -> None:
    """An uncaught C++ exception names its type and its what() text."""
    status, stderr = recorded("cxx_terminate")
    detail = classify.classify(status, stderr).detail
    assert "std::length_error" in detail and "casaguard crash corpus" in detail


def test_old_glibc_wrapper_is_unwrapped() -> None:
    """glibc <= 2.25 wrapped the message; the same family is found inside the wrapper."""
    # Build the 2.17 wrapper around the real 2.36 message recorded here.
    _, stderr = recorded("double_free_out")
    real_message = stderr.splitlines()[0]
    wrapped = f"*** Error in `python': {real_message}: 0x0000000001e2d010 ***"
    assert classify.heap_message(wrapped) == ("double-free", "double free or corruption (out)")


def test_signature_ignores_addresses_and_numbers() -> None:
    """The same crash at another address or pid has the same signature; another kind does not."""
    a = classify.signature("double-free", "free(): invalid pointer 0x55d0c0 in pid 4242")
    b = classify.signature("double-free", "free(): invalid pointer 0x7fff12 in pid 17")
    c = classify.signature("segfault", "free(): invalid pointer 0x7fff12 in pid 17")
    assert a == b != c


def test_exit_status_names_follow_loky() -> None:
    """Exit statuses read like loky's: SIGSEGV(-11), EXIT(3); shells' 128+N become -N."""
    assert classify.describe_status(-11) == "SIGSEGV(-11)"
    assert classify.describe_status(3) == "EXIT(3)"
    assert classify.normalise_shell_status(134) == -6


def test_teardown_crash_after_a_reply_is_ok_with_a_flag() -> None:
    """A child that replied success and then died is a success flagged as a teardown crash."""
    status, stderr = recorded("double_free_out")
    verdict = classify.classify(status, stderr, replied_ok=True)
    assert verdict.ok and verdict.teardown_crash
    assert verdict.extra["teardown_kind"] == "double-free"
