"""The sync data casacore's last writer left in a table's ``table.lock``, read as plain bytes.

A parser of one file format, apart from the table readers because it makes no
casacore call: the probe reads the lock file without taking its lock, which
python-casacore cannot do, and the parser is bytes in, dict out.
"""

from __future__ import annotations

import os


def read_lock_sync(table: str) -> dict[str, int] | None:
    """The sync data a writer left in ``table/table.lock``, read as plain bytes (no lock).

    casacore's ``TableSyncData::write`` stores, in AipsIO (big-endian) after the lock
    file's request area: magic 0xbebebebe, object length, the type string ``"sync"``,
    a version (1: 32-bit row count, 2: 64-bit), the row count, the column count (-1
    when only rows were written), the modify counter. A later opener that locks the
    table (CASA does; the probe does not) syncs from it and refuses a column count that
    disagrees with table.dat: "Table::lock cannot sync table; another process changed
    the number of columns".

    Returns:
        ``{"version", "nrrow", "nrcolumn", "modify_counter"}``, or None when the lock
        file is missing or holds no sync data.
    """
    import struct

    try:
        with open(os.path.join(table, "table.lock"), "rb") as lock:
            data = lock.read(1 << 16)
    except OSError:
        return None
    start = data.find(b"\xbe\xbe\xbe\xbe")
    # magic, object length, type-string length, "sync", version
    header = start + 4 + 4
    if start < 0 or data[header : header + 8] != b"\x00\x00\x00\x04sync":
        return None
    offset = header + 8
    try:
        (version,) = struct.unpack_from(">I", data, offset)
        offset += 4
        if version == 1:
            (nrrow,) = struct.unpack_from(">I", data, offset)
            offset += 4
        else:
            (nrrow,) = struct.unpack_from(">Q", data, offset)
            offset += 8
        nrcolumn, modify = struct.unpack_from(">iI", data, offset)
    except struct.error:
        return None
    return {"version": version, "nrrow": nrrow, "nrcolumn": nrcolumn, "modify_counter": modify}
