"""Why the ONNX dynamic-int8 GRU is slow: the GRU op, its Scan loop in float32, and the int8 Scan, side by side.

A GRU forecaster (2 x GRU(64), window 96, random weights: timing does not depend on them) is captured to ONNX;
its dynamic-int8 artifact (edge_lstm.quantize.onnx, a Scan of int8-weight products per layer) and the same
Scan loop left in float32 (edge_lstm.quantize.onnx_gru.expand, not quantized) are timed against the float32
GRU op on ONNX Runtime (one thread, batch 1), in interleaved rounds; ratios are per-round medians.

    PYTHONPATH=. taskset -c 0 .venv/bin/python benchmarks/onnx_gru.py [--runs 200]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import interleaved

from edge_lstm import archs, load, sources
from edge_lstm.quantize import onnx_gru
from edge_lstm.quantize.onnx import _constants_to_initializers, _name_nodes, dynamic_int8


def main() -> None:
    """Print the table."""
    import onnx
    import onnxruntime as ort
    import torch

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = archs.ArchConfig(cell="gru", hidden=64, layers=2)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gru.pt"
        load.save_checkpoint(path, archs.build("forecaster", cfg).eval(), "forecaster", cfg, 96,
                             {"mean": [0.0], "std": [1.0]}, "forecast")
        model = load.load(path)
    fp32 = sources.graph_of(model)
    scan = onnx.ModelProto()
    scan.CopyFrom(fp32)
    _constants_to_initializers(scan)
    _name_nodes(scan)
    onnx_gru.expand(scan)
    files = {"ort": fp32.SerializeToString(), "scan fp32": scan.SerializeToString(),
             "scan dynamic-int8": dynamic_int8(fp32).data}
    x = np.random.default_rng(0).standard_normal((1, 96, 1)).astype(np.float32)
    name = model.inputs.names[0]

    def call(data: bytes):  # type: ignore[no-untyped-def]
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        opts.log_severity_level = 3  # the float Scan leaves the GRU's weights unused: ONNX Runtime says so
        sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        return lambda: sess.run(None, {name: x})

    res = interleaved({k: call(v) for k, v in files.items()}, args.runs)
    print("| artifact (ONNX Runtime, 1 thread) | nodes per step | file B | p50 µs | × GRU op fp32 |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for k, data in files.items():
        m = onnx.load_from_string(data)
        bodies = [a.g for n in m.graph.node if n.op_type == "Scan" for a in n.attribute if a.name == "body"]
        per_step = len(bodies[0].node) if bodies else "1 (whole sequence)"
        label = "GRU op fp32" if k == "ort" else k
        size = "–" if k == "scan fp32" else f"{len(data):,}"  # a timing aid: it still holds the GRU's weights
        print(f"| {label} | {per_step} | {size} | {res[k] * 1e6:,.1f} | {res[k + '/ort']:.2f} |")


if __name__ == "__main__":
    main()
