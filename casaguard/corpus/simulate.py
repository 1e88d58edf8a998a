"""Make small simulated MSs and component lists, in a sandbox child.

The demo, the tests and the benchmarks need data that no user has to supply.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from casaguard.api.tasks import call
from casaguard.sandbox.jobdir import Ref


def simulate_ms(
    path: str | os.PathLike[str],
    *,
    nchan: Sequence[int] = (8,),
    n_times: int = 6,
    ncorr: int = 4,
    n_antennas: int = 8,
    integration_s: float = 10.0,
    timeout: float | None = 600.0,
) -> int:
    """Simulate an MS with casatools.simulator in a child; return its row count.

    With the defaults: 8 antennas, 28 baselines, 6 integrations, one spectral
    window of 8 channels and 4 correlations: 168 rows.
    """
    return int(
        call(
            Ref("casaguard.remote.casa.simulate", "simulate_ms"),
            os.fspath(path),
            nchan=tuple(int(n) for n in nchan),
            n_times=n_times,
            ncorr=ncorr,
            n_antennas=n_antennas,
            integration_s=integration_s,
            timeout=timeout,
        )
    )


def make_point_complist(
    path: str | os.PathLike[str], *, flux_jy: float = 1.0, timeout: float | None = 120.0
) -> str:
    """Write a one-point-source component list at the simulated field centre."""
    return str(
        call(
            Ref("casaguard.remote.casa.simulate", "make_point_complist"),
            os.fspath(path),
            flux_jy=flux_jy,
            timeout=timeout,
        )
    )
