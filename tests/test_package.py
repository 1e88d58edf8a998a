"""The package's public surface and what a sandbox child pays to start."""

from __future__ import annotations

import subprocess
import sys

import casaguard


def test_every_public_name_resolves() -> None:
    """Each name in __all__ is listed for lazy loading and resolves to a real object."""
    assert set(casaguard.__all__) == set(casaguard._EXPORTS) | {"__version__"}
    for name in casaguard.__all__:
        assert getattr(casaguard, name) is not None


def test_child_entry_does_not_import_the_whole_package() -> None:
    """``import casaguard._child`` (every spawned child, every static probe) skips the parent
    side: no runner, template, batch engines or structlog."""
    code = (
        "import sys, casaguard._child; "
        "print(sorted(m for m in ('casaguard.runner', 'casaguard._template', "
        "'casaguard.batch', 'structlog') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_public_functions_are_not_shadowed_by_submodules() -> None:
    """Importing every submodule leaves the public names pointing at the functions, not at
    modules of the same name (a lazy package attribute is overwritten by a submodule import)."""
    import importlib
    import pkgutil

    for module in pkgutil.iter_modules(casaguard.__path__, "casaguard."):
        if module.name.startswith(("casaguard._incasa", "casaguard._incasacore")):
            continue  # child-only modules import CASA
        importlib.import_module(module.name)
    for name in casaguard.__all__:
        assert not isinstance(getattr(casaguard, name), type(casaguard)), name
