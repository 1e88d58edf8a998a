"""Many MSs at once: ``map_task`` / ``map_call`` / ``map_probe`` / ``map_repair``.

``mapping`` is the public face, ``item`` the per-input outcome, ``engines`` the
local-thread, Executor and Dask back ends. One crash is one item's outcome.
"""
