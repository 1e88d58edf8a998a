"""The one check that a vis argument can be a Measurement Set, before any child is paid for.

Used by the drop-in tasks and by the journal's pre-flight, so both reject a
missing path or a directory that is no table with the same words.
"""

from __future__ import annotations

import os
from typing import Any

from casaguard.errors import InvalidInput


def require_ms(vis: Any) -> None:
    """Reject a vis that cannot be an MS before paying for a child.

    Raises:
        InvalidInput: not a string path, missing, not a directory, or no ``table.dat``.
    """
    if not isinstance(vis, (str, os.PathLike)) or not os.fspath(vis):
        raise InvalidInput(f"vis must be the path of a Measurement Set, got {vis!r}")
    path = os.fspath(vis)
    if not os.path.exists(path):
        where = "" if os.path.isabs(path) else f" (relative to {os.getcwd()})"
        raise InvalidInput(f"{path}: no such Measurement Set{where}")
    if not os.path.isdir(path) or not os.path.exists(os.path.join(path, "table.dat")):
        raise InvalidInput(f"{path}: not a Measurement Set (no table.dat)")
