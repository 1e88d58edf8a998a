"""The crash corpus: real, deterministic reproducers, each stating what it proves.

Every reproducer makes a real process die (or fail) the way CASA, WSClean or a
library clash does, under casaguard's guard, and names the crash kinds it
must end in. ``casaguard regress`` runs them and records kind, signature and
the versions of everything involved (the version compatibility matrix); the
tests run them as a table. Families:

* ``glibc-*``, ``segfault``, ``cxx-terminate``... -- the primitives of
  ``casaguard.corpus.crashers`` (real heap checks on really corrupted chunks).
* ``libcxxabi-*``, ``tcmalloc-*``, ``musl-*`` -- the other runtimes Linux can
  really run: LLVM's libc++abi terminate handler (CASA and casacore on macOS
  print the same), gperftools' tcmalloc heap checks, and musl's silent heap
  crash, from Debian's packages.
* ``casa-*`` -- CASA's own failures on simulated MSs: permissions (run under
  ``setpriv`` so that root obeys file modes), a silent SEVERE, the field
  report's CASA-error-then-abort sequence.
* ``wsclean-*`` -- WSClean 3.1's own crashes on MSs with two spectral windows
  of different channel counts.
* ``clash-*`` -- python-casacore 3.7.1 and casatools imported into one process.

Reproducers never touch user data: every MS is simulated under a temporary
workspace that is removed afterwards.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from casaguard.api.tasks import call
from casaguard.corpus import crashers
from casaguard.corpus.simulate import make_point_complist, simulate_ms
from casaguard.crash.outcome import Outcome, capture
from casaguard.errors import InvalidInput
from casaguard.sandbox import callspec, command, runner, spawn
from casaguard.sandbox.jobdir import Ref

#: setpriv arguments that make root obey file modes (CASA's permission failures).
DROP_ROOT_POWERS = (
    "setpriv",
    "--bounding-set=-dac_override,-dac_read_search,-fowner",
    "--inh-caps=-all",
)
#: Kinds a heap overflow can end in, depending on what the overwritten bytes hit.
MEMORY_KINDS = ("segfault", "heap-corruption", "invalid-pointer", "double-free", "corrupted-size")
CASACORE_CLASH_VERSION = "3.7.1"
CACHE_ENV = "CASAGUARD_TEST_CACHE"
WORKSPACE_PREFIX = "casaguard-corpus-"


@dataclass(frozen=True)
class Reproducer:
    """One real crash, and what it proves.

    Attributes:
        name: stable identifier (used by ``--only`` and in the JSON).
        proves: one sentence: what a run that ends in ``expect`` shows.
        expect: the crash kinds it must end in (more than one only where the
            kernel's heap layout decides, e.g. a heap overflow).
        reproduce: runs the guarded work in ``Workspace``; raises a CasaCrash.
        text: a string that must appear in the crash's detail, casa_error,
            SEVERE lines or stderr tail (the evidence is the right one).
        needs: what it needs besides Python: ``"casa"``, ``"wsclean"``, or a
            Debian library package (``"libc++1-14"``, ``"libtcmalloc-minimal4"``).
    """

    name: str
    proves: str
    expect: tuple[str, ...]
    reproduce: Callable[[Workspace], Any]
    text: str = ""
    needs: tuple[str, ...] = ()


@dataclass
class Result:
    """A reproducer's run: its outcome and whether it matched the expectation."""

    reproducer: Reproducer
    outcome: Outcome

    @property
    def matched(self) -> bool:
        """The run ended in an expected kind, with the expected evidence."""
        crash = self.outcome.crash
        if crash is None or crash.kind not in self.reproducer.expect:
            return False
        if not self.reproducer.text:
            return True
        evidence = "\n".join(
            [crash.detail, crash.casa_error or "", *crash.severe_lines, crash.stderr_tail]
        )
        return self.reproducer.text in evidence

    def facts(self) -> dict[str, Any]:
        """JSON-ready facts; no pids, paths or times, so runs on two versions diff cleanly."""
        crash = self.outcome.crash
        return {
            "proves": self.reproducer.proves,
            "expect": list(self.reproducer.expect),
            "matched": self.matched,
            "kind": self.outcome.kind,
            "signature": self.outcome.signature,
            "signal": self.outcome.signal,
            "detail": None if crash is None else _stable(crash.detail),
            "casa_error": None
            if crash is None or not crash.casa_error
            else _stable(crash.casa_error),
        }


_WORKSPACE_NAME = re.compile(r"casaguard-corpus-[A-Za-z0-9_]+")
#: tcmalloc and libmalloc name the block's address (``Attempt to free invalid pointer 0x...``).
_ADDRESS = re.compile(r"0x[0-9a-fA-F]+")


def _stable(text: str) -> str:
    """The first line of ``text``, without the workspace's random name or heap addresses."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    return _ADDRESS.sub("0x?", _WORKSPACE_NAME.sub("casaguard-corpus-*", first))


@dataclass
class Workspace:
    """A temporary directory with simulated MSs built once and copied per reproducer."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix=WORKSPACE_PREFIX)))
    _built: dict[tuple[Any, ...], Path] = field(default_factory=dict)
    _count: int = 0

    def __enter__(self) -> Workspace:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Remove the workspace, restoring modes a reproducer took away first."""
        for path in self.root.rglob("*"):
            try:
                if path.is_dir() and not path.is_symlink():
                    path.chmod(0o755)
            except OSError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)

    def ms(self, label: str, **simulate: Any) -> Path:
        """A fresh copy of a simulated MS (``simulate_ms`` keyword arguments)."""
        key = tuple(sorted(simulate.items()))
        if key not in self._built:
            path = self.root / "cache" / f"sim{len(self._built)}.ms"
            path.parent.mkdir(exist_ok=True)
            simulate_ms(path, **simulate)
            self._built[key] = path
        self._count += 1
        copy = self.root / f"{self._count:02d}-{label}.ms"
        shutil.copytree(self._built[key], copy)
        return copy

    def complist(self) -> Path:
        """A one-point-source component list (built once)."""
        path = self.root / "cache" / "point.cl"
        if not path.exists():
            path.parent.mkdir(exist_ok=True)
            make_point_complist(path)
        return path

    def path(self, name: str) -> Path:
        """A path inside the workspace for a reproducer's own outputs."""
        return self.root / name


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


def casacore_clash_dir() -> Path:
    """python-casacore 3.7.1 installed with ``pip --target`` in a cache dir (never the venv).

    The directory is ``$CASAGUARD_TEST_CACHE`` (default ``~/.cache/casaguard-test``)
    ``/python-casacore-3.7.1``; CI caches it. Only a child puts it on sys.path.

    Raises:
        InvalidInput: pip cannot install it.
    """
    cache = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "casaguard-test")
    target = cache / f"python-casacore-{CASACORE_CLASH_VERSION}"
    if (target / "casacore" / "tables").is_dir():
        return target
    partial = cache / f".partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(partial),
            f"python-casacore=={CASACORE_CLASH_VERSION}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise InvalidInput(
            f"cannot install python-casacore {CASACORE_CLASH_VERSION}: "
            f"{result.stderr.strip()[-500:]}"
        )
    os.replace(partial, target)
    return target


# --- reproducers -------------------------------------------------------------


def _primitive(
    crasher: Callable[..., Any], *args: Any, timeout: float = 60
) -> Callable[[Workspace], Any]:
    def reproduce(workspace: Workspace) -> Any:
        return call(crasher, *args, casa=False, timeout=timeout)

    return reproduce


def _ft_table_dat_unwritable(workspace: Workspace) -> Any:
    vis = workspace.ms("ft-readonly-table-dat")
    (vis / "table.dat").chmod(0o444)
    return guarded_task(
        "ft",
        vis,
        complist=str(workspace.complist()),
        usescratch=True,
        launcher=powerless_launcher(),
    )


def _clearcal_ms_dir_unwritable(workspace: Workspace) -> Any:
    vis = workspace.ms("clearcal-readonly-dir")
    vis.chmod(0o555)
    try:
        return guarded_task("clearcal", vis, launcher=powerless_launcher())
    finally:
        vis.chmod(0o755)


def _ft_model_shape_mismatch(workspace: Workspace) -> Any:
    vis = workspace.ms("ft-shape-mismatch")
    call(
        Ref("casaguard.remote.casa.surgery", "fixed_shape_model_data"),
        str(vis),
        [4, 3],
        timeout=120,
    )
    return guarded_task("ft", vis, complist=str(workspace.complist()), usescratch=True)


def _ft_error_then_heap_abort(workspace: Workspace) -> Any:
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


def _wsclean_new_model_mixed_channels(workspace: Workspace) -> Any:
    vis = workspace.ms("wsclean-new-model", nchan=(4, 16))
    call(Ref("casaguard.remote.casa.surgery", "remove_model_data"), str(vis), timeout=120)
    name = workspace.path("wsclean-new-model")
    # -j 1: one thread makes the overflow land in the same place every run.
    return command.wsclean(["-j", "1", "-name", str(name), *WSCLEAN_IMAGING, str(vis)], timeout=300)


def _wsclean_existing_model_mixed_channels(workspace: Workspace) -> Any:
    vis = workspace.ms("wsclean-existing-model", nchan=(4, 16))
    name = workspace.path("wsclean-existing-model")
    return command.wsclean(["-j", "1", "-name", str(name), *WSCLEAN_IMAGING, str(vis)], timeout=300)


def _casacore_clash(workspace: Workspace) -> Any:
    return call(
        Ref("casaguard.remote.casa.corpus", "import_casacore_then_casatools"),
        str(casacore_clash_dir()),
        casa=False,
        timeout=120,
        # A template fork already holds casatools; the clash needs casacore first.
        mode="spawn",
    )


def _musl_double_free(workspace: Workspace) -> Any:
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


def _reproducers() -> tuple[Reproducer, ...]:
    glibc = [
        (
            "glibc-double-free-tcache",
            crashers.double_free_tcache,
            "double-free",
            "free(): double free detected in tcache 2",
        ),
        (
            "glibc-double-free-out",
            crashers.double_free_out,
            "double-free",
            "double free or corruption (out)",
        ),
        (
            "glibc-double-free-prev",
            crashers.double_free_prev,
            "double-free",
            "double free or corruption (!prev)",
        ),
        (
            "glibc-corrupted-size-vs-prev-size",
            crashers.corrupted_size_vs_prev_size,
            "corrupted-size",
            "corrupted size vs. prev_size",
        ),
        (
            "glibc-invalid-pointer",
            crashers.invalid_pointer,
            "invalid-pointer",
            "free(): invalid pointer",
        ),
        ("glibc-invalid-size", crashers.invalid_size, "heap-corruption", "free(): invalid size"),
    ]
    corpus = [
        Reproducer(
            name,
            f"glibc's heap check prints `{message}` and aborts; casaguard names it {kind}",
            (kind,),
            _primitive(crasher),
            text=message,
        )
        for name, crasher, kind, message in glibc
    ]
    corpus += [
        Reproducer(
            "segfault",
            "a read of address 0 (SIGSEGV) becomes a Segfault, not a dead pipeline",
            ("segfault",),
            _primitive(crashers.segfault),
            text="Segmentation fault",
        ),
        Reproducer(
            "cxx-terminate",
            "an uncaught C++ exception (as when an AipsError escapes CASA) is named with its "
            "what() text",
            ("cxx-terminate",),
            _primitive(crashers.cxx_terminate),
            text="std::length_error",
        ),
        Reproducer(
            "libcxxabi-terminate",
            "an uncaught C++ exception under LLVM's libc++abi (CASA on macOS, any clang/libc++ "
            "build) is cxx-terminate with its type and what(), worded as under libstdc++",
            ("cxx-terminate",),
            _primitive(crashers.libcxxabi_terminate),
            text="uncaught C++ std::runtime_error: casaguard crash corpus",
            needs=("libc++1-14",),
        ),
        Reproducer(
            "tcmalloc-invalid-pointer",
            "tcmalloc's free() of a block it never allocated prints `Attempt to free invalid "
            "pointer` and aborts; casaguard names it invalid-pointer, as glibc's",
            ("invalid-pointer",),
            _primitive(crashers.tcmalloc_invalid_pointer),
            text="Attempt to free invalid pointer 0x",
            needs=("libtcmalloc-minimal4",),
        ),
        Reproducer(
            "tcmalloc-double-free",
            "tcmalloc's debug allocator names a second free() of one block (`has been already "
            "deallocated`) and aborts; casaguard names it double-free, as glibc's",
            ("double-free",),
            _primitive(crashers.tcmalloc_double_free),
            text="has been already deallocated",
            needs=("libtcmalloc-minimal4",),
        ),
        Reproducer(
            "musl-double-free",
            "musl's malloc turns a double free into a silent a_crash() (SIGSEGV on x86_64); "
            "casaguard names it segfault although there is no message to match",
            ("segfault",),
            _musl_double_free,
            text="SIGSEGV (invalid memory access)",
            needs=("musl-tools", "gcc"),
        ),
        Reproducer(
            "abort",
            "a bare abort() without a heap-check or C++ message is still a classified AbortCrash",
            ("abort",),
            _primitive(crashers.abort),
        ),
        Reproducer(
            "glibc-fortify-buffer-overflow",
            "glibc's _FORTIFY_SOURCE check prints `*** buffer overflow detected ***: terminated` "
            "and aborts; casaguard's abort carries that line, not a bare abort()",
            ("abort",),
            _primitive(crashers.buffer_overflow_detected),
            text="buffer overflow detected",
        ),
        Reproducer(
            "sigkill",
            "a SIGKILL casaguard did not send (the OOM killer's signal) becomes Killed",
            ("killed",),
            _primitive(crashers.sigkill_self),
        ),
        Reproducer(
            "hang-timeout",
            "a call that never returns (CASA on a held lock) is killed at its timeout",
            ("timeout",),
            _primitive(crashers.hang, timeout=2),
        ),
        Reproducer(
            "stderr-flood",
            "100 MB on stderr before an abort neither blocks the child nor the caller",
            ("abort",),
            _primitive(crashers.stderr_flood, 100, "abort", timeout=300),
            text="END OF FLOOD",
        ),
        Reproducer(
            "casa-ft-table-dat-unwritable",
            "ft on an MS whose table.dat it cannot write (as WSClean run by another user leaves "
            "it) raises the field report's CASA error, recognised with its cause",
            ("casa-error",),
            _ft_table_dat_unwritable,
            text="Please make sure MS is writable when using Imager::ft",
            needs=("casa",),
        ),
        Reproducer(
            "casa-clearcal-ms-dir-unwritable",
            "clearcal on an MS whose directory it cannot write dies of an uncaught "
            "casacore::AipsError (SIGABRT), with CASA's error attached",
            ("cxx-terminate",),
            _clearcal_ms_dir_unwritable,
            text="table.dat_tmp does not exist and cannot be created",
            needs=("casa",),
        ),
        Reproducer(
            "casa-ft-model-shape-mismatch",
            "ft into a fixed-shape MODEL_DATA that disagrees with DATA returns normally but logs "
            "SEVERE and writes nothing: a silent failure casaguard turns into casa-severe",
            ("casa-severe",),
            _ft_model_shape_mismatch,
            text="Table array conformance error",
            needs=("casa",),
        ),
        Reproducer(
            "casa-ft-error-then-double-free",
            "the field report's sequence (ft raises `Please make sure MS is writable`, then the "
            "process aborts with `double free or corruption (out)`) is one crash carrying both",
            ("double-free",),
            _ft_error_then_heap_abort,
            text="Please make sure MS is writable when using Imager::ft",
            needs=("casa",),
        ),
        Reproducer(
            "wsclean-new-model-mixed-channels",
            "WSClean 3.1 creating MODEL_DATA on an MS with spws of 4 and 16 channels overflows "
            "the heap and dies (SIGSEGV, or glibc's `free(): invalid next size (fast)`)",
            MEMORY_KINDS,
            _wsclean_new_model_mixed_channels,
            text="Writing changed model back",
            needs=("casa", "wsclean"),
        ),
        Reproducer(
            "wsclean-existing-model-mixed-channels",
            "WSClean 3.1 writing an existing MODEL_DATA of an MS with spws of 4 and 16 channels "
            "writes 4-channel cells into 16-channel rows and aborts on reading them back",
            ("cxx-terminate",),
            _wsclean_existing_model_mixed_channels,
            text="TableArrayConformanceError",
            needs=("casa", "wsclean"),
        ),
        Reproducer(
            "clash-casacore-3.7.1-then-casatools",
            "python-casacore 3.7.1 and casatools imported into one process segfault (the field "
            "report's pipeline did this); casaguard's child never imports the caller's casacore",
            ("segfault",),
            _casacore_clash,
            needs=("casa",),
        ),
    ]
    return tuple(corpus)


CORPUS: tuple[Reproducer, ...] = _reproducers()


def select(names: Iterable[str] | None = None) -> list[Reproducer]:
    """The reproducers named in ``names`` (all when None), in corpus order.

    Raises:
        InvalidInput: a name that is not in the corpus.
    """
    if names is None:
        return list(CORPUS)
    wanted = list(names)
    known = {r.name for r in CORPUS}
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise InvalidInput(f"unknown reproducer(s) {unknown}; known: {sorted(known)}")
    return [r for r in CORPUS if r.name in wanted]


def run(
    reproducers: Sequence[Reproducer] | None = None,
    *,
    workspace: Workspace | None = None,
    on_result: Callable[[Result], None] | None = None,
) -> list[Result]:
    """Run reproducers (all by default) in a temporary workspace; return their results.

    Args:
        reproducers: which to run.
        workspace: reuse a workspace (its MSs are cached); a temporary one otherwise.
        on_result: called after each reproducer (progress output).

    Returns:
        One Result per reproducer, in order.
    """
    chosen = list(CORPUS if reproducers is None else reproducers)
    own = workspace is None
    space = workspace or Workspace()
    results = []
    try:
        for reproducer in chosen:
            result = Result(reproducer, capture(reproducer.reproduce, space))
            results.append(result)
            if on_result is not None:
                on_result(result)
    finally:
        if own:
            space.close()
    return results
