"""CASA's own words: its known error texts, its known-noise SEVERE lines, its log format.

Reads the child's CASA log and CASA's exception text, never the C runtimes'
messages on stderr: which SEVERE lines are real failures, which known CASA error
a message is (and the cause to tell the user), and a message without CASA's
log-line prefix.

Separate because this is CASA knowledge: it changes with CASA releases, not with
the allocators and C++ runtimes the stderr matchers follow.
"""

from __future__ import annotations

import re

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
