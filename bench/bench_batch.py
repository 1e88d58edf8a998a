"""Batch throughput: N small simulated MSs probed and ft'd, on three engines in one run.

Engines: the local engine with 1 and with 2 guarded calls at once, and a real
``distributed.LocalCluster`` of 2 worker processes (one thread each). For each:
items per second for ``casaguard.map_probe`` (when this casaguard has
``casaguard.probe``) and for ``casaguard.map_task("ft", ...)``.

    python bench/bench_batch.py            # 200 MSs (the figure for the notes)
    python bench/bench_batch.py --quick    # 10 MSs, a smoke run

Prints a table and writes ``bench/results/batch.json`` (``batch-quick.json`` with --quick).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import structlog

import casaguard

RESULTS = Path(__file__).resolve().parent / "results"


def build_inputs(root: Path, count: int) -> tuple[list[Path], Path]:
    """Simulate one small MS (168 rows) and copy it ``count`` times; make a component list."""
    template = root / "template.ms"
    casaguard.simulate_ms(template)
    complist = Path(casaguard.make_point_complist(root / "point.cl"))
    paths = []
    for index in range(count):
        path = root / f"ms{index:04d}.ms"
        shutil.copytree(template, path)
        paths.append(path)
    return paths, complist


@contextmanager
def dask_cluster(root: Path) -> Iterator[Any]:
    """A LocalCluster of 2 worker processes, and a client of it."""
    import distributed

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
        yield client


def measure(label: str, run: Callable[[], list[casaguard.ItemOutcome]]) -> dict[str, Any]:
    """Run one batch and return its throughput and per-item times."""
    started = time.monotonic()
    outcomes = run()
    wall = time.monotonic() - started
    per_item = [o.elapsed_s for o in outcomes]
    failed = [o for o in outcomes if not o.ok]
    if failed:
        print(f"  {label}: {len(failed)} failed, first: {failed[0].kind} {failed[0].error}")
    return {
        "items": len(outcomes),
        "failed": len(failed),
        "wall_s": round(wall, 3),
        "items_per_s": round(len(outcomes) / wall, 3),
        "median_item_s": round(statistics.median(per_item), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200, help="number of MSs (default 200)")
    parser.add_argument("--quick", action="store_true", help="10 MSs: a smoke run")
    parser.add_argument("--mode", choices=["spawn", "template"], default=None)
    parser.add_argument("--out", type=Path, default=None, help="default results/batch[-quick].json")
    args = parser.parse_args()
    args.out = args.out or RESULTS / ("batch-quick.json" if args.quick else "batch.json")
    # A script may configure logging (the library never does): keep the table readable.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    count = 10 if args.quick else args.count
    has_probe = importlib.util.find_spec("casaguard.preflight.probe") is not None
    load_before = os.getloadavg()[0]

    with tempfile.TemporaryDirectory(prefix="casaguard-bench-batch-") as tmp:
        root = Path(tmp)
        print(f"building {count} simulated MSs under {root} ...")
        paths, complist = build_inputs(root, count)
        params = [{"vis": str(p), "complist": str(complist), "usescratch": True} for p in paths]
        engines: list[tuple[str, dict[str, Any]]] = [
            ("local, jobs=1", {"jobs": 1}),
            ("local, jobs=2", {"jobs": 2}),
        ]
        rows: list[dict[str, Any]] = []
        for name, engine in engines:
            rows.append(run_engine(name, engine, params, paths, has_probe, args.mode))
        with dask_cluster(root) as client:
            rows.append(
                run_engine(
                    "dask LocalCluster, 2 workers",
                    {"executor": client},
                    params,
                    paths,
                    has_probe,
                    args.mode,
                )
            )

    print()
    mode = args.mode or os.environ.get("CASAGUARD_MODE", "auto")
    load = f"{load_before:.1f} -> {os.getloadavg()[0]:.1f}"
    print(f"{count} MSs of 168 rows; mode={mode}; {os.cpu_count()} CPUs, load average {load}")
    print(f"{'engine':<30} {'step':<6} {'items/s':>8} {'wall s':>8} {'median item s':>14} failed")
    for row in rows:
        for step in ("probe", "ft"):
            if step in row:
                r = row[step]
                print(
                    f"{row['engine']:<30} {step:<6} {r['items_per_s']:>8.2f} {r['wall_s']:>8.1f} "
                    f"{r['median_item_s']:>14.3f} {r['failed']}"
                )
    if not has_probe:
        print("(casaguard.probe is not in this casaguard: probe rows skipped)")
    document = {
        "benchmark": "batch",
        "count": count,
        "quick": args.quick,
        "mode": args.mode or os.environ.get("CASAGUARD_MODE") or "auto",
        "cpus": os.cpu_count(),
        # Other work on the machine skews every figure: record how busy it was.
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "machine": platform.node(),
        "python": platform.python_version(),
        "probe_available": has_probe,
        "engines": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {args.out}")


def run_engine(
    name: str,
    engine: dict[str, Any],
    params: list[dict[str, Any]],
    paths: list[Path],
    has_probe: bool,
    mode: str | None,
) -> dict[str, Any]:
    """Probe (if available) then ft every MS on one engine."""
    print(f"{name} ...")
    row: dict[str, Any] = {"engine": name}
    if has_probe:
        row["probe"] = measure(name, lambda: casaguard.map_probe(paths, **engine))
    row["ft"] = measure(
        name, lambda: casaguard.map_task("ft", params, mode=mode, timeout=600, **engine)
    )
    return row


if __name__ == "__main__":
    main()
