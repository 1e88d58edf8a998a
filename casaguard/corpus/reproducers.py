"""The crash corpus: real, deterministic reproducers, each stating what it proves.

Every reproducer makes a real process die (or fail) the way CASA, WSClean or a
library clash does, under casaguard's guard, and names the crash kinds it
must end in. ``casaguard regress`` runs them and records kind, signature and
the versions of everything involved (the version compatibility matrix); the
tests run them as a table. Families:

* ``glibc-*``, ``segfault``, ``cxx-terminate``... -- the primitives of
  ``casaguard.corpus.crashers`` (real heap checks on really corrupted chunks).
* ``libcxxabi-*``, ``tcmalloc-*``, ``musl-*`` -- the other runtimes Linux can
  really run: LLVM's libc++abi terminate handler (CASA and casacore on macOS
  print the same), gperftools' tcmalloc heap checks, and musl's silent heap
  crash, from Debian's packages.
* ``casa-*`` -- CASA's own failures on simulated MSs: permissions (run under
  ``setpriv`` so that root obeys file modes), a silent SEVERE, the field
  report's CASA-error-then-abort sequence.
* ``wsclean-*`` -- WSClean 3.1's own crashes on MSs with two spectral windows
  of different channel counts.
* ``clash-*`` -- python-casacore 3.7.1 and casatools imported into one process.

Reproducers never touch user data: every MS is simulated under a temporary
workspace that is removed afterwards.

This module is the table (``CORPUS``: what each reproducer proves and must end
in); ``scenarios`` holds how each crash is made, ``workspace`` the simulated
MSs, ``regression`` the run that checks each promise and ``casacore_cache``
the clash's python-casacore.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from casaguard.corpus import crashers
from casaguard.corpus.scenarios import (
    casacore_clash,
    clearcal_ms_dir_unwritable,
    ft_error_then_heap_abort,
    ft_model_shape_mismatch,
    ft_table_dat_unwritable,
    musl_double_free,
    primitive,
    wsclean_existing_model_mixed_channels,
    wsclean_new_model_mixed_channels,
)
from casaguard.corpus.workspace import Workspace
from casaguard.errors import InvalidInput

#: Kinds a heap overflow can end in, depending on what the overwritten bytes hit.
MEMORY_KINDS = ("segfault", "heap-corruption", "invalid-pointer", "double-free", "corrupted-size")


@dataclass(frozen=True)
class Reproducer:
    """One real crash, and what it proves.

    Attributes:
        name: stable identifier (used by ``--only`` and in the JSON).
        proves: one sentence: what a run that ends in ``expect`` shows.
        expect: the crash kinds it must end in (more than one only where the
            kernel's heap layout decides, e.g. a heap overflow).
        reproduce: runs the guarded work in ``Workspace``; raises a CasaCrash.
        text: a string that must appear in the crash's detail, casa_error,
            SEVERE lines or stderr tail (the evidence is the right one).
        needs: what it needs besides Python: ``"casa"``, ``"wsclean"``, or a
            Debian library package (``"libc++1-14"``, ``"libtcmalloc-minimal4"``).
    """

    name: str
    proves: str
    expect: tuple[str, ...]
    reproduce: Callable[[Workspace], Any]
    text: str = ""
    needs: tuple[str, ...] = ()


def _reproducers() -> tuple[Reproducer, ...]:
    glibc = [
        (
            "glibc-double-free-tcache",
            crashers.double_free_tcache,
            "double-free",
            "free(): double free detected in tcache 2",
        ),
        (
            "glibc-double-free-out",
            crashers.double_free_out,
            "double-free",
            "double free or corruption (out)",
        ),
        (
            "glibc-double-free-prev",
            crashers.double_free_prev,
            "double-free",
            "double free or corruption (!prev)",
        ),
        (
            "glibc-corrupted-size-vs-prev-size",
            crashers.corrupted_size_vs_prev_size,
            "corrupted-size",
            "corrupted size vs. prev_size",
        ),
        (
            "glibc-invalid-pointer",
            crashers.invalid_pointer,
            "invalid-pointer",
            "free(): invalid pointer",
        ),
        ("glibc-invalid-size", crashers.invalid_size, "heap-corruption", "free(): invalid size"),
    ]
    corpus = [
        Reproducer(
            name,
            f"glibc's heap check prints `{message}` and aborts; casaguard names it {kind}",
            (kind,),
            primitive(crasher),
            text=message,
        )
        for name, crasher, kind, message in glibc
    ]
    corpus += [
        Reproducer(
            "segfault",
            "a read of address 0 (SIGSEGV) becomes a Segfault, not a dead pipeline",
            ("segfault",),
            primitive(crashers.segfault),
            text="Segmentation fault",
        ),
        Reproducer(
            "cxx-terminate",
            "an uncaught C++ exception (as when an AipsError escapes CASA) is named with its "
            "what() text",
            ("cxx-terminate",),
            primitive(crashers.cxx_terminate),
            text="std::length_error",
        ),
        Reproducer(
            "libcxxabi-terminate",
            "an uncaught C++ exception under LLVM's libc++abi (CASA on macOS, any clang/libc++ "
            "build) is cxx-terminate with its type and what(), worded as under libstdc++",
            ("cxx-terminate",),
            primitive(crashers.libcxxabi_terminate),
            text="uncaught C++ std::runtime_error: casaguard crash corpus",
            needs=("libc++1-14",),
        ),
        Reproducer(
            "tcmalloc-invalid-pointer",
            "tcmalloc's free() of a block it never allocated prints `Attempt to free invalid "
            "pointer` and aborts; casaguard names it invalid-pointer, as glibc's",
            ("invalid-pointer",),
            primitive(crashers.tcmalloc_invalid_pointer),
            text="Attempt to free invalid pointer 0x",
            needs=("libtcmalloc-minimal4",),
        ),
        Reproducer(
            "tcmalloc-double-free",
            "tcmalloc's debug allocator names a second free() of one block (`has been already "
            "deallocated`) and aborts; casaguard names it double-free, as glibc's",
            ("double-free",),
            primitive(crashers.tcmalloc_double_free),
            text="has been already deallocated",
            needs=("libtcmalloc-minimal4",),
        ),
        Reproducer(
            "musl-double-free",
            "musl's malloc turns a double free into a silent a_crash() (SIGSEGV on x86_64); "
            "casaguard names it segfault although there is no message to match",
            ("segfault",),
            musl_double_free,
            text="SIGSEGV (invalid memory access)",
            needs=("musl-tools", "gcc"),
        ),
        Reproducer(
            "abort",
            "a bare abort() without a heap-check or C++ message is still a classified AbortCrash",
            ("abort",),
            primitive(crashers.abort),
        ),
        Reproducer(
            "glibc-fortify-buffer-overflow",
            "glibc's _FORTIFY_SOURCE check prints `*** buffer overflow detected ***: terminated` "
            "and aborts; casaguard's abort carries that line, not a bare abort()",
            ("abort",),
            primitive(crashers.buffer_overflow_detected),
            text="buffer overflow detected",
        ),
        Reproducer(
            "sigkill",
            "a SIGKILL casaguard did not send (the OOM killer's signal) becomes Killed",
            ("killed",),
            primitive(crashers.sigkill_self),
        ),
        Reproducer(
            "hang-timeout",
            "a call that never returns (CASA on a held lock) is killed at its timeout",
            ("timeout",),
            primitive(crashers.hang, timeout=2),
        ),
        Reproducer(
            "stderr-flood",
            "100 MB on stderr before an abort neither blocks the child nor the caller",
            ("abort",),
            primitive(crashers.stderr_flood, 100, "abort", timeout=300),
            text="END OF FLOOD",
        ),
        Reproducer(
            "casa-ft-table-dat-unwritable",
            "ft on an MS whose table.dat it cannot write (as WSClean run by another user leaves "
            "it) raises the field report's CASA error, recognised with its cause",
            ("casa-error",),
            ft_table_dat_unwritable,
            text="Please make sure MS is writable when using Imager::ft",
            needs=("casa",),
        ),
        Reproducer(
            "casa-clearcal-ms-dir-unwritable",
            "clearcal on an MS whose directory it cannot write dies of an uncaught "
            "casacore::AipsError (SIGABRT), with CASA's error attached",
            ("cxx-terminate",),
            clearcal_ms_dir_unwritable,
            text="table.dat_tmp does not exist and cannot be created",
            needs=("casa",),
        ),
        Reproducer(
            "casa-ft-model-shape-mismatch",
            "ft into a fixed-shape MODEL_DATA that disagrees with DATA returns normally but logs "
            "SEVERE and writes nothing: a silent failure casaguard turns into casa-severe",
            ("casa-severe",),
            ft_model_shape_mismatch,
            text="Table array conformance error",
            needs=("casa",),
        ),
        Reproducer(
            "casa-ft-error-then-double-free",
            "the field report's sequence (ft raises `Please make sure MS is writable`, then the "
            "process aborts with `double free or corruption (out)`) is one crash carrying both",
            ("double-free",),
            ft_error_then_heap_abort,
            text="Please make sure MS is writable when using Imager::ft",
            needs=("casa",),
        ),
        Reproducer(
            "wsclean-new-model-mixed-channels",
            "WSClean 3.1 creating MODEL_DATA on an MS with spws of 4 and 16 channels overflows "
            "the heap and dies (SIGSEGV, or glibc's `free(): invalid next size (fast)`)",
            MEMORY_KINDS,
            wsclean_new_model_mixed_channels,
            text="Writing changed model back",
            needs=("casa", "wsclean"),
        ),
        Reproducer(
            "wsclean-existing-model-mixed-channels",
            "WSClean 3.1 writing an existing MODEL_DATA of an MS with spws of 4 and 16 channels "
            "writes 4-channel cells into 16-channel rows and aborts on reading them back",
            ("cxx-terminate",),
            wsclean_existing_model_mixed_channels,
            text="TableArrayConformanceError",
            needs=("casa", "wsclean"),
        ),
        Reproducer(
            "clash-casacore-3.7.1-then-casatools",
            "python-casacore 3.7.1 and casatools imported into one process segfault (the field "
            "report's pipeline did this); casaguard's child never imports the caller's casacore",
            ("segfault",),
            casacore_clash,
            needs=("casa",),
        ),
    ]
    return tuple(corpus)


CORPUS: tuple[Reproducer, ...] = _reproducers()


def select(names: Iterable[str] | None = None) -> list[Reproducer]:
    """The reproducers named in ``names`` (all when None), in corpus order.

    Raises:
        InvalidInput: a name that is not in the corpus.
    """
    if names is None:
        return list(CORPUS)
    wanted = list(names)
    known = {r.name for r in CORPUS}
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise InvalidInput(f"unknown reproducer(s) {unknown}; known: {sorted(known)}")
    return [r for r in CORPUS if r.name in wanted]
