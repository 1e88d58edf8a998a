"""What the journal costs: guarded ft / clearcal with and without it, on ~100k and ~1M rows.

Two figures per row: ``ratio`` is the median wall time of the journaled call
over the unjournaled one (what a user sees, noise included); ``own s`` is the
journal's own work as it measures it (plan + copy in the child, drop in the
parent), which the machine's load hardly blurs.

Each MS is simulated once; the calls alternate journal on / off on the same MS
(ft and clearcal overwrite the same columns every time) so that drift in the
machine's load hits both sides alike. Prints a table and writes JSON under
``bench/results/``.

    python bench/bench_journal.py            # 100k and 1M rows (1M: ~1 GB of disk, minutes)
    python bench/bench_journal.py --quick    # 100k rows, 3 runs each
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

import casaguard

#: rows = 28 baselines (8 antennas) x integrations
SIZES = {"100k": 3572, "1M": 35720}
RESULTS = Path(__file__).resolve().parent / "results"


def _timed(task: str, vis: Path, complist: Path, *, journal: bool) -> tuple[float, dict[str, Any]]:
    with capture_logs() as events:
        started = time.perf_counter()
        if task == "ft":
            casaguard.ft(vis=str(vis), complist=str(complist), usescratch=True, journal=journal)
        else:
            casaguard.clearcal(vis=str(vis), journal=journal)
        elapsed = time.perf_counter() - started
    dropped = next((e for e in events if e["event"] == "journal_dropped"), {})
    return elapsed, dict(dropped)


def bench_size(
    label: str, n_times: int, work: Path, complist: Path, runs: int
) -> list[dict[str, Any]]:
    vis = work / f"{label}.ms"
    started = time.perf_counter()
    rows = casaguard.simulate_ms(vis, n_times=n_times, timeout=3600)
    simulate_s = time.perf_counter() - started
    ms_bytes = sum(p.stat().st_size for p in vis.rglob("*") if p.is_file())
    rows_out = []
    for task in ("ft", "clearcal"):
        _timed(task, vis, complist, journal=False)  # warm the page cache, create nothing new
        on: list[float] = []
        off: list[float] = []
        copied: list[dict[str, Any]] = []
        for index in range(runs):
            order = (True, False) if index % 2 == 0 else (False, True)
            for journal in order:
                elapsed, dropped = _timed(task, vis, complist, journal=journal)
                (on if journal else off).append(elapsed)
                if journal:
                    copied.append(dropped)
        median_on, median_off = statistics.median(on), statistics.median(off)
        rows_out.append(
            {
                "size": label,
                "rows": rows,
                "ms_mb": round(ms_bytes / 1e6, 1),
                "simulate_s": round(simulate_s, 1),
                "task": task,
                "runs": runs,
                "journal_mb": round((copied[0].get("bytes") or 0) / 1e6, 2),
                "plan_s_median": statistics.median(d.get("plan_s") or 0.0 for d in copied),
                "copy_s_median": statistics.median(d.get("copy_s") or 0.0 for d in copied),
                "drop_s_median": statistics.median(d.get("drop_s") or 0.0 for d in copied),
                "off_s_median": round(median_off, 3),
                "on_s_median": round(median_on, 3),
                "ratio": round(median_on / median_off, 3),
                # The journal's own work, free of the machine's noise: plan + copy + drop.
                "journal_s_median": statistics.median(
                    (d.get("plan_s") or 0.0) + (d.get("copy_s") or 0.0) + (d.get("drop_s") or 0.0)
                    for d in copied
                ),
                "off_s": [round(x, 3) for x in off],
                "on_s": [round(x, 3) for x in on],
            }
        )
    shutil.rmtree(vis, ignore_errors=True)
    return rows_out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k rows only, 3 runs each")
    parser.add_argument(
        "--runs", type=int, default=None, help="calls per side (default 7; quick 3)"
    )
    parser.add_argument("--workdir", default=None, help="where to simulate (default: a temp dir)")
    parser.add_argument(
        "--omp-threads",
        type=int,
        default=None,
        help="OMP_NUM_THREADS for the CASA children (CASA's OpenMP spins on a shared machine)",
    )
    args = parser.parse_args()
    runs = args.runs or (3 if args.quick else 7)
    sizes = {"100k": SIZES["100k"]} if args.quick else SIZES
    if args.omp_threads:
        os.environ["OMP_NUM_THREADS"] = str(args.omp_threads)
    work = Path(tempfile.mkdtemp(prefix="bench-journal-", dir=args.workdir))
    try:
        complist = Path(casaguard.make_point_complist(work / "point.cl"))
        results = []
        for label, n_times in sizes.items():
            results += bench_size(label, n_times, work, complist, runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    header = f"{'size':>5} {'rows':>8} {'MS MB':>7} {'task':>8} {'journal MB':>10} "
    header += f"{'own s':>7} {'off s':>7} {'on s':>7} {'ratio':>6} {'own/off':>7}"
    print(header)
    for r in results:
        print(
            f"{r['size']:>5} {r['rows']:>8} {r['ms_mb']:>7} {r['task']:>8} {r['journal_mb']:>10} "
            f"{r['journal_s_median']:>7.3f} {r['off_s_median']:>7.3f} {r['on_s_median']:>7.3f} "
            f"{r['ratio']:>6.3f} {r['journal_s_median'] / r['off_s_median']:>7.3f}"
        )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / ("journal-quick.json" if args.quick else "journal.json")
    out.write_text(
        json.dumps(
            {
                "bench": "journal",
                "quick": args.quick,
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "omp_threads": os.environ.get("OMP_NUM_THREADS"),
                "mode": os.environ.get("CASAGUARD_MODE", "auto"),
                "results": results,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
