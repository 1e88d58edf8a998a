"""The warm template's speed-ups keep calls correct: spare forks, warm-up, OpenMP, pools, Dask."""

from __future__ import annotations

import array
import multiprocessing
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from conftest import casa_script
from structlog.testing import capture_logs

import casaguard
from casaguard.journal import layout as journal_layout
from casaguard.sandbox.template import client as _template
from casaguard.sandbox.template import connection, flavors, warm


@pytest.fixture
def warm_template() -> Iterator[connection.Template]:
    """A running template that has finished its one-off warm-up."""
    casaguard.warmup()
    template = _template._templates["casa"]
    assert template.wait_warm(180), template.stderr_tail()
    yield template


def _spare_pids(template_pid: int) -> list[int]:
    spares = []
    for child in psutil.Process(template_pid).children():
        try:
            if child.name() == flavors.SPARE_NAME.decode() and child.status() not in (
                psutil.STATUS_ZOMBIE,
                psutil.STATUS_DEAD,
            ):
                spares.append(child.pid)
        except psutil.Error:
            continue  # a let-go spare that just left
    return spares


def _wait_spare(template_pid: int) -> int:
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        spares = _spare_pids(template_pid)
        if spares:
            assert len(spares) == 1
            return spares[0]
        time.sleep(0.02)
    raise AssertionError("the template forked no spare")


def _omp_threads() -> int:
    import ctypes

    return int(ctypes.CDLL("libgomp.so.1", mode=os.RTLD_NOLOAD).omp_get_max_threads())


def test_each_call_is_served_by_the_spare_forked_before_it(
    warm_template: connection.Template, no_leaks: None
) -> None:
    """A call runs in the idle spare that existed before it, and a new spare replaces it."""
    for _ in range(3):
        spare = _wait_spare(warm_template.pid)
        assert casaguard.call(os.getpid, casa=False, mode="template", timeout=60) == spare
        assert _wait_spare(warm_template.pid) != spare


def test_a_killed_idle_spare_is_replaced_and_calls_still_work(
    warm_template: connection.Template, no_leaks: None
) -> None:
    """SIGKILL of the idle spare costs nothing: the next call forks afresh, no fallback."""
    spare = _wait_spare(warm_template.pid)
    os.kill(spare, 9)
    with capture_logs() as events:
        pid = casaguard.call(os.getpid, casa=False, mode="template", timeout=60)
    assert pid != spare
    assert not [e for e in events if e["event"] == "template_fallback"]
    assert _wait_spare(warm_template.pid) not in (spare, pid)


def test_warmed_forks_write_the_same_model_data_as_in_process_ft(
    warm_template: connection.Template, ms: Path, complist: Path, tmp_path: Path, no_leaks: None
) -> None:
    """A warmed template's fork writes MODEL_DATA identical, element by element, to plain ft."""
    plain = tmp_path / "plain.ms"
    shutil.copytree(ms, plain)
    result = casa_script(
        f"""
        import casatasks
        casatasks.ft(vis={str(plain)!r}, complist={str(complist)!r}, usescratch=True)
        """
    )
    assert result.returncode == 0, result.stderr
    with capture_logs() as events:
        casaguard.ft(vis=str(ms), complist=str(complist), usescratch=True, timeout=120)
    assert [e["mode"] for e in events if e["event"] == "task_started"] == ["template"]
    compare = casa_script(
        f"""
        import casatools, numpy
        def model(path):
            tb = casatools.table()
            tb.open(path)
            try:
                return tb.getcol("MODEL_DATA")
            finally:
                tb.close()
        a, b = model({str(ms)!r}), model({str(plain)!r})
        print("RESULT", numpy.array_equal(a, b), float(numpy.abs(a).max()))
        """
    )
    assert compare.returncode == 0, compare.stderr
    line = next(x for x in compare.stdout.splitlines() if x.startswith("RESULT "))
    _, equal, peak = line.split()
    assert equal == "True", compare.stdout
    assert float(peak) > 0.5  # a 1 Jy point source really was predicted


def test_warm_up_plans_what_the_journal_says_ft_writes() -> None:
    """The warm-up's ft plans the columns and subtables of the journal's own table for ft."""
    assert journal_layout.task_writes("ft", {"usescratch": True}) == warm.FT_WRITES


@pytest.mark.parametrize("threads", ["1", "2"])
def test_forks_use_the_callers_openmp_threads_after_the_warm_up(
    warm_template: connection.Template,
    ms: Path,
    complist: Path,
    threads: str,
    monkeypatch: pytest.MonkeyPatch,
    no_leaks: None,
) -> None:
    """The template ran OpenMP single-threaded; a fork takes OMP_NUM_THREADS and its ft ends."""
    monkeypatch.setenv("OMP_NUM_THREADS", threads)
    assert casaguard.call(_omp_threads, mode="template", timeout=60) == int(threads)
    # A multi-threaded region in a fork of a process whose pool ran would hang here.
    casaguard.ft(vis=str(ms), complist=str(complist), usescratch=True, timeout=120)


def test_forks_default_to_libgomps_own_thread_count(
    warm_template: connection.Template, monkeypatch: pytest.MonkeyPatch, no_leaks: None
) -> None:
    """Without OMP_NUM_THREADS a fork gets what an in-process CASA would: libgomp's default."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    expected = casa_script(
        """
        import ctypes, os
        import casatools
        print(ctypes.CDLL("libgomp.so.1", mode=os.RTLD_NOLOAD).omp_get_max_threads())
        """
    )
    assert expected.returncode == 0, expected.stderr
    if "OMP_NUM_THREADS" in warm_template.env:
        pytest.fail("the template was started with OMP_NUM_THREADS set; this test needs none")
    assert casaguard.call(_omp_threads, mode="template", timeout=60) == int(expected.stdout)


def _worker_call(_: int) -> tuple[int, int, int, int]:
    """In a pool worker: the call's parent, this worker's template, its parent, the worker."""
    fork_parent = casaguard.call(os.getppid, casa=False, mode="template", timeout=120)
    template = _template.template_pid()
    assert template is not None
    return fork_parent, template, psutil.Process(template).ppid(), os.getpid()


def test_fork_pool_workers_never_share_the_parents_template(
    warm_template: connection.Template,
) -> None:
    """Pool workers forked after the parent used its template each call through their own."""
    assert casaguard.call(os.getpid, casa=False, mode="template", timeout=60)
    context = multiprocessing.get_context("fork")
    with context.Pool(2, initializer=casaguard.warmup, initargs=(120.0,)) as pool:
        results = pool.map(_worker_call, range(6), chunksize=1)
    for fork_parent, worker_template, template_parent, worker in results:
        assert worker_template != warm_template.pid
        assert fork_parent == worker_template  # the call's fork is a child of the worker's own
        assert template_parent == worker
    # One template per worker, used by all of that worker's calls.
    assert len({(r[1], r[3]) for r in results}) == len({r[3] for r in results})
    # The parent's template still serves the parent.
    assert casaguard.call(os.getppid, casa=False, mode="template", timeout=60) == warm_template.pid


def test_warmup_in_the_background_returns_at_once_and_the_call_then_works(
    tmp_path: Path,
) -> None:
    """warmup(wait=False) (a Pool initializer's form) starts the template without blocking."""
    result = casa_script(
        textwrap.dedent(
            """
            import os, time
            import casaguard
            from casaguard.sandbox.template import client as _template
            started = time.monotonic()
            casaguard.warmup(wait=False)
            elapsed = round(time.monotonic() - started, 3)
            print("RESULT", elapsed, _template.template_pid() is not None)
            same = casaguard.call(os.getppid, casa=False, timeout=180) == _template.template_pid()
            print("RESULT", same)
            """
        )
    )
    assert result.returncode == 0, result.stderr
    first, second = [x[7:] for x in result.stdout.splitlines() if x.startswith("RESULT ")]
    elapsed, started = first.split()
    assert float(elapsed) < 2.0 and started == "True"  # CASA's import takes longer than that
    assert second == "True"


def test_map_task_installs_the_warmup_plugin_on_dask_workers(
    ms: Path, complist: Path, tmp_path: Path
) -> None:
    """After map_task on a LocalCluster every worker carries casaguard's plugin and a template."""
    import distributed

    from casaguard.batch import engines

    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            local_directory=str(tmp_path / "dask"),
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        outcomes = casaguard.map_task(
            "ft", [{"vis": str(ms), "complist": str(complist), "usescratch": True}], executor=client
        )
        assert outcomes[0].ok, outcomes[0].error
        plugins = client.run(lambda dask_worker: sorted(dask_worker.plugins))
        templates = client.run(lambda: _template.template_pid())
    assert all(engines.WARMUP_PLUGIN in names for names in plugins.values()), plugins
    assert all(pid is not None for pid in templates.values()), templates


def _private_dirty_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith("Private_Dirty:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no Private_Dirty in smaps_rollup")


def test_an_idle_spare_copies_the_pages_a_forks_first_task_writes(
    warm_template: connection.Template, no_leaks: None
) -> None:
    """The warm template learned which pages a fork's ft writes; each idle spare copies them."""
    import time

    pages = warm_template.prefault_pages
    assert pages > 500, pages  # a 1k-row ft writes ~1,400 shared pages
    casaguard.call(os.getpid, casa=False, mode="template", timeout=60)  # a spare forked after warm
    spare = _wait_spare(warm_template.pid)
    deadline = time.monotonic() + 10
    while _private_dirty_bytes(spare) < 0.8 * pages * os.sysconf("SC_PAGE_SIZE"):
        assert time.monotonic() < deadline, (_private_dirty_bytes(spare), pages)
        time.sleep(0.05)


#: An ioctl number and an madvise advice the kernel does not know: the kernel's
#: own ENOTTY / EINVAL, as on a kernel before 6.11 / 5.14.
_NO_PROCMAP_QUERY = "prefault._PROCMAP_QUERY = 0xC0686699"
_NO_POPULATE_WRITE = "prefault._MADV_POPULATE_WRITE = 999"


@pytest.mark.parametrize(
    ("kernel_help", "paths"),
    [
        pytest.param("", "PATHS ask_or_skip True", id="procmap-query-and-madvise"),
        pytest.param(
            f"{_NO_PROCMAP_QUERY}; {_NO_POPULATE_WRITE}",
            "PATHS look_up False",
            id="maps-read-whole-and-byte-writes",
        ),
        # Linux 5.14-6.10 (RHEL 9, Ubuntu 22.04, Debian 12): madvise, no PROCMAP_QUERY.
        pytest.param(_NO_PROCMAP_QUERY, "PATHS look_up True", id="maps-read-whole-and-madvise"),
    ],
)
def test_touching_ahead_writes_only_private_writable_pages_and_changes_no_byte(
    tmp_path: Path, kernel_help: str, paths: str
) -> None:
    """Read-only, unmapped and shared pages among the learned ones are skipped; values stay.

    The shared file counts as a loaded object, so only its being shared keeps it
    out; a mapped file whose name is not UTF-8 must not stop the maps being read.
    """
    shared_file = tmp_path / "shared"
    shared_file.write_bytes(b"s" * 4096)
    odd_name = os.path.join(os.fsencode(tmp_path), b"lib\xff.so")
    with open(odd_name, "wb") as odd:
        odd.write(b"o" * 4096)
    script = textwrap.dedent(
        f"""
        import ctypes, mmap, os
        from casaguard.sandbox.template import prefault
        {kernel_help}
        libc = ctypes.CDLL(None, use_errno=True)
        page = os.sysconf("SC_PAGE_SIZE")
        def address(m):
            return ctypes.addressof(ctypes.c_char.from_buffer(m))
        private = mmap.mmap(-1, page, flags=mmap.MAP_PRIVATE)
        private[:] = bytes(range(256)) * (page // 256)
        read_only = mmap.mmap(-1, page, flags=mmap.MAP_PRIVATE)
        read_only_at = address(read_only)
        assert libc.mprotect(ctypes.c_void_p(read_only_at), page, mmap.PROT_READ) == 0
        gone = mmap.mmap(-1, page, flags=mmap.MAP_PRIVATE)
        gone_at = address(gone)
        assert libc.munmap(ctypes.c_void_p(gone_at), page) == 0
        with open({str(shared_file)!r}, "r+b") as f:
            shared = mmap.mmap(f.fileno(), page, flags=mmap.MAP_SHARED)
        shared_at = address(shared)
        prefault._objects.add({str(shared_file)!r})
        with open({odd_name!r}, "rb") as f:
            odd = mmap.mmap(f.fileno(), page, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)
        prefault._learned.extend([address(private), read_only_at, gone_at, shared_at])
        read_end, _ = os.pipe()
        print("TOUCHED", prefault.touch_ahead(read_end))
        maps_fd = os.open("/proc/self/maps", os.O_RDONLY)
        populate = prefault._populate_works(libc)
        finder = prefault._mapping_finder(libc, maps_fd, query=populate).__name__
        print("PATHS", finder, populate)
        print("SAME", private[:] == bytes(range(256)) * (page // 256))
        """
    )
    before = shared_file.stat().st_mtime_ns
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "TOUCHED 1" in result.stdout and "SAME True" in result.stdout, result.stdout
    assert paths in result.stdout, result.stdout
    assert shared_file.stat().st_mtime_ns == before


def test_runs_stay_inside_one_mapping_and_an_unmapped_stretch_costs_one_query() -> None:
    """Learned pages are grouped per mapping; a gap of 200 unmapped pages is asked about once."""
    import ctypes
    import mmap

    from casaguard.sandbox.template import prefault

    libc = ctypes.CDLL(None, use_errno=True)
    page = os.sysconf("SC_PAGE_SIZE")

    def address(m: mmap.mmap) -> int:
        return ctypes.addressof(ctypes.c_char.from_buffer(m))

    split = mmap.mmap(-1, 4 * page, flags=mmap.MAP_PRIVATE)
    split_at = address(split)
    gone = mmap.mmap(-1, 200 * page, flags=mmap.MAP_PRIVATE)
    gone_at = address(gone)
    gone.close()  # after ``split`` exists: its place cannot be taken by it
    # Other permissions on its second half make the kernel split it in two mappings.
    protection = mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC
    assert libc.mprotect(ctypes.c_void_p(split_at + 2 * page), 2 * page, protection) == 0
    learned = sorted(
        [gone_at + i * page for i in range(200)] + [split_at + i * page for i in range(4)]
    )
    maps_fd = os.open("/proc/self/maps", os.O_RDONLY)
    saved = prefault._learned[:]
    try:
        find = prefault._mapping_finder(libc, maps_fd, query=True)
        asked: list[int] = []

        def counting(at: int) -> tuple[int, int, bool]:
            asked.append(at)
            return find(at)

        prefault._learned[:] = array.array("Q", learned)
        runs = list(prefault._runs(counting))
    finally:
        prefault._learned[:] = saved
        os.close(maps_fd)
        split.close()
    assert runs == [(split_at, 2), (split_at + 2 * page, 2)]
    assert sum(gone_at <= at < gone_at + 200 * page for at in asked) == 1, asked
