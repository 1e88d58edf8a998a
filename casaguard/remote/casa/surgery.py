"""MS surgery for the crash corpus, with casatools (runs inside a sandbox child).

Each function puts a simulated MS into a state that a known CASA or WSClean
failure needs; none of them is ever pointed at a user's data.
"""

from __future__ import annotations

from collections.abc import Sequence

import casatools


def remove_model_data(vis: str) -> None:
    """Drop MODEL_DATA (casatools' simulator creates it) so that the next tool must create it."""
    tb = casatools.table()
    tb.open(vis, nomodify=False)
    try:
        if "MODEL_DATA" in tb.colnames():
            tb.removecols(["MODEL_DATA"])
    finally:
        tb.close()


def fixed_shape_model_data(vis: str, shape: Sequence[int]) -> None:
    """Replace MODEL_DATA by a fixed-shape column whose cells disagree with DATA's."""
    remove_model_data(vis)
    tb = casatools.table()
    tb.open(vis, nomodify=False)
    try:
        desc = dict(tb.getcoldesc("DATA"))
        desc.update(
            ndim=len(shape),
            shape=[int(n) for n in shape],
            option=5,  # Direct | FixedShape: every cell has this shape
            dataManagerType="StandardStMan",
            dataManagerGroup="CorpusModel",
            comment="wrong-shape MODEL_DATA (casaguard corpus)",
        )
        desc.pop("keywords", None)
        tb.addcols({"MODEL_DATA": desc})
    finally:
        tb.close()
