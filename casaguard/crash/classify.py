"""Pure crash classification: (exit status, stderr tail, CASA log, reply) -> verdict.

No I/O and no imports from the rest of the package but ``errors`` (for the
message formats). The knowledge lives in data tables, each row taken from the
runtime's own source (named next to it) or from its real output:
the heap checks of glibc's ``malloc_printerr``, macOS libmalloc, jemalloc and
gperftools' tcmalloc (``HEAP_FAMILIES``); the terminate messages of libstdc++
and LLVM libc++abi; CASA's known error texts and its known-noise SEVERE lines;
and the banners of crash handlers (OpenMPI's, faulthandler's, shells') whose
lines are never the crash's own (``HANDLER_NOISE``). Old glibc formats
(2.17: ``*** Error in `python': double free or corruption (out): 0x... ***``)
are unwrapped before matching, so one table serves every version; MPI rank
prefixes (``[1,0]<stderr>:``) are stripped from every line first.
"""

from __future__ import annotations

import hashlib
import re
import signal as _signal
from dataclasses import dataclass, field

from casaguard.errors import CASA_ERROR_SUFFIX, CRASH_MESSAGE, EVIDENCE_SUFFIX, LOG_SUFFIX

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

_TERMINATE = re.compile(
    r"terminate called (?:after throwing an instance of '(?P<type>[^']+)'"
    r"|(?P<other>without an active exception|recursively))"
)
#: LLVM libc++abi's terminate handler (llvm-project libcxxabi/src/cxa_default_handlers.cpp:
#: ``terminating due to %s exception of type %s: %s``; ``with`` up to LLVM 14, as Debian's
#: libc++abi1-14 prints) through
#: abort_message.cpp's ``libc++abi: `` prefix (``libc++abi.dylib: `` on old macOS).
_LIBCXXABI_TERMINATE = re.compile(
    r"libc\+\+abi(?:\.dylib)?: terminating(?: (?:with|due to) (?P<cause>\w+)"
    r"(?: exception of type(?: (?P<type>.+?)(?:: (?P<what>.*))?)?"
    r"| (?P<foreign>foreign) exception))?$"
)
#: A type libc++abi's line left for the next one (a terminal or tracker wrapped it).
_TYPE_AND_WHAT = re.compile(r"^(?P<type>[^\s:][^\s]*?)(?:: (?P<what>.*))?$")
#: Apple's libc++abi before LLVM's wording (Xcode 4), and cxa_virtual.cpp's messages.
_LIBCXXABI_OTHER = re.compile(
    r"libc\+\+abi(?:\.dylib)?: (?P<msg>terminate called throwing an exception"
    r"|terminate called without an active exception"
    r"|Pure virtual function called!|Deleted virtual function called!)"
)
_LIBCXXABI_OTHER_DETAIL = {
    "terminate called throwing an exception": "uncaught C++ exception",
    "terminate called without an active exception": "terminate called without an active exception",
    "Pure virtual function called!": "pure virtual function called",
    "Deleted virtual function called!": "deleted virtual function called",
}
_WHAT = re.compile(r"^\s*what\(\):\s*(?P<what>.*)$")
#: Lines a crash handler, a shell or faulthandler adds around a crash: never the
#: crash's own text, never part of a what() (OpenMPI's opal/util/stacktrace.c banner
#: ``[host:pid] *** Process received signal ***`` and its frames, Python's
#: faulthandler, bash/zsh job messages, old glibc's backtrace dump, libmalloc's hint).
HANDLER_NOISE: tuple[re.Pattern[str], ...] = (
    re.compile(r"^\[[^\]\s]+:\d+(?::\d+)?\] "),
    re.compile(r"^\*\*\* (?:Process received signal|End of error message) \*\*\*"),
    re.compile(r"^(?:Signal(?: code)?|Failing at address|Associated errno): "),
    re.compile(r"^Fatal Python error"),
    re.compile(r"^(?:Current thread|Thread) 0x[0-9a-fA-F]+"),
    re.compile(r"^\s*File \".*\", line \d+"),
    re.compile(r"^(?:Aborted|Abort trap|Segmentation fault|Bus error)(?:[: ]|$)"),
    re.compile(r"^\S+: line \d+: +\d+ (?:Aborted|Abort trap|Segmentation fault)"),
    re.compile(r"^(?:zsh: )?(?:\[\d+\] +\d+ )?(?:abort|segmentation fault) +\S"),
    re.compile(r"^=+ (?:Backtrace|Memory map): =+"),
    re.compile(r"^#\d+ +0x[0-9a-fA-F]+ in "),
    re.compile(r"set a breakpoint in malloc_error_break to debug"),
)
#: Per-line prefixes of MPI launchers: OpenMPI ``--tag-output`` (``[1,0]<stderr>:``),
#: MPICH ``-prepend-rank`` (``[0] ``) and Slurm ``srun --label`` (``0: ``).
_RANK_PREFIX = re.compile(r"^(?:\[\d+,\d+\]<std(?:err|out)>:\s?|\[\d+\] (?!\s)|\s*\d+: (?!\s))")
#: A failed assert(): glibc's assert/assert.c ``prog: file:line: func: Assertion `x' failed.``
#: and musl's src/exit/assert.c ``Assertion failed: x (file: func: line)``.
_ASSERTION = re.compile(r"[^\n]*Assertion `[^\n]*' failed\.|Assertion failed: [^\n]+ \([^)\n]*\)")
#: glibc's debug/fortify_fail.c: ``*** buffer overflow detected ***: terminated`` (2.33+;
#: ``*** %s ***: %s terminated`` with the program before), also for stack smashing.
_FORTIFY = re.compile(r"\*\*\* (?P<msg>[a-z][^*\n]*? detected) \*\*\*: (?:\S+ )?terminated")

#: CASA error texts we know, with the cause to tell the user.
KNOWN_CASA_ERRORS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"Please make sure MS is writable when using Imager::ft"),
        "the MS (its table.dat or directory) is not writable by this user; "
        "WSClean run as another user (e.g. root in Docker) leaves table.dat owned by it",
    ),
    (
        re.compile(r"Error in Calibrater::initialize\(\)"),
        "the calibrater could not open the MS for writing (permissions, locks or a damaged MS)",
    ),
    (
        re.compile(r"Visibility data set not found|the vis parameter must be a path that exists"),
        "the vis path does not exist (relative paths are resolved in the caller's cwd)",
    ),
    (re.compile(r"Table \S+ does not exist"), "a table or subtable of the MS is missing"),
    (re.compile(r"cannot be opened for read/write|is not writable"), "a table is not writable"),
    (
        re.compile(r"[Ss]hape .*(?:mismatch|does not match|differs)|[Nn]o shape|shape mismatch"),
        "MODEL_DATA's cell shape disagrees with DATA or the SPECTRAL_WINDOW/POLARIZATION tables",
    ),
)

#: SEVERE lines CASA writes on every run on an offline machine: not failures.
SEVERE_NOISE: tuple[re.Pattern[str], ...] = (
    re.compile(r"MeasTable::dUTC"),
    re.compile(r"Leap second table TAI_UTC"),
    re.compile(r"MeasIERS::"),
)

_SEVERE_LINE = re.compile(r"^\S+ \S+\tSEVERE\t(?P<origin>[^\t]*)\t(?P<msg>.*)$")
_CASA_LINE = re.compile(r"^\S+ \S+\t(?P<prio>[A-Z0-9]+)\t(?P<origin>[^\t]*)\t(?P<msg>.*)$")

_SIGNAL_KINDS = {"SIGSEGV": "segfault", "SIGBUS": "segfault", "SIGKILL": "killed"}


@dataclass(frozen=True)
class Verdict:
    """What a finished child did, as data.

    ``kind`` is one of the stable kinds (``ok`` when nothing went wrong);
    ``detail`` is the one-line cause used in the message and the signature.
    """

    kind: str
    signal: str | None = None
    detail: str = ""
    casa_error: str | None = None
    casa_hint: str | None = None
    severe_lines: tuple[str, ...] = ()
    teardown_crash: bool = False
    signature: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.kind == "ok"


def signal_name(exit_code: int | None) -> str | None:
    """Name the signal of a raw exit status (negative = signal), e.g. -6 -> ``SIGABRT``."""
    if exit_code is None or exit_code >= 0:
        return None
    try:
        return _signal.Signals(-exit_code).name
    except ValueError:
        return f"SIG{-exit_code}"


def describe_status(exit_code: int | None) -> str:
    """Render an exit status the way loky does: ``SIGSEGV(-11)``, ``EXIT(3)``."""
    if exit_code is None:
        return "no exit status"
    name = signal_name(exit_code)
    return f"{name}({exit_code})" if name else f"EXIT({exit_code})"


def normalise_shell_status(exit_code: int) -> int:
    """Turn a shell's ``128+N`` into ``-N`` so a shell-run child classifies alike."""
    if 128 < exit_code <= 128 + 64:
        return -(exit_code - 128)
    return exit_code


def crash_lines(stderr: str) -> list[str]:
    """The lines of ``stderr`` without MPI rank prefixes, in order."""
    return [_RANK_PREFIX.sub("", line, count=1) for line in stderr.splitlines()]


def is_handler_noise(line: str) -> bool:
    """True for a crash handler's, shell's or faulthandler's line (see HANDLER_NOISE)."""
    text = line.strip()
    return any(noise.search(text) for noise in HANDLER_NOISE)


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


def terminate_message(stderr: str) -> str | None:
    """Describe the last C++ terminate in ``stderr`` (libstdc++ or libc++abi) with its what()."""
    lines = crash_lines(stderr)
    for index in range(len(lines) - 1, -1, -1):
        line = lines[index]
        llvm = _LIBCXXABI_TERMINATE.search(line.strip())
        if llvm:
            return _libcxxabi_detail(llvm, lines[index + 1 : index + 2])
        other = _LIBCXXABI_OTHER.search(line)
        if other:
            return _LIBCXXABI_OTHER_DETAIL[other.group("msg")]
        match = _TERMINATE.search(line)
        if not match:
            continue
        if match.group("other"):
            return f"terminate called {match.group('other')}"
        detail = f"uncaught C++ {match.group('type')}"
        what_lines = []
        for follow in lines[index + 1 : index + 4]:
            what = _WHAT.match(follow)
            if what:
                what_lines.append(what.group("what").strip())
            elif what_lines and follow.strip() and not is_handler_noise(follow):
                what_lines.append(follow.strip())
            else:
                break
        if what_lines:
            detail += f": {' '.join(what_lines)}"
        return detail
    return None


def _libcxxabi_detail(match: re.Match[str], following: list[str]) -> str:
    """libc++abi's message in libstdc++'s words, so one crash reads alike on both."""
    cause = match.group("cause")
    if cause is None:
        return "terminate called without an active exception"
    if match.group("foreign"):
        return f"{cause} foreign (non-C++) exception"
    type_name, what = match.group("type"), match.group("what")
    if type_name is None and following:
        wrapped = _TYPE_AND_WHAT.match(following[0].strip())
        if wrapped and not is_handler_noise(following[0]):
            type_name, what = wrapped.group("type"), wrapped.group("what")
    detail = f"{cause} C++ {type_name or 'exception'}"
    what = (what or "").strip()
    return f"{detail}: {what}" if what else detail


def severe_lines(casa_log: str) -> tuple[str, ...]:
    """Return the CASA log's SEVERE messages that are not known noise."""
    found = []
    for line in casa_log.splitlines():
        match = _SEVERE_LINE.match(line)
        if not match:
            continue
        origin, message = match.group("origin"), match.group("msg")
        if any(noise.search(origin) or noise.search(message) for noise in SEVERE_NOISE):
            continue
        found.append(f"{origin.rstrip('+')}: {message}".strip())
    return tuple(found)


_CASA_LOG_PREFIX = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s+[A-Z0-9]+\s+(?P<origin>[^\t]*)\t(?P<msg>.*)$"
)
_SOURCE_LOCATION = re.compile(r"\(file [^)]*\)")


def clean_casa_message(text: str) -> str:
    """Turn CASA's log-formatted exception text into ``message (file ..., line N)``.

    casatools exceptions carry the whole log line (timestamp, priority, origin,
    message); users want the message, with the source location as CASA prints it.
    """
    cleaned = []
    for line in text.strip().splitlines():
        match = _CASA_LOG_PREFIX.match(line.strip())
        if match:
            where = _SOURCE_LOCATION.search(match.group("origin"))
            line = match.group("msg").strip() + (f" {where.group(0)}" if where else "")
        cleaned.append(line)
    return "\n".join(cleaned)


def known_casa_error(text: str) -> tuple[str, str] | None:
    """Match ``text`` against CASA's known error messages: (matched text, cause)."""
    for pattern, hint in KNOWN_CASA_ERRORS:
        match = pattern.search(text)
        if match:
            return match.group(0), hint
    return None


def casa_error_from_log(severe: tuple[str, ...], stderr: str) -> str | None:
    """Best guess of the CASA error text when the child died before replying."""
    for line in severe:
        if known_casa_error(line):
            return line.split(": ", 1)[-1]
    for line in stderr.splitlines():
        if known_casa_error(line):
            return line.strip()
    for line in severe:
        if "Exception" in line or "Error" in line:
            return line.split(": ", 1)[-1]
    return None


#: What varies between two runs of one crash, in the order it is removed: MPI rank
#: prefixes, host:pid tags (OpenMPI's ``[host:pid]``, libmalloc's ``prog(pid,0xthread)``,
#: MPICH's ``RUNNING AT host``), timestamps, addresses, absolute paths, numbers; and
#: libc++'s inline namespace, so a crash reads alike under libc++ and libstdc++.
_NORMALISERS = (
    (re.compile(r"^(?:\[\d+,\d+\]<std(?:err|out)>:\s?)", re.MULTILINE), ""),
    (re.compile(r"\[[^\]\s]+:\d+(?::\d+)?\]"), "[<host:pid>]"),
    (re.compile(r"[\w.+-]+\(\d+,0x[0-9a-fA-F]+\)"), "<prog(pid)>"),
    (re.compile(r"\b(?:RUNNING AT|on host|on node|hostname:?) \S+", re.IGNORECASE), "<host>"),
    (
        re.compile(
            r"\d{4}[-/]\d\d[-/]\d\d(?:[ T]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?)?"
        ),
        "<time>",
    ),
    (re.compile(r"\b\d\d:\d\d:\d\d(?:\.\d+)?\b"), "<time>"),
    (re.compile(r"0x[0-9a-fA-F]+"), "0x?"),
    (re.compile(r"(?:/[^\s'\"():,]+)+"), "<path>"),
    (re.compile(r"\b(?:pid|line|PID) \d+"), "<n>"),
    (re.compile(r"std::__[0-9a-z]+::"), "std::"),
    (re.compile(r"\d+"), "<n>"),
)


def signature(kind: str, detail: str) -> str:
    """Short stable hash of kind + detail without what differs between hosts and runs.

    Hostnames, pids, MPI rank prefixes, timestamps, addresses, absolute paths and
    numbers are removed first (``_NORMALISERS``), so one crash on every node of a
    cluster has one signature.
    """
    text = detail
    for pattern, replacement in _NORMALISERS:
        text = pattern.sub(replacement, text)
    digest = hashlib.sha256(f"{kind}|{text.strip().lower()}".encode()).hexdigest()
    return digest[:12]


def classify(
    exit_code: int | None,
    stderr: str,
    casa_log: str = "",
    *,
    replied_ok: bool | None = None,
    error_text: str | None = None,
    error_is_casa: bool = False,
    timed_out: bool = False,
    oom_killed: bool = False,
    strict: bool = True,
) -> Verdict:
    """Classify one finished child.

    Args:
        exit_code: raw exit status; negative means killed by that signal.
        stderr: the tail of what the child wrote to fd 1 and fd 2.
        casa_log: the child's CASA log (may be empty).
        replied_ok: True/False if the child sent a success/error reply, None if none.
        error_text: the child's exception message when ``replied_ok`` is False.
        error_is_casa: the exception came out of a CASA task.
        timed_out: casaguard killed the child because the timeout passed.
        oom_killed: the kernel's cgroup counters show an OOM kill during the call.
        strict: treat unexpected SEVERE lines after a normal return as a failure.

    Returns:
        A Verdict; ``kind == "ok"`` only for a clean success.
    """
    severe = severe_lines(casa_log)
    sig = signal_name(exit_code)
    died = exit_code is not None and exit_code != 0
    if error_text and error_is_casa:
        error_text = clean_casa_message(error_text)
    casa_error = error_text if (replied_ok is False and error_is_casa) else None
    if casa_error is None and died:
        casa_error = casa_error_from_log(severe, stderr)
    hint_match = known_casa_error(casa_error or "") if casa_error else None
    hint = hint_match[1] if hint_match else None

    def verdict(kind: str, detail: str, **extra: str) -> Verdict:
        return Verdict(
            kind=kind,
            signal=sig,
            detail=detail,
            casa_error=casa_error,
            casa_hint=hint,
            severe_lines=severe,
            teardown_crash=bool(died and replied_ok is True),
            signature=signature(kind, detail),
            extra=dict(extra),
        )

    if timed_out:
        return verdict("timeout", "the call ran past its timeout")
    if died:
        kind, detail, facts = _crash_kind(exit_code, sig, stderr, oom_killed)
        if replied_ok is True:
            # The task finished; only teardown died. The caller gets the result.
            return Verdict(
                kind="ok",
                signal=sig,
                detail=detail,
                severe_lines=severe,
                teardown_crash=True,
                signature=signature(kind, detail),
                extra={"teardown_kind": kind, **facts},
            )
        return verdict(kind, detail, **facts)
    if replied_ok is None:
        return verdict("no-result", "the child exited 0 without a reply")
    if replied_ok is False:
        kind = "casa-error" if error_is_casa else "python-error"
        return verdict(kind, error_text or "")
    if strict and severe:
        return Verdict(
            kind="casa-severe",
            detail=severe[0],
            severe_lines=severe,
            signature=signature("casa-severe", severe[0]),
        )
    return Verdict(kind="ok", severe_lines=severe)


def _crash_kind(
    exit_code: int | None, sig: str | None, stderr: str, oom_killed: bool
) -> tuple[str, str, dict[str, str]]:
    """(kind, detail, facts) of a child that died; facts name the allocator of a heap check."""
    if sig is None:
        return "exit", f"exited with {describe_status(exit_code)} and no reply", {}
    # Heap checks abort; a segfault can follow a heap check that only warned.
    heap = heap_check(stderr) if sig in ("SIGABRT", "SIGSEGV", "SIGBUS") else None
    facts = {"allocator": heap[0]} if heap else {}
    if sig == "SIGABRT":
        if heap:
            return heap[1], heap[2], facts
        terminate = terminate_message(stderr)
        if terminate:
            return "cxx-terminate", terminate, {}
        fortify = _FORTIFY.search(stderr)
        if fortify:
            return "abort", fortify.group("msg"), {}
        assertion = _ASSERTION.search(stderr)
        if assertion:
            return "abort", assertion.group(0).strip(), {}
        return "abort", "abort() without a heap-check or C++ message", {}
    if sig in _SIGNAL_KINDS:
        kind = _SIGNAL_KINDS[sig]
        if kind == "killed":
            if oom_killed:
                return kind, "killed by the kernel's OOM killer (cgroup oom_kill rose)", {}
            return kind, "killed by SIGKILL that casaguard did not send", {}
        if heap:  # a segfault right after a heap check's warning
            return kind, f"{sig} after {heap[2]}", facts
        return kind, f"{sig} (invalid memory access)", {}
    return "signal", f"killed by {sig}", {}


def crash_message(
    *,
    task: str,
    pid: int | None,
    exit_code: int | None,
    verdict: Verdict,
    log_path: str | None,
    casa_log_empty: bool = False,
    timeout_s: float | None = None,
    exc_type: str | None = None,
) -> str:
    """Render the one-line human message for a failed call."""
    if verdict.kind == "timeout":
        how = f"timed out after {timeout_s:g} s" if timeout_s is not None else "timed out"
        what = "the child's process tree was killed"
    elif verdict.kind in ("casa-error", "python-error"):
        how = f"raised {(exc_type or 'an exception').removeprefix('builtins.')}"
        what = verdict.detail.strip().splitlines()[0] if verdict.detail.strip() else "(no message)"
    elif verdict.kind == "casa-severe":
        how = "returned normally but CASA logged SEVERE"
        what = verdict.detail
    elif verdict.kind == "no-result":
        how, what = "exited", verdict.detail
    else:
        how = f"died with {describe_status(exit_code)}"
        what = verdict.detail
    message = CRASH_MESSAGE.format(task=task, pid=pid, how=how, what=what)
    if verdict.casa_error and verdict.kind not in ("casa-error",):
        first = verdict.casa_error.strip().splitlines()[0]
        message += CASA_ERROR_SUFFIX.format(casa_error=first)
    if verdict.casa_hint:
        message += f" (likely cause: {verdict.casa_hint})"
    if log_path and casa_log_empty:
        message += EVIDENCE_SUFFIX.format(folder=log_path.rpartition("/")[0])
    elif log_path:
        message += LOG_SUFFIX.format(log_path=log_path)
    return message
