"""C++ terminate messages in a crash's stderr: libstdc++'s and LLVM libc++abi's, with what().

``terminate_message`` words a libc++abi terminate the way libstdc++ does, so one
uncaught exception on macOS and on Linux has one detail and one signature.

Separate from the heap checks: another runtime, its own patterns, and its own
reading across lines (the what() text, a type wrapped onto the next line).
"""

from __future__ import annotations

import re

from casaguard.crash.stderr_lines import crash_lines, is_handler_noise

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
