"""The corpus's workspace: a temporary directory of simulated MSs, removed afterwards.

Reproducers never touch user data: each gets a fresh copy of an MS simulated
once per workspace. Separate from the corpus table because every scenario and
every run uses it, and its clean-up (restoring modes a scenario took away) is a
concern of its own.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from casaguard.corpus.simulate import make_point_complist, simulate_ms

WORKSPACE_PREFIX = "casaguard-corpus-"


@dataclass
class Workspace:
    """A temporary directory with simulated MSs built once and copied per reproducer."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix=WORKSPACE_PREFIX)))
    _built: dict[tuple[Any, ...], Path] = field(default_factory=dict)
    _count: int = 0

    def __enter__(self) -> Workspace:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Remove the workspace, restoring modes a reproducer took away first."""
        for path in self.root.rglob("*"):
            try:
                if path.is_dir() and not path.is_symlink():
                    path.chmod(0o755)
            except OSError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)

    def ms(self, label: str, **simulate: Any) -> Path:
        """A fresh copy of a simulated MS (``simulate_ms`` keyword arguments)."""
        key = tuple(sorted(simulate.items()))
        if key not in self._built:
            path = self.root / "cache" / f"sim{len(self._built)}.ms"
            path.parent.mkdir(exist_ok=True)
            simulate_ms(path, **simulate)
            self._built[key] = path
        self._count += 1
        copy = self.root / f"{self._count:02d}-{label}.ms"
        shutil.copytree(self._built[key], copy)
        return copy

    def complist(self) -> Path:
        """A one-point-source component list (built once)."""
        path = self.root / "cache" / "point.cl"
        if not path.exists():
            path.parent.mkdir(exist_ok=True)
            make_point_complist(path)
        return path

    def path(self, name: str) -> Path:
        """A path inside the workspace for a reproducer's own outputs."""
        return self.root / name
