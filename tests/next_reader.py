"""The next consumer's verdict on an MS: is it still usable by CASA after what we did to it?

Comparing bytes cannot see a table that casacore can no longer open (a stale
``table.lock``, a subtable whose row count disagrees with its files). Only
the next real reader can, so every failure-path test ends with
``assert_casa_can_use(ms, complist)``:

1. a fresh interpreter opens the MS and every subtable (found through the main
   table's keywords, as CASA finds them) with python-casacore and reads every
   cell of every column;
2. a second fresh interpreter runs plain ``casatasks.ft`` (usescratch=True)
   and then ``casatasks.clearcal(addmodel=True)`` on it -- no casaguard
   sandbox -- and both must succeed with no unexpected SEVERE line in the
   CASA log.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from casaguard import casaenv
from casaguard.crash.casa_log import severe_lines

_READ_EVERYTHING = r"""
import json, sys
from casacore import tables

def read_all(path, seen):
    t = tables.table(path, ack=False)
    try:
        rows = t.nrows()
        for column in t.colnames():
            if rows == 0:
                continue
            try:
                # getcol of a column whose cells differ in shape (DATA of an MS
                # with spws of different widths) kills python-casacore 3.8.1
                # with "double free or corruption": read it row by row instead.
                if t.isvarcol(column):
                    t.getvarcol(column)
                else:
                    t.getcol(column)
            except RuntimeError as error:
                # A column with no cells written yet is legal (undefined
                # cells); any other failure is the verdict.
                if "no array in row" not in str(error) and "not defined" not in str(error):
                    raise
        for keyword in t.getkeywords().values():
            if isinstance(keyword, str) and keyword.startswith("Table: "):
                sub = keyword[len("Table: "):]
                if sub not in seen:
                    seen.add(sub)
                    read_all(sub, seen)
    finally:
        t.close()
    return rows

seen = set()
rows = read_all(sys.argv[1], seen)
print(json.dumps({"rows": rows, "subtables": sorted(seen)}))
"""

_PLAIN_CASA = r"""
import sys
import casatasks
vis, complist = sys.argv[1], sys.argv[2]
casatasks.ft(vis=vis, complist=complist, usescratch=True)
casatasks.clearcal(vis=vis, addmodel=True)
print("OK")
"""


def read_every_table(ms: Path, *, timeout: float = 300) -> dict[str, object]:
    """Open the MS and every subtable in a fresh process and read every column.

    Returns:
        ``{"rows": main-table rows, "subtables": [paths reached by keyword]}``.

    Raises:
        AssertionError: any table or column could not be read.
    """
    result = subprocess.run(
        [sys.executable, "-c", _READ_EVERYTHING, str(ms)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, (
        f"python-casacore could not read {ms} back (rc {result.returncode}):\n"
        f"{result.stderr[-3000:]}"
    )
    facts: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return facts


def run_plain_casa(ms: Path, complist: Path, *, timeout: float = 600) -> None:
    """Run plain ``casatasks.ft`` then ``clearcal`` on ``ms`` in a fresh process.

    Raises:
        AssertionError: either task raised, the process died, or CASA logged an
            unexpected SEVERE line.
    """
    workdir = ms.parent / f".{ms.name}.next-reader"
    workdir.mkdir(exist_ok=True)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_PLAIN_CASA), str(ms), str(complist)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=workdir,
        env=casaenv.child_environment(),
        check=False,
    )
    logs = "".join(p.read_text(errors="replace") for p in sorted(workdir.glob("casa-*.log")))
    for path in workdir.iterdir():
        os.unlink(path)
    workdir.rmdir()
    assert result.returncode == 0 and "OK" in result.stdout, (
        f"plain casatasks.ft + clearcal failed on {ms} (rc {result.returncode}):\n"
        f"{result.stderr[-3000:]}\n{logs[-3000:]}"
    )
    # casaenv points CASA's logfile at /dev/null, so CASA's SEVERE lines reach only
    # stderr (log2term is off, but the casalogger still echoes SEVERE there).
    severe = severe_lines(logs + "\n" + result.stderr)
    assert not severe, f"plain CASA logged SEVERE on {ms}: {severe}"


def assert_casa_can_use(ms: Path, complist: Path) -> None:
    """Assert that CASA's next reader and writer both accept ``ms`` (see module docstring)."""
    facts = read_every_table(ms)
    assert facts["rows"], f"{ms} has no rows left"
    run_plain_casa(ms, complist)
