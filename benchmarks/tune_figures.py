"""The `edge-lstm tune` figure (README "Tuning for a device"): 20 small trials on 2 workers for the
Raspberry Pi 4 target, on the bundled hourly series. Prints the wall time, the trial counts, the
Pareto-optimal feasible models, and how loaded the machine was (load average, cores) before and after.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import vega_datasets

DATA = Path(vega_datasets.__file__).parent / "_data" / "seattle-temps.csv"
ARGS = ["--target-column", "temp", "--target-transform", "delta", "--target", "rpi4b", "--trials", "20",
        "--workers", "2", "--epochs", "3", "--max-steps", "40", "--hidden", "8,16,32", "--layers", "1,2",
        "--windows", "24,48", "--cells", "lstm,gru", "--batch-sizes", "32,64"]


def main() -> int:
    cores = os.cpu_count()
    before = os.getloadavg()
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "tuned"
        t0 = time.monotonic()
        p = subprocess.run([sys.executable, "-m", "edge_lstm.cli", "tune", str(DATA), *ARGS, "-o", str(out),
                            "--json"], capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        wall = time.monotonic() - t0
        after = os.getloadavg()
        if p.returncode != 0:
            print(p.stderr[-3000:])
            return p.returncode
        s = json.loads(p.stdout)
    rows = {r["number"]: r for r in s["trials"]}
    print(f"edge-lstm tune {' '.join(ARGS)}")
    print(f"wall time {wall:.0f} s on {cores} cores; load average (1, 5, 15 min) before "
          f"{before[0]:.1f}, {before[1]:.1f}, {before[2]:.1f}; after {after[0]:.1f}, {after[1]:.1f}, {after[2]:.1f}")
    print(f"trials: {s['counts']}; Pareto-optimal feasible models: {len(s['pareto'])}; target {s['target']} "
          f"({s['format']} {s['precision']})")
    print("| trial | model | val MAE °F | test MAE °F | size KiB | latency ms (rpi4b estimate) | host p50 ms |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for n in s["pareto"]:
        r = rows[n]
        p_ = r["params"]
        test = (r.get("test") or {}).get("model", {}).get("mae")
        print(f"| {n} | {p_['cell']} {p_['layers']}x{p_['hidden']}, window {p_['window']} | {r['val_error']:.4f} | "
              f"{test:.4f} | {r['size_kb']:.1f} | {r['latency_ms']:.4f} | {r['host_p50_ms']:.3f} |")
    print(f"chosen: trial {s['chosen']['number']}, retrained bit-exact: {s['chosen']['reproduced_bit_exact']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
