"""ONNX quantization on a real forecaster: fp16, dynamic int8, and the refusals."""

from __future__ import annotations

import numpy as np
import pytest

from edge_lstm.errors import UnsupportedModel, UsageError
from edge_lstm.quantize import QuantizedArtifact, quantize_onnx
from edge_lstm.spec import Precision

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def run(data: bytes, x: np.ndarray) -> np.ndarray:
    """Run an ONNX model on ONNX Runtime's CPU provider, one thread."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.astype(np.float32)})[0]


def test_fp32_is_unchanged(forecaster):
    art = quantize_onnx(forecaster.proto, Precision.FP32)
    assert art.data == forecaster.proto.SerializeToString()
    assert art.precision is Precision.FP32


def test_fp16_halves_file_keeps_float32_io_and_matches(forecaster):
    art = quantize_onnx(forecaster.proto, Precision.FP16)
    assert isinstance(art, QuantizedArtifact) and art.precision is Precision.FP16
    model = onnx.load_from_string(art.data)
    onnx.checker.check_model(model, full_check=True)
    assert {i.type.tensor_type.elem_type for i in model.graph.input} == {onnx.TensorProto.FLOAT}
    assert {o.type.tensor_type.elem_type for o in model.graph.output} == {onnx.TensorProto.FLOAT}
    weights = [i for i in model.graph.initializer if i.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)]
    assert weights and all(i.data_type == onnx.TensorProto.FLOAT16 for i in weights)
    assert len(art.data) <= 0.55 * forecaster.proto.ByteSize()
    half = sum(i.ByteSize() for i in weights)
    assert half <= 0.52 * sum(i.ByteSize() for i in forecaster.proto.graph.initializer)
    x = forecaster.test_x[:256]
    ref = forecaster.torch_pred[:256]
    err = np.abs(run(art.data, x) - ref)
    assert (err <= 1e-3 + 1e-3 * np.abs(ref)).all(), err.max()  # fp16: ~3 significant digits


def test_fp16_says_which_layers_compute_in_float32(forecaster):
    art = quantize_onnx(forecaster.proto, Precision.FP16)
    # ONNX Runtime's CPU provider has no float16 LSTM kernel: the Casts are explicit and reported
    assert any(layer.startswith("LSTM") for layer in art.float_layers)
    assert any("no float16 LSTM kernel" in n for n in art.notes)
    casts = [n for n in onnx.load_from_string(art.data).graph.node if n.op_type == "Cast"]
    assert not any(n.name.startswith("InsertedPrecisionFreeCast") for n in casts)


def test_dynamic_int8_uses_quantized_lstm_and_keeps_mae(forecaster):
    art = quantize_onnx(forecaster.proto, Precision.DYNAMIC_INT8)
    ops = [n.op_type for n in onnx.load_from_string(art.data).graph.node]
    assert ops.count("DynamicQuantizeLSTM") == 2 and "LSTM" not in ops
    assert art.float_layers == ["Gemm '/head/Gemm'"]  # the 65-weight head stays float, with the reason
    assert "stays float32 (65 weights" in art.notes[0]
    # The 0.35x target is for TFLite; ONNX's file also carries the exporter's shape-computing
    # nodes (~4 KB), which weigh 7% on this 13k-parameter model (the demo model reaches 0.30x, see
    # benchmarks/quantize.py), so the file bound here is 0.37x and the weights are checked exactly.
    assert len(art.data) <= 0.37 * forecaster.proto.ByteSize()
    model = onnx.load_from_string(art.data)
    int8 = sum(i.ByteSize() for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8)
    lstm_w = sum(i.ByteSize() for i in forecaster.proto.graph.initializer if len(i.dims) == 3)
    assert int8 <= 0.26 * lstm_w
    float_mae = np.mean(np.abs(forecaster.torch_pred - forecaster.test_y))
    q_mae = np.mean(np.abs(run(art.data, forecaster.test_x) - forecaster.test_y))
    assert q_mae <= 1.03 * float_mae, (q_mae, float_mae)


def test_int8_is_refused_for_onnx_naming_supported_precisions(forecaster):
    with pytest.raises(UsageError) as exc:
        quantize_onnx(forecaster.proto, Precision.INT8)
    assert "precision int8 is not supported for format onnx; supported: fp32, fp16, dynamic-int8" in str(exc.value)
    assert exc.value.exit_code == 2


def _small_proto(tmp_path, **cfg):
    import torch

    from edge_lstm import archs, capture, load

    torch.manual_seed(0)
    config = archs.ArchConfig(n_features=2, hidden=16, layers=1, **cfg)
    path = load.save_checkpoint(tmp_path / "m.pt", archs.build("forecaster", config), "forecaster", config, 12)
    return capture.to_onnx(load.load(path))


def test_gru_model_at_onnx_dynamic_int8_is_a_scan_of_int8_products(tmp_path):
    proto = _small_proto(tmp_path, cell="gru")
    art = quantize_onnx(proto, Precision.DYNAMIC_INT8)  # tests/quantize/test_onnx_gru.py has the cases
    assert any("Scan loops of int8-weight products" in n for n in art.notes)
    art = quantize_onnx(proto, Precision.FP16)  # fp16 still works, and says the GRU computes in float32
    assert art.float_layers[0] == "GRU '/rnn/GRU'" and "float16 GRU kernel" in art.notes[0]
    x = np.random.default_rng(0).standard_normal((3, 12, 2)).astype(np.float32)
    assert np.abs(run(art.data, x) - run(proto.SerializeToString(), x)).max() < 1e-3


@pytest.mark.parametrize(
    ("cfg", "precision", "tol"),
    [
        ({"bidirectional": True, "layernorm": True, "activation": "tanh"}, Precision.FP16, 1e-3),
        # LayerNorm rescales an untrained model's tiny LSTM outputs and magnifies int8 rounding: left out here
        ({"bidirectional": True, "activation": "tanh"}, Precision.DYNAMIC_INT8, 0.05),
    ],
)
def test_bidirectional_lstm_with_head_extras(tmp_path, cfg, precision, tol):
    proto = _small_proto(tmp_path, **cfg)
    x = np.random.default_rng(1).standard_normal((16, 12, 2)).astype(np.float32)
    art = quantize_onnx(proto, precision)
    assert np.abs(run(art.data, x) - run(proto.SerializeToString(), x)).max() < tol


def test_model_with_nothing_quantizable_is_refused():
    from onnx import TensorProto, helper

    node = helper.make_node("Tanh", ["x"], ["y"], name="act")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UnsupportedModel, match="has none") as exc:
        quantize_onnx(proto, Precision.DYNAMIC_INT8)
    assert exc.value.exit_code == 5


def _transpose_matmul_model() -> onnx.ModelProto:
    """An all-steps head as a bidirectional speech model has it: Transpose then MatMul (then Add)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((16, 10)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.standard_normal(10).astype(np.float32), "b")]
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0, 2], name="tr"),
             helper.make_node("MatMul", ["t", "W"], ["m"], name="mm"),
             helper.make_node("Add", ["m", "b"], ["y"], name="add")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [12, "batch", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 12, 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_fp16_moves_no_data_in_float16_next_to_float32_compute(tmp_path):
    """ORT segfaulted at load (optimization level "all") on a float16 Transpose cast to float32 for a MatMul."""
    import subprocess
    import sys

    art = quantize_onnx(_transpose_matmul_model(), Precision.FP16)
    model = onnx.load_from_string(art.data)
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in (*inferred.graph.value_info, *inferred.graph.output)}
    tr = next(n for n in model.graph.node if n.op_type == "Transpose")
    if any(n.op_type == "MatMul" and any(i.startswith("cast") for i in n.input) for n in model.graph.node):
        assert types[tr.output[0]] == onnx.TensorProto.FLOAT  # the transpose joined the float32 MatMul
    path = tmp_path / "m.onnx"
    path.write_bytes(art.data)
    code = ("import onnxruntime as ort, numpy as np, sys\n"
            "s = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])\n"
            "print(s.run(None, {'x': np.ones((12, 2, 16), np.float32)})[0].shape)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    x = np.random.default_rng(1).standard_normal((12, 2, 16)).astype(np.float32)
    ref = run(_transpose_matmul_model().SerializeToString(), x)
    np.testing.assert_allclose(run(art.data, x), ref, atol=2e-2, rtol=1e-2)
