"""How each reproducer makes its crash: the guarded work it runs in a ``Workspace``.

A scenario sets the scene (a table.dat made read-only, a fixed-shape
MODEL_DATA, an MS of two spws of different channel counts, a musl binary built)
and runs the real thing under casaguard's guard: a crasher primitive, a CASA
task (without root's powers where file modes must bite), WSClean, or
python-casacore next to casatools. Separate from the corpus table, which says
what each run proves; these say how it is done.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from casaguard.api.tasks import call
from casaguard.corpus import crashers
from casaguard.corpus.casacore_cache import casacore_clash_dir
from casaguard.corpus.workspace import Workspace
from casaguard.errors import InvalidInput
from casaguard.sandbox import callspec, command, runner, spawn
from casaguard.sandbox.jobdir import Ref

#: setpriv arguments that make root obey file modes (CASA's permission failures).
DROP_ROOT_POWERS = (
    "setpriv",
    "--bounding-set=-dac_override,-dac_read_search,-fowner",
    "--inh-caps=-all",
)


def powerless_launcher() -> spawn.SpawnLauncher:
    """A spawn launcher whose child obeys file modes even when we run as root."""
    prefix = DROP_ROOT_POWERS if os.geteuid() == 0 else ()
    return spawn.SpawnLauncher(prefix=prefix)


def guarded_task(
    task: str, vis: Path, *, launcher: callspec.Launcher | None = None, **params: Any
) -> Any:
    """Run a casatask guarded, optionally with a given launcher (e.g. without root powers)."""
    return runner.run(
        callspec.CallSpec(
            func=Ref("casaguard.remote.casa.tasks", "run_casatask"),
            args=(task, {"vis": str(vis), **params}),
            name=task,
            is_casa_task=True,
            vis=str(vis),
            timeout=300,
            launcher=launcher,
        )
    )


def primitive(
    crasher: Callable[..., Any], *args: Any, timeout: float = 60
) -> Callable[[Workspace], Any]:
    def reproduce(workspace: Workspace) -> Any:
        return call(crasher, *args, casa=False, timeout=timeout)

    return reproduce


def ft_table_dat_unwritable(workspace: Workspace) -> Any:
    vis = workspace.ms("ft-readonly-table-dat")
    (vis / "table.dat").chmod(0o444)
    return guarded_task(
        "ft",
        vis,
        complist=str(workspace.complist()),
        usescratch=True,
        launcher=powerless_launcher(),
    )


def clearcal_ms_dir_unwritable(workspace: Workspace) -> Any:
    vis = workspace.ms("clearcal-readonly-dir")
    vis.chmod(0o555)
    try:
        return guarded_task("clearcal", vis, launcher=powerless_launcher())
    finally:
        vis.chmod(0o755)


def ft_model_shape_mismatch(workspace: Workspace) -> Any:
    vis = workspace.ms("ft-shape-mismatch")
    call(
        Ref("casaguard.remote.casa.surgery", "fixed_shape_model_data"),
        str(vis),
        [4, 3],
        timeout=120,
    )
    return guarded_task("ft", vis, complist=str(workspace.complist()), usescratch=True)


def ft_error_then_heap_abort(workspace: Workspace) -> Any:
    vis = workspace.ms("field-report-sequence")
    (vis / "table.dat").chmod(0o444)
    return runner.run(
        callspec.CallSpec(
            func=Ref("casaguard.remote.casa.corpus", "ft_error_then_heap_abort"),
            args=(str(vis), str(workspace.complist())),
            name="ft",
            is_casa_task=True,
            vis=str(vis),
            timeout=300,
            launcher=powerless_launcher(),
        )
    )


WSCLEAN_IMAGING = ("-size", "64", "64", "-scale", "20asec", "-niter", "20", "-mgain", "0.8")


def wsclean_new_model_mixed_channels(workspace: Workspace) -> Any:
    vis = workspace.ms("wsclean-new-model", nchan=(4, 16))
    call(Ref("casaguard.remote.casa.surgery", "remove_model_data"), str(vis), timeout=120)
    name = workspace.path("wsclean-new-model")
    # -j 1: one thread makes the overflow land in the same place every run.
    return command.wsclean(["-j", "1", "-name", str(name), *WSCLEAN_IMAGING, str(vis)], timeout=300)


def wsclean_existing_model_mixed_channels(workspace: Workspace) -> Any:
    vis = workspace.ms("wsclean-existing-model", nchan=(4, 16))
    name = workspace.path("wsclean-existing-model")
    return command.wsclean(["-j", "1", "-name", str(name), *WSCLEAN_IMAGING, str(vis)], timeout=300)


def casacore_clash(workspace: Workspace) -> Any:
    return call(
        Ref("casaguard.remote.casa.corpus", "import_casacore_then_casatools"),
        str(casacore_clash_dir()),
        casa=False,
        timeout=120,
        # A template fork already holds casatools; the clash needs casacore first.
        mode="spawn",
    )


def musl_double_free(workspace: Workspace) -> Any:
    source = workspace.path("musl-double-free.c")
    source.write_text(crashers.MUSL_DOUBLE_FREE_C)
    binary = workspace.path("musl-double-free")
    built = subprocess.run(
        ["musl-gcc", "-O0", "-o", str(binary), str(source)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if built.returncode != 0:
        raise InvalidInput(f"musl-gcc cannot build the reproducer: {built.stderr.strip()[-500:]}")
    return command.run_command([str(binary)], timeout=60)
