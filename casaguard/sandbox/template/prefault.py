"""The pages a fork's first task writes: learned once by the template, touched early by each spare.

Runs only in the template and its forks. Every page a fork writes that it
still shares with the template costs a copy-on-write fault (~3 µs) at the
moment of the write: measured on a 1k-row MS, a warm fork's ``ft`` takes
~1,450 of them (~3-4 ms of the call) where an in-process ``ft`` takes ~15.
The template learns which pages those are once, in a throwaway fork that runs
the warm-up's tasks (``learn``), and every spare makes its own copy of each
of them while it is idle, before a job arrives (``touch_ahead``): the copies
are made then, off the caller's time.

A page is touched only inside a private, writable mapping that is anonymous
or a loaded object's data, checked in the spare itself against its own
memory map. The cheapest way the kernel offers:

* ``MADV_POPULATE_WRITE`` (Linux 5.14) breaks copy-on-write for a run of
  pages in one call and writes no data (where a page lies past the end of
  its file it fails with EFAULT instead of raising SIGBUS); and with it,
  ``PROCMAP_QUERY`` (Linux 6.11) asks for only the mappings the learned
  pages lie in. Reading ``/proc/self/maps`` whole cost each spare ~4 ms of
  CPU (the kernel formats a path for each of the template's ~3,000
  mappings); a spare needs a few dozen. Which files are loaded objects is
  then what the template's map said when it learned (a library loaded or
  replaced later is skipped: a page left to fault, nothing worse).
* Without either: ``/proc/self/maps`` is read whole, and one byte of each
  page is written back with its own value, which changes nothing a program
  can see (nothing else writes the page meanwhile: a spare has one thread).
"""

from __future__ import annotations

import array
import bisect
import contextlib
import ctypes
import errno
import os
import select
import signal
import sys
import time
from collections.abc import Callable, Iterator
from typing import NoReturn

_PAGE = os.sysconf("SC_PAGE_SIZE")
#: pagemap bits (Documentation/admin-guide/mm/pagemap.rst): present, mapped by this process only.
_PRESENT = 1 << 63
_EXCLUSIVE = 1 << 56
#: How long the template waits for the learning fork; it is an optimisation only.
LEARN_TIMEOUT_S = 60.0
#: Pages touched between two looks at the job pipe: a job never waits for more.
_BATCH = 128

#: The learned page addresses, sorted (set in the template, inherited by every spare).
_learned = array.array("Q")
#: Files mapped executable in the template when it learned: a private writable
#: mapping of one of them is that object's data (inherited by every spare).
_objects: set[str] = set()

_MADV_POPULATE_WRITE = 23  # <linux/mman.h>, Linux 5.14
#: _IOWR('f', 17, struct procmap_query), <linux/fs.h>, Linux 6.11
_PROCMAP_QUERY = 0xC0686611
_VMA_READABLE, _VMA_WRITABLE, _VMA_SHARED = 0x01, 0x02, 0x08
_QUERY_COVERING_OR_NEXT_VMA = 0x10


class _ProcmapQuery(ctypes.Structure):
    """``struct procmap_query`` (<linux/fs.h>): the mapping around ``query_addr``."""

    _fields_ = [
        ("size", ctypes.c_uint64),
        ("query_flags", ctypes.c_uint64),
        ("query_addr", ctypes.c_uint64),
        ("vma_start", ctypes.c_uint64),
        ("vma_end", ctypes.c_uint64),
        ("vma_flags", ctypes.c_uint64),
        ("vma_page_size", ctypes.c_uint64),
        ("vma_offset", ctypes.c_uint64),
        ("inode", ctypes.c_uint64),
        ("dev_major", ctypes.c_uint32),
        ("dev_minor", ctypes.c_uint32),
        ("vma_name_size", ctypes.c_uint32),
        ("build_id_size", ctypes.c_uint32),
        ("vma_name_addr", ctypes.c_uint64),
        ("build_id_addr", ctypes.c_uint64),
    ]


def learned_pages() -> int:
    return len(_learned)


def forget() -> None:
    """Touch nothing from now on (e.g. an idle spare died for no known reason)."""
    del _learned[:]


def _touchable(readable: bool, writable: bool, shared: bool, path: str, objects: set[str]) -> bool:
    """A private writable mapping that is anonymous or a loaded object's data.

    A private mapping of any other file is left out: if that file shrank, a
    read past its end would raise SIGBUS.
    """
    if not readable or not writable or shared:
        return False
    return path in ("", "[heap]") or path.startswith("[anon") or path in objects


def _read_maps() -> tuple[list[tuple[int, int, str, str]], set[str]]:
    """(low, high, perms, path) of every mapping, and the files mapped executable."""
    objects: set[str] = set()
    mappings: list[tuple[int, int, str, str]] = []
    # Bytes, decoded as the file system's names are: a mapped file's name need
    # not be UTF-8, and PROCMAP_QUERY's names are decoded the same way.
    with open("/proc/self/maps", "rb") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            path = os.fsdecode(fields[5].strip()) if len(fields) > 5 else ""
            perms = fields[1].decode()
            if perms[2] == "x" and path.startswith("/"):
                objects.add(path)
            low, high = (int(x, 16) for x in fields[0].split(b"-"))
            mappings.append((low, high, perms, path))
    return mappings, objects


def _writable_ranges() -> list[tuple[int, int]]:
    """This process's touchable mappings (see ``_touchable``), as (low, high)."""
    mappings, objects = _read_maps()
    return [
        (low, high)
        for low, high, perms, path in mappings
        if _touchable(perms[0] == "r", perms[1] == "w", perms[3] == "s", path, objects)
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
    _objects.clear()
    _objects.update(_read_maps()[1])
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

    Only pages inside touchable mappings (``_touchable``) are copied, in runs
    of at most ``_BATCH`` pages; it stops as soon as ``job_pipe`` is readable,
    so a job waits for at most one run. Returns how many pages it copied.
    Never raises: copying ahead only saves time, and a spare that died of it
    would leave every call to fork on the spot.
    """
    if not _learned:
        return 0
    try:
        return _touch_ahead(job_pipe)
    except Exception as error:  # noqa: BLE001 - e.g. MemoryError, /proc unreadable
        print(f"casaguard spare: pages not copied ahead: {error!r}", file=sys.stderr)
        return 0


def _touch_ahead(job_pipe: int) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    poll = select.poll()
    poll.register(job_pipe, select.POLLIN)
    populate = _populate_works(libc)
    copy = _populate if populate else _write_back
    touched = 0
    # Closed before the job runs: the task must not inherit it.
    maps_fd = os.open("/proc/self/maps", os.O_RDONLY | os.O_CLOEXEC)
    try:
        for start, pages in _runs(_mapping_finder(libc, maps_fd, query=populate)):
            touched += copy(libc, start, pages)
            if poll.poll(0):
                break
    finally:
        os.close(maps_fd)
    return touched


#: (low, high, touchable) of the mapping around an address, or of the unmapped gap there.
_Finder = Callable[[int], tuple[int, int, bool]]


def _runs(find: _Finder) -> Iterator[tuple[int, int]]:
    """(first address, pages) of each run of adjacent learned pages in one touchable mapping."""
    low = high = 0
    ok = False
    start, pages = 0, 0
    for address in _learned:
        if not low <= address < high:
            low, high, ok = find(address)
            if pages:  # a run never crosses into another mapping
                yield start, pages
                pages = 0
        if not ok:
            continue
        if pages and address == start + pages * _PAGE and pages < _BATCH:
            pages += 1
            continue
        if pages:
            yield start, pages
        start, pages = address, 1
    if pages:
        yield start, pages


def _mapping_finder(libc: ctypes.CDLL, maps_fd: int, *, query: bool) -> _Finder:
    """With ``query``: ``PROCMAP_QUERY`` on ``maps_fd``, one mapping at a time; else maps whole."""
    name = ctypes.create_string_buffer(4096)
    request = _ProcmapQuery()

    def ask(address: int) -> tuple[int, int, bool] | None:
        """The mapping around ``address``, the unmapped gap up to the next one, or None (failed)."""
        ctypes.memset(ctypes.addressof(request), 0, ctypes.sizeof(request))
        request.size = ctypes.sizeof(request)
        request.query_flags = _QUERY_COVERING_OR_NEXT_VMA
        request.query_addr = address
        request.vma_name_size = len(name)
        request.vma_name_addr = ctypes.addressof(name)
        if libc.ioctl(maps_fd, ctypes.c_ulong(_PROCMAP_QUERY), ctypes.byref(request)) != 0:
            if ctypes.get_errno() == errno.ENOENT:
                return address, 1 << 64, False  # nothing mapped from here on
            return None
        if request.vma_start > address:
            return address, request.vma_start, False  # a gap: nothing mapped there
        flags = request.vma_flags
        path = os.fsdecode(name.value) if request.vma_name_size else ""
        touchable = _touchable(
            bool(flags & _VMA_READABLE),
            bool(flags & _VMA_WRITABLE),
            bool(flags & _VMA_SHARED),
            path,
            _objects,
        )
        return request.vma_start, request.vma_end, touchable

    def ask_or_skip(address: int) -> tuple[int, int, bool]:
        # A query that fails (e.g. a name longer than the buffer): that page is skipped.
        return ask(address) or (address, address + _PAGE, False)

    # The request itself is certainly mapped; ENOTTY: a kernel before 6.11.
    if query and ask(ctypes.addressof(request)) is not None:
        return ask_or_skip
    ranges = sorted(_writable_ranges())
    lows = [low for low, _ in ranges]

    def look_up(address: int) -> tuple[int, int, bool]:
        where = bisect.bisect_right(lows, address) - 1
        if where >= 0 and address < ranges[where][1]:
            return ranges[where][0], ranges[where][1], True
        # Not touchable up to the next touchable range (or forever).
        following = ranges[where + 1][0] if where + 1 < len(ranges) else 1 << 64
        return address, following, False

    return look_up


def _populate_works(libc: ctypes.CDLL) -> bool:
    """Whether ``MADV_POPULATE_WRITE`` is there: tried on a page of our own."""
    page = ctypes.create_string_buffer(2 * _PAGE)  # holds one whole aligned page
    aligned = -(-ctypes.addressof(page) // _PAGE) * _PAGE
    return _madvise(libc, aligned, 1) == 0


def _populate(libc: ctypes.CDLL, start: int, pages: int) -> int:
    """Break copy-on-write for ``pages`` pages from ``start``; no data is written."""
    if _madvise(libc, start, pages) == 0:
        return pages
    # E.g. EFAULT: a page past the end of its file (a SIGBUS avoided). Page by
    # page, so that the others are still copied and counted.
    return sum(_madvise(libc, start + index * _PAGE, 1) == 0 for index in range(pages))


def _madvise(libc: ctypes.CDLL, start: int, pages: int) -> int:
    # Every argument typed: an untyped Python int goes as a 32-bit int, and
    # madvise's length is a size_t.
    return int(
        libc.madvise(
            ctypes.c_void_p(start),
            ctypes.c_size_t(pages * _PAGE),
            ctypes.c_int(_MADV_POPULATE_WRITE),
        )
    )


def _write_back(_: ctypes.CDLL, start: int, pages: int) -> int:
    """Write one byte of each page back with its own value (kernels before 5.14)."""
    for index in range(pages):
        byte = ctypes.c_ubyte.from_address(start + index * _PAGE)
        byte.value = byte.value
    return pages
