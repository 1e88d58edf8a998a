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
    """A real old-glibc report (``*** Error in `python': ... ***``) gives double-free."""
    text = _without_comments((RECORDED / "old_glibc_double_free_out.txt").read_text())
    assert classify.heap_message(text) == ("double-free", "double free or corruption (out)")
    # glibc aborts after printing it: the same kind, detail and signature as on glibc 2.36.
    old = classify.classify(-6, text)
    status, stderr = recorded("double_free_out")
    new = classify.classify(status, stderr)
    assert (old.kind, old.detail, old.signature) == (new.kind, new.detail, new.signature)


def _without_comments(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith("# "))


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


def recorded_casa_log(name: str) -> str:
    path = RECORDED / f"{name}.casa.log"
    return path.read_text() if path.exists() else ""


@pytest.mark.parametrize(
    ("name", "kind", "signal_name", "detail"),
    [
        (
            "wsclean_new_model_mixed_channels",
            "heap-corruption",
            "SIGABRT",
            "free(): invalid next size (fast)",
        ),
        (
            "wsclean_new_model_invalid_pointer",
            "invalid-pointer",
            "SIGABRT",
            "free(): invalid pointer",
        ),
        ("wsclean_new_model_segv", "segfault", "SIGSEGV", "SIGSEGV (invalid memory access)"),
        (
            "wsclean_existing_model_mixed_channels",
            "cxx-terminate",
            "SIGABRT",
            "uncaught C++ casacore::TableArrayConformanceError: ArrayColumn::get for row 168 in "
            "column "
            "MODEL_DATA: Table array conformance error (shape=[4, 4], expected [4, 16])",
        ),
        (
            "clash_casacore_371_then_casatools",
            "segfault",
            "SIGSEGV",
            "SIGSEGV (invalid memory access)",
        ),
    ],
)
def test_recorded_wsclean_and_clash_crashes(
    name: str, kind: str, signal_name: str, detail: str
) -> None:
    """WSClean 3.1's real crashes and the python-casacore 3.7.1 clash classify from their stderr."""
    status, stderr = recorded(name)
    verdict = classify.classify(status, stderr)
    assert (verdict.kind, verdict.signal, verdict.detail) == (kind, signal_name, detail)


def test_recorded_clearcal_abort_carries_the_casa_error() -> None:
    """clearcal's real abort on an unwritable MS dir is cxx-terminate with CASA's error attached."""
    status, stderr = recorded("casa_clearcal_ms_dir_unwritable")
    casa_log = recorded_casa_log("casa_clearcal_ms_dir_unwritable")
    verdict = classify.classify(status, stderr, casa_log)
    assert (verdict.kind, verdict.signal) == ("cxx-terminate", "SIGABRT")
    assert verdict.detail.startswith("uncaught C++ casacore::AipsError: RegularFile: ")
    assert verdict.casa_error is not None
    assert verdict.casa_error.endswith("table.dat_tmp does not exist and cannot be created")


def test_recorded_field_report_sequence_is_one_double_free_with_the_ft_error() -> None:
    """A real ft error followed by a real heap abort is one double-free carrying the error."""
    status, stderr = recorded("casa_ft_error_then_double_free")
    verdict = classify.classify(status, stderr, recorded_casa_log("casa_ft_error_then_double_free"))
    assert verdict.kind == "double-free"
    assert verdict.casa_error == "Please make sure MS is writable when using Imager::ft"
    assert verdict.casa_hint and "table.dat" in verdict.casa_hint


def test_recorded_silent_ft_severe_is_casa_severe() -> None:
    """ft's real SEVERE on a MODEL_DATA shape mismatch, after a normal return, is casa-severe."""
    status, stderr = recorded("casa_ft_model_shape_mismatch")
    casa_log = recorded_casa_log("casa_ft_model_shape_mismatch")
    verdict = classify.classify(status, stderr, casa_log, replied_ok=True, error_is_casa=True)
    assert verdict.kind == "casa-severe"
    assert "Table array conformance error" in verdict.detail
    assert classify.classify(status, stderr, casa_log, replied_ok=True, strict=False).ok


def test_recorded_ft_writable_error_is_recognised_in_the_casa_log() -> None:
    """The real CASA log of ft on a read-only table.dat holds the field report's error and cause."""
    severe = classify.severe_lines(recorded_casa_log("casa_ft_table_dat_unwritable"))
    found = classify.known_casa_error("\n".join(severe))
    assert found is not None
    assert found[0] == "Please make sure MS is writable when using Imager::ft"
