"""Convert one model with one peer converter, in that converter's own venv; JSON on the last stdout line.

    python export.py {litert-torch,executorch,onnx2tf} MODEL_DIR OUT_DIR

MODEL_DIR holds what benchmarks/peers.py wrote: model.json (arch, config, window), state.pt (the module's
weights) and model.onnx (edge-lstm's ONNX export, onnx2tf's input). Prints ``{"path": ..., "export_s": ...}``
(ExecuTorch adds ``"ops"``: the .pte is opaque to the main venv) or ``{"error": "..."}`` with exit code 1.
The PyTorch converters build the module with edge_lstm.archs (torch only), so PYTHONPATH must hold the repo.
"""

from __future__ import annotations

import json
import operator
import re
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any


def _module(model_dir: Path) -> tuple[Any, Any]:
    """The PyTorch module and a (1, T, F) example input."""
    import torch

    from edge_lstm import archs

    torch.set_num_threads(1)
    meta = json.loads((model_dir / "model.json").read_text())
    cfg = archs.ArchConfig(**meta["config"])
    module = archs.build(meta["arch"], cfg).eval()
    module.load_state_dict(torch.load(model_dir / "state.pt", weights_only=True))
    return module, torch.zeros(1, meta["window"], cfg.n_features)


def litert_torch(model_dir: Path, out: Path) -> dict[str, Any]:
    import litert_torch as lt

    module, x = _module(model_dir)
    t0 = time.perf_counter()
    path = out / "model.tflite"
    lt.convert(module, (x,)).export(str(path))
    return {"path": str(path), "export_s": time.perf_counter() - t0}


def _ops(gm: Any) -> tuple[int, int]:
    """(ops, delegate calls) of a graph module, a delegate's lowered ops counted in."""
    ops = calls = 0
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target is operator.getitem:
            continue
        if "call_delegate" in str(node.target):
            inner = getattr(gm, node.args[0].target).original_module.graph_module
            ops, calls = ops + _ops(inner)[0], calls + 1
        else:
            ops += 1
    return ops, calls


def executorch(model_dir: Path, out: Path) -> dict[str, Any]:
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    module, x = _module(model_dir)
    t0 = time.perf_counter()
    edge = to_edge_transform_and_lower(torch.export.export(module, (x,)), partitioner=[XnnpackPartitioner()])
    program = edge.to_executorch()
    path = out / "model.pte"
    path.write_bytes(program.buffer)
    export_s = time.perf_counter() - t0
    ops, calls = _ops(edge.exported_program().graph_module)
    return {"path": str(path), "export_s": export_s, "ops": ops, "note": f"{calls} XNNPACK delegate calls"}


def onnx2tf(model_dir: Path, out: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    cli = Path(sys.executable).with_name("onnx2tf")
    proc = subprocess.run([str(cli), "-i", str(model_dir / "model.onnx"), "-o", str(out), "-b", "1"],
                          capture_output=True, text=True, check=False)
    export_s = time.perf_counter() - t0
    found = sorted(out.glob("*_float32.tflite"))
    if proc.returncode != 0 or not found:
        (out / "onnx2tf-cli.log").write_text(proc.stdout + proc.stderr)
        lines = [ln.strip() for ln in re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr).splitlines()]
        raised = [ln for ln in lines if re.match(r"[\w.]*(Error|Exception): ", ln)]  # the exception's own line
        last = raised or [ln for ln in lines if ln] or ["no .tflite written"]
        raise RuntimeError(f"onnx2tf exit {proc.returncode}: {last[-1]}")
    return {"path": str(found[0]), "export_s": export_s}


CONVERTERS = {"litert-torch": litert_torch, "executorch": executorch, "onnx2tf": onnx2tf}


def main() -> None:
    name, model_dir, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    out.mkdir(parents=True, exist_ok=True)
    try:
        result = CONVERTERS[name](model_dir, out)
    except Exception as e:  # any converter failure becomes the table's one-line error
        traceback.print_exc(file=sys.stderr)
        print(json.dumps({"error": f"{type(e).__name__}: {' '.join(str(e).split())}"}))
        sys.exit(1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
