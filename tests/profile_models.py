"""Small models built in code for the cost, profile, remote and CLI tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_lstm import archs, capture
from edge_lstm.load import LoadedModel, _arch_input_spec, probe_outputs


def loaded(cfg: archs.ArchConfig, window: int = 96, seed: int = 0) -> LoadedModel:
    """A built-in architecture with seeded weights, ready to capture."""
    import torch

    torch.manual_seed(seed)
    module = archs.build("forecaster", cfg)
    module.eval()
    model = LoadedModel(module, "checkpoint", "test", _arch_input_spec(cfg, window), (), arch="forecaster", config=cfg)
    model.outputs = probe_outputs(model)
    return model


def write_onnx(path: Path, cfg: archs.ArchConfig | None = None, window: int = 96, streaming: bool = False) -> Path:
    """Capture a forecaster (default: the reference LSTM 1->64 x2) to ``path``."""
    model = loaded(cfg or archs.ArchConfig(), window)
    if streaming:
        model = capture.streaming_model(model)
    path.write_bytes(capture.to_onnx(model).SerializeToString())
    return path


def fc_tflite(n_in: int = 4, n_out: int = 3) -> bytes:
    """A one-op TFLite model (FULLY_CONNECTED, float32) built with the schema's object API."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    rng = np.random.default_rng(0)
    arrays = [None, rng.standard_normal((n_out, n_in)).astype(np.float32), np.zeros(n_out, np.float32), None]
    shapes = [[1, n_in], [n_out, n_in], [n_out], [1, n_out]]
    model = s.ModelT()
    model.version = 3
    model.buffers = []
    sg = s.SubGraphT()
    sg.tensors = []
    for i, (arr, shape) in enumerate(zip(arrays, shapes, strict=True)):
        buf = s.BufferT()
        buf.data = None if arr is None else np.frombuffer(arr.tobytes(), np.uint8)
        model.buffers.append(buf)
        t = s.TensorT()
        t.shape, t.type, t.buffer, t.name = shape, s.TensorType.FLOAT32, i, f"t{i}"
        sg.tensors.append(t)
    model.buffers.insert(0, s.BufferT())  # buffer 0 is the empty sentinel
    for t in sg.tensors:
        t.buffer += 1
    op = s.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 1, 2], [3]
    op.builtinOptionsType = s.BuiltinOptions.FullyConnectedOptions
    op.builtinOptions = s.FullyConnectedOptionsT()
    sg.operators, sg.inputs, sg.outputs = [op], [0], [3]
    code = s.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = s.BuiltinOperator.FULLY_CONNECTED
    code.version = 1
    model.operatorCodes, model.subgraphs = [code], [sg]
    b = flatbuffers.Builder(1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())
