"""Which lines of a crash's stderr are the crash's own: rank prefixes off, handler banners out.

Every stderr matcher (``heap_checks``, ``cxx_terminate``) reads the lines through
``crash_lines`` and skips ``is_handler_noise``. The two live here, below both
matchers, so that neither matcher imports the other and one list of banners
serves both.
"""

from __future__ import annotations

import re

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


def crash_lines(stderr: str) -> list[str]:
    """The lines of ``stderr`` without MPI rank prefixes, in order."""
    return [_RANK_PREFIX.sub("", line, count=1) for line in stderr.splitlines()]


def is_handler_noise(line: str) -> bool:
    """True for a crash handler's, shell's or faulthandler's line (see HANDLER_NOISE)."""
    text = line.strip()
    return any(noise.search(text) for noise in HANDLER_NOISE)
