"""Every op the table gained: golden TFLite structure and outputs equal to PyTorch's on LiteRT (and XNNPACK off)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ai_edge_litert import schema_py_generated as schema
from op_cases import CASES, OpCase

from edge_lstm import capture
from edge_lstm.lower.tflite import lower
from edge_lstm.runners.litert import LiteRTRunner
from edge_lstm.spec import InputSpec, TensorSpec

OP = schema.BuiltinOperator
NAMES = {v: k for k, v in vars(OP).items() if not k.startswith("_")}


def _capture(case: OpCase):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    module = case.build().eval()
    names = [f"x{i}" if i else "x" for i in range(len(case.shapes))]
    inputs = InputSpec(tuple(TensorSpec(n, s) for n, s in zip(names, case.shapes, strict=True)))
    args = [torch.randn(*s) for s in case.shapes]
    with torch.no_grad():
        out = module(*args)
    outputs = [TensorSpec("y", tuple(out.shape), str(out.dtype).removeprefix("torch."))]
    proto = capture._export(module, inputs, outputs, dynamic_batch=False)
    return module, proto, names


def _ops(data: bytes) -> list[str]:
    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    return [NAMES[codes[op.opcodeIndex]] for op in model.subgraphs[0].operators]


@pytest.mark.parametrize("name", sorted(CASES))
def test_op_lowers_to_golden_structure_and_matches_pytorch(name: str) -> None:
    case = CASES[name]
    module, proto, names = _capture(case)
    # PyTorch drops inference Dropout before ONNX sees it; its case checks the graph has none left over
    assert case.onnx_op in {n.op_type for n in proto.graph.node} or case.onnx_op == "Dropout"
    lowered = lower(proto, "loop")
    assert tuple(_ops(lowered.data)) == case.golden
    rng = np.random.default_rng(1)
    for xnnpack in (True, False):
        for _ in range(3):
            feeds = {n: rng.standard_normal(s).astype(np.float32) for n, s in zip(names, case.shapes, strict=True)}
            with torch.no_grad():
                ref = module(*[torch.from_numpy(feeds[n]) for n in names]).numpy()
            with LiteRTRunner(lowered.data, xnnpack=xnnpack) as r:
                got = np.asarray(r.infer(feeds)["y"]).reshape(ref.shape)
            np.testing.assert_allclose(got.astype(np.float64), ref.astype(np.float64), atol=1e-5, rtol=1e-5)


def test_batchnorm_is_folded_into_the_convolution_weights() -> None:
    """A hand-written Conv -> BatchNormalization graph: one CONV_2D, no MUL/ADD, outputs as ONNX Runtime's."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    arrays = {"W": rng.standard_normal((4, 3, 3)), "B": rng.standard_normal(4), "g": rng.uniform(0.5, 1.5, 4),
              "beta": rng.standard_normal(4), "mean": rng.standard_normal(4), "var": rng.uniform(0.5, 2, 4)}
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in arrays.items()]
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1], name="conv"),
             helper.make_node("BatchNormalization", ["c", "g", "beta", "mean", "var"], ["y"], name="bn")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    lowered = lower(proto, "loop")
    ops = _ops(lowered.data)
    assert "MUL" not in ops and "ADD" not in ops and ops.count("CONV_2D") == 1
    x = rng.standard_normal((1, 3, 8)).astype(np.float32)
    ref = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    with LiteRTRunner(lowered.data) as r:
        np.testing.assert_allclose(r.infer({"x": x})["y"], ref, atol=1e-5, rtol=1e-5)


def test_every_table_op_has_a_case() -> None:
    from edge_lstm.lower.tflite.ops import OP_TABLE

    covered = {c.onnx_op for c in CASES.values()}
    new_ops = {"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "Conv", "ConvTranspose", "BatchNormalization",
               "MaxPool", "AveragePool", "GlobalAveragePool", "Clip", "HardSigmoid", "HardSwish", "Pow", "Cast",
               "Expand", "Where", "Pad", "Tile", "Softplus", "Log", "ArgMax", "Dropout"}
    assert new_ops <= set(OP_TABLE) and new_ops <= covered


def test_an_onnx_dropout_node_is_the_identity_at_inference() -> None:
    """Exporters other than PyTorch's keep Dropout nodes (training_mode false): the lowering passes x through."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.eye(4, dtype=np.float32) * 2, "W")
    nodes = [helper.make_node("Dropout", ["x"], ["d"], name="drop"), helper.make_node("MatMul", ["d", "W"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [w])
    lowered = lower(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), "loop")
    assert _ops(lowered.data) == ["FULLY_CONNECTED"]
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    with LiteRTRunner(lowered.data) as r:
        np.testing.assert_allclose(r.infer({"x": x})["y"], 2 * x)
