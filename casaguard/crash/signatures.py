"""Crash signatures: a short hash of kind + detail, the same on every host and every run.

Separate from the classifier because a signature is not only a verdict's: the
sandbox signs a ``locked`` refusal without classifying any death.
"""

from __future__ import annotations

import hashlib
import re

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
