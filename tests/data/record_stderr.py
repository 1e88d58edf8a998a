"""Record the real stderr and exit status of every crasher, for the classifier's unit tests.

Run: python tests/data/record_stderr.py   (writes tests/data/stderr/<name>.txt and .status)
Each file is what glibc / libstdc++ / libc++abi / tcmalloc / faulthandler really printed on
this machine; ``musl_double_free`` is the musl-gcc-built program of
``casaguard.corpus.crashers.MUSL_DOUBLE_FREE_C``.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from casaguard.corpus import crashers
from casaguard.corpus.crashers import CRASHERS

HERE = Path(__file__).parent / "stderr"


def main() -> None:
    HERE.mkdir(exist_ok=True)
    for name in CRASHERS:
        result = subprocess.run(
            [
                sys.executable,
                "-X",
                "faulthandler",
                "-c",
                f"import casaguard.corpus.crashers as c; c.{name}()",
            ],
            capture_output=True,
            env={"LIBC_FATAL_STDERR_": "1", "PATH": "/usr/bin:/bin"},
            check=False,
        )
        (HERE / f"{name}.txt").write_bytes(result.stdout + result.stderr)
        (HERE / f"{name}.status").write_text(f"{result.returncode}\n")
        print(name, result.returncode)
    with tempfile.TemporaryDirectory() as build:
        source = Path(build) / "musl_double_free.c"
        source.write_text(crashers.MUSL_DOUBLE_FREE_C)
        binary = Path(build) / "musl_double_free"
        subprocess.run(["musl-gcc", "-O0", "-o", str(binary), str(source)], check=True)
        result = subprocess.run([str(binary)], capture_output=True, check=False)
    (HERE / "musl_double_free.txt").write_bytes(result.stdout + result.stderr)
    (HERE / "musl_double_free.status").write_text(f"{result.returncode}\n")
    print("musl_double_free", result.returncode)


if __name__ == "__main__":
    main()
