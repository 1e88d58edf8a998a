"""Probe checks made in the calling process: path, locks, write access, disk space.

These need no casacore -- only ``stat``, ``statvfs``, ``/proc/locks`` and
``/proc/self/status`` -- so they run in the parent, for three reasons:

* the CASA child inherits the parent's credentials unchanged, so the parent
  judges write access with exactly the uid, groups and capabilities CASA will
  have (``casaguard.ms.access``);
* locks are read before any child opens the MS, so the probe never sees its
  own child as a holder, and a lock found here is another process's;
* their evidence survives when the static child crashes on a damaged file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from casaguard.journal import layout as journal_layout
from casaguard.journal import trust as journal_trust
from casaguard.ms import access, locks
from casaguard.preflight.findings import Finding

#: Subtables ft and clearcal open read/write (both append to HISTORY; ft opens SOURCE).
WRITTEN_SUBTABLES = ("HISTORY", "SOURCE")
#: Headroom over the raw MODEL_DATA bytes (tile padding, table.dat rewrite).
DISK_HEADROOM = 1.1
_COMPLEX_BYTES = 8


def input_findings(path: str) -> list[Finding]:
    """Is ``path`` a directory holding a casacore table at all?"""
    if not os.path.lexists(path):
        return [Finding("PATH_MISSING", f"{path} does not exist", "check the path", path=path)]
    if not os.path.isdir(path):
        return [
            Finding(
                "NOT_A_DIRECTORY",
                f"{path} is a file, not an MS directory",
                "give the MS directory (an MS is a directory of tables)",
                path=path,
            )
        ]
    if not os.path.isfile(os.path.join(path, "table.dat")):
        return [
            Finding(
                "NOT_A_TABLE",
                f"{path} has no table.dat: it is not a casacore table",
                "give the MS directory itself (the one holding table.dat)",
                path=path,
            )
        ]
    return []


def _tables(path: str) -> list[str]:
    """The main table and every subtable directory under it."""
    found = [path]
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except OSError:
        return found
    found += [
        e.path for e in entries if e.is_dir() and os.path.isfile(os.path.join(e.path, "table.dat"))
    ]
    return found


def lock_findings(path: str) -> list[Finding]:
    """Other processes' locks on the MS or its subtables; missing lock files."""
    findings = []
    missing = []
    for table in _tables(path):
        if not os.path.exists(os.path.join(table, "table.lock")):
            missing.append(os.path.relpath(table, path))
        for holder in locks.lock_holders(table):
            where = os.path.relpath(table, path)
            where_text = "the MS" if where == "." else f"subtable {where}"
            data = {
                "pid": holder.pid,
                "cmdline": holder.cmdline,
                "lock_type": holder.lock_type,
                "table": table,
            }
            if holder.blocks_casa:
                findings.append(
                    Finding(
                        "MS_LOCKED",
                        f"{holder.lock_type} lock on {where_text} held by pid {holder.pid} "
                        f"({holder.cmdline})",
                        f"wait for pid {holder.pid} to finish or close the MS; CASA would wait "
                        "forever",
                        path=table,
                        data=data,
                    )
                )
            else:
                findings.append(
                    Finding(
                        "MS_IN_USE",
                        f"{where_text} is open in pid {holder.pid} ({holder.cmdline}), no table "
                        "lock held now",
                        f"close the MS in pid {holder.pid} before writing to it",
                        path=table,
                        data=data,
                    )
                )
    findings += journal_findings(path)
    if missing:
        findings.append(
            Finding(
                "LOCK_FILE_MISSING",
                f"no table.lock in {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}: "
                "opening the table creates one (CASA does too)",
                data={"tables": missing},
            )
        )
    return findings


def journal_findings(path: str) -> list[Finding]:
    """A pending journal: the MS may be half-written until ``restore-journal`` runs."""
    if journal_trust.writer_active(path):
        return []  # a guarded write is running; its journal is not pending
    return [
        Finding(
            "JOURNAL_PENDING",
            f"{path} may be half-written: a guarded write died and left its snapshot in {found}",
            "run `"
            + journal_layout.RESTORE_COMMAND.format(vis=os.path.abspath(path))
            + "` to roll it back",
            path=path,
            data={"journal": str(found)},
        )
        for found in journal_trust.pending_journals(path, clean=False)
    ]


def access_findings(path: str, creds: access.Credentials) -> list[Finding]:
    """Write access to everything ft and clearcal write, judged with ``creds``."""
    findings: list[Finding] = []
    if access.read_only_filesystem(path):
        return [
            Finding(
                "READ_ONLY_FILESYSTEM",
                f"{path} is on a read-only file system",
                "copy the MS to a writable disk",
                path=path,
            )
        ]
    ms_dir = access.judge_write(path, creds)
    if not ms_dir.writable:
        findings.append(
            Finding(
                "MS_DIR_NOT_WRITABLE",
                f"the MS directory is not writable: {ms_dir.reason} (CASA aborts: 'terminate "
                "called "
                "after throwing an instance of casacore::AipsError')",
                "chmod u+w the MS directory, or chown it to the user who runs CASA",
                path=path,
                data={"mode": f"{ms_dir.mode:04o}", "owner_uid": ms_dir.owner_uid},
            )
        )
    table_dat = access.judge_write(os.path.join(path, "table.dat"), creds)
    if not table_dat.writable:
        findings.append(
            Finding(
                "TABLE_DAT_NOT_WRITABLE",
                f"table.dat is not writable: {table_dat.reason} (ft: 'Please make sure MS is "
                "writable when using Imager::ft')",
                # Owned by the caller already: chown would change nothing, the mode is the cause.
                "chmod u+w table.dat (it is yours but read-only)"
                if table_dat.owner_uid == creds.uid
                else f"chown -R {access.user_name(creds.uid)} the MS (WSClean run as another user, "
                "e.g. root in Docker, leaves table.dat owned by that user)",
                path=table_dat.path,
                data={"mode": f"{table_dat.mode:04o}", "owner_uid": table_dat.owner_uid},
            )
        )
    unwritable = [
        a for a in _files(path, creds) if not a.writable and not a.path.endswith("/table.dat")
    ]
    if unwritable:
        names = ", ".join(os.path.basename(a.path) for a in unwritable[:4])
        findings.append(
            Finding(
                "TABLE_FILE_NOT_WRITABLE",
                f"{len(unwritable)} file(s) of the main table not writable ({names}): "
                f"{unwritable[0].reason}",
                "chmod u+w the MS's files (they are yours but read-only)"
                if all(a.owner_uid == creds.uid for a in unwritable)
                else f"chown -R {access.user_name(creds.uid)} the MS, or chmod u+w its files",
                path=unwritable[0].path,
                data={"files": [a.path for a in unwritable]},
            )
        )
    for name in WRITTEN_SUBTABLES:
        sub = os.path.join(path, name)
        if not os.path.isdir(sub):
            continue
        bad = [a for a in [access.judge_write(sub, creds), *_files(sub, creds)] if not a.writable]
        if bad:
            findings.append(
                Finding(
                    "SUBTABLE_NOT_WRITABLE",
                    f"subtable {name} not writable ({os.path.basename(bad[0].path)}: "
                    f"{bad[0].reason}); "
                    f"ft and clearcal open {name} read/write",
                    f"chown -R {access.user_name(creds.uid)} the MS, or chmod -R u+w {name}",
                    path=bad[0].path,
                    data={"subtable": name, "files": [a.path for a in bad]},
                )
            )
    owners = _foreign_owners(path, creds.uid)
    if owners:
        listing = ", ".join(
            f"{access.user_name(uid)} (uid {uid}): {n}" for uid, n in sorted(owners.items())
        )
        findings.append(
            Finding(
                "FOREIGN_OWNER",
                f"files owned by another user than this process ({access.user_name(creds.uid)}): "
                f"{listing}",
                "run CASA as the owner, or chown the MS to the user who runs CASA",
                path=path,
                data={"owners": {str(uid): n for uid, n in owners.items()}},
            )
        )
    return findings


def _files(table: str, creds: access.Credentials) -> list[access.Access]:
    try:
        entries = sorted(os.scandir(table), key=lambda e: e.name)
    except OSError:
        return []
    return [access.judge_write(e.path, creds) for e in entries if e.is_file(follow_symlinks=False)]


def _foreign_owners(path: str, uid: int) -> dict[int, int]:
    counts: dict[int, int] = {}
    for table in _tables(path):
        candidates = [Path(table)]
        try:
            candidates += [
                Path(e.path) for e in os.scandir(table) if e.is_file(follow_symlinks=False)
            ]
        except OSError:
            continue
        for item in candidates:
            try:
                owner = item.stat().st_uid
            except OSError:
                continue
            if owner != uid:
                counts[owner] = counts.get(owner, 0) + 1
    return counts


def model_bytes_needed(facts: dict[str, Any]) -> int:
    """Bytes a new MODEL_DATA column needs (0 when it exists: ft overwrites in place)."""
    if "MODEL_DATA" in facts.get("columns", ["MODEL_DATA"]):
        return 0
    total = 0
    for use in facts.get("ddid_use", []):
        shape = use.get("data_shape") or [0, 0]
        total += int(use["rows"]) * int(shape[0]) * int(shape[1]) * _COMPLEX_BYTES
    return total


def disk_findings(path: str, facts: dict[str, Any]) -> list[Finding]:
    """Enough free space for the MODEL_DATA column ft(usescratch=True) would add?"""
    needed = int(model_bytes_needed(facts) * DISK_HEADROOM)
    free = access.free_bytes(path)
    if not needed or free is None or free >= needed:
        return []
    return [
        Finding(
            "DISK_SPACE_LOW",
            f"MODEL_DATA needs about {needed / 1e6:.1f} MB but only {free / 1e6:.1f} MB are free",
            "free disk space, or move the MS to a larger disk",
            path=path,
            data={"needed_bytes": needed, "free_bytes": free},
        )
    ]
