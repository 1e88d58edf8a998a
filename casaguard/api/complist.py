"""Component lists from plain source descriptions, written by casatools in a sandbox child.

Pipelines model calibrators and catalogue sources as component lists for
``ft``; building one needs ``casatools.componentlist``, which the caller must
never import. ``make_complist(path, [Source(...), ...])`` does it in a child::

    casaguard.make_complist("field.cl", [
        Source("J2000 10h00m05s +40d01m00s", flux_jy=2.5, spectral_index=-0.7),
        Source("J2000 09h59m50s +39d58m00s", flux_jy=0.8, shape="gaussian",
               major="20arcsec", minor="10arcsec", position_angle="30deg"),
    ])
    casaguard.ft(vis="my.ms", complist="field.cl", usescratch=True)
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

from casaguard.api.tasks import call
from casaguard.errors import InvalidInput
from casaguard.sandbox.jobdir import Ref

#: Component shapes casatools' componentlist accepts.
SHAPES = ("point", "gaussian", "disk")


@dataclass(frozen=True)
class Source:
    """One component: Stokes I flux at a reference frequency, a spectral index and a shape.

    Attributes:
        direction: ``"FRAME LONGITUDE LATITUDE"`` as CASA reads it, e.g.
            ``"J2000 10h00m00.0 +40d00m00.0"``.
        flux_jy: Stokes I flux density at ``freq``, in Jy.
        freq: reference frequency of ``flux_jy`` (a CASA quantity, ``"1.4GHz"``).
        spectral_index: alpha in S(nu) = flux_jy * (nu / freq) ** alpha (0: flat spectrum).
        shape: ``"point"``, ``"gaussian"`` or ``"disk"``.
        major, minor, position_angle: the extent of a gaussian or disk (FWHM for a
            gaussian), as CASA quantities (``"20arcsec"``, ``"30deg"``).
        label: free text stored with the component.
    """

    direction: str
    flux_jy: float = 1.0
    freq: str = "1.4GHz"
    spectral_index: float = 0.0
    shape: str = "point"
    major: str = ""
    minor: str = ""
    position_angle: str = "0deg"
    label: str = ""


def _check(index: int, source: Source) -> None:
    where = f"source {index}"
    if not isinstance(source, Source):
        raise InvalidInput(f"{where}: expected a casaguard.Source, got {type(source).__name__}")
    if len(source.direction.split()) != 3:
        raise InvalidInput(
            f"{where}: direction {source.direction!r} must be 'FRAME LONGITUDE LATITUDE', "
            "e.g. 'J2000 10h00m00.0 +40d00m00.0'"
        )
    if not math.isfinite(source.flux_jy) or not math.isfinite(source.spectral_index):
        raise InvalidInput(f"{where}: flux_jy and spectral_index must be finite numbers")
    if source.shape not in SHAPES:
        raise InvalidInput(f"{where}: shape {source.shape!r} is not one of {', '.join(SHAPES)}")
    if source.shape != "point" and not (source.major and source.minor):
        raise InvalidInput(f"{where}: a {source.shape} needs major and minor, e.g. '20arcsec'")


def make_complist(
    path: str | os.PathLike[str],
    sources: Sequence[Source],
    *,
    timeout: float | None = 120.0,
) -> str:
    """Write ``sources`` as a component list at ``path``, with casatools in a sandbox child.

    Args:
        path: the component list to create; it must not exist (nothing is overwritten).
        sources: one ``Source`` per component, in order.
        timeout: seconds before the child is killed.

    Returns:
        The absolute path of the new component list.

    Raises:
        InvalidInput: ``path`` exists or its directory does not; no sources; a
            source that is not a well-formed ``Source``.
        ChildError: casatools rejected a value (e.g. a direction it cannot parse).
    """
    target = os.path.abspath(os.fspath(path))
    if os.path.lexists(target):
        raise InvalidInput(f"{target} exists: make_complist never overwrites")
    if not os.path.isdir(os.path.dirname(target)):
        raise InvalidInput(f"{target}: no such directory {os.path.dirname(target)}")
    if isinstance(sources, Source) or not sources:
        raise InvalidInput("make_complist needs a non-empty list of casaguard.Source")
    for index, source in enumerate(sources):
        _check(index, source)
    return str(
        call(
            Ref("casaguard.remote.casa.complist", "make_complist"),
            target,
            [dataclasses.asdict(source) for source in sources],
            timeout=timeout,
        )
    )
