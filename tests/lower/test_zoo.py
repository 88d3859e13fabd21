"""Every zoo network (tests/zoo.py): captured once, lowered fused, loop and unrolled, equal to PyTorch on LiteRT;
weights stored once in every capture and lowering; the quantized files smaller than the float ones.

The captures go through :func:`edge_lstm.capture._export` with the zoo's own input dtypes (token ids are int64),
so this file tests the capture and lowering whatever the loader does with a file.
"""

from __future__ import annotations

import functools

import numpy as np
import onnx
import pytest
import torch
import zoo

from edge_lstm import capture
from edge_lstm.lower.tflite import lower
from edge_lstm.quantize import quantize_onnx, quantize_tflite
from edge_lstm.runners.litert import LiteRTRunner
from edge_lstm.spec import InputSpec, Precision, TensorSpec

#: zoo networks with at least this many float parameter bytes are held to the file-size target (smaller ones are
#: dominated by the graph's own bytes: ops, tensors, quantization parameters)
SIZED = 80_000


@functools.cache
def captured(name: str) -> tuple[torch.nn.Module, onnx.ModelProto, list[str]]:
    spec = zoo.ZOO[name]
    module = zoo.build(name)
    args = spec.example(0)
    names = [f"in{i}" for i in range(len(args))]
    inputs = InputSpec(tuple(TensorSpec(n, tuple(a.shape), str(a.dtype).removeprefix("torch."))
                             for n, a in zip(names, args, strict=True)))
    with torch.no_grad():
        out = module(*args)
    outs = [out] if isinstance(out, torch.Tensor) else list(out)
    specs = [TensorSpec(f"out{i}", tuple(o.shape)) for i, o in enumerate(outs)]
    return module, capture._export(module, inputs, specs, dynamic_batch=False), names


def _param_bytes(module: torch.nn.Module) -> int:
    return 4 * sum(p.numel() for p in module.parameters())


def _feeds(name: str, seed: int, names: list[str]) -> dict[str, np.ndarray]:
    return {n: a.numpy() for n, a in zip(names, zoo.ZOO[name].example(seed), strict=True)}


def _reference(module: torch.nn.Module, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    with torch.no_grad():
        out = module(*[torch.from_numpy(v) for v in feeds.values()])
    return [o.numpy() for o in ([out] if isinstance(out, torch.Tensor) else out)]


@pytest.mark.parametrize("lowering", ["fused", "loop", "unrolled"])
@pytest.mark.parametrize("name", sorted(zoo.ZOO))
def test_zoo_lowers_and_matches_pytorch(name: str, lowering: str) -> None:
    module, proto, names = captured(name)
    lowered = lower(proto, lowering)
    with LiteRTRunner(lowered.data) as r:
        for seed in (1, 2):
            feeds = _feeds(name, seed, names)
            r.reset_state()
            got = r.infer(feeds)
            for k, ref in enumerate(_reference(module, feeds)):
                np.testing.assert_allclose(np.asarray(got[f"out{k}"]).reshape(ref.shape), ref, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(zoo.ZOO))
def test_zoo_stores_each_weight_once(name: str) -> None:
    module, proto, _ = captured(name)
    params = _param_bytes(module)
    weights = sum(onnx.numpy_helper.to_array(i).nbytes for i in proto.graph.initializer)
    assert weights <= 1.02 * params, ("onnx", weights, params)
    if params >= SIZED:
        assert proto.ByteSize() <= 1.10 * params, ("onnx file", proto.ByteSize(), params)
    from ai_edge_litert import schema_py_generated as schema

    for lowering in ("fused", "loop"):
        lowered = lower(proto, lowering)
        model = schema.ModelT.InitFromPackedBuf(bytearray(lowered.data), 0)
        const = sum(len(b.data) for b in model.buffers if b.data is not None)
        assert const <= 1.02 * params + 512, (lowering, const, params)  # + a loop's zero states and counters
        if params >= SIZED:
            assert lowered.size <= 1.10 * params, (lowering, lowered.size, params)


@pytest.mark.parametrize("name", [n for n in sorted(zoo.ZOO) if _param_bytes(zoo.build(n)) >= SIZED])
def test_zoo_quantized_files_are_smaller_than_float(name: str) -> None:
    _, proto, names = captured(name)
    rng = np.random.default_rng(0)
    fp32 = lower(proto, "auto", precision=Precision.FP32)
    int8 = lower(proto, "auto", precision=Precision.INT8)
    calib = {n: (rng.integers(0, 50, (32, *a.shape)) if a.dtype.kind == "i" else
                 rng.standard_normal((32, *a.shape)).astype(np.float32)) for n, a in _feeds(name, 0, names).items()}
    for prec in (Precision.FP16, Precision.DYNAMIC_INT8):
        assert quantize_tflite(fp32.data, prec).size < fp32.size, prec
    assert quantize_tflite(int8.data, Precision.INT8, calib).size < fp32.size
    for prec in (Precision.FP16, Precision.DYNAMIC_INT8):  # GRU/RNN dynamic-int8: Scans of int8 products
        assert quantize_onnx(proto, prec).size < proto.ByteSize(), prec
