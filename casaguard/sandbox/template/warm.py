"""The template's warm-up, and the OpenMP thread counts that keep its forks from hanging.

Runs only in the template and its forks. ``run_tasks`` does CASA's first-use
work once, so every fork inherits it; the template runs it with one OpenMP thread,
and each fork sets the count its caller asked for (``settle_openmp_in_fork``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

from casaguard.sandbox.template.flavors import SCRATCH_PREFIX

#: What the warm-up's ``ft(usescratch=True)`` declares to the journal's plan. The
#: one source is ``casaguard.journal.layout.task_writes("ft", {"usescratch": True})``;
#: it is repeated here because the sandbox (layer 2) may not import the journal (3),
#: and tests/test_perf_template.py checks that the two agree.
FT_WRITES = ("MODEL_DATA", "SOURCE")


def _libgomp() -> Any:
    """The libgomp CASA loaded, or None (never loads one)."""
    import ctypes

    try:
        return ctypes.CDLL("libgomp.so.1", mode=os.RTLD_NOLOAD)
    except OSError:
        return None


#: GNU OpenMP's thread pool does not survive ``fork``: a fork of a process whose
#: pool ever ran more than one thread hangs in its first parallel region. The
#: template therefore runs OpenMP (its warm-up task) with one thread, and each
#: fork sets the count its caller asked for (``OMP_NUM_THREADS`` in the caller's
#: environment at call time), else libgomp's own default (all usable CPUs), as an
#: in-process CASA would; libgomp then starts a fresh pool in the fork.
_omp_default_threads: int | None = None


def settle_openmp_in_template() -> None:
    global _omp_default_threads
    gomp = _libgomp()
    if gomp is not None:
        _omp_default_threads = int(gomp.omp_get_max_threads())
        gomp.omp_set_num_threads(1)


def settle_openmp_in_fork(env: dict[str, str]) -> None:
    if _omp_default_threads is None:
        return
    wanted = _omp_default_threads
    with contextlib.suppress(ValueError):
        wanted = max(1, int(env.get("OMP_NUM_THREADS", "").split(",")[0]))
    gomp = _libgomp()
    if gomp is not None:
        gomp.omp_set_num_threads(wanted)


@contextlib.contextmanager
def scratch_ms() -> Iterator[tuple[str, str]]:
    """A 2-antenna scratch MS and a point-source component list, removed afterwards.

    CASA logs to a file beside them; fd 2 goes to /dev/null meanwhile: CASA
    prints its leap-second SEVERE noise and warnings there whatever the log
    sink, and the template's stderr reports its failures.
    """
    from casaguard.remote.casa import logs, simulate

    scratch = tempfile.mkdtemp(prefix=SCRATCH_PREFIX + "warm-")
    saved_stderr = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    try:
        logs.log_to(os.path.join(scratch, "casa.log"))
        vis = os.path.join(scratch, "warm.ms")
        point = os.path.join(scratch, "warm.cl")
        simulate.simulate_ms(vis, n_antennas=2, n_times=1, nchan=(1,))
        simulate.make_point_complist(point)
        yield vis, point
    finally:
        with contextlib.suppress(Exception):  # the warm-up is an optimisation only
            logs.log_to(os.devnull)
        shutil.rmtree(scratch, ignore_errors=True)
        os.dup2(saved_stderr, 2)
        os.close(saved_stderr)


def run_tasks(vis: str, point: str) -> None:
    """Plan ft's journal, then run ft and clearcal on ``vis``: what a guarded call's fork does.

    Run once in the template, forks inherit CASA's first-use work, which a
    fork's first ``ft`` otherwise pays for (the simulator-free part of the
    measures tables, the imager, the table system, casalog) with copy-on-write
    faults on all of it: measured on a 1k-row MS, ~13 ms of CPU and ~500 page
    faults per call. The results do not change (tests/test_perf_template.py
    compares MODEL_DATA with an in-process ft element by element). Runs with
    one OpenMP thread (see above). Run again in a throwaway fork, it shows
    which pages a fork writes (``prefault.learn``).
    """
    import casatasks

    from casaguard.remote.casa import journal as child_journal

    structure = child_journal.table_structure(vis, task="ft")
    child_journal.plan(vis, FT_WRITES, structure)
    casatasks.ft(vis=vis, complist=point, usescratch=True)
    casatasks.clearcal(vis=vis)
