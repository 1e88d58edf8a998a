"""Benchmark the pre-flight probe: per-MS latency (static, canary) and batch throughput.

Simulates one small MS (168 rows, 8 channels, 4 correlations), copies it N times,
then measures:

* the median wall time of ``casaguard.probe(ms)`` (static: one python-casacore child);
* the median wall time of ``casaguard.probe(ms, canary=True)`` (plus three CASA children);
* throughput of ``map_probe`` over all N copies with ``jobs=1`` and ``jobs=2``.

Prints a table and writes JSON under ``bench/results/``. ``--quick`` uses 20 MSs
and 2 canary samples (the smoke run); the default is 200 MSs and 5 canary samples.

    PYTHONPATH=$PWD python bench/bench_probe.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import casaguard

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 MSs, 2 canary samples")
    parser.add_argument("--n", type=int, default=None, help="number of MSs (default 200)")
    parser.add_argument("--canary-samples", type=int, default=None)
    parser.add_argument("--static-samples", type=int, default=20)
    args = parser.parse_args(argv)
    n = args.n or (20 if args.quick else 200)
    canary_samples = args.canary_samples or (2 if args.quick else 5)
    mode = os.environ.get("CASAGUARD_MODE", "auto")

    with tempfile.TemporaryDirectory(prefix="bench-probe-") as scratch:
        root = Path(scratch)
        base = root / "base.ms"
        casaguard.simulate_ms(base)
        paths = []
        for index in range(n):
            dest = root / f"ms{index:04d}.ms"
            shutil.copytree(base, dest)
            paths.append(dest)

        static_times = []
        for path in paths[: min(args.static_samples, n)]:
            started = time.perf_counter()
            report = casaguard.probe(path)
            static_times.append(time.perf_counter() - started)
            assert report.verdict == "safe", report.to_dict()

        canary_times = []
        for path in paths[:canary_samples]:
            started = time.perf_counter()
            report = casaguard.probe(path, canary=True)
            canary_times.append(time.perf_counter() - started)
            assert "CANARY_OK" in report.codes(), report.to_dict()

        throughput = {}
        for jobs in (1, 2):
            started = time.perf_counter()
            reports = [o.value for o in casaguard.map_probe(paths, jobs=jobs)]
            elapsed = time.perf_counter() - started
            assert all(r.verdict == "safe" for r in reports)
            throughput[jobs] = {"seconds": round(elapsed, 3), "ms_per_s": round(n / elapsed, 2)}

    result = {
        "benchmark": "probe",
        "quick": args.quick,
        "n_ms": n,
        "ms_rows": 168,
        "mode": mode,
        "static_median_s": round(statistics.median(static_times), 4),
        "static_samples": len(static_times),
        "canary_median_s": round(statistics.median(canary_times), 4),
        "canary_samples": len(canary_times),
        "throughput": {f"jobs{k}": v for k, v in throughput.items()},
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    print(f"{'measure':<34} {'value':>12}")
    print(f"{'static probe, median per MS':<34} {result['static_median_s']:>10.3f} s")
    print(f"{'probe + canary, median per MS':<34} {result['canary_median_s']:>10.3f} s")
    for jobs, entry in throughput.items():
        label = f"{n} MSs, --jobs {jobs}"
        print(f"{label:<34} {entry['seconds']:>10.2f} s  ({entry['ms_per_s']:.1f} MS/s)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / ("probe-quick.json" if args.quick else "probe.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
