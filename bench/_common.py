"""Helpers shared by the benchmarks: simulated MSs, a warm in-process CASA worker, statistics.

Nothing here times anything by itself; each ``bench_*.py`` decides what to
interleave with what. Imported as ``_common`` (the benchmarks run as scripts
from ``bench/``, so their directory is on ``sys.path``).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, NoReturn

import psutil
import structlog

import casaguard
from casaguard import casaenv
from casaguard.sandbox.template import client as _template
from casaguard.sandbox.template import flavors

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
#: Where the benchmarks build their MSs (and so where the journal copies them):
#: ``$CASAGUARD_BENCH_MS_DIR`` puts them on another file system, e.g. one with
#: reflinks (XFS, btrfs), where a journal copy shares blocks instead of copying.
MS_DIR = Path(os.environ.get("CASAGUARD_BENCH_MS_DIR") or HERE / "ms")

#: name -> simulate_ms arguments; rows = n(n-1)/2 baselines x n_times (one spw).
SIZES: dict[str, dict[str, Any]] = {
    "1k": {"n_antennas": 8, "n_times": 36, "nchan": (8,)},  # 28 x 36 = 1,008
    "100k": {"n_antennas": 32, "n_times": 202, "nchan": (8,)},  # 496 x 202 = 100,192
    "1M": {"n_antennas": 64, "n_times": 496, "nchan": (8,)},  # 2,016 x 496 = 999,936
}
#: Cached between runs under bench/ms; the others are deleted after a run (unless --keep).
KEEP_SIZES = {"1k"}

#: Every casaguard event name seen while counting (see ``count_events``).
EVENTS: Counter[str] = Counter()


def count_events(_: Any, __: str, event: MutableMapping[str, Any]) -> NoReturn:
    """A structlog processor that counts events by name and drops them (no output)."""
    EVENTS[event["event"]] += 1
    raise structlog.DropEvent


def complist() -> Path:
    """The one-point-source component list every benchmark's ft uses (made once)."""
    MS_DIR.mkdir(exist_ok=True)
    path = MS_DIR / "isolation-point.cl"
    if not path.exists():
        casaguard.make_point_complist(path)
    return path


def build(name: str, point: Path) -> tuple[Path, int]:
    """The simulated MS of size ``name`` under bench/ms (built once), and its row count.

    One untimed ``ft(usescratch=True)`` creates MODEL_DATA, so every timed call
    overwrites it (the same work each time).
    """
    MS_DIR.mkdir(exist_ok=True)
    path = MS_DIR / f"isolation-{name}.ms"
    rows_file = path.with_suffix(".rows")
    if path.exists() and rows_file.exists():
        return path, int(rows_file.read_text())
    shutil.rmtree(path, ignore_errors=True)
    started = time.monotonic()
    rows = casaguard.simulate_ms(path, timeout=3600, **SIZES[name])
    rows_file.write_text(str(rows))
    casaguard.ft(vis=str(path), complist=str(point), usescratch=True, mode="spawn", journal=False)
    print(f"built {path.name}: {rows} rows in {time.monotonic() - started:.0f} s", flush=True)
    return path, rows


def remove_built(names: list[str]) -> None:
    """Delete the big simulated MSs (all but KEEP_SIZES)."""
    for name in names:
        if name not in KEEP_SIZES:
            path = MS_DIR / f"isolation-{name}.ms"
            shutil.rmtree(path, ignore_errors=True)
            path.with_suffix(".rows").unlink(missing_ok=True)


def twin(path: Path, suffix: str) -> Path:
    """A fresh copy of ``path`` beside it (``<name>-<suffix>.ms``), replacing an old one."""
    copy = path.with_name(f"{path.stem}-{suffix}.ms")
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(path, copy)
    return copy


class InProcess:
    """A plain CASA process (casatasks imported once) that runs one task per request.

    What a pipeline without casaguard pays: the task call alone, timed inside
    that process (wall and CPU seconds of all its threads). It lives through a
    whole benchmark run so its calls interleave with the guarded ones.
    """

    CODE = textwrap.dedent(
        """
        import json, resource, sys, time
        import casatasks
        def cpu():
            usage = resource.getrusage(resource.RUSAGE_SELF)
            return usage.ru_utime + usage.ru_stime
        print("READY", flush=True)
        for line in sys.stdin:
            task, params = json.loads(line)
            calls = params if isinstance(params, list) else [params]
            started, cpu0 = time.perf_counter(), cpu()
            for one in calls:
                getattr(casatasks, task)(**one)
            print(json.dumps([time.perf_counter() - started, cpu() - cpu0]), flush=True)
        """
    )

    def __init__(self) -> None:
        MS_DIR.mkdir(exist_ok=True)
        self.process = subprocess.Popen(
            [sys.executable, "-P", "-c", self.CODE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            stderr=subprocess.DEVNULL,  # CASA's console log
            env=casaenv.child_environment(),
            cwd=MS_DIR,  # casatools drops casa-<date>.log files in its cwd
        )
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "READY":
            raise RuntimeError("the in-process CASA worker did not start")

    def run(self, task: str, params: dict[str, Any] | list[dict[str, Any]]) -> tuple[float, float]:
        """Run ``casatasks.<task>(**params)`` (or each of a list, serially); (wall s, CPU s)."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps([task, params]) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the in-process CASA worker died running {task}")
        wall, cpu = json.loads(line)
        return float(wall), float(cpu)

    def ft(self, path: Path, point: Path) -> float:
        """Wall seconds of one ``casatasks.ft(usescratch=True)``."""
        return self.run("ft", {"vis": str(path), "complist": str(point), "usescratch": True})[0]

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=60)


def process_cpu_s(pid: int, *, children: bool = False) -> float:
    """CPU seconds (user + system) of ``pid``, plus those of its reaped children if asked."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def summarise(times: list[float]) -> dict[str, float]:
    """Median, quartiles, extremes and count of ``times``."""
    ordered = sorted(times)
    if len(ordered) >= 2:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    else:
        q1 = q3 = ordered[0]
    return {
        "median_s": statistics.median(ordered),
        "q1_s": q1,
        "q3_s": q3,
        "iqr_s": q3 - q1,
        "min_s": ordered[0],
        "max_s": ordered[-1],
        "runs": len(ordered),
    }


def machine() -> dict[str, Any]:
    """What the figures were measured on, and how busy it was."""
    return {
        "cpus": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "casaguard_mode": os.environ.get("CASAGUARD_MODE", "auto"),
        "ms_dir": str(MS_DIR),
        "ms_filesystem": filesystem_type(MS_DIR),
    }


def filesystem_type(path: Path) -> str:
    """The type of the file system ``path`` lies on (``ext4``, ``xfs``...), from /proc/mounts."""
    path.mkdir(parents=True, exist_ok=True)
    target = os.path.realpath(path)
    best, kind = "", "unknown"
    with open("/proc/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            mount_point = fields[1].replace("\\040", " ")
            inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
            if inside and len(mount_point) >= len(best):
                best, kind = mount_point, fields[2]
    return kind


def rss_loop(path: Path, point: Path, calls: int, *, journal: bool = False) -> dict[str, Any]:
    """Caller RSS before/after ``calls`` guarded ft calls, each under a timeout; leak check.

    This loop is also the fork-safety stress test: it counts timeouts (hangs),
    fallbacks to spawn, unresponsive forks and leaked processes. Needs
    ``count_events`` configured as structlog's processor.
    """
    me = psutil.Process()
    casaguard.warmup()

    def one() -> None:
        casaguard.ft(
            vis=str(path), complist=str(point), usescratch=True, timeout=60, journal=journal
        )

    for _ in range(5):
        one()
    EVENTS.clear()
    before = me.memory_info().rss
    started = time.monotonic()
    failures: Counter[str] = Counter()
    for _ in range(calls):
        try:
            one()
        except casaguard.CasaCrash as error:
            failures[error.kind] += 1
    elapsed = time.monotonic() - started
    after = me.memory_info().rss
    return {
        "calls": calls,
        "journal": journal,
        "elapsed_s": round(elapsed, 2),
        "rss_before_mb": round(before / 2**20, 2),
        "rss_after_mb": round(after / 2**20, 2),
        "rss_growth_mb": round((after - before) / 2**20, 2),
        "failures": dict(failures),
        "timeouts": failures.get("timeout", 0),
        "template_calls": EVENTS["task_started"] - EVENTS["template_fallback"],
        "fallbacks": EVENTS["template_fallback"],
        "unresponsive_forks": EVENTS["template_fork_unresponsive"],
        "template_restarts": EVENTS["template_exited"],
        "leaked_processes": leaked_processes(),
    }


def leaked_processes(grace_s: float = 2.0) -> list[dict[str, Any]]:
    """Live descendants of this process other than the warm templates (and their spares),
    still there after ``grace_s``: a fork that said it was done may still be exiting."""
    deadline = time.monotonic() + grace_s
    while (leaked := _live_descendants()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return leaked


def _live_descendants() -> list[dict[str, Any]]:
    me = psutil.Process()
    # The warm templates (one per flavor) outlive calls by design, as do their spare forks.
    templates = {_template.template_pid(flavor) for flavor in flavors.FLAVORS} - {None}
    spare = flavors.SPARE_NAME.decode()
    leaked = []
    for proc in me.children(recursive=True):
        try:
            if proc.pid in templates or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.ppid() in templates and proc.name() == spare:
                continue
            if "multiprocessing.resource_tracker" in " ".join(proc.cmdline()):
                continue  # Dask's LocalCluster started it; it lives as long as this process
            leaked.append({"pid": proc.pid, "name": proc.name(), "cmdline": proc.cmdline()[:4]})
        except psutil.Error:
            continue
    for proc in psutil.process_iter(["name", "ppid"]):
        if proc.info["name"] == flavors.FORK_NAME.decode() and proc.info["ppid"] not in templates:
            leaked.append({"pid": proc.pid, "name": "stray fork"})
    return leaked
