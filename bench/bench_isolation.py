"""What isolation costs: in-process casatasks.ft against guarded ft (spawn and warm template).

On the same simulated MSs (~1k, ~100k and ~1M rows, built under ``bench/ms``;
the big ones are deleted afterwards) it times, in one run:

* ``inprocess``: ``casatasks.ft`` in a plain subprocess that imported casatasks
  once (only the ft calls are timed) -- what a pipeline pays without casaguard;
* ``spawn``: ``casaguard.ft(mode="spawn")``, a fresh interpreter per call;
* ``template``: ``casaguard.ft(mode="template")``, a fork of the warm template;
* ``probe``: ``casaguard.probe`` (static), when this casaguard has it.

Guarded calls run with ``journal=False``: this measures isolation alone; what
the journal adds on top is ``bench_journal.py``'s figure.

Methods are interleaved run by run (so other load on a shared machine slows
each alike); the table shows the median and the minimum. Plus the cold first
call (a fresh caller process, template start included), and the caller's RSS
before and after many consecutive guarded calls on the small MS, each under
a timeout (this loop is also the fork-safety stress test: it counts hangs,
fallbacks and leaked processes).

Prints a table, writes ``bench/results/isolation[-quick].json`` and draws
``bench/results/isolation[-quick].png`` (median time against MS rows).

    PYTHONPATH=$PWD .venv/bin/python bench/bench_isolation.py --quick   # small MS only
    PYTHONPATH=$PWD .venv/bin/python bench/bench_isolation.py           # the full run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _common
import structlog

import casaguard

HERE = _common.HERE
SIZES = _common.SIZES
KEEP_SIZES = _common.KEEP_SIZES
build = _common.build
InProcess = _common.InProcess
rss_loop = _common.rss_loop
summarise = _common.summarise

TARGETS = {
    "warm_overhead_ms_small": 25.0,
    "ratio_at_100k_or_more": 1.05,
    "cold_first_call_s": 1.5,
    "probe_static_s": 0.150,
    "rss_growth_mb": 5.0,
}


def time_interleaved(
    worker: InProcess, path: Path, complist: Path, runs: int
) -> dict[str, list[float]]:
    """Per run, one call of each method in turn; each method's first call is untimed."""

    def guarded(mode: str) -> float:
        started = time.perf_counter()
        casaguard.ft(
            vis=str(path),
            complist=str(complist),
            usescratch=True,
            mode=mode,
            timeout=600,
            journal=False,
        )
        return time.perf_counter() - started

    methods: dict[str, Callable[[], float]] = {
        "inprocess": lambda: worker.ft(path, complist),
        "template": lambda: guarded("template"),
        "spawn": lambda: guarded("spawn"),
    }
    times: dict[str, list[float]] = {name: [] for name in methods}
    for run in range(runs + 1):
        for name, method in methods.items():
            elapsed = method()
            if run:
                times[name].append(elapsed)
    return times


def time_probe(path: Path, runs: int) -> list[float] | None:
    probe = getattr(casaguard, "probe", None)
    if probe is None:
        return None
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        probe(str(path))
        times.append(time.perf_counter() - started)
    return times


def time_cold(path: Path, complist: Path, runs: int) -> list[float]:
    """A fresh caller's first guarded ft, template start included (import casaguard excluded)."""
    code = textwrap.dedent(
        """
        import sys, time
        import casaguard
        started = time.perf_counter()
        casaguard.ft(
            vis=sys.argv[1], complist=sys.argv[2], usescratch=True, timeout=600, journal=False
        )
        print("RESULT", time.perf_counter() - started)
        """
    )
    times = []
    for _ in range(runs):
        result = subprocess.run(
            [sys.executable, "-c", code, str(path), str(complist)],
            capture_output=True,
            text=True,
            check=True,
        )
        line = next(x for x in result.stdout.splitlines() if x.startswith("RESULT"))
        times.append(float(line.split()[1]))
    return times


def plot(results: dict[str, Any], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for method in ("inprocess", "template", "spawn", "probe"):
        points = sorted(
            (entry["rows"], entry[method]["median_s"])
            for entry in results["sizes"].values()
            if entry.get(method)
        )
        if points:
            rows, medians = zip(*points, strict=True)
            axes.plot(rows, medians, marker="o", label=method)
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("MS rows")
    axes.set_ylabel("median time per call (s)")
    axes.set_title("casatasks.ft in-process vs guarded (spawn, warm template)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(png, dpi=120)


def check_targets(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    verdicts: dict[str, dict[str, Any]] = {}
    sizes = results["sizes"]
    small = sizes.get("1k")
    if small:
        overhead = (small["template"]["median_s"] - small["inprocess"]["median_s"]) * 1e3
        verdicts["warm_overhead_ms_small"] = {"value": round(overhead, 1)}
    ratios = [
        entry["template"]["median_s"] / entry["inprocess"]["median_s"]
        for entry in sizes.values()
        if entry["rows"] >= 100_000
    ]
    if ratios:
        verdicts["ratio_at_100k_or_more"] = {"value": round(max(ratios), 3)}
    verdicts["cold_first_call_s"] = {"value": round(results["cold"]["median_s"], 3)}
    probes = [e["probe"]["median_s"] for e in sizes.values() if e.get("probe")]
    if probes:
        verdicts["probe_static_s"] = {"value": round(max(probes), 3)}
    verdicts["rss_growth_mb"] = {"value": results["rss"]["rss_growth_mb"]}
    for name, verdict in verdicts.items():
        verdict["target"] = TARGETS[name]
        verdict["met"] = verdict["value"] <= TARGETS[name]
    return verdicts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small MS only, fewer runs")
    parser.add_argument("--runs", type=int, help="timed runs per method and MS (default 7; 5)")
    parser.add_argument("--calls", type=int, help="guarded calls in the RSS loop (1000; 200)")
    parser.add_argument("--keep", action="store_true", help="keep the big MSs")
    args = parser.parse_args()
    names = ["1k"] if args.quick else list(SIZES)
    runs = args.runs or (5 if args.quick else 7)
    calls = args.calls or (200 if args.quick else 1000)
    structlog.configure(processors=[_common.count_events])
    (HERE / "ms").mkdir(exist_ok=True)
    complist = HERE / "ms" / "isolation-point.cl"
    if not complist.exists():
        casaguard.make_point_complist(complist)

    results: dict[str, Any] = {
        "quick": args.quick,
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_at_start": os.getloadavg(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "sizes": {},
    }
    built = {name: build(name, complist) for name in names}
    cold_runs = 3 if args.quick else 5
    results["cold"] = summarise(time_cold(built["1k"][0], complist, cold_runs))
    casaguard.warmup()
    worker = InProcess()
    for name, (path, rows) in built.items():
        times = time_interleaved(worker, path, complist, runs)
        entry: dict[str, Any] = {"rows": rows}
        entry.update({method: summarise(values) for method, values in times.items()})
        probe = time_probe(path, runs)
        entry["probe"] = summarise(probe) if probe else None
        results["sizes"][name] = entry
        print(f"timed {name}", flush=True)
    worker.close()
    results["rss"] = rss_loop(built["1k"][0], complist, calls)
    results["targets"] = check_targets(results)
    results["machine"]["loadavg_at_end"] = os.getloadavg()

    if not args.keep:
        for name, (path, _) in built.items():
            if name not in KEEP_SIZES:
                shutil.rmtree(path, ignore_errors=True)
                path.with_suffix(".rows").unlink(missing_ok=True)

    out = HERE / "results"
    out.mkdir(exist_ok=True)
    stem = "isolation-quick" if args.quick else "isolation"
    (out / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, out / f"{stem}.png")
    print_table(results)
    print(f"\nwrote {out / (stem + '.json')} and {out / (stem + '.png')}")
    return 0


def print_table(results: dict[str, Any]) -> None:
    print(
        f"\n{'MS':>6} {'rows':>9} {'method':>10} {'median s':>9} {'min s':>8} "
        f"{'overhead ms':>12} {'ratio':>6}"
    )
    for name, entry in results["sizes"].items():
        base = entry["inprocess"]["median_s"]
        for method in ("inprocess", "template", "spawn", "probe"):
            stats = entry.get(method)
            if not stats:
                continue
            median = stats["median_s"]
            overhead = "" if method in ("inprocess", "probe") else f"{(median - base) * 1e3:.1f}"
            ratio = "" if method in ("inprocess", "probe") else f"{median / base:.3f}"
            print(
                f"{name:>6} {entry['rows']:>9} {method:>10} {median:>9.4f} "
                f"{stats['min_s']:>8.4f} {overhead:>12} {ratio:>6}"
            )
    cold = results["cold"]
    print(
        f"\ncold first call (fresh caller, template start included): median "
        f"{cold['median_s']:.3f} s over {cold['runs']} runs"
    )
    rss = results["rss"]
    print(
        f"{rss['calls']} consecutive guarded ft calls in {rss['elapsed_s']} s: RSS "
        f"{rss['rss_before_mb']} -> {rss['rss_after_mb']} MB ({rss['rss_growth_mb']:+} MB); "
        f"timeouts {rss['timeouts']}, fallbacks {rss['fallbacks']}, unresponsive forks "
        f"{rss['unresponsive_forks']}, failures {rss['failures']}, "
        f"leaked processes {rss['leaked_processes']}"
    )
    print("\ntargets:")
    for name, verdict in results["targets"].items():
        mark = "met" if verdict["met"] else "MISSED"
        print(f"  {name:<24} {verdict['value']:>8} (target <= {verdict['target']}) {mark}")


if __name__ == "__main__":
    sys.exit(main())
