"""The one-step model derived from the captured ONNX graph: equal to the whole window, or refused with the reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zoo
from onnx import TensorProto, helper, numpy_helper

from edge_lstm import capture, streaming
from edge_lstm.errors import UnsupportedModel
from edge_lstm.feeds import stream_window
from edge_lstm.load import load
from edge_lstm.runners.onnxrt import OnnxRuntimeRunner
from edge_lstm.runners.torch import TorchRunner

#: zoo networks whose output needs the whole window, and the words the refusal must contain
REFUSED = {
    "cnn_lstm": ("'/conv/Conv' (Conv)", "convolves over 5 time steps"),
    "mean_pool": ("'/ReduceMean' (ReduceMean)", "ReduceMean over the time axis"),
    "attention": ("'/Softmax' (Softmax)", "softmax over the time axis"),
    "speech_bilstm": ("(LSTM)", "bidirectional"),
    "dilated": ("(Div)", "window length"),
}
STREAMS = [n for n in zoo.ZOO if n not in REFUSED and not zoo.ZOO[n].dtypes]


def _model(name: str, form: str, tmp_path: Path):
    path, shapes = zoo.save(name, form, tmp_path)
    return load(path, None if form == "pt2" else shapes, trust_pickle=True)


@pytest.mark.parametrize("form", ["torchscript", "pt2", "pickle"])
@pytest.mark.parametrize("name", STREAMS)
def test_step_by_step_equals_the_whole_window(name: str, form: str, tmp_path: Path) -> None:
    model = _model(name, form, tmp_path)
    step = capture.streaming_model(model)
    assert step.inputs.inputs[0].concrete(1)[step.time_axis] == 1
    assert streaming.plan_of(step.proto) == step.to_dict()  # the state map travels with the file
    rng = np.random.default_rng(3)
    feed = {t.name: (0.5 * rng.standard_normal(t.concrete(1))).astype(np.float32) for t in model.inputs.inputs}
    ref = TorchRunner(model).infer(feed)
    with OnnxRuntimeRunner(step.proto.SerializeToString()) as runner:
        got = stream_window(runner, step, feed)
    for out in ref:
        np.testing.assert_allclose(got[out], ref[out], atol=2e-6, rtol=1e-5, err_msg=f"{name} {form} {out}")


def test_a_projected_lstm_streams_through_its_scan_state(tmp_path: Path) -> None:
    step = capture.streaming_model(_model("proj_size", "torchscript", tmp_path))
    assert [s.node for s in step.states][::2] == [n.name for n in step.proto.graph.node if n.op_type == "Scan"]
    assert {s.shape for s in step.states} == {("batch", 12), ("batch", 32)}  # (batch, proj), (batch, hidden)


def test_states_are_one_pair_per_recurrent_node_and_explicit_state_is_kept(tmp_path: Path) -> None:
    step = capture.streaming_model(_model("deepar", "torchscript", tmp_path))
    assert [(s.input, s.output) for s in step.states] == [("h0_0", "h_0"), ("c0_0", "c_0"), ("h0_1", "h_1"),
                                                           ("c0_1", "c_1")]
    assert step.states[0].shape == (1, "batch", 40)
    own = capture.streaming_model(_model("explicit_state", "pickle", tmp_path))
    assert own.explicit_state and [(s.input, s.output) for s in own.states] == [("input_1", "output_1"),
                                                                               ("input_2", "output_2")]


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_models_that_need_the_whole_window_are_refused_with_the_node_and_reason(name: str, tmp_path: Path) -> None:
    node, why = REFUSED[name]
    with pytest.raises(UnsupportedModel) as e:
        capture.streaming_model(_model(name, "torchscript", tmp_path))
    assert e.value.exit_code == 5 and node in e.value.message and why in e.value.message, e.value.message
    assert "cannot stream" in e.value.message


def _lstm_graph(direction: str = "forward", pick: int = -1) -> object:
    """x (1, 8, 2) -> LSTM(3) -> y = Y[pick] (time-major Y squeezed)."""
    rng = np.random.default_rng(0)
    d = 2 if direction == "bidirectional" else 1
    inits = [numpy_helper.from_array(rng.standard_normal((d, 12, 2)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.standard_normal((d, 12, 3)).astype(np.float32), "R"),
             numpy_helper.from_array(np.asarray([pick], np.int64), "idx"),
             numpy_helper.from_array(np.asarray([1], np.int64), "axis1")]
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
             helper.make_node("LSTM", ["xt", "W", "R"], ["Y", "Yh"], hidden_size=3, direction=direction, name="rnn"),
             helper.make_node("Gather", ["Y", "idx"], ["last"], axis=0, name="pick"),
             helper.make_node("Squeeze", ["last", "axis1"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_an_onnx_graph_made_by_hand_streams_and_its_constant_window_index_is_rewritten() -> None:
    whole = _lstm_graph(pick=7)  # Y[T-1]: the last step, written as a constant index
    step = streaming.derive(whole, "x", 1)
    x = np.random.default_rng(1).standard_normal((1, 8, 2)).astype(np.float32)
    with OnnxRuntimeRunner(whole.SerializeToString()) as w:
        ref = w.infer({"x": x})
    with OnnxRuntimeRunner(step.proto.SerializeToString()) as s:
        got = stream_window(s, step, {"x": x})
    np.testing.assert_allclose(got["y"], ref["y"], atol=1e-6)


@pytest.mark.parametrize(("direction", "pick", "why"), [
    ("reverse", -1, "is reverse (it reads the window backwards"),
    ("bidirectional", -1, "is bidirectional"),
    ("forward", 0, "takes time step 0 of the window, not the latest one"),
])
def test_hand_made_graphs_that_need_the_window_are_refused(direction: str, pick: int, why: str) -> None:
    with pytest.raises(UnsupportedModel, match="cannot stream") as e:
        streaming.derive(_lstm_graph(direction, pick), "x", 1)
    assert why in e.value.message
