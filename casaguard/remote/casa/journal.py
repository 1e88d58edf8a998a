"""Child side of the journal: map the declared writes to files with casacore, snapshot, run.

Runs in the CASA child, which already has casatools loaded, so finding which
storage-manager files hold a column costs one table open (3-7 ms). Which data
manager holds which column, and the subtables' keywords, are all in the main
table's ``table.dat``; so the child records that *structure* with the
SHA-256 of ``table.dat`` in the manifest, the parent hands it to the next
call on the same MS, and that child uses it only if ``table.dat`` still hashes
the same (~50 us) -- else it opens the table. See ``casaguard.journal.hook``
for what is copied and why.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import casatools

from casaguard.errors import InvalidInput
from casaguard.journal import layout as journal_layout
from casaguard.journal import snapshot as journal_snapshot

#: Columns whose size, when the task creates them, is about that of DATA.
_DATA_LIKE = ("MODEL_DATA", "CORRECTED_DATA", "DATA")


def run_journaled(
    journal_dir: str,
    vis: str,
    writes: Sequence[str],
    task: str,
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    known: dict[str, Any] | None = None,
) -> Any:
    """Snapshot what ``writes`` names in ``vis`` into ``journal_dir``, then run ``func``.

    Args:
        known: the structure an earlier call on ``vis`` recorded (see the module
            docstring); used only if ``table.dat`` still hashes the same.

    Raises:
        InvalidInput: not enough free space, or a table the journal cannot cover.
    """
    started = time.monotonic()
    structure = table_structure(vis, task=task, known=known)
    files, subtables, growth = plan(vis, writes, structure)
    journal_snapshot.take_snapshot(
        journal_dir,
        vis,
        task=task,
        files=files,
        subtables=subtables,
        growth_bytes=growth,
        extra={
            "plan_s": round(time.monotonic() - started, 4),
            "structure": structure,
            "structure_reused": structure is known,
        },
    )
    return func(*args, **kwargs)


def table_structure(vis: str, *, task: str, known: dict[str, Any] | None = None) -> dict[str, Any]:
    """Which data manager (SEQNR) holds each column, and each subtable's keyword.

    Returns ``known`` unchanged when its ``table_dat_sha256`` is that of ``vis``'s
    ``table.dat`` now; else reads it with casacore.

    Raises:
        InvalidInput: ``vis`` is a reference table (no data managers of its own).
    """
    digest = hashlib.sha256(Path(vis, "table.dat").read_bytes()).hexdigest()
    if known is not None and known.get("table_dat_sha256") == digest:
        return known
    tb = casatools.table()
    tb.open(vis, nomodify=True)
    try:
        dminfo = tb.getdminfo()
        keywords = tb.getkeywords()
    finally:
        tb.close()
    if not dminfo:
        raise InvalidInput(journal_layout.REFERENCE_TABLE_MESSAGE.format(task=task, vis=vis))
    return {
        "table_dat_sha256": digest,
        "seqnr_of": {
            column: int(manager["SEQNR"])
            for manager in dminfo.values()
            for column in manager["COLUMNS"]
        },
        # The keywords as table.dat holds them; where each lies on disk is resolved
        # anew by every call (a subtable swapped for a symlink leaves table.dat as it is).
        "subtable_keywords": {
            name: value
            for name, value in keywords.items()
            if isinstance(value, str) and value.startswith("Table: ")
        },
    }


def plan(
    vis: str, writes: Sequence[str], structure: dict[str, Any]
) -> tuple[list[str], list[str], int]:
    """Return (main-table files, subtable names, bytes the task may add) for ``writes``."""
    names = os.listdir(vis)
    seqnr_of: dict[str, int] = structure["seqnr_of"]
    keywords: dict[str, str] = structure["subtable_keywords"]
    files = list(journal_layout.ALWAYS_FILES)
    subtables: list[str] = []
    growth = 0
    data_column = next((c for c in ("DATA", "FLOAT_DATA") if c in seqnr_of), None)
    for name in writes:
        if name in seqnr_of:
            files += journal_layout.files_of_data_manager(names, seqnr_of[name])
        elif name in keywords:
            where = _subtable_dir(vis, keywords[name])
            if where is not None:  # a subtable outside the MS is not ours to copy
                subtables.append(where)
        elif name in _DATA_LIKE and data_column is not None:
            # A column the task will create: it grows the MS by about DATA's size.
            # (Anything else the task creates is found and removed at restore.)
            growth += sum(
                os.path.getsize(os.path.join(vis, f))
                for f in journal_layout.files_of_data_manager(names, seqnr_of[data_column])
            )
    return list(dict.fromkeys(files)), list(dict.fromkeys(subtables)), growth


def _subtable_dir(vis: str, keyword: str) -> str | None:
    """The subtable's directory relative to ``vis``, or None if it lies outside the MS."""
    target = Path(keyword.removeprefix("Table: ")).resolve()
    root = Path(vis).resolve()
    try:
        return str(target.relative_to(root))
    except ValueError:
        return None
