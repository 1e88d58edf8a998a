"""``python -m casaguard``: the ``casaguard`` command, run by a chosen interpreter."""

from __future__ import annotations

import sys

from casaguard.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
