"""Record the real stderr and exit status of every crasher, for the classifier's unit tests.

Run: python tests/data/record_stderr.py   (writes tests/data/stderr/<name>.txt and .status)
Each file is what glibc / libstdc++ / faulthandler really printed on this machine.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from casaguard.crashers import CRASHERS

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
                f"import casaguard.crashers as c; c.{name}()",
            ],
            capture_output=True,
            env={"LIBC_FATAL_STDERR_": "1", "PATH": "/usr/bin:/bin"},
            check=False,
        )
        (HERE / f"{name}.txt").write_bytes(result.stdout + result.stderr)
        (HERE / f"{name}.status").write_text(f"{result.returncode}\n")
        print(name, result.returncode)


if __name__ == "__main__":
    main()
