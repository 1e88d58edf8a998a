"""Can a CASA child of this process write a path? Judged from credentials, not by trying.

The CASA child inherits this process's credentials unchanged: effective uid,
groups and capabilities. So the judgement is made here, in the parent, from
``stat`` and ``/proc/self/status`` -- no casacore, no open for writing, no
chance of touching the user's MS. Root ignores file modes only while it holds
``CAP_DAC_OVERRIDE`` in its effective set; under
``setpriv --bounding-set=-dac_override ...`` (or in a container without the
capability) it obeys them like anyone else. POSIX ACLs are not evaluated: the
mode bits decide, and a file with an ACL is judged by its mode's group class.
"""

from __future__ import annotations

import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

CAP_DAC_OVERRIDE = 1
CAP_DAC_READ_SEARCH = 2
_PROC_STATUS = Path("/proc/self/status")


@dataclass(frozen=True)
class Credentials:
    """The identity the kernel checks file access against.

    Attributes:
        uid: effective (filesystem) uid.
        gids: effective gid plus supplementary groups.
        cap_eff: the effective capability mask.
    """

    uid: int
    gids: frozenset[int]
    cap_eff: int

    @property
    def dac_override(self) -> bool:
        """True when the kernel skips mode checks for writes (root with CAP_DAC_OVERRIDE)."""
        return bool(self.cap_eff >> CAP_DAC_OVERRIDE & 1)

    def describe(self) -> str:
        power = "with CAP_DAC_OVERRIDE" if self.dac_override else "without CAP_DAC_OVERRIDE"
        return f"uid {self.uid} ({user_name(self.uid)}) {power}"


def current_credentials() -> Credentials:
    """Read the credentials a child started now would have."""
    return Credentials(
        uid=os.geteuid(),
        gids=frozenset({os.getegid(), *os.getgroups()}),
        cap_eff=_cap_eff(),
    )


def _cap_eff() -> int:
    try:
        for line in _PROC_STATUS.read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    # Without /proc, assume the classic rule: root has every capability.
    return (1 << 64) - 1 if os.geteuid() == 0 else 0


def user_name(uid: int) -> str:
    """The login name of ``uid``, or the number as text."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


@dataclass(frozen=True)
class Access:
    """The verdict on one path.

    Attributes:
        path: the path judged.
        writable: whether the credentials may write it (directories: create and rename in it).
        reason: why not (empty when writable).
        owner_uid: the path's owner.
        mode: the permission bits.
    """

    path: str
    writable: bool
    reason: str
    owner_uid: int
    mode: int


def judge_write(path: str | os.PathLike[str], creds: Credentials) -> Access:
    """Decide whether ``creds`` may write ``path`` (a file, or a directory's entries).

    Returns:
        An Access; a path that cannot be stat'ed is not writable.
    """
    text = os.fspath(path)
    try:
        st = os.stat(text)
    except OSError as error:
        return Access(text, False, f"cannot stat: {error.strerror}", -1, 0)
    mode = stat.S_IMODE(st.st_mode)
    is_dir = stat.S_ISDIR(st.st_mode)
    # Writing a directory's entries needs write and search permission on it.
    needed = 0o3 if is_dir else 0o2
    if creds.dac_override:
        return Access(text, True, "", st.st_uid, mode)
    if creds.uid == st.st_uid:
        granted, who = mode >> 6 & 0o7, "owner"
    elif st.st_gid in creds.gids:
        granted, who = mode >> 3 & 0o7, "group"
    else:
        granted, who = mode & 0o7, "others"
    if granted & needed == needed:
        return Access(text, True, "", st.st_uid, mode)
    reason = (
        f"mode {mode:04o}, owner {user_name(st.st_uid)} (uid {st.st_uid}): "
        f"{who} may not write it, and this process is {creds.describe()}"
    )
    return Access(text, False, reason, st.st_uid, mode)


def read_only_filesystem(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` lives on a file system mounted read-only."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def free_bytes(path: str | os.PathLike[str]) -> int | None:
    """Bytes available to an unprivileged writer on ``path``'s file system."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize
