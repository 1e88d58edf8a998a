"""Write a component list from plain source descriptions, with casatools (child side).

Runs inside a CASA child (``casaguard.make_complist``); the caller sends each
source as a dict of ``casaguard.api.complist.Source``'s fields.
"""

from __future__ import annotations

from typing import Any

import casatools


def make_complist(path: str, sources: list[dict[str, Any]]) -> str:
    """Write ``sources`` as one component list at ``path`` (which must not exist).

    Returns:
        ``path``.
    """
    cl = casatools.componentlist()
    try:
        for source in sources:
            shape: dict[str, Any] = {}
            if source["shape"] != "point":
                shape = {
                    "majoraxis": source["major"],
                    "minoraxis": source["minor"],
                    "positionangle": source["position_angle"],
                }
            cl.addcomponent(
                dir=source["direction"],
                flux=[float(source["flux_jy"]), 0.0, 0.0, 0.0],
                fluxunit="Jy",
                polarization="Stokes",
                freq=source["freq"],
                shape=source["shape"],
                spectrumtype="spectral index" if source["spectral_index"] else "constant",
                index=float(source["spectral_index"]),
                label=source["label"],
                **shape,
            )
        cl.rename(path)
    finally:
        cl.close(log=False)
    return path
