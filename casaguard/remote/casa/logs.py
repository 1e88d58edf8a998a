"""Point the CASA log of this child at the job's own file."""

from __future__ import annotations


def log_to(path: str) -> None:
    """Send casatools' log sink (shared by casatasks) to ``path``."""
    import casatasks  # noqa: F401 - casatasks' casalog is the sink tasks post to
    from casatasks import casalog

    casalog.setlogfile(path)
    casalog.showconsole(False)
