"""The classifier, on stderr recorded from real crashes (tests/data/stderr/)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from casaguard.corpus.crashers import CRASHERS
from casaguard.crash import classify, exit_status, heap_checks, signatures
from casaguard.crash.casa_log import known_casa_error, severe_lines
from casaguard.errors import EXCEPTION_FOR_KIND

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
    assert heap_checks.heap_message(text) == ("double-free", "double free or corruption (out)")
    # glibc aborts after printing it: the same kind, detail and signature as on glibc 2.36.
    old = classify.classify(-6, text)
    status, stderr = recorded("double_free_out")
    new = classify.classify(status, stderr)
    assert (old.kind, old.detail, old.signature) == (new.kind, new.detail, new.signature)


def _without_comments(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith("# "))


def test_signature_ignores_addresses_and_numbers() -> None:
    """The same crash at another address or pid has the same signature; another kind does not."""
    a = signatures.signature("double-free", "free(): invalid pointer 0x55d0c0 in pid 4242")
    b = signatures.signature("double-free", "free(): invalid pointer 0x7fff12 in pid 17")
    c = signatures.signature("segfault", "free(): invalid pointer 0x7fff12 in pid 17")
    assert a == b != c


def test_exit_status_names_follow_loky() -> None:
    """Exit statuses read like loky's: SIGSEGV(-11), EXIT(3); shells' 128+N become -N."""
    assert exit_status.describe_status(-11) == "SIGSEGV(-11)"
    assert exit_status.describe_status(3) == "EXIT(3)"
    assert exit_status.normalise_shell_status(134) == -6


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
    severe = severe_lines(recorded_casa_log("casa_ft_table_dat_unwritable"))
    found = known_casa_error("\n".join(severe))
    assert found is not None
    assert found[0] == "Please make sure MS is writable when using Imager::ft"


WILD = RECORDED / "wild"


def wild(name: str) -> tuple[int, str]:
    """A real crash text pasted into a public tracker: (status, text without its header)."""
    lines = (WILD / f"{name}.txt").read_text().splitlines()
    status = int(lines[1].removeprefix("# status: ").split()[0])
    return status, "\n".join(line for line in lines if not line.startswith("# ")) + "\n"


# (file under tests/data/stderr/wild/, kind, detail, allocator or None)
WILD_CASES = [
    (
        "gw_1_libcxxabi_terminating_with",
        "cxx-terminate",
        "uncaught C++ std::logic_error: No such argument: --images",
        None,
    ),
    (
        "genesis4_134_libcxxabi_terminating_due_to",
        "cxx-terminate",
        "uncaught C++ std::out_of_range: vector",
        None,
    ),
    (
        "sipi_158_libcxxabi_dylib",
        "cxx-terminate",
        "uncaught C++ std::length_error: basic_string",
        None,
    ),
    ("essentia_47_libcxxabi_dylib_old_apple", "cxx-terminate", "uncaught C++ exception", None),
    ("ios_ruby_embedded_12_libcxxabi_type_without_what", "cxx-terminate", "uncaught C++ int", None),
    ("openexr_685_libcxxabi_pure_virtual", "cxx-terminate", "pure virtual function called", None),
    (
        "blocksci_141_libcxxabi_type_on_next_line",
        "cxx-terminate",
        "uncaught C++ NextQueueFinishedEarlyException: Next queue finished early",
        None,
    ),
    (
        "mamba_448_libcxxabi_zsh_job",
        "cxx-terminate",
        "uncaught C++ std::runtime_error: pybind11_object_dealloc(): Tried to deallocate "
        "unregistered instance!",
        None,
    ),
    (
        "casacore_814_libstdcxx_system_error",
        "cxx-terminate",
        "uncaught C++ std::system_error: Unknown error -1",
        None,
    ),
    (
        "sep_38_libmalloc_not_allocated",
        "invalid-pointer",
        "pointer being freed was not allocated",
        "libmalloc",
    ),
    (
        "astroariadne_24_libmalloc_prefixed_hint",
        "invalid-pointer",
        "pointer being freed was not allocated",
        "libmalloc",
    ),
    (
        "astropy_2361_libmalloc_checksum",
        "heap-corruption",
        "incorrect checksum for freed object - object was probably modified after being freed.",
        "libmalloc",
    ),
    (
        "gapsafe_sgl_1_libmalloc_checksum_zsh",
        "heap-corruption",
        "incorrect checksum for freed object - object was probably modified after being freed.",
        "libmalloc",
    ),
    (
        "tilemill_244_libmalloc_wrapped_line",
        "heap-corruption",
        "incorrect checksum for freed object - object was probably modified after being freed.",
        "libmalloc",
    ),
    ("node_mapnik_52_libmalloc_double_free", "double-free", "double free", "libmalloc"),
    ("superstr_21_stack_smashing_slurm", "abort", "stack smashing detected", None),
    ("abawaca_7_stack_smashing_old_glibc", "abort", "stack smashing detected", None),
    (
        "jemalloc_2353_size_mismatch",
        "heap-corruption",
        "<jemalloc>: size mismatch detected (true size 0 vs input size 0), likely caused by "
        "application sized deallocation bugs (source address: 0x7fffe6413810, the current "
        "pointer being freed). Suggest building with --enable-debug or address sanitizer for "
        "debugging. Abort.",
        "jemalloc",
    ),
    (
        "jemalloc_740_failed_assertion",
        "heap-corruption",
        '<jemalloc>: src/jemalloc.c:2648: Failed assertion: "usize == isalloc(tsd_tsdn(tsd), ptr)"',
        "jemalloc",
    ),
    (
        "flux_core_5479_tcmalloc_invalid_pointer",
        "invalid-pointer",
        "Attempt to free invalid pointer 0x55e2188ad780",
        "tcmalloc",
    ),
    (
        "gperftools_212_tcmalloc_old_colon",
        "invalid-pointer",
        "Attempt to free invalid pointer: 0x101001600",
        "tcmalloc",
    ),
]


@pytest.mark.parametrize(("name", "kind", "detail", "allocator"), WILD_CASES)
def test_wild_crash_text_classifies_to_its_kind_and_own_line(
    name: str, kind: str, detail: str, allocator: str | None
) -> None:
    """A real crash text from a public tracker gives its runtime's kind, line and allocator."""
    status, text = wild(name)
    verdict = classify.classify(status, text)
    assert (verdict.kind, verdict.signal, verdict.detail) == (kind, "SIGABRT", detail)
    assert verdict.extra.get("allocator") == allocator


def test_every_wild_record_is_tested_and_says_where_it_came_from() -> None:
    """Each file under wild/ names its public source and status, and a test above reads it."""
    tested = {case[0] for case in WILD_CASES} | {
        "aces_reduction_78_openmpi_cxx_terminate",
        "lean3_1386_libcxxabi_macos",
        "lean3_1386_libstdcxx_gentoo",
    }
    for path in WILD.glob("*.txt"):
        source, status = path.read_text().splitlines()[:2]
        assert source.startswith("# from: https://github.com/"), path.name
        assert status.startswith("# status: -6 "), path.name
        assert path.stem in tested, path.name


def test_every_allocator_in_the_table_is_met_in_real_text() -> None:
    """Every allocator the heap table knows classifies at least one real recorded crash."""
    seen = {case[3] for case in WILD_CASES}
    for name in ("double_free_out", "tcmalloc_invalid_pointer"):
        status, stderr = recorded(name)
        seen.add(classify.classify(status, stderr).extra.get("allocator"))
    assert {allocator for allocator, _, _ in heap_checks.HEAP_FAMILIES} <= seen


ACES_DETAIL = (
    "uncaught C++ casa6core::AipsError: RegularFile: /orange/adamginsburg/ACES/rawdata/"
    "2021.1.00172.L/science_goal.uid___A001_X1590_X30a8/group.uid___A001_X1590_X30a9/"
    "member.uid___A001_X15a0_X192/calibrated/working/uid___A001_X15a0_X192.s11_0.Sgr_A_star_sci."
    "spw16_18_20_22_24_26.cont.I.iter1.residual.tt0/table .f0 does not exist and cannot be created"
)


def test_openmpi_crash_handler_banner_is_not_the_detail() -> None:
    """After a real uncaught AipsError, OpenMPI's [host:pid] banner stays out of the detail."""
    status, text = wild("aces_reduction_78_openmpi_cxx_terminate")
    verdict = classify.classify(status, text)
    assert (verdict.kind, verdict.detail) == ("cxx-terminate", ACES_DETAIL)


def test_same_crash_on_two_hosts_has_one_signature() -> None:
    """The real OpenMPI-wrapped crash, replayed with another host, pid and rank tags, hashes alike.

    The second text is the recorded one with only its host:pid tag replaced and
    OpenMPI's ``--tag-output`` rank prefix added to every line.
    """
    status, text = wild("aces_reduction_78_openmpi_cxx_terminate")
    other_node = "".join(
        f"[1,3]<stderr>:{line}\n"
        for line in text.replace("[c0709a-s7:53998]", "[gpu-node-17:4242]").splitlines()
    )
    first, second = classify.classify(status, text), classify.classify(status, other_node)
    assert other_node != text
    assert (first.kind, first.detail) == (second.kind, second.detail)
    assert first.signature == second.signature


def test_signature_drops_hosts_pids_timestamps_and_paths() -> None:
    """Details that differ only by host:pid, libmalloc prog(pid), time or path share a signature."""
    pairs = [
        ("[c0709a-s7:53998] Signal: Aborted (6)", "[node-a:17] Signal: Aborted (6)"),
        (
            "python(40487,0x7fff79a9d000) malloc: pointer being freed was not allocated",
            "Python(154,0x10181edc0) malloc: pointer being freed was not allocated",
        ),
        ("2021-12-08 21:10:43.541224 died", "2026-01-02 03:04:05 died"),
        ("RegularFile: /data/a/x.ms/table.f0", "RegularFile: /scratch/job9/y.ms/table.f0"),
        ("PID 56418 RUNNING AT bb86", "PID 17 RUNNING AT compute-3"),
    ]
    for a, b in pairs:
        assert signatures.signature("abort", a) == signatures.signature("abort", b), (a, b)
    assert signatures.signature("abort", "a died") != signatures.signature("abort", "b died")


def test_same_crash_under_libcxxabi_and_libstdcxx_has_one_signature() -> None:
    """One real crash, pasted from macOS (libc++abi) and gentoo (libstdc++), gives one signature."""
    mac = classify.classify(*wild("lean3_1386_libcxxabi_macos"))
    linux = classify.classify(*wild("lean3_1386_libstdcxx_gentoo"))
    assert mac.kind == linux.kind == "cxx-terminate"
    assert mac.detail == linux.detail == "uncaught C++ std::exception: std::exception"
    assert mac.signature == linux.signature


def test_recorded_libcxxabi_terminate_reads_like_libstdcxx() -> None:
    """Debian's real libc++abi abort gives the type and what() in the libstdc++ wording."""
    status, stderr = recorded("libcxxabi_terminate")
    assert "libc++abi: terminating with uncaught exception of type std::runtime_error" in stderr
    verdict = classify.classify(status, stderr)
    assert verdict.detail == "uncaught C++ std::runtime_error: casaguard crash corpus"


def test_recorded_tcmalloc_checks_name_tcmalloc() -> None:
    """tcmalloc's real invalid free and real double free carry tcmalloc's own line."""
    status, stderr = recorded("tcmalloc_invalid_pointer")
    verdict = classify.classify(status, stderr)
    assert verdict.detail.startswith("Attempt to free invalid pointer 0x")
    assert verdict.extra == {"allocator": "tcmalloc"}
    status, stderr = recorded("tcmalloc_double_free")
    verdict = classify.classify(status, stderr)
    assert verdict.detail.startswith("memory allocation bug: object at 0x")
    assert verdict.detail.endswith("has been already deallocated")


DOC = Path(__file__).parent.parent / "docs" / "crash-kinds.md"
PACKAGE = Path(__file__).parent.parent / "casaguard"
#: Folders whose ``kind`` names something else (a probe's table kinds), never a crash kind.
NOT_CRASH_KINDS = ("preflight", "remote/casacore")


def documented_kinds() -> set[str]:
    """The kinds in the first column of docs/crash-kinds.md's kind table."""
    text = DOC.read_text()
    table = text[text.index("| kind | exception |") : text.index("## Detail")]
    kinds = set()
    for row in table.splitlines()[2:]:
        if row.startswith("|"):
            kinds.update(re.findall(r"`([a-z-]+)`", row.split("|")[1]))
    return kinds


def kinds_in_code() -> set[str]:
    """Every kind string the package can put on a verdict or a crash, found in its source.

    Reads ``kind = "..."`` / ``kind="..."`` (also as either branch of ``a if c else b``),
    the first argument of ``verdict(...)``, the first element of the tuples that
    ``classify._crash_kind`` returns, and the kinds of the heap-check, classify's and errors'
    tables.
    """
    found: set[str] = set()

    def strings(node: ast.expr | None) -> list[str]:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return [node.value]
        if isinstance(node, ast.IfExp):
            return strings(node.body) + strings(node.orelse)
        return []

    for path in PACKAGE.rglob("*.py"):
        if str(path.relative_to(PACKAGE).parent).startswith(NOT_CRASH_KINDS):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(
                    isinstance(t, (ast.Name, ast.Attribute)) and _name(t) == "kind" for t in targets
                ):
                    found.update(strings(node.value))
            elif isinstance(node, ast.keyword) and node.arg == "kind":
                found.update(strings(node.value))
            elif isinstance(node, ast.Call) and _name(node.func) == "verdict" and node.args:
                found.update(strings(node.args[0]))
            elif isinstance(node, ast.FunctionDef) and node.name == "_crash_kind":
                for ret in ast.walk(node):
                    if isinstance(ret, ast.Return) and isinstance(ret.value, ast.Tuple):
                        found.update(strings(ret.value.elts[0]))
    found.update(kind for _, kind, _ in heap_checks.HEAP_FAMILIES)
    found.update(classify._SIGNAL_KINDS.values())
    found.update(EXCEPTION_FOR_KIND)
    return found


def _name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    return node.attr if isinstance(node, ast.Attribute) else ""


def test_every_kind_in_code_is_documented() -> None:
    """Each kind the package can produce, `signal` included, is a row of docs/crash-kinds.md."""
    in_code = kinds_in_code()
    assert {"signal", "ok", "locked", "exit", "cxx-terminate"} <= in_code  # the scan sees them
    assert in_code <= documented_kinds(), in_code - documented_kinds()
    assert documented_kinds() <= in_code, documented_kinds() - in_code


@pytest.mark.parametrize(("status", "kind"), [(-15, "signal"), (-4, "signal"), (3, "exit")])
def test_other_signals_and_exits_have_their_documented_kind(status: int, kind: str) -> None:
    """SIGTERM and SIGILL are kind `signal`, a bare non-zero exit is `exit`, as documented."""
    assert classify.classify(status, "").kind == kind
    assert kind in documented_kinds()


def test_recorded_musl_double_free_is_a_silent_segfault() -> None:
    """musl's real double free prints nothing and dies of SIGSEGV: kind segfault, no allocator."""
    status, stderr = recorded("musl_double_free")
    assert (status, stderr) == (-11, "")
    verdict = classify.classify(status, stderr)
    assert (verdict.kind, verdict.detail, verdict.extra) == (
        "segfault",
        "SIGSEGV (invalid memory access)",
        {},
    )


def test_tcmalloc_invalid_free_here_and_in_the_wild_has_one_signature() -> None:
    """tcmalloc's real invalid free here and the one pasted in flux-core#5479 hash alike."""
    here = classify.classify(*recorded("tcmalloc_invalid_pointer"))
    there = classify.classify(*wild("flux_core_5479_tcmalloc_invalid_pointer"))
    assert here.detail != there.detail  # another address, another machine
    assert (here.kind, here.signature) == (there.kind, there.signature)


def test_recorded_fortify_abort_carries_glibcs_line() -> None:
    """glibc's real `*** buffer overflow detected ***: terminated` is the abort's detail."""
    status, stderr = recorded("buffer_overflow_detected")
    assert "*** buffer overflow detected ***: terminated" in stderr
    verdict = classify.classify(status, stderr)
    assert (verdict.kind, verdict.detail) == ("abort", "buffer overflow detected")
