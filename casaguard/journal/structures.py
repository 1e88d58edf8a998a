"""The table structure each MS's last journaled child recorded, kept for the next call.

Which data manager holds each column, and each subtable's keyword, come from
the main ``table.dat``. The child records them with ``table.dat``'s SHA-256
in the journal's manifest (``casaguard.remote.casa.journal``); the parent
keeps them here for the next call on the same MS, which saves that child a
table open (3-7 ms). A hint only: the child uses it only if ``table.dat``
still hashes the same, and resolves where each subtable lies on disk anew (a
subtable swapped for a symlink leaves ``table.dat`` as it is). Kept for the
most recent MSs, so a batch over thousands of MSs stays small.
"""

from __future__ import annotations

import collections
import threading
from typing import Any

#: How many MSs' structures are kept (each a few hundred bytes).
CACHE_SIZE = 256

_lock = threading.Lock()
_by_vis: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()


def get(vis: str) -> dict[str, Any] | None:
    """The structure last recorded for ``vis`` (an absolute path), or None."""
    with _lock:
        return _by_vis.get(vis)


def put(vis: str, structure: Any) -> None:
    """Keep ``structure`` (a manifest's ``structure`` entry) for ``vis``; ignore anything else."""
    if not isinstance(structure, dict):
        return
    with _lock:
        _by_vis[vis] = structure
        _by_vis.move_to_end(vis)
        while len(_by_vis) > CACHE_SIZE:
            _by_vis.popitem(last=False)
