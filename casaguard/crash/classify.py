"""Pure crash classification: (exit status, stderr tail, CASA log, reply) -> Verdict.

No I/O. This module owns the decision -- which kind a death is -- and the
``Verdict`` it returns. The knowledge it decides with lives in data tables next
door, each row taken from the runtime's own source (named next to it) or from
its real output, so a table grows without touching the decision:
``heap_checks`` (glibc, macOS libmalloc, jemalloc, tcmalloc), ``cxx_terminate``
(libstdc++, LLVM libc++abi), ``casa_log`` (CASA's known errors and its
known-noise SEVERE lines) and ``stderr_lines`` (MPI rank prefixes, crash
handlers' banners). ``exit_status`` names a status, ``signatures`` hashes a
verdict's detail and ``message`` renders a verdict for a human. Only glibc's
abort lines (fortify, assert) stay here: the abort branch is their one reader.
Arrows point one way: those modules never import this one, but for ``message``
(which renders a ``Verdict``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from casaguard.crash.casa_log import (
    casa_error_from_log,
    clean_casa_message,
    known_casa_error,
    severe_lines,
)
from casaguard.crash.cxx_terminate import terminate_message
from casaguard.crash.exit_status import describe_status, signal_name
from casaguard.crash.heap_checks import heap_check
from casaguard.crash.signatures import signature

#: A failed assert(): glibc's assert/assert.c ``prog: file:line: func: Assertion `x' failed.``
#: and musl's src/exit/assert.c ``Assertion failed: x (file: func: line)``.
_ASSERTION = re.compile(r"[^\n]*Assertion `[^\n]*' failed\.|Assertion failed: [^\n]+ \([^)\n]*\)")
#: glibc's debug/fortify_fail.c: ``*** buffer overflow detected ***: terminated`` (2.33+;
#: ``*** %s ***: %s terminated`` with the program before), also for stack smashing.
_FORTIFY = re.compile(r"\*\*\* (?P<msg>[a-z][^*\n]*? detected) \*\*\*: (?:\S+ )?terminated")

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
