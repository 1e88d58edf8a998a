"""Allocators' heap-check messages in a crash's stderr: ``HEAP_FAMILIES`` and ``heap_check``.

Each row is taken from the allocator's own source (named next to it) or from its
real output: the heap checks of glibc's ``malloc_printerr``, macOS libmalloc,
jemalloc and gperftools' tcmalloc. Old glibc formats (2.17:
``*** Error in `python': double free or corruption (out): 0x... ***``) are
unwrapped before matching, so one table serves every version.

Separate from the classifier's decision: this table grows with every allocator
and version met in the wild, and each row is checked against recorded text.
"""

from __future__ import annotations

import re

from casaguard.crash.stderr_lines import crash_lines

_ADDR = r"0x[0-9a-fA-F]+"

#: Heap-check families of every allocator, most specific first:
#: (allocator, kind, pattern). A pattern's ``msg`` group, if any, is the detail;
#: otherwise the whole match is.
HEAP_FAMILIES: tuple[tuple[str, str, re.Pattern[str]], ...] = (
    # glibc malloc/malloc.c, malloc_printerr() callers (2.17-2.36).
    ("glibc", "double-free", re.compile(r"double free or corruption(?: \([^)]*\))?")),
    ("glibc", "double-free", re.compile(r"free\(\): double free detected in tcache \d+")),
    (
        "glibc",
        "corrupted-size",
        re.compile(r"corrupted size vs\.? prev_size(?: while consolidating)?"),
    ),
    (
        "glibc",
        "invalid-pointer",
        re.compile(r"(?:free|munmap_chunk|realloc|mremap_chunk)\(\): invalid pointer"),
    ),
    (
        "glibc",
        "heap-corruption",
        re.compile(
            r"(?:malloc|free|realloc|calloc|malloc_consolidate|_int_malloc|_int_free|"
            r"tcache_thread_shutdown|malloc_trim|munmap_chunk|mremap_chunk)\(\): [^\n]+"
        ),
    ),
    (
        "glibc",
        "heap-corruption",
        re.compile(r"corrupted (?:double-linked list(?: \(not small\))?|top size)"),
    ),
    (
        "glibc",
        "heap-corruption",
        re.compile(r"malloc: (?:top chunk is corrupt|corrupted top size)"),
    ),
    ("glibc", "heap-corruption", re.compile(r"break adjusted to free malloc space")),
    # macOS libmalloc (apple-oss-distributions/libmalloc): old releases (140.1.1,
    # src/malloc.c, magazine_*.c) print ``prog(pid,0xthread) malloc: *** error for
    # object 0x...: MSG``; newer ones (792.1.1, malloc_common.c, magazine_*.c) print
    # ``prog(pid,0xthread) malloc: MSG`` with the address inside MSG.
    (
        "libmalloc",
        "double-free",
        re.compile(
            rf"double free for ptr {_ADDR}|Double free of object {_ADDR}"
            rf"|pointer {_ADDR} being freed already on death-row"
            rf"|error for object {_ADDR}: (?P<msg>double free)\b"
        ),
    ),
    (
        "libmalloc",
        "invalid-pointer",
        re.compile(
            rf"pointer (?:{_ADDR} )?being (?:freed|realloc'd|reallocated) was not allocated"
            rf"|[Nn]on-aligned pointer {_ADDR} being freed(?: \(2\))?"
            rf"|non-page-aligned, non-allocated pointer {_ADDR} being freed"
            rf"|[Pp]ointer {_ADDR} to metadata being freed(?: \(2\))?"
            rf"|pointer {_ADDR} of size zero being freed"
        ),
    ),
    (
        "libmalloc",
        "heap-corruption",
        re.compile(
            rf"[Ii]ncorrect checksum for freed object(?: {_ADDR}:)?"
            r" (?:- object was )?probably modified after being freed\.?"
            rf"|Heap corruption detected, free list is damaged at {_ADDR}"
            rf"|Corruption of (?:free object|tiny freelist) {_ADDR}: [^\n]+"
            rf"|incorrect size information for {_ADDR} - block header was damaged"
            rf"|Region cookie corrupted for region {_ADDR}"
        ),
    ),
    # jemalloc safety checks (jemalloc/jemalloc 5.3.0: src/safety_check.c, src/san.c,
    # include/jemalloc/internal/arena_inlines_b.h; dev adds cache_bin.h, rb.h)
    # and its debug-build assertions (include/jemalloc/internal/assert.h).
    (
        "jemalloc",
        "double-free",
        re.compile(r"(?:<jemalloc>: )?Invalid deallocation detected[^\n]*double free[^\n]*"),
    ),
    (
        "jemalloc",
        "heap-corruption",
        re.compile(
            r"<jemalloc>: size mismatch detected[^\n]*"
            r"|(?:<jemalloc>: )?Internal heap corruption detected: [^\n]+"
            r"|<jemalloc>: Write-after-free detected[^\n]*"
            r"|<jemalloc>: [^\n]*: Failed assertion: [^\n]*"
        ),
    ),
    # gperftools tcmalloc: src/tcmalloc.cc InvalidFree() and friends print
    # ``src/tcmalloc.cc:333] Attempt to free invalid pointer 0x...``;
    # src/debugallocation.cc (libtcmalloc_debug) names double frees.
    (
        "tcmalloc",
        "invalid-pointer",
        re.compile(
            rf"Attempt to (?:free|realloc) invalid pointer:? {_ADDR}"
            rf"|Attempt to get the size of an invalid pointer:? {_ADDR}"
            rf"|memory allocation bug: object at {_ADDR} has never been allocated"
        ),
    ),
    (
        "tcmalloc",
        "double-free",
        re.compile(rf"memory allocation bug: object at {_ADDR} has been already deallocated"),
    ),
    (
        "tcmalloc",
        "heap-corruption",
        re.compile(
            r"memory stomping bug: [^\n]+|memory corruption bug: [^\n]+"
            rf"|memory allocation/deallocation mismatch at {_ADDR}: [^\n]+"
        ),
    ),
)

#: Old glibc wrapped its message: ``*** Error in `prog': MSG: 0xADDR ***`` (2.11-2.25)
#: or ``*** glibc detected *** prog: MSG: 0xADDR ***`` (before 2.11).
_OLD_GLIBC_WRAPPERS = (
    re.compile(r"\*\*\* Error in `[^']*': (?P<msg>.+?)(?:: 0x[0-9a-fA-F]+)? \*\*\*"),
    re.compile(r"\*\*\* glibc detected \*\*\* [^:]*: (?P<msg>.+?)(?:: 0x[0-9a-fA-F]+)? \*\*\*"),
)


def heap_check(stderr: str) -> tuple[str, str, str] | None:
    """Find the last heap-check message of any allocator in ``stderr``.

    Returns:
        ``(allocator, kind, message)``, e.g. ``("libmalloc", "invalid-pointer",
        "pointer being freed was not allocated")``, or None.
    """
    lines = crash_lines(stderr)
    for index in range(len(lines) - 1, -1, -1):
        found = _heap_line(lines[index].strip())
        if found is None and index + 1 < len(lines):
            # A message wrapped onto two lines (as pasted into an issue tracker).
            found = _heap_line(f"{lines[index].strip()} {lines[index + 1].strip()}")
        if found is not None:
            return found
    return None


def _heap_line(text: str) -> tuple[str, str, str] | None:
    for wrapper in _OLD_GLIBC_WRAPPERS:
        wrapped = wrapper.search(text)
        if wrapped:
            text = wrapped.group("msg")
            break
    for allocator, kind, pattern in HEAP_FAMILIES:
        match = pattern.search(text)
        if match:
            message = match.group("msg") if "msg" in pattern.groupindex else None
            return allocator, kind, (message or match.group(0)).strip()
    return None


def heap_message(stderr: str) -> tuple[str, str] | None:
    """Find the last heap-check message in ``stderr``: (kind, message)."""
    found = heap_check(stderr)
    return None if found is None else (found[1], found[2])
