"""Record the real evidence of the corpus's CASA and WSClean crashes, for the classifier tests.

Run: PYTHONPATH=. python tests/data/record_corpus.py
Writes tests/data/stderr/<name>.txt (the child's stderr tail as casaguard kept it),
<name>.status (its exit status) and, when CASA logged anything, <name>.casa.log.
Everything is what CASA, WSClean, glibc and libstdc++ really printed on this machine.
"""

from __future__ import annotations

import re
from pathlib import Path

from casaguard.corpus import regression, reproducers

HERE = Path(__file__).parent / "stderr"
RECORDED = (
    "casa-ft-table-dat-unwritable",
    "casa-clearcal-ms-dir-unwritable",
    "casa-ft-model-shape-mismatch",
    "casa-ft-error-then-double-free",
    "wsclean-new-model-mixed-channels",
    "wsclean-existing-model-mixed-channels",
    "clash-casacore-3.7.1-then-casatools",
)
# faulthandler's list of extension modules is one very long line that says nothing here.
_EXTENSIONS = re.compile(r"^Extension modules: .*$", re.MULTILINE)


def main() -> None:
    for result in regression.run(reproducers.select(RECORDED)):
        crash = result.outcome.crash
        name = result.reproducer.name.replace("-", "_").replace(".", "")
        if crash is None:
            print(name, "did not crash; nothing recorded")
            continue
        stderr = _EXTENSIONS.sub(
            "Extension modules: (list elided by record_corpus.py)", crash.stderr_tail
        )
        (HERE / f"{name}.txt").write_text(stderr)
        (HERE / f"{name}.status").write_text(f"{crash.exit_code}\n")
        if crash.casa_log_tail.strip():
            (HERE / f"{name}.casa.log").write_text(crash.casa_log_tail + "\n")
        print(name, crash.kind, crash.exit_code)


if __name__ == "__main__":
    main()
