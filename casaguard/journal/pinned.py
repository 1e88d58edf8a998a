"""The MS's directories held open while a restore works in them.

A restore renames, unlinks and opens files inside the MS as the caller. If it
named them by path, a directory on the way (a subtable, in an MS others may
write to) could be swapped for a symlink between the check that it lies inside
the MS and the rename that follows, and the caller's rename or unlink would land
wherever the symlink points. So each directory is opened once, checked on its
descriptor, and every path handed out goes through that descriptor
(``/proc/self/fd/N/name``): whatever is renamed meanwhile, the operation stays in
the directory that was checked. Each directory the snapshot copied from must
also be that very directory (device and inode, as the manifest recorded them):
another directory of the MS, or another MS, swapped in under its name, is refused.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType

from casaguard.errors import JournalError


class PinnedTree:
    """Directories of one MS, each opened once and checked to lie inside it."""

    def __init__(self, root: Path, snapshotted: Mapping[str, tuple[int, int]]) -> None:
        """Open the MS at ``root``.

        Args:
            root: the MS.
            snapshotted: (device, inode) of the directories the snapshot copied from,
                by path in the MS ("" for the MS itself).

        Raises:
            JournalError: the MS is not the directory the snapshot was taken of.
        """
        self._snapshotted = snapshotted
        self._fds: dict[str, int] = {}
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            self._check_identity("", fd)
        except BaseException:
            os.close(fd)
            raise
        self._fds[""] = fd
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

    def unpinning(self, root: Path) -> Callable[[str], str]:
        """A function that writes each descriptor path of this tree in a text as the MS path
        (under ``root``) it stands for; it keeps working after the tree is closed."""
        where = {str(fd): str(root / rel) if rel else str(root) for rel, fd in self._fds.items()}
        return lambda text: _THROUGH.sub(lambda m: where.get(m.group(1), m.group(0)), text)

    def _fd(self, rel_dir: str) -> int:
        fd = self._fds.get(rel_dir)
        if fd is not None:
            return fd
        parent, name = os.path.split(rel_dir)
        # A symlinked subtable is followed, as CASA follows it; where it leads is
        # asked of the open descriptor, so it cannot change after the answer.
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self._fd(parent))
        try:
            real = os.readlink(_through(fd))
            if os.path.commonpath([self.real_root, real]) != self.real_root:
                raise JournalError(f"{rel_dir} of the MS resolves outside it: {real}")
            self._check_identity(rel_dir, fd)
        except BaseException:
            os.close(fd)
            raise
        self._fds[rel_dir] = fd
        return fd

    def _check_identity(self, rel_dir: str, fd: int) -> None:
        expected = self._snapshotted.get(rel_dir)
        st = os.fstat(fd)
        if expected is not None and (st.st_dev, st.st_ino) != expected:
            what = rel_dir or "the MS"
            raise JournalError(
                f"{what} is not the directory the snapshot was taken of (replaced since)"
            )

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


_THROUGH = re.compile(r"/proc/self/fd/(\d+)(?!\d)")
