"""Small simulated Measurement Sets and component lists, made with casatools.

Used by the demo, the tests and the benchmarks so that nothing needs data of
the user's. Runs inside a CASA child (``casaguard.call(simulate_ms, ...)``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import casatools

# A compact, fixed VLA-like layout (metres, local frame): 8 antennas give 28
# baselines, so rows = 28 * n_times * n_spw.
_ANTENNA_X = (0.0, 100.0, -50.0, 200.0, 30.0, -120.0, 60.0, 10.0)
_ANTENNA_Y = (0.0, 20.0, 150.0, -80.0, 250.0, -60.0, -200.0, 90.0)
SOURCE_DIRECTION = ("J2000", "10h00m00.0", "+40d00m00.0")


def simulate_ms(
    path: str,
    *,
    nchan: Sequence[int] = (8,),
    n_times: int = 6,
    ncorr: int = 4,
    n_antennas: int = 8,
    integration_s: float = 10.0,
) -> int:
    """Simulate an MS with one field and one spectral window per entry of ``nchan``.

    Args:
        path: where to write the MS (must not exist).
        nchan: channel count of each spectral window.
        n_times: integrations per spectral window.
        ncorr: 4 (XX XY YX YY) or 2 (XX YY).
        n_antennas: 2..8 from the fixed layout, or more on a generated ring.
        integration_s: integration time in seconds.

    Returns:
        The number of rows of the main table.
    """
    if os.path.exists(path):
        raise FileExistsError(f"refusing to overwrite {path}")
    xs, ys = _layout(n_antennas)
    sm = casatools.simulator()
    me = casatools.measures()
    try:
        sm.open(path)
        sm.setconfig(
            telescopename="VLA",
            x=xs,
            y=ys,
            z=[0.0] * len(xs),
            dishdiameter=[25.0] * len(xs),
            mount=["alt-az"] * len(xs),
            antname=[f"A{i:02d}" for i in range(len(xs))],
            padname=[f"P{i:02d}" for i in range(len(xs))],
            coordsystem="local",
            referencelocation=me.observatory("VLA"),
        )
        stokes = "XX XY YX YY" if ncorr == 4 else "XX YY"
        for index, channels in enumerate(nchan):
            sm.setspwindow(
                spwname=f"SPW{index}",
                freq=f"{1.4 + 0.1 * index}GHz",
                deltafreq="1MHz",
                freqresolution="1MHz",
                nchannels=int(channels),
                stokes=stokes,
            )
        sm.setfeed(mode="perfect X Y")
        sm.setfield(sourcename="SRC", sourcedirection=me.direction(*SOURCE_DIRECTION))
        sm.setlimits(shadowlimit=0.001, elevationlimit="8.0deg")
        sm.setauto(autocorrwt=0.0)
        sm.settimes(
            integrationtime=f"{integration_s}s",
            usehourangle=True,
            referencetime=me.epoch("UTC", "2020/01/01/00:00:00"),
        )
        for index in range(len(nchan)):
            sm.observe(
                sourcename="SRC",
                spwname=f"SPW{index}",
                starttime="0s",
                stoptime=f"{integration_s * n_times}s",
            )
    finally:
        sm.close()
        me.done()
    tb = casatools.table()
    tb.open(path)
    try:
        return int(tb.nrows())
    finally:
        tb.close()


def make_point_complist(path: str, *, flux_jy: float = 1.0) -> str:
    """Write a component list with one point source at the simulated field centre.

    Returns:
        ``path``.
    """
    cl = casatools.componentlist()
    try:
        cl.addcomponent(
            dir=" ".join(SOURCE_DIRECTION),
            flux=flux_jy,
            fluxunit="Jy",
            freq="1.4GHz",
            shape="point",
        )
        cl.rename(path)
    finally:
        cl.close(log=False)
    return path


def _layout(n_antennas: int) -> tuple[list[float], list[float]]:
    if n_antennas < 2:
        raise ValueError("an interferometer needs at least 2 antennas")
    if n_antennas <= len(_ANTENNA_X):
        return list(_ANTENNA_X[:n_antennas]), list(_ANTENNA_Y[:n_antennas])
    import math

    # Larger arrays (benchmarks) use a deterministic ring, not random positions,
    # so the row count and the data are the same on every machine.
    xs = [300.0 * math.cos(2 * math.pi * i / n_antennas) * (1 + i % 3) for i in range(n_antennas)]
    ys = [300.0 * math.sin(2 * math.pi * i / n_antennas) * (1 + i % 3) for i in range(n_antennas)]
    return xs, ys
