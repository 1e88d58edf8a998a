"""The MS's directories held open while a restore works in them.

A restore renames, unlinks and opens files inside the MS as the caller. If it
named them by path, a directory on the way (a subtable, in an MS others may
write to) could be swapped for a symlink between the check that it lies inside
the MS and the rename that follows, and the caller's rename or unlink would land
wherever the symlink points. So each directory is opened once, checked on its
descriptor, and every path handed out goes through that descriptor
(``/proc/self/fd/N/name``): whatever is renamed meanwhile, the operation stays in
the directory that was checked.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

from casaguard.errors import JournalError


class PinnedTree:
    """Directories of one MS, each opened once and checked to lie inside it."""

    def __init__(self, root: Path) -> None:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._fds = {"": fd}
        self.real_root = os.readlink(_through(fd))

    def dir(self, rel_dir: str) -> Path:
        """Directory ``rel_dir`` of the MS ("" for the MS itself), through its descriptor.

        Raises:
            JournalError: it resolves outside the MS.
            OSError: it cannot be opened (missing, not a directory, no permission).
        """
        return Path(_through(self._fd(rel_dir)))

    def path(self, rel: str) -> Path:
        """Entry ``rel`` of the MS: its last component by name, in its pinned directory."""
        parent, name = os.path.split(rel)
        return self.dir(parent) / name

    def dirs(self) -> list[Path]:
        """The directories opened so far."""
        return [Path(_through(fd)) for fd in self._fds.values()]

    def _fd(self, rel_dir: str) -> int:
        fd = self._fds.get(rel_dir)
        if fd is not None:
            return fd
        parent, name = os.path.split(rel_dir)
        # A symlinked subtable is followed, as CASA follows it; where it leads is
        # asked of the open descriptor, so it cannot change after the answer.
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self._fd(parent))
        real = os.readlink(_through(fd))
        if os.path.commonpath([self.real_root, real]) != self.real_root:
            os.close(fd)
            raise JournalError(f"{rel_dir} of the MS resolves outside it: {real}")
        self._fds[rel_dir] = fd
        return fd

    def close(self) -> None:
        """Close every descriptor."""
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __enter__(self) -> PinnedTree:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _through(fd: int) -> str:
    return f"/proc/self/fd/{fd}"
