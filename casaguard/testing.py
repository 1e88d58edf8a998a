"""pytest plugin for crash-regression suites (registered through the ``pytest11`` entry point)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "casaguard(expect=KIND, timeout=SECONDS): run the test in a casaguard sandbox child "
        "and pass only if it dies of crash kind KIND",
    )
