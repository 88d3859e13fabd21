"""The C generator on the zoo of user-shaped networks: what it runs matches PyTorch, what it cannot is refused (exit 5)
naming the node."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import zoo

from edge_lstm import capture
from edge_lstm.errors import UnsupportedModel
from edge_lstm.firmware.cgen import generate
from edge_lstm.firmware.graph import build_program, supported_ops
from edge_lstm.firmware.hostc import HostModel
from edge_lstm.load import load

RUNS = ("deepar", "multi_horizon", "gru_layernorm", "time_major", "plain_rnn", "residual")
#: what the generator says for each network it cannot run (a word from the message naming the reason)
REFUSED = {
    "cnn_lstm": "'Conv'",  # ops outside the table are named first, before any other check
    "mean_pool": "'ReduceMean'",
    "attention": "'ReduceSum'",
    "seq2seq": "'Tile'",
    "text": "is not float32",
    "speech_bilstm": "bidirectional",
    "speech_predictor": "is not float32",
    "proj_size": "'Scan'",  # a projected LSTM is captured as an ONNX Scan loop
    "explicit_state": "takes 3 inputs",
    "dilated": "'ReduceMean'",
}


def _load(name: str, tmp: Path):
    form = "pickle" if name == "proj_size" else "torchscript"  # a projected LSTM is captured from the module
    path, shapes = zoo.save(name, form, tmp)
    return load(path, shapes, trust_pickle=form == "pickle")


def _onnx(name: str, tmp: Path):
    """The captured graph; token-id models (which edge-lstm's loader cannot probe yet) straight from PyTorch."""
    if "int-input" not in zoo.ZOO[name].tags:
        return capture.to_onnx(_load(name, tmp))
    import onnx

    path = tmp / f"{name}.onnx"
    torch.onnx.export(zoo.build(name), zoo.ZOO[name].example(), str(path), dynamo=False, opset_version=17)
    return onnx.load(str(path))


def test_the_table_covers_the_zoo() -> None:
    assert set(RUNS) | set(REFUSED) == set(zoo.ZOO)


@pytest.mark.parametrize("name", RUNS)
def test_zoo_network_runs_and_matches_pytorch(name: str, tmp_path: Path) -> None:
    loaded = _load(name, tmp_path)
    prog = build_program(capture.to_onnx(loaded))
    code = generate(prog, "fp32", source=name)
    module = zoo.build(name)
    with HostModel(code.files, "model", prog.n_input, prog.window, prog.step_output_size,
                   prog.window_output_size) as m:
        for seed in range(3):
            x = zoo.ZOO[name].example(seed)[0]
            with torch.no_grad():
                ref = module(x).numpy().reshape(-1)
            np.testing.assert_allclose(m.window(x.numpy().reshape(-1)), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_zoo_network_is_refused_with_a_reason(name: str, tmp_path: Path) -> None:
    with pytest.raises(UnsupportedModel) as e:
        build_program(_onnx(name, tmp_path))
    assert e.value.exit_code == 5
    assert REFUSED[name] in e.value.message, e.value.message
    assert "Supported ops on the input's path" in (e.value.hint or "")


def test_every_problem_is_listed_once(tmp_path: Path) -> None:
    loaded = _load("speech_bilstm", tmp_path)  # two bidirectional layers: both named, nothing downstream
    with pytest.raises(UnsupportedModel) as e:
        build_program(capture.to_onnx(loaded))
    lines = [ln for ln in e.value.message.splitlines() if ln.startswith("  node")]
    assert len(lines) == 1 and "LSTM" in lines[0]  # the second layer reads the first: reported once, at the source


def test_supported_ops_are_the_op_table() -> None:
    ops = supported_ops()
    assert {"LSTM", "GRU", "RNN", "Gemm", "MatMul", "LayerNormalization", "Softmax", "Tanh", "Sigmoid", "Relu",
            "Gelu", "Erf"} <= set(ops)
    assert ops == sorted(ops)


def _recurrent_graph(op: str, hidden: int, attrs: dict, with_state: bool, seed: int = 0):
    """x [1, T, F] -> Transpose -> op -> Squeeze -> Transpose -> last step: a graph PyTorch does not write."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    t, f = 9, 3
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[op]
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array((0.4 * rng.standard_normal(s)).astype(np.float32), n) for n, s in
             (("W", (1, gates * hidden, f)), ("R", (1, gates * hidden, hidden)), ("B", (1, 2 * gates * hidden)))]
    ins = ["xt", "W", "R", "B", "", ""]
    if with_state:
        inits.append(numpy_helper.from_array((0.5 * rng.standard_normal((1, 1, hidden))).astype(np.float32), "h0"))
        ins[5] = "h0"
        if op == "LSTM":
            inits.append(numpy_helper.from_array(rng.standard_normal((1, 1, hidden)).astype(np.float32), "c0"))
            ins.append("c0")
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "ax1"))
    inits.append(numpy_helper.from_array(np.array(-1, np.int64), "last"))
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
             helper.make_node(op, ins, ["Y"], hidden_size=hidden, **attrs),
             helper.make_node("Squeeze", ["Y", "ax1"], ["ys"]),
             helper.make_node("Transpose", ["ys"], ["yb"], perm=[1, 0, 2]),
             helper.make_node("Gather", ["yb", "last"], ["y"], axis=1)]
    graph = helper.make_graph(nodes, op.lower(), [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, t, f])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, hidden])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.mark.parametrize(("op", "attrs", "with_state"), [
    ("GRU", {"linear_before_reset": 0}, False),  # the ONNX default, which PyTorch never exports
    ("GRU", {"linear_before_reset": 1}, True),
    ("RNN", {"activations": ["Relu"]}, False),
    ("LSTM", {}, True),  # constant initial h and c: model_reset() restores them
])
def test_hand_written_onnx_matches_onnx_runtime(op: str, attrs: dict, with_state: bool) -> None:
    import onnxruntime as ort

    model = _recurrent_graph(op, 8, attrs, with_state)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    prog = build_program(model)
    for precision in ("fp32", "int8-weights"):
        code = generate(prog, precision)
        with HostModel(code.files, "model", prog.n_input, prog.window, prog.step_output_size,
                       prog.window_output_size) as m:
            for seed in range(3):
                x = np.random.default_rng(seed).standard_normal((1, 9, 3)).astype(np.float32)
                ref = sess.run(None, {"x": x})[0].reshape(-1)
                got, streamed = m.window(x.reshape(-1)), m.stream(x.reshape(-1))[-1]
                tol = 1e-5 if precision == "fp32" else 0.05
                np.testing.assert_allclose(got, ref, atol=tol, rtol=tol)
                np.testing.assert_allclose(streamed, ref, atol=tol, rtol=tol)
