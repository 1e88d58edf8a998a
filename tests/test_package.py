"""The package's public surface and what a sandbox child pays to start."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import casaguard


def test_every_public_name_resolves() -> None:
    """Each name in __all__ is listed for lazy loading and resolves to a real object."""
    assert set(casaguard.__all__) == set(casaguard._EXPORTS) | {"__version__"}
    for name in casaguard.__all__:
        assert getattr(casaguard, name) is not None


def test_child_entry_does_not_import_the_whole_package() -> None:
    """``import casaguard.sandbox.child`` (every spawned child, every static probe) skips the parent
    side: no runner, template, batch engines or structlog."""
    code = (
        "import sys, casaguard.sandbox.child; "
        "print(sorted(m for m in ('casaguard.sandbox.runner', 'casaguard.sandbox.template', "
        "'casaguard.batch.mapping', 'structlog') if m in sys.modules))"
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
        if module.name.startswith(("casaguard.remote.casa", "casaguard.remote.casacore")):
            continue  # child-only modules import CASA
        importlib.import_module(module.name)
    for name in casaguard.__all__:
        assert not isinstance(getattr(casaguard, name), type(casaguard)), name


def test_python_dash_m_is_the_command() -> None:
    """``python -m casaguard --version`` runs the casaguard command and prints its version."""
    result = subprocess.run(
        [sys.executable, "-m", "casaguard", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"casaguard {casaguard.__version__}\n"


@pytest.mark.slow
def test_plain_pip_install_can_probe(ms: Path, tmp_path: Path) -> None:
    """A fresh venv with ``pip install .`` (no extras) gets every runtime dependency: the
    installed ``casaguard probe`` says SAFE with exit 0 on a clean MS, and py.typed ships."""
    checkout = Path(casaguard.__file__).resolve().parent.parent
    source = tmp_path / "source"
    shutil.copytree(checkout / "casaguard", source / "casaguard")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(checkout / name, source / name)
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env)
    install = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(source)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    probe = subprocess.run(
        [str(venv / "bin" / "casaguard"), "probe", str(ms)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert probe.returncode == 0, probe.stdout + probe.stderr
    assert probe.stdout.startswith(f"{ms}: SAFE")
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import casaguard; print(casaguard.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=True,
    ).stdout.strip()
    assert where.startswith(str(venv)), where
    assert (Path(where).parent / "py.typed").is_file()
