"""Pure crash classification: (exit status, stderr tail, CASA log, reply) -> verdict.

No I/O and no imports from the rest of the package but ``errors`` (for the
message formats). The knowledge lives in data tables: glibc's
``malloc_printerr`` families, libstdc++'s terminate message, CASA's known
error texts and its known-noise SEVERE lines. Old glibc formats
(2.17: ``*** Error in `python': double free or corruption (out): 0x... ***``)
are unwrapped before matching, so one table serves every version.
"""

from __future__ import annotations

import hashlib
import re
import signal as _signal
from dataclasses import dataclass, field

from casaguard.errors import CASA_ERROR_SUFFIX, CRASH_MESSAGE, EVIDENCE_SUFFIX, LOG_SUFFIX

#: glibc heap-check families, most specific first: (kind, pattern).
GLIBC_FAMILIES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("double-free", re.compile(r"double free or corruption(?: \([^)]*\))?")),
    ("double-free", re.compile(r"free\(\): double free detected in tcache \d+")),
    ("corrupted-size", re.compile(r"corrupted size vs\.? prev_size(?: while consolidating)?")),
    (
        "invalid-pointer",
        re.compile(r"(?:free|munmap_chunk|realloc|mremap_chunk)\(\): invalid pointer"),
    ),
    (
        "heap-corruption",
        re.compile(
            r"(?:malloc|free|realloc|calloc|malloc_consolidate|_int_malloc|_int_free|"
            r"tcache_thread_shutdown|malloc_trim|munmap_chunk|mremap_chunk)\(\): [^\n]+"
        ),
    ),
    (
        "heap-corruption",
        re.compile(r"corrupted (?:double-linked list(?: \(not small\))?|top size)"),
    ),
    ("heap-corruption", re.compile(r"malloc: (?:top chunk is corrupt|corrupted top size)")),
    ("heap-corruption", re.compile(r"break adjusted to free malloc space")),
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
_WHAT = re.compile(r"^\s*what\(\):\s*(?P<what>.*)$")
_ASSERTION = re.compile(r"[^\n]*Assertion `[^\n]*' failed\.")

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


def heap_message(stderr: str) -> tuple[str, str] | None:
    """Find the last glibc heap-check message in ``stderr``: (kind, message)."""
    for line in reversed(stderr.splitlines()):
        text = line.strip()
        for wrapper in _OLD_GLIBC_WRAPPERS:
            wrapped = wrapper.search(text)
            if wrapped:
                text = wrapped.group("msg")
                break
        for kind, pattern in GLIBC_FAMILIES:
            match = pattern.search(text)
            if match:
                return kind, match.group(0).strip()
    return None


def terminate_message(stderr: str) -> str | None:
    """Describe libstdc++'s last ``terminate called ...`` in ``stderr`` with its ``what()``."""
    lines = stderr.splitlines()
    for index in range(len(lines) - 1, -1, -1):
        match = _TERMINATE.search(lines[index])
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
            elif what_lines and follow.strip() and not follow.startswith("Fatal Python"):
                what_lines.append(follow.strip())
            else:
                break
        if what_lines:
            detail += f": {' '.join(what_lines)}"
        return detail
    return None


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


_NORMALISERS = (
    (re.compile(r"0x[0-9a-fA-F]+"), "0x?"),
    (re.compile(r"(?:/[^\s'\"():,]+)+"), "<path>"),
    (re.compile(r"\b(?:pid|line) \d+"), "<n>"),
    (re.compile(r"\d+"), "<n>"),
)


def signature(kind: str, detail: str) -> str:
    """Short stable hash of kind + detail with addresses, paths and numbers removed."""
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
        kind, detail = _crash_kind(exit_code, sig, stderr, oom_killed)
        if replied_ok is True:
            # The task finished; only teardown died. The caller gets the result.
            return Verdict(
                kind="ok",
                signal=sig,
                detail=detail,
                severe_lines=severe,
                teardown_crash=True,
                signature=signature(kind, detail),
                extra={"teardown_kind": kind},
            )
        return verdict(kind, detail)
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
) -> tuple[str, str]:
    if sig is None:
        return "exit", f"exited with {describe_status(exit_code)} and no reply"
    if sig == "SIGABRT":
        heap = heap_message(stderr)
        if heap:
            return heap
        terminate = terminate_message(stderr)
        if terminate:
            return "cxx-terminate", terminate
        assertion = _ASSERTION.search(stderr)
        if assertion:
            return "abort", assertion.group(0).strip()
        return "abort", "abort() without a glibc or C++ message"
    if sig in _SIGNAL_KINDS:
        kind = _SIGNAL_KINDS[sig]
        if kind == "killed":
            if oom_killed:
                return kind, "killed by the kernel's OOM killer (cgroup oom_kill rose)"
            return kind, "killed by SIGKILL that casaguard did not send"
        heap = heap_message(stderr)  # a segfault right after a glibc warning
        if heap:
            return kind, f"{sig} after {heap[1]}"
        return kind, f"{sig} (invalid memory access)"
    return "signal", f"killed by {sig}"


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
