"""proj_size LSTMs from every form a user has: one ONNX Scan per layer direction (weights once), read from the
graph; fused TFLite LSTM ops with projection inputs, or the WHILE loop; outputs equal PyTorch's."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import zoo
from ai_edge_litert import schema_py_generated as schema

from edge_lstm import capture
from edge_lstm.load import load
from edge_lstm.lower.tflite import lower
from edge_lstm.projection import PROJECTION_TAG, recurrent_slots
from edge_lstm.runners.litert import LiteRTRunner

OP = schema.BuiltinOperator


@pytest.fixture(scope="module")
def projected(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    out = {}
    d = tmp_path_factory.mktemp("proj")
    for form in zoo.FORMS:
        path, shapes = zoo.save("proj_size", form, d)
        model = load(path, shapes if form != "pt2" else None, trust_pickle=True)
        out[form] = (model, capture.to_onnx(model))
    return out


def _reference(seed: int) -> tuple[np.ndarray, np.ndarray]:
    x = zoo.ZOO["proj_size"].example(seed)[0]
    with torch.no_grad():
        return x.numpy(), zoo.build("proj_size")(x).numpy()


def _param_bytes() -> int:
    return 4 * sum(p.numel() for p in zoo.build("proj_size").parameters())


@pytest.mark.parametrize("form", zoo.FORMS)
def test_every_form_captures_one_scan_per_layer_with_weights_once(projected, form: str) -> None:
    model, proto = projected[form]
    scans = [n for n in proto.graph.node if n.op_type == "Scan"]
    assert len(scans) == 2 and all(n.doc_string.startswith(PROJECTION_TAG) for n in scans)
    assert all(recurrent_slots(n) == (2, (0, 1), (0, 1), 2) for n in scans)
    assert not any(n.domain for n in proto.graph.node)  # no placeholder left
    onnx.checker.check_model(proto, full_check=True)
    weights = sum(onnx.numpy_helper.to_array(i).nbytes for i in proto.graph.initializer)
    assert weights <= _param_bytes()  # both biases summed: a little under the parameters
    assert len(proto.SerializeToString()) <= 1.15 * _param_bytes()  # was 11.4x (weights copied per step)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    for seed in (0, 1):
        x, ref = _reference(seed)
        np.testing.assert_allclose(sess.run(None, {model.inputs.names[0]: x})[0], ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("lowering", ["fused", "loop", "unrolled"])
def test_projected_lstm_lowers_and_matches_pytorch(projected, lowering: str) -> None:
    model, proto = projected["torchscript"]
    lowered = lower(proto, lowering)
    assert lowered.lowering == lowering
    tfl = schema.ModelT.InitFromPackedBuf(bytearray(lowered.data), 0)
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in tfl.operatorCodes]
    main = tfl.subgraphs[0]
    if lowering == "fused":
        lstms = [op for op in main.operators if codes[op.opcodeIndex] == OP.UNIDIRECTIONAL_SEQUENCE_LSTM]
        assert len(lstms) == 2 and all(op.inputs[16] >= 0 for op in lstms)  # the projection weights
        assert [list(main.tensors[op.inputs[18]].shape) for op in lstms] == [[1, 12], [1, 12]]  # h is [B, P]
        assert len(lowered.data) <= 1.15 * _param_bytes()
    if lowering == "loop":
        assert lowered.op_counts["WHILE"] == 1
    const = sum(len(b.data) for b in tfl.buffers if b.data is not None)
    assert const <= 1.02 * _param_bytes()
    with LiteRTRunner(lowered.data) as r:
        for seed in (0, 1):
            x, ref = _reference(seed)
            r.reset_state()
            np.testing.assert_allclose(r.infer({model.inputs.names[0]: x})["y"], ref, atol=1e-5, rtol=1e-5)


class _BiProj(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(5, 16, num_layers=1, proj_size=4, bidirectional=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lstm(x)[0]


def test_projected_bidirectional_lstm(tmp_path) -> None:
    torch.manual_seed(0)
    lstm = _BiProj().eval()
    path = tmp_path / "bi.pt"
    torch.jit.trace(lstm, (torch.randn(7, 1, 5),)).save(str(path))
    model = load(path, [(7, 1, 5)])
    proto = capture.to_onnx(model)
    assert sum(n.op_type == "Scan" for n in proto.graph.node) == 2
    x = torch.randn(7, 1, 5)
    with torch.no_grad():
        ref = lstm(x).numpy()
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {model.inputs.names[0]: x.numpy()})[0], ref, atol=1e-5, rtol=1e-5)
    for lowering in ("fused", "loop"):
        with LiteRTRunner(lower(proto, lowering).data) as r:
            r.reset_state()
            got = r.infer({model.inputs.names[0]: x.numpy()})
            np.testing.assert_allclose(got[model.output_names[0]], ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("prec", ["fp16", "dynamic-int8"])
def test_projected_onnx_quantizes_inside_the_scan(projected, prec: str) -> None:
    from edge_lstm.quantize import quantize_onnx
    from edge_lstm.quantize.check import onnx_weights

    model, proto = projected["pt2"]
    q = quantize_onnx(proto, prec)
    layers = onnx_weights(q.data).layers
    inside = {k: v for k, v in layers.items() if "l0d0" in k or "l1d0" in k}
    assert len(inside) == 6 and set(inside.values()) == {"FLOAT16" if prec == "fp16" else "INT8"}
    assert len(q.data) <= (0.65 if prec == "fp16" else 0.6) * len(proto.SerializeToString())
    sess = ort.InferenceSession(q.data, providers=["CPUExecutionProvider"])
    x, ref = _reference(2)
    got = sess.run(None, {model.inputs.names[0]: x})[0]
    assert np.abs(got - ref).max() <= 0.02 * np.abs(ref).max() + 1e-3


@pytest.mark.parametrize("prec", ["fp16", "dynamic-int8", "int8"])
@pytest.mark.parametrize("lowering", ["fused", "loop"])
def test_projected_tflite_at_every_precision(projected, prec: str, lowering: str) -> None:
    from edge_lstm.quantize import quantize_tflite

    model, proto = projected["torchscript"]
    fp32 = lower(proto, lowering, precision=prec)
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((32, 1, 16, 8)).astype(np.float32) if prec == "int8" else None
    q = quantize_tflite(fp32.data, prec, calib)
    if prec == "int8" and lowering == "loop":
        # the loop's 16x8 edges (quantize/edges16.py) add ~5 KB of graph, more than this tiny model's weights
        # save: the narrow int8 edges are smaller than float, the wide ones within that graph cost of them
        narrow = quantize_tflite(fp32.data, prec, calib, wide_edges=False)
        assert len(narrow.data) < len(fp32.data) and len(q.data) < len(narrow.data) + 6 * 1024
    else:
        assert len(q.data) < len(fp32.data)
    refs, gots = [], []
    with LiteRTRunner(q.data) as r:
        for seed in range(4):
            x, ref = _reference(seed)
            r.reset_state()
            refs.append(ref.ravel())
            gots.append(np.asarray(r.infer({model.inputs.names[0]: x})["y"]).ravel())
    a, b = np.concatenate(refs), np.concatenate(gots)
    assert a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) >= 0.98
