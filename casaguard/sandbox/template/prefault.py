"""The pages a fork's first task writes: learned once by the template, touched early by each spare.

Runs only in the template and its forks. Every page a fork writes that it
still shares with the template costs a copy-on-write fault (~3 µs) at the
moment of the write: measured on a 1k-row MS, a warm fork's ``ft`` takes
~1,450 of them (~3-4 ms of the call) where an in-process ``ft`` takes ~15.
The template learns which pages those are once, in a throwaway fork that runs
the warm-up's tasks (``learn``), and every spare writes each of them back
with its own value while it is idle, before a job arrives (``touch_ahead``):
the copies are made then, off the caller's time.

Writing a byte back with its own value changes nothing a program can see,
provided nothing else writes the page at the same moment (a spare has one
thread) and the page is private and writable, which ``_writable_ranges``
checks in the spare itself, against its own memory map, before any write.
"""

from __future__ import annotations

import array
import bisect
import contextlib
import ctypes
import os
import select
import signal
import time
from collections.abc import Callable
from typing import NoReturn

_PAGE = os.sysconf("SC_PAGE_SIZE")
#: pagemap bits (Documentation/admin-guide/mm/pagemap.rst): present, mapped by this process only.
_PRESENT = 1 << 63
_EXCLUSIVE = 1 << 56
#: How long the template waits for the learning fork; it is an optimisation only.
LEARN_TIMEOUT_S = 60.0
#: Pages touched between two looks at the job pipe: a job never waits for more.
_BATCH = 128

#: The learned page addresses (set in the template, inherited by every spare).
_learned = array.array("Q")


def learned_pages() -> int:
    return len(_learned)


def forget() -> None:
    """Touch nothing from now on (e.g. an idle spare died for no known reason)."""
    del _learned[:]


def _writable_ranges() -> list[tuple[int, int]]:
    """This process's private writable mappings that are anonymous or a loaded object's data.

    A private mapping of any other file is left out: if that file shrank, a
    read past its end would raise SIGBUS.
    """
    objects: set[str] = set()
    candidates: list[tuple[int, int, str]] = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            path = fields[5].strip() if len(fields) > 5 else ""
            perms = fields[1]
            if perms[2] == "x" and path.startswith("/"):
                objects.add(path)
            if perms[0] == "r" and perms[1] == "w" and perms[3] == "p":
                low, high = (int(x, 16) for x in fields[0].split("-"))
                candidates.append((low, high, path))
    return [
        (low, high)
        for low, high, path in candidates
        if path in ("", "[heap]") or path.startswith("[anon") or path in objects
    ]


def _exclusive_pages(ranges: list[tuple[int, int]]) -> set[int]:
    """The pages of ``ranges`` present and mapped by this process alone (its own copies)."""
    pages: set[int] = set()
    with open("/proc/self/pagemap", "rb") as pagemap:
        for low, high in ranges:
            pagemap.seek(low // _PAGE * 8)
            entries = array.array("Q", pagemap.read((high - low) // _PAGE * 8))
            for index, entry in enumerate(entries):
                if entry & _PRESENT and entry & _EXCLUSIVE:
                    pages.add(low + index * _PAGE)
    return pages


def learn(run: Callable[[], None], close: tuple[int, ...]) -> int:
    """Learn the pages a fork writes while ``run()`` runs; keep them for every later spare.

    ``run`` runs in a throwaway fork, which first closes ``close`` (what no
    fork of the template may keep) and dies with the template. Returns how
    many pages were learned (0 when the kernel does not tell, the fork fails
    or takes too long).
    """
    template = os.getpid()
    read_end, write_end = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(read_end)
        os.close(write_end)
        return 0
    if pid == 0:  # pragma: no cover - the fork leaves through os._exit
        try:
            from casaguard.sandbox import child

            # The template's SIGCHLD wake-up goes to one of the fds closed below.
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            os.close(read_end)
            for fd in close:
                os.close(fd)
            child.die_with_parent(template)
        finally:
            _learn_in_fork(run, write_end)
    os.close(write_end)
    data = bytearray()
    deadline = time.monotonic() + LEARN_TIMEOUT_S
    try:
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([read_end], [], [], left)[0]:
                break
            chunk = os.read(read_end, 1 << 20)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(read_end)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    pages = array.array("Q")
    if len(data) % pages.itemsize == 0:
        pages.frombytes(bytes(data))
    del _learned[:]
    _learned.extend(pages)
    return len(_learned)


def _learn_in_fork(run: Callable[[], None], write_end: int) -> NoReturn:
    try:
        ranges = _writable_ranges()
        before = _exclusive_pages(ranges)
        run()
        written = sorted(_exclusive_pages(ranges) - before)
        view = memoryview(array.array("Q", written).tobytes())
        while view:
            view = view[os.write(write_end, view) :]
    finally:
        os._exit(0)


def touch_ahead(job_pipe: int) -> int:
    """In an idle spare: make its own copy of every learned page, until a job arrives.

    Each page gets one byte written back with its own value. Only pages inside
    this process's private writable mappings are touched; it stops as soon as
    ``job_pipe`` is readable, so a job waits for at most one batch. Returns
    how many pages it touched.
    """
    if not _learned:
        return 0
    ranges = sorted(_writable_ranges())
    lows = [low for low, _ in ranges]
    poll = select.poll()
    poll.register(job_pipe, select.POLLIN)
    touched = 0
    for address in _learned:
        where = bisect.bisect_right(lows, address) - 1
        if where < 0 or address >= ranges[where][1]:
            continue
        byte = ctypes.c_ubyte.from_address(address)
        byte.value = byte.value
        touched += 1
        if touched % _BATCH == 0 and poll.poll(0):
            break
    return touched
