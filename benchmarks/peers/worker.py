"""One artifact on one runtime, pinned to one core, driven over stdin/stdout (JSON lines) by benchmarks/peers.py.

    python worker.py KIND ARTIFACT INPUTS.npy --core N

KIND is ort, litert, torch (ARTIFACT: a model.json beside state.pt, built with edge_lstm.archs) or executorch
(a .pte, run in the ExecuTorch venv). The worker first prints ``{"outputs": [...]}``: one output per window of
INPUTS (N, T, F), state reset before each. Then each stdin line ``runs warmup`` gets ``{"p50": seconds}`` for the
first window, timed by benchmarks/timing.py's p50. Only numpy and the one runtime are imported.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from timing import p50


def _fit(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``x`` (1, T, F) laid out as a converter chose: as is, or time and feature swapped (onnx2tf's NCW)."""
    if tuple(x.shape) == shape:
        return x
    if tuple(x.shape[:1] + x.shape[:0:-1]) == shape:
        return np.ascontiguousarray(x.transpose(0, 2, 1))
    raise ValueError(f"input shape {list(shape)} fits neither {list(x.shape)} nor its time/feature swap")


def _litert(path: str) -> Callable[[np.ndarray], np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=path, num_threads=1)
    it.allocate_tensors()
    (inp,), out = it.get_input_details(), it.get_output_details()[0]
    shape = tuple(int(d) for d in inp["shape"])

    def run(x: np.ndarray) -> np.ndarray:
        it.reset_all_variables()
        it.set_tensor(inp["index"], _fit(x, shape))
        it.invoke()
        return it.get_tensor(out["index"])

    return run


def _ort(path: str) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})[0]


def _torch(path: str) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    from edge_lstm import archs

    torch.set_num_threads(1)
    meta = json.loads(Path(path).read_text())
    module = archs.build(meta["arch"], archs.ArchConfig(**meta["config"])).eval()
    module.load_state_dict(torch.load(Path(path).with_name("state.pt"), weights_only=True))

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(x)).numpy()

    return run


def _executorch(path: str) -> Callable[[np.ndarray], np.ndarray]:
    import torch
    from executorch.extension.pybindings import portable_lib
    from executorch.runtime import Runtime

    portable_lib._unsafe_reset_threadpool(1)  # one thread, as every runtime here (it sized its pool to the host)
    method = Runtime.get().load_program(path).load_method("forward")
    return lambda x: method.execute([torch.from_numpy(x)])[0].numpy()


KINDS = {"litert": _litert, "ort": _ort, "torch": _torch, "executorch": _executorch}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=sorted(KINDS))
    ap.add_argument("artifact")
    ap.add_argument("inputs")
    ap.add_argument("--core", type=int, default=0)
    args = ap.parse_args()
    os.sched_setaffinity(0, {args.core})
    xs = np.load(args.inputs)
    run = KINDS[args.kind](args.artifact)
    outs = [np.asarray(run(np.ascontiguousarray(x[None])), np.float64).ravel().tolist() for x in xs]
    print(json.dumps({"outputs": outs}), flush=True)
    first = np.ascontiguousarray(xs[:1])
    for line in sys.stdin:
        runs, warmup = (int(v) for v in line.split())
        print(json.dumps({"p50": p50(lambda: run(first), runs, warmup)}), flush=True)


if __name__ == "__main__":
    main()
