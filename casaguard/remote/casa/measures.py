"""``casaguard doctor``'s live check: start CASA with the effective configuration, read a measure.

Runs only in a sandbox child. An epoch conversion UTC -> TAI reads casacore's
leap-second table (``geodetic/TAI_UTC``) from the measures data CASA was
configured with: the only proof that the configuration works is CASA using it.
"""

from __future__ import annotations

from typing import Any


def tai_minus_utc(epoch: str) -> dict[str, Any]:
    """Convert ``epoch`` from UTC to TAI in CASA; report the offset and where data came from."""
    import casatools

    measures = casatools.measures()
    utc = measures.epoch("utc", epoch)
    tai = measures.measure(utc, "tai")
    return {
        "tai_minus_utc_s": (tai["m0"]["value"] - utc["m0"]["value"]) * 86400.0,
        "measurespath": casatools.ctsys.rundata(),
        "leap_second_table": casatools.ctsys.resolve("geodetic/TAI_UTC"),
        "config_files": [str(f) for f in casatools.config.load_success()[1:]],
    }
