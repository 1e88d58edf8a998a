"""Which launcher starts a call's child: a fresh interpreter, or a fork of the warm template.

Apart from the runner so the runner never names a launcher: it asks this
module, and the template client is imported only when a template is chosen.
"""

from __future__ import annotations

import os

from casaguard.errors import InvalidInput
from casaguard.sandbox.callspec import MODE_ENV, Launcher
from casaguard.sandbox.spawn import SpawnLauncher


def choose_launcher(mode: str | None, flavor: str = "casa") -> Launcher:
    """Pick the launcher for ``mode`` (argument, then ``$CASAGUARD_MODE``, then fastest).

    ``flavor`` names the warm template: ``"casa"`` (casatools) or ``"casacore"``
    (python-casacore only), for code that must never share a process with the other.
    """
    chosen = (mode or os.environ.get(MODE_ENV) or "auto").lower()
    if chosen not in ("auto", "spawn", "template"):
        raise InvalidInput(f"unknown mode {chosen!r}: use 'spawn' or 'template'")
    if chosen == "spawn":
        return SpawnLauncher()
    # Imported on first use: a caller that only ever spawns never loads the template client.
    from casaguard.sandbox.template import client as template

    launcher: Launcher = template.launcher(
        fallback=SpawnLauncher(), required=chosen == "template", flavor=flavor
    )
    return launcher
