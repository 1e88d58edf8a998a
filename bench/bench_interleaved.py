"""What users get: in-process casatasks against guarded calls with the defaults, pair by pair.

The defaults are what a user gets from ``casaguard.ft(...)`` / ``casaguard.clearcal(...)``:
journal on, strict, template mode (``$CASAGUARD_MODE`` unset). For each MS size
(~1k, ~100k, ~1M rows), each task (``ft(usescratch=True)``, ``clearcal``) and
journal on / off, a warm in-process CASA worker (``_common.InProcess``) and this
process's guarded call alternate call by call on twin copies of the MS (the
order flips every pair, so drift in the machine's load hits both sides alike).
Per pair: the difference guarded - in-process and the ratio; the table shows
their medians and interquartile ranges. ``cpu ms`` is CPU time per call
(in-process: the worker's own; guarded: this caller + the template + its
forks), a figure the machine's load blurs far less than wall time.

Then, each on its own:

* fresh process, first call: ``python -c "import casatasks; casatasks.ft(...)"``
  against ``python -c "import casaguard; casaguard.ft(...)"`` (interpreter
  start to exit, template start included), alternating;
* many MSs: ``casaguard.map_task("ft")`` over 40 fresh small MSs on a 2-worker
  Dask ``LocalCluster`` (first batch: templates start in the workers; second
  batch: warm) against a serial ``casatasks.ft`` loop in the warm in-process worker;
* the caller's RSS over many guarded default calls, timeouts (hangs), fallbacks
  and leaked processes.

Prints a table, writes ``bench/results/interleaved[-quick].json`` and draws
``bench/results/interleaved[-quick].png``.

    PYTHONPATH=$PWD .venv/bin/python bench/bench_interleaved.py --quick   # ~1k rows only
    PYTHONPATH=$PWD .venv/bin/python bench/bench_interleaved.py           # all sizes
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _common
import structlog

import casaguard
from casaguard import casaenv
from casaguard.sandbox.template import client as _template

TASKS = ("ft", "clearcal")
TARGETS = {
    "paired_overhead_ms_small": 20.0,
    "ratio_100k": 1.05,
    "ratio_1M": 1.03,
    "fresh_first_call_ratio": 1.05,
    "map_task_speedup_vs_serial": 1.0,
    "rss_growth_mb": 5.0,
}


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _template_cpu_s() -> float:
    pid = _template.template_pid()
    return _common.process_cpu_s(pid, children=True) if pid else 0.0


def guarded(task: str, vis: Path, point: Path, journal: bool) -> Callable[[], None]:
    """One guarded call with the defaults (only ``journal`` varies)."""
    if task == "ft":
        return lambda: casaguard.ft(
            vis=str(vis), complist=str(point), usescratch=True, journal=journal
        )
    return lambda: casaguard.clearcal(vis=str(vis), journal=journal)


def inprocess_params(task: str, vis: Path, point: Path) -> dict[str, Any]:
    if task == "ft":
        return {"vis": str(vis), "complist": str(point), "usescratch": True}
    return {"vis": str(vis)}


def interleave(
    worker: _common.InProcess,
    task: str,
    mine: Path,
    theirs: Path,
    point: Path,
    *,
    journal: bool,
    runs: int,
) -> dict[str, Any]:
    """``runs`` timed pairs (after one untimed pair) of in-process and guarded calls."""
    call = guarded(task, mine, point, journal)
    params = inprocess_params(task, theirs, point)
    inproc: list[float] = []
    mine_s: list[float] = []
    inproc_cpu = guarded_cpu = 0.0
    for run in range(runs + 1):
        order = ("in", "guarded") if run % 2 == 0 else ("guarded", "in")
        for side in order:
            if side == "in":
                wall, cpu = worker.run(task, params)
                if run:
                    inproc.append(wall)
                    inproc_cpu += cpu
            else:
                cpu0 = _own_cpu_s() + _template_cpu_s()
                started = time.perf_counter()
                call()
                wall = time.perf_counter() - started
                if run:
                    mine_s.append(wall)
                    guarded_cpu += _own_cpu_s() + _template_cpu_s() - cpu0
    diffs = [g - i for g, i in zip(mine_s, inproc, strict=True)]
    ratios = [g / i for g, i in zip(mine_s, inproc, strict=True)]
    return {
        "task": task,
        "journal": journal,
        "inprocess": _common.summarise(inproc),
        "guarded": _common.summarise(mine_s),
        "paired_diff": _common.summarise(diffs),
        "paired_ratio": _common.summarise(ratios),
        "inprocess_cpu_s_per_call": inproc_cpu / runs,
        "guarded_cpu_s_per_call": guarded_cpu / runs,
        "inprocess_s": inproc,
        "guarded_s": mine_s,
    }


FRESH_INPROCESS = textwrap.dedent(
    """
    import sys
    import casatasks
    casatasks.ft(vis=sys.argv[1], complist=sys.argv[2], usescratch=True)
    """
)
FRESH_GUARDED = textwrap.dedent(
    """
    import sys
    import casaguard
    casaguard.ft(vis=sys.argv[1], complist=sys.argv[2], usescratch=True)
    """
)


def fresh_first_call(small: Path, point: Path, runs: int) -> dict[str, Any]:
    """Interpreter start to exit: import + one ft, plain CASA against casaguard (defaults)."""
    env = casaenv.child_environment()
    copies = {"in": _common.twin(small, "fresh-in"), "guarded": _common.twin(small, "fresh-g")}
    times: dict[str, list[float]] = {"in": [], "guarded": []}
    for run in range(runs):
        order = ("in", "guarded") if run % 2 == 0 else ("guarded", "in")
        for side in order:
            code = FRESH_INPROCESS if side == "in" else FRESH_GUARDED
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-c", code, str(copies[side]), str(point)],
                env=env,
                cwd=_common.MS_DIR,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=True,
            )
            times[side].append(time.perf_counter() - started)
    for path in copies.values():
        shutil.rmtree(path, ignore_errors=True)
    ratios = [g / i for g, i in zip(times["guarded"], times["in"], strict=True)]
    return {
        "inprocess": _common.summarise(times["in"]),
        "guarded": _common.summarise(times["guarded"]),
        "paired_ratio": _common.summarise(ratios),
    }


def many_ms(worker: _common.InProcess, point: Path, count: int) -> dict[str, Any]:
    """map_task("ft") on a 2-worker LocalCluster vs a serial in-process loop, fresh MSs each."""
    import distributed

    root = Path(tempfile.mkdtemp(prefix="bench-interleaved-many-", dir=_common.MS_DIR))
    try:
        seed = root / "seed.ms"
        casaguard.simulate_ms(seed)  # 168 rows

        def fresh(label: str) -> list[dict[str, Any]]:
            params = []
            for index in range(count):
                path = root / f"{label}-{index:03d}.ms"
                shutil.copytree(seed, path)
                params.append({"vis": str(path), "complist": str(point), "usescratch": True})
            return params

        serial_params = fresh("serial")
        serial_wall, _ = worker.run("ft", serial_params)
        result: dict[str, Any] = {"count": count, "serial_inprocess_s": serial_wall}
        with (
            distributed.LocalCluster(
                n_workers=2,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                local_directory=str(root / "dask"),
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            for batch in ("first", "second"):
                params = fresh(batch)
                started = time.perf_counter()
                outcomes = casaguard.map_task("ft", params, executor=client)
                wall = time.perf_counter() - started
                failed = [o for o in outcomes if not o.ok]
                result[f"dask_{batch}_batch_s"] = wall
                result[f"dask_{batch}_batch_failed"] = len(failed)
                result[f"speedup_{batch}_batch"] = serial_wall / wall
        return result
    finally:
        shutil.rmtree(root, ignore_errors=True)


def plot(results: dict[str, Any], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    for task in TASKS:
        for journal in (True, False):
            label = f"{task}, journal {'on' if journal else 'off'}"
            points = sorted(
                (size["rows"], entry)
                for size in results["sizes"].values()
                for entry in size["configs"]
                if entry["task"] == task and entry["journal"] == journal
            )
            if not points:
                continue
            rows = [p[0] for p in points]
            diff = [p[1]["paired_diff"] for p in points]
            ratio = [p[1]["paired_ratio"] for p in points]
            left.errorbar(
                rows,
                [d["median_s"] * 1e3 for d in diff],
                yerr=[
                    [(d["median_s"] - d["q1_s"]) * 1e3 for d in diff],
                    [(d["q3_s"] - d["median_s"]) * 1e3 for d in diff],
                ],
                marker="o",
                capsize=3,
                label=label,
            )
            right.plot(rows, [r["median_s"] for r in ratio], marker="o", label=label)
    left.set_ylabel("paired overhead, guarded - in-process (ms)\nmedian, bars: IQR")
    right.set_ylabel("paired ratio guarded / in-process (median)")
    right.axhline(1.0, color="grey", lw=0.8)
    for axes in (left, right):
        axes.set_xscale("log")
        axes.set_xlabel("MS rows")
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize=8)
    load = results["machine"]["loadavg_at_start"][0]
    figure.suptitle(
        f"casaguard defaults (strict, template mode) vs in-process casatasks; "
        f"{results['machine']['cpus']} CPUs, load {load:.1f} at start"
    )
    figure.tight_layout()
    figure.savefig(png, dpi=120)


def check_targets(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The issue's targets, against the journal-on ft figures (the defaults)."""
    verdicts: dict[str, dict[str, Any]] = {}

    def config(size: str) -> dict[str, Any] | None:
        entries = results["sizes"].get(size, {}).get("configs", [])
        return next((e for e in entries if e["task"] == "ft" and e["journal"]), None)

    small, mid, big = config("1k"), config("100k"), config("1M")
    if small:
        verdicts["paired_overhead_ms_small"] = {
            "value": round(small["paired_diff"]["median_s"] * 1e3, 1)
        }
    if mid:
        verdicts["ratio_100k"] = {"value": round(mid["paired_ratio"]["median_s"], 3)}
    if big:
        verdicts["ratio_1M"] = {"value": round(big["paired_ratio"]["median_s"], 3)}
    if results.get("fresh"):
        verdicts["fresh_first_call_ratio"] = {
            "value": round(results["fresh"]["paired_ratio"]["median_s"], 3)
        }
    if results.get("many"):
        verdicts["map_task_speedup_vs_serial"] = {
            "value": round(results["many"]["speedup_second_batch"], 3),
            "higher_is_better": True,
        }
    if results.get("rss"):
        verdicts["rss_growth_mb"] = {"value": results["rss"]["rss_growth_mb"]}
    for name, verdict in verdicts.items():
        verdict["target"] = TARGETS[name]
        better = verdict.pop("higher_is_better", False)
        verdict["met"] = (
            verdict["value"] >= TARGETS[name] if better else verdict["value"] <= TARGETS[name]
        )
    return verdicts


def print_table(results: dict[str, Any]) -> None:
    print(
        f"\n{'MS':>5} {'rows':>8} {'task':>8} {'journal':>7} {'in-proc ms':>10} "
        f"{'guarded ms':>10} {'diff ms':>8} {'IQR ms':>7} {'ratio':>6} {'IQR':>6} "
        f"{'cpu ms in/guarded':>18}"
    )
    for name, size in results["sizes"].items():
        for e in size["configs"]:
            diff, ratio = e["paired_diff"], e["paired_ratio"]
            in_cpu, g_cpu = e["inprocess_cpu_s_per_call"], e["guarded_cpu_s_per_call"]
            cpu = f"{in_cpu * 1e3:.0f}/{g_cpu * 1e3:.0f}"
            in_ms, g_ms = e["inprocess"]["median_s"] * 1e3, e["guarded"]["median_s"] * 1e3
            print(
                f"{name:>5} {size['rows']:>8} {e['task']:>8} {'on' if e['journal'] else 'off':>7} "
                f"{in_ms:>10.1f} {g_ms:>10.1f} "
                f"{diff['median_s'] * 1e3:>8.1f} {diff['iqr_s'] * 1e3:>7.1f} "
                f"{ratio['median_s']:>6.3f} {ratio['iqr_s']:>6.3f} {cpu:>18}"
            )
    fresh = results.get("fresh")
    if fresh:
        in_s, g_s = fresh["inprocess"]["median_s"], fresh["guarded"]["median_s"]
        print(
            f"\nfresh process, import + one ft (start to exit): in-process "
            f"{in_s:.2f} s, guarded {g_s:.2f} s, "
            f"paired ratio {fresh['paired_ratio']['median_s']:.3f} "
            f"(IQR {fresh['paired_ratio']['iqr_s']:.3f}, {fresh['paired_ratio']['runs']} pairs)"
        )
    many = results.get("many")
    if many:
        print(
            f"{many['count']} fresh small MSs: serial in-process ft loop "
            f"{many['serial_inprocess_s']:.2f} s; map_task on a 2-worker LocalCluster: "
            f"first batch {many['dask_first_batch_s']:.2f} s "
            f"(x{many['speedup_first_batch']:.2f}), second {many['dask_second_batch_s']:.2f} s "
            f"(x{many['speedup_second_batch']:.2f}); failed "
            f"{many['dask_first_batch_failed']}+{many['dask_second_batch_failed']}"
        )
    rss = results.get("rss")
    if rss:
        print(
            f"{rss['calls']} guarded default ft calls in {rss['elapsed_s']} s: RSS "
            f"{rss['rss_before_mb']} -> {rss['rss_after_mb']} MB ({rss['rss_growth_mb']:+} MB); "
            f"timeouts {rss['timeouts']}, fallbacks {rss['fallbacks']}, unresponsive forks "
            f"{rss['unresponsive_forks']}, failures {rss['failures']}, "
            f"leaked {rss['leaked_processes']}"
        )
    print("\ntargets (ft, defaults):")
    for name, verdict in results["targets"].items():
        mark = "met" if verdict["met"] else "MISSED"
        print(f"  {name:<28} {verdict['value']:>8} (target {verdict['target']}) {mark}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="~1k rows only, fewer runs")
    parser.add_argument("--sizes", nargs="+", choices=list(_common.SIZES), help="MS sizes")
    parser.add_argument("--runs", type=int, help="timed pairs per configuration (21; quick 7)")
    parser.add_argument("--fresh-runs", type=int, help="fresh-process pairs (5; quick 2; 0: skip)")
    parser.add_argument("--many", type=int, help="MSs for the map_task figure (40; 0: skip)")
    parser.add_argument("--calls", type=int, help="guarded calls in the RSS loop (1000; quick 100)")
    parser.add_argument("--keep", action="store_true", help="keep the big MSs under bench/ms")
    parser.add_argument(
        "--tag",
        help="suffix for the result files (e.g. xfs with $CASAGUARD_BENCH_MS_DIR on XFS), "
        "so a run under other conditions does not overwrite the default one",
    )
    args = parser.parse_args()
    names = args.sizes or (["1k"] if args.quick else list(_common.SIZES))
    runs = args.runs or (7 if args.quick else 21)
    fresh_runs = args.fresh_runs if args.fresh_runs is not None else (2 if args.quick else 5)
    many = args.many if args.many is not None else (0 if args.quick else 40)
    calls = args.calls if args.calls is not None else (100 if args.quick else 1000)
    structlog.configure(processors=[_common.count_events])
    results: dict[str, Any] = {
        "bench": "interleaved",
        "quick": args.quick,
        "options": {
            "defaults": "journal per config, strict=True, mode from $CASAGUARD_MODE (auto)",
            "runs": runs,
            "fresh_runs": fresh_runs,
            "many": many,
            "rss_calls": calls,
        },
        "machine": _common.machine(),
        "sizes": {},
    }
    point = _common.complist()
    casaguard.warmup()
    worker = _common.InProcess()
    try:
        for name in names:
            path, rows = _common.build(name, point)
            mine, theirs = _common.twin(path, "guarded"), _common.twin(path, "inprocess")
            configs = []
            for task in TASKS:
                for journal in (True, False):
                    configs.append(
                        interleave(worker, task, mine, theirs, point, journal=journal, runs=runs)
                    )
                    print(f"timed {name} {task} journal={journal}", flush=True)
            results["sizes"][name] = {"rows": rows, "configs": configs}
            for copy in (mine, theirs):
                shutil.rmtree(copy, ignore_errors=True)
        small, _ = _common.build("1k", point)
        if fresh_runs:
            results["fresh"] = fresh_first_call(small, point, fresh_runs)
        if many:
            results["many"] = many_ms(worker, point, many)
    finally:
        worker.close()
    if calls:
        rss_ms = _common.twin(small, "rss")
        results["rss"] = _common.rss_loop(rss_ms, point, calls, journal=True)
        shutil.rmtree(rss_ms, ignore_errors=True)
    results["targets"] = check_targets(results)
    results["machine"]["loadavg_at_end"] = os.getloadavg()
    if not args.keep:
        _common.remove_built(names)
    _common.RESULTS.mkdir(exist_ok=True)
    stem = "interleaved-quick" if args.quick else "interleaved"
    if args.tag:
        stem += f"-{args.tag}"
    out = _common.RESULTS / f"{stem}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    plot(results, _common.RESULTS / f"{stem}.png")
    print_table(results)
    load = results["machine"]
    print(
        f"\nload average {load['loadavg_at_start'][0]:.1f} -> {load['loadavg_at_end'][0]:.1f} "
        f"on {load['cpus']} CPUs; MSs on {load['ms_filesystem']} ({load['ms_dir']}); "
        f"wrote {out} and {stem}.png"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
