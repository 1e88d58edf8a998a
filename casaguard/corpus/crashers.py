"""Real, deterministic crashes for the crash-regression suite.

Each function kills the process that runs it, for real, the way CASA does:
glibc's own heap checks fire on genuinely corrupted chunk headers, the kernel
delivers a genuine SIGSEGV, libstdc++ (or LLVM's libc++abi) genuinely calls
``std::terminate``, gperftools' tcmalloc genuinely rejects a bad ``free``.
They are meant to run inside a sandbox child (``casaguard.call(double_free)``)
and never in a process you care about.

The heap layouts below assume glibc's ptmalloc2 on 64-bit Linux (chunk header
= prev_size, size; 16-byte alignment; tcache for chunks up to 1032 bytes), as
in glibc 2.26 and later. The other runtimes are Debian's shared libraries
(``LIBCXX``, ``TCMALLOC``, ``TCMALLOC_DEBUG``; packages libc++1-14,
libc++abi1-14 and libtcmalloc-minimal4), loaded with ctypes into the dying
process only.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import time

_WORD = ctypes.sizeof(ctypes.c_size_t)
_PREV_INUSE = 0x1
# Large enough to bypass tcache and fastbins, small enough to stay below the
# mmap threshold, so frees go through _int_free's consolidation checks.
_LARGE = 0x500
#: Debian's LLVM libc++ (libc++1-14; it brings libc++abi1-14).
LIBCXX = "libc++.so.1"
#: gperftools' tcmalloc (libtcmalloc-minimal4) and its checking debug build.
TCMALLOC = "libtcmalloc_minimal.so.4"
TCMALLOC_DEBUG = "libtcmalloc_minimal_debug.so.4"
#: A C program that frees one block twice, for musl (built with ``musl-gcc``):
#: mallocng's checks are ``assert(x) -> a_crash()`` (src/malloc/mallocng/glue.h),
#: which prints nothing and on x86_64 executes ``hlt``: the kernel sends SIGSEGV.
MUSL_DOUBLE_FREE_C = """#include <stdlib.h>
int main(void)
{
    void *volatile block = malloc(64);
    free(block);
    free(block);
    return 0;
}
"""


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.calloc.restype = ctypes.c_void_p
    libc.calloc.argtypes = [ctypes.c_size_t, ctypes.c_size_t]
    libc.free.restype = None
    libc.free.argtypes = [ctypes.c_void_p]
    return libc


def _size_field(user_pointer: int) -> ctypes.c_size_t:
    return ctypes.c_size_t.from_address(user_pointer - _WORD)


def _prev_size_field(user_pointer: int) -> ctypes.c_size_t:
    return ctypes.c_size_t.from_address(user_pointer - 2 * _WORD)


def _chunk_size(user_pointer: int) -> int:
    return int(_size_field(user_pointer).value) & ~0x7


def double_free_tcache() -> None:
    """Free a small chunk twice: glibc says ``free(): double free detected in tcache 2``."""
    libc = _libc()
    pointer = libc.malloc(64)
    libc.free(pointer)
    libc.free(pointer)


def double_free_out() -> None:
    """Free a chunk whose size runs past the heap: ``double free or corruption (out)``.

    This is the field report's ft message: ptmalloc finds the chunk's
    successor outside the arena, as after a chunk header was overwritten.
    """
    libc = _libc()
    pointer = libc.malloc(_LARGE)
    _size_field(pointer).value = (1 << 40) | _PREV_INUSE
    libc.free(pointer)


def double_free_prev() -> None:
    """Free a large chunk twice: ``double free or corruption (!prev)``."""
    libc = _libc()
    pointer = libc.malloc(_LARGE)
    guard = libc.malloc(_LARGE)  # keeps the chunk away from the top chunk
    libc.free(pointer)
    libc.free(pointer)
    libc.free(guard)


def corrupted_size_vs_prev_size() -> None:
    """Break a free chunk's boundary tag: ``corrupted size vs. prev_size``.

    The field report's clearcal message. B is freed (its successor C records
    B's size in prev_size), then C's prev_size is overwritten; freeing A makes
    ptmalloc unlink B forward and the two sizes disagree.
    """
    libc = _libc()
    first, second, third = _adjacent_chunks(libc)
    # Everything Python needs is built before the first free: any malloc in
    # between would sort B out of the unsorted bin and trip a different check.
    boundary_tag = _prev_size_field(third)
    wrong_size = _chunk_size(second) + 0x10
    free = libc.free
    free(second)
    boundary_tag.value = wrong_size
    free(first)


def _adjacent_chunks(libc: ctypes.CDLL) -> tuple[int, int, int]:
    """Allocate three neighbouring large chunks (A in use before B before C).

    A long-lived interpreter's heap has holes; chunks that are not neighbours
    are kept (leaked) so the next try comes from fresh space.
    """
    for _ in range(1000):
        first, second, third = (libc.malloc(_LARGE) for _ in range(3))
        libc.malloc(_LARGE)  # guard so that C never touches the top chunk
        if (
            second == first + _chunk_size(first)
            and third == second + _chunk_size(second)
            and _size_field(first).value & _PREV_INUSE
        ):
            return first, second, third
    raise RuntimeError("could not find three adjacent heap chunks")


def invalid_pointer() -> None:
    """Free a pointer into the middle of a block: ``free(): invalid pointer``."""
    libc = _libc()
    pointer = libc.calloc(1, 256)
    libc.free(pointer + 1)


def invalid_size() -> None:
    """Free a chunk whose size field is below the minimum: ``free(): invalid size``."""
    libc = _libc()
    pointer = libc.malloc(_LARGE)
    _size_field(pointer).value = 0x10 | _PREV_INUSE
    libc.free(pointer)


def segfault() -> None:
    """Read address 0: the kernel delivers SIGSEGV."""
    ctypes.string_at(0)


def cxx_terminate(what: str = "casaguard crash corpus") -> None:
    """Throw a C++ exception that nothing catches: libstdc++ prints
    ``terminate called after throwing an instance of 'std::length_error'``
    with ``what():`` and aborts, as CASA does when an AipsError escapes.
    """
    libstdcxx = ctypes.CDLL(ctypes.util.find_library("stdc++") or "libstdc++.so.6")
    # std::__throw_length_error(const char*): a real throw from libstdc++ that
    # unwinds into ctypes' C frames, finds no handler, and terminates.
    throw = libstdcxx._ZSt20__throw_length_errorPKc
    throw.argtypes = [ctypes.c_char_p]
    throw(what.encode())


def libcxxabi_terminate(what: str = "casaguard crash corpus") -> None:
    """Throw a C++ exception from LLVM's libc++ that nothing catches: libc++abi prints
    ``libc++abi: terminating with uncaught exception of type std::runtime_error: ...``
    and aborts, as CASA and casacore built with clang/libc++ (macOS) do.
    """
    libcxx = ctypes.CDLL(LIBCXX)
    # std::__1::__throw_runtime_error(const char*): a real throw from libc++ whose
    # unwinding finds no handler, so libc++abi's default terminate handler runs.
    throw = libcxx._ZNSt3__121__throw_runtime_errorEPKc
    throw.argtypes = [ctypes.c_char_p]
    throw(what.encode())


def _allocator(library: str) -> ctypes.CDLL:
    allocator = ctypes.CDLL(library)
    allocator.malloc.restype = ctypes.c_void_p
    allocator.malloc.argtypes = [ctypes.c_size_t]
    allocator.free.restype = None
    allocator.free.argtypes = [ctypes.c_void_p]
    return allocator


def tcmalloc_invalid_pointer() -> None:
    """Give tcmalloc's ``free`` a pointer it never handed out (a glibc block), as a
    library mixing allocators does: ``src/tcmalloc.cc:333] Attempt to free invalid
    pointer 0x...`` and abort.
    """
    tcmalloc = _allocator(TCMALLOC)
    tcmalloc.free(_libc().malloc(64))


def tcmalloc_double_free() -> None:
    """Free a block twice under tcmalloc's debug allocator: ``memory allocation bug:
    object at 0x... has been already deallocated`` and abort.
    """
    tcmalloc = _allocator(TCMALLOC_DEBUG)
    pointer = tcmalloc.malloc(64)
    tcmalloc.free(pointer)
    tcmalloc.free(pointer)


def buffer_overflow_detected() -> None:
    """Fail a _FORTIFY_SOURCE check: glibc prints ``*** buffer overflow detected ***:
    terminated`` and aborts, as a fortified C library does on an overlong copy.
    """
    _libc().__chk_fail()


def abort() -> None:
    """Call abort(3) with no message: a bare SIGABRT."""
    _libc().abort()


def sigkill_self() -> None:
    """Send ourselves SIGKILL, as the OOM killer would."""
    os.kill(os.getpid(), signal.SIGKILL)


def hang(seconds: float = 3600.0) -> None:
    """Sleep far past any sensible timeout, as CASA does on a held lock."""
    time.sleep(seconds)


def stderr_flood(megabytes: int = 100, then: str = "return") -> str:
    """Write ``megabytes`` MB to fd 2, then return (``then="return"``) or abort.

    Proves that a chatty child never blocks and that only the tail is kept.
    """
    chunk = (b"casaguard stderr flood line " + b"x" * 995 + b"\n")[:1024]
    block = chunk * 1024
    for _ in range(megabytes):
        os.write(2, block)
    os.write(2, b"END OF FLOOD\n")
    if then == "abort":
        abort()
    return "flooded"


def exit_code(code: int = 3) -> None:
    """Leave with an exit code and no reply, as C code calling exit() does."""
    sys.stdout.flush()
    os._exit(code)


def raise_python(message: str = "raised in the child") -> None:
    """Raise an ordinary Python exception."""
    raise RuntimeError(message)


#: name -> (crasher, expected kind, expected signal name or None)
CRASHERS = {
    "double_free_tcache": (double_free_tcache, "double-free", "SIGABRT"),
    "double_free_out": (double_free_out, "double-free", "SIGABRT"),
    "double_free_prev": (double_free_prev, "double-free", "SIGABRT"),
    "corrupted_size_vs_prev_size": (corrupted_size_vs_prev_size, "corrupted-size", "SIGABRT"),
    "invalid_pointer": (invalid_pointer, "invalid-pointer", "SIGABRT"),
    "invalid_size": (invalid_size, "heap-corruption", "SIGABRT"),
    "segfault": (segfault, "segfault", "SIGSEGV"),
    "cxx_terminate": (cxx_terminate, "cxx-terminate", "SIGABRT"),
    "libcxxabi_terminate": (libcxxabi_terminate, "cxx-terminate", "SIGABRT"),
    "tcmalloc_invalid_pointer": (tcmalloc_invalid_pointer, "invalid-pointer", "SIGABRT"),
    "tcmalloc_double_free": (tcmalloc_double_free, "double-free", "SIGABRT"),
    "abort": (abort, "abort", "SIGABRT"),
    "buffer_overflow_detected": (buffer_overflow_detected, "abort", "SIGABRT"),
    "sigkill_self": (sigkill_self, "killed", "SIGKILL"),
    "exit_code": (exit_code, "exit", None),
    "raise_python": (raise_python, "python-error", None),
}
