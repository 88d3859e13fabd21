"""ONNX -> TFLite lowering: outputs equal PyTorch's on ai-edge-litert, golden flatbuffer structure, bad input."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from ai_edge_litert import schema_py_generated as schema
from onnx import TensorProto, helper
from tflite_models import KINDS, StepCase, assert_close, case, streaming_case

from edge_lstm.errors import ShapeError, UnsupportedOp, UsageError
from edge_lstm.lower.tflite import LoweredTFLite, lower
from edge_lstm.runners.litert import LiteRTRunner

OP = schema.BuiltinOperator


def run(lowered: LoweredTFLite, feeds: dict[str, np.ndarray], xnnpack: bool = True) -> dict[str, np.ndarray]:
    """One window on ai-edge-litert, state reset first."""
    with LiteRTRunner(lowered.data, xnnpack=xnnpack) as r:
        assert r.input_names == lowered.input_names
        assert r.output_names == lowered.output_names
        r.reset_state()
        return r.infer({k: feeds[k] for k in r.input_names})


def unpack(data: bytes) -> schema.ModelT:
    """The flatbuffer as the schema's object tree."""
    return schema.ModelT.InitFromPackedBuf(bytearray(data), 0)


def op_names(model: schema.ModelT) -> list[str]:
    """Builtin op names in execution order."""
    names = {v: k for k, v in vars(OP).items() if not k.startswith("_")}
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    return [names[codes[op.opcodeIndex]] for op in model.subgraphs[0].operators]


@pytest.mark.parametrize("lowering", ["fused", "loop", "unrolled"])
@pytest.mark.parametrize("name", sorted(KINDS))
def test_outputs_match_pytorch(name: str, lowering: str) -> None:
    c = case(name)
    lowered = lower(c.proto, lowering)
    assert lowered.input_names == c.model.inputs.names
    assert lowered.output_names == c.model.output_names
    for seed in (0, 1):  # two windows: the second proves the state was reset
        feeds = c.feeds(seed)
        assert_close(run(lowered, feeds), c.reference(feeds))


def test_builtin_kernels_without_xnnpack_match() -> None:
    c = case("stacked")
    feeds = c.feeds()
    for lowering in ("fused", "loop", "unrolled"):
        assert_close(run(lower(c.proto, lowering), feeds, xnnpack=False), c.reference(feeds))


def test_reference_forecaster_fused_golden() -> None:
    c = case("reference", window=96)
    lowered = lower(c.proto, "fused")
    model = unpack(lowered.data)
    ops = op_names(model)
    assert ops.count("UNIDIRECTIONAL_SEQUENCE_LSTM") == 2
    assert ops.count("FULLY_CONNECTED") == 1
    assert len(ops) <= 16
    sub = model.subgraphs[0]
    variables = [t for t in sub.tensors if t.isVariable]
    assert len(variables) == 4 and all(list(t.shape) == [1, 64] for t in variables)
    assert lowered.lowering == "fused" and lowered.variable_state
    assert len(lowered.data) <= 1.05 * c.param_bytes
    lstm = sub.operators[ops.index("UNIDIRECTIONAL_SEQUENCE_LSTM")]
    assert len(lstm.inputs) == 24 and list(lstm.inputs[16:18]) == [-1, -1]
    assert [sub.tensors[i].name for i in sub.inputs] == [b"x"]
    assert [sub.tensors[i].name for i in sub.outputs] == [b"y"]
    assert model.subgraphs[0].tensors[sub.inputs[0]].shape.tolist() == [1, 96, 1]


def subgraph_ops(model: schema.ModelT, index: int) -> list[str]:
    """Builtin op names of subgraph ``index`` in execution order."""
    names = {v: k for k, v in vars(OP).items() if not k.startswith("_")}
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    return [names[codes[op.opcodeIndex]] for op in model.subgraphs[index].operators]


LSTM_STEP = ["FULLY_CONNECTED", "ADD", "LOGISTIC", "TANH", "SPLIT", "SPLIT", "MUL", "MUL", "ADD", "TANH", "MUL"]


def test_reference_forecaster_loop_golden() -> None:
    c = case("reference", window=96)
    lowered = lower(c.proto, "loop")
    model = unpack(lowered.data)
    # main: the first layer's input projection for all 96 steps (viewed as 24 rows of 4 steps), one WHILE over
    # time for both layers, the head
    assert op_names(model) == ["RESHAPE", "RESHAPE", "FULLY_CONNECTED", "RESHAPE", "WHILE", "FULLY_CONNECTED"]
    assert len(model.subgraphs) == 3 and "UNIDIRECTIONAL_SEQUENCE_LSTM" not in lowered.op_counts
    main = model.subgraphs[0]
    loop = main.operators[op_names(model).index("WHILE")]
    opts = loop.builtinOptions
    assert (opts.condSubgraphIndex, opts.bodySubgraphIndex) == (1, 2)
    # loop variables: iteration counter, the input projection (4 steps a row), h and c of both layers
    shapes = [list(main.tensors[i].shape) for i in loop.inputs]
    assert shapes == [[1], [24, 4 * 256], [1, 64], [1, 64], [1, 64], [1, 64]]
    assert [main.tensors[i].shape.tolist() for i in loop.outputs] == shapes
    assert subgraph_ops(model, 1) == ["LESS"]
    cond, body = model.subgraphs[1], model.subgraphs[2]
    assert len(cond.inputs) == len(body.inputs) == len(body.outputs) == 6 and len(cond.outputs) == 1
    # body: counter, this iteration's projection row split into 4 steps, layer 1's 4 steps, layer 2's input
    # projection of those 4 steps (one op on layer 1's 4 outputs) split into steps, layer 2's 4 steps (the
    # bias-free recurrent products go to XNNPACK, which packs each weight once: there is one tensor per weight)
    assert subgraph_ops(model, 2) == ["ADD", "GATHER", "SPLIT", *LSTM_STEP * 4, "CONCATENATION", "FULLY_CONNECTED",
                                      "SPLIT", *LSTM_STEP * 4]
    assert body.outputs[1] == body.inputs[1]  # the projection passes through: the interpreter does not copy it
    fcs = [op for op, name in zip(body.operators, subgraph_ops(model, 2), strict=True) if name == "FULLY_CONNECTED"]
    assert all(body.tensors[op.inputs[1]].buffer for op in fcs)
    assert len({op.inputs[1] for op in fcs}) == 3
    assert [op.inputs[2] >= 0 for op in fcs] == [False] * 4 + [True] + [False] * 4
    xp2 = fcs[4]
    assert body.tensors[xp2.inputs[0]].shape.tolist() == [4, 64] and body.tensors[xp2.outputs[0]].shape.tolist() == [
        4, 256]
    assert not lowered.variable_state and lowered.lowering == "loop"
    # weights are written once: constant bytes are the parameters', the file within 10% of them
    const_bytes = sum(len(b.data) for b in model.buffers if b.data is not None)
    assert const_bytes <= 1.01 * c.param_bytes
    assert len(lowered.data) <= 1.10 * c.param_bytes
    feeds = c.feeds()
    for xnnpack in (True, False):
        assert_close(run(lowered, feeds, xnnpack=xnnpack), c.reference(feeds), atol=1e-4, rtol=1e-4)


def test_loop_sequence_outputs_are_written_a_step_at_a_time() -> None:
    lowered = lower(case("all_steps_wide").proto, "loop")
    model = unpack(lowered.data)
    assert op_names(model).count("WHILE") == 1 and "FILL" in op_names(model)
    # 4 steps an iteration: the top layer's 4 outputs are one row of the [T/4, 4H] sequence
    assert subgraph_ops(model, 2) == ["ADD", "GATHER", "SPLIT", *LSTM_STEP * 4, "CONCATENATION", "FULLY_CONNECTED",
                                      "SPLIT", *LSTM_STEP * 4, "CONCATENATION", "CONCATENATION",
                                      "DYNAMIC_UPDATE_SLICE"]


def test_loop_bidirectional_loops_each_direction() -> None:
    lowered = lower(case("bidirectional").proto, "loop")
    model = unpack(lowered.data)
    ops = op_names(model)
    # two layers x two directions; the reverse direction reverses its input and its sequence
    assert ops.count("WHILE") == 4 and ops.count("REVERSE_V2") == 4 and len(model.subgraphs) == 9
    for body in (2, 4, 6, 8):
        assert subgraph_ops(model, body) == ["ADD", "GATHER", *LSTM_STEP, "CONCATENATION", "DYNAMIC_UPDATE_SLICE"]


def test_gru_loop() -> None:
    lowered = lower(case("gru_wide").proto, "loop")
    model = unpack(lowered.data)
    assert op_names(model).count("WHILE") == 1 and len(model.subgraphs) == 3
    body = subgraph_ops(model, 2)
    # 4 steps an iteration: two recurrent products a step and layer, one input projection for layer 2
    assert body[:3] == ["ADD", "GATHER", "SPLIT"] and body.count("FULLY_CONNECTED") == 2 * 2 * 4 + 1
    assert "DYNAMIC_UPDATE_SLICE" not in body


def test_unrolled_gru_writes_every_step_out() -> None:
    # only asked-for: no loop, one recurrent product per step and gate group
    lowered = lower(case("gru").proto, "unrolled")
    assert "WHILE" not in lowered.op_counts and len(unpack(lowered.data).subgraphs) == 1
    # per layer: the all-steps input projection, then two recurrent products a step after the first
    assert lowered.lowering == "unrolled" and lowered.op_counts["FULLY_CONNECTED"] == 2 * (1 + 2 * 11) + 1


def test_bidirectional_fused_is_two_unidirectional_ops() -> None:
    c = case("bidirectional")
    ops = op_names(unpack(lower(c.proto, "fused").data))
    assert ops.count("UNIDIRECTIONAL_SEQUENCE_LSTM") == 4
    assert "BIDIRECTIONAL_SEQUENCE_LSTM" not in ops
    assert ops.count("REVERSE_V2") == 4 and "CONCATENATION" in ops


def test_fused_gru_goes_to_the_loop_with_a_note() -> None:
    lowered = lower(case("gru").proto, "fused")
    assert lowered.lowering == "loop" and lowered.requested == "fused"
    assert any("TFLite has no fused GRU op" in n for n in lowered.notes)
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" not in lowered.op_counts and lowered.op_counts["WHILE"] == 1


def test_explicit_state_under_fused_goes_to_the_loop_with_a_note() -> None:
    lowered = lower(case("state_io").proto, "fused")
    assert lowered.lowering == "loop" and lowered.op_counts["WHILE"] == 1
    assert any("cannot return" in n for n in lowered.notes)
    assert lowered.input_names == ["x", "h0", "c0"] and lowered.output_names == ["y", "h", "c"]


def _step_through(lowered: LoweredTFLite, step: StepCase, x: np.ndarray, explicit_state: bool) -> np.ndarray:
    """Feed a window one step at a time; return y per step stacked on the time axis."""
    t_axis = step.step.time_axis
    state = {s.input: s.zeros(1) for s in step.step.states}
    ys = []
    with LiteRTRunner(lowered.data) as r:
        r.reset_state()
        for t in range(x.shape[t_axis]):
            xt = np.take(x, [t], axis=t_axis)
            feed = {"x": xt, **(state if explicit_state else {})}
            out = r.infer(feed)
            if explicit_state:
                state = {s.input: out[s.output] for s in step.step.states}
            ys.append(out["y"])
    return np.stack(ys, axis=1)


@pytest.mark.parametrize("lowering", ["fused", "loop", "unrolled"])
@pytest.mark.parametrize("name", ["all_steps", "stacked", "gru"])
def test_streaming_steps_equal_the_whole_window(name: str, lowering: str) -> None:
    whole, step = case(name), streaming_case(name)
    lowered = lower(step.proto, lowering, streaming=True)
    fused_lstm = lowering == "fused" and whole.model.config is not None and whole.model.config.cell == "lstm"
    if fused_lstm:
        assert lowered.input_names == ["x"] and lowered.output_names == ["y"]
        assert lowered.variable_state and lowered.op_counts["UNIDIRECTIONAL_SEQUENCE_LSTM"] == 2
    else:
        assert lowered.input_names[1:] and lowered.output_names[1:]
    x = whole.feeds()["x"]
    ys = _step_through(lowered, step, x, explicit_state=not fused_lstm)
    ref = whole.reference({"x": x})["y"]
    if whole.model.config is not None and whole.model.config.all_steps:
        np.testing.assert_allclose(ys.reshape(ref.shape), ref, atol=1e-5, rtol=1e-5)
    else:  # a last-step model: the last streaming output is the window's output
        np.testing.assert_allclose(ys[:, -1].reshape(ref.shape), ref, atol=1e-5, rtol=1e-5)


def test_unknown_lowering_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="auto, fused, loop, unrolled"):
        lower(case("stacked").proto, "magic")


def _tiny(op: str, x_shape: list[int | str]) -> onnx.ModelProto:
    node = helper.make_node(op, ["x"], ["y"], name="my_node")
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, x_shape)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_op_outside_the_table_names_node_op_and_supported_set() -> None:
    with pytest.raises(UnsupportedOp) as info:
        lower(_tiny("Cos", ["batch", 4, 2]))
    err = info.value
    assert err.node == "my_node" and err.op == "Cos" and err.exit_code == 5
    assert "'Cos'" in err.render() and "LSTM" in err.render() and "Gemm" in err.render()


def test_dynamic_sequence_length_is_a_shape_error() -> None:
    with pytest.raises(ShapeError) as info:
        lower(_tiny("Relu", ["batch", "time", 2]))
    text = info.value.render()
    assert "static sequence length" in text and "--input-shape" in text and "'time'" in text


def test_state_input_shape_that_disagrees_with_the_layer() -> None:
    h, f, t = 4, 2, 5
    rng = np.random.default_rng(0)
    inits = [helper.make_tensor(n, TensorProto.FLOAT, s, rng.standard_normal(int(np.prod(s))).astype(np.float32))
             for n, s in (("W", [1, 4 * h, f]), ("R", [1, 4 * h, h]))]
    node = helper.make_node("LSTM", ["x", "W", "R", "", "", "h0"], ["Y"], hidden_size=h, name="lstm")
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [t, 1, f]),
         helper.make_tensor_value_info("h0", TensorProto.FLOAT, [1, 1, h + 3])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], initializer=inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ShapeError, match=r"h0|initial hidden|shapes"):
        lower(proto, "loop")


@pytest.mark.parametrize("name", ["stacked_wide", "all_steps_wide", "gru_wide"])
@pytest.mark.parametrize(("window", "per_iteration"), [(9, 3), (10, 2), (7, 1)])
def test_stacked_loop_takes_the_steps_that_divide_the_window(name: str, window: int, per_iteration: int) -> None:
    c = case(name, window=window)
    lowered = lower(c.proto, "loop")
    model = unpack(lowered.data)
    body = subgraph_ops(model, 2)
    recurrent = 2 if name.startswith("gru") else 1  # recurrent products a step and layer
    assert body.count("FULLY_CONNECTED") == 2 * recurrent * per_iteration + 1
    assert body.count("LOGISTIC") == 2 * per_iteration  # one a step and layer
    for seed in (0, 1):
        feeds = c.feeds(seed)
        assert_close(run(lowered, feeds), c.reference(feeds))


@pytest.mark.parametrize("name", ["stacked", "all_steps", "gru"])
def test_small_stacks_take_one_step_an_iteration(name: str) -> None:
    """Where the extra steps' ops would cost more than 5% of the weights, the body is one step of each layer."""
    c = case(name)
    lowered = lower(c.proto, "loop")
    body = subgraph_ops(unpack(lowered.data), 2)
    assert body.count("LOGISTIC") == 2  # one a step and layer
    const_bytes = sum(len(b.data) for b in unpack(lowered.data).buffers if b.data is not None)
    assert const_bytes <= 1.02 * c.param_bytes
    for seed in (0, 1):
        feeds = c.feeds(seed)
        assert_close(run(lowered, feeds), c.reference(feeds))


def test_one_list_of_lowering_names() -> None:
    import edge_lstm.lower.tflite as tflite
    from edge_lstm import recipes

    assert tflite.LOWERINGS is recipes.LOWERINGS and recipes.LOWERINGS == ("auto", "fused", "loop", "unrolled")


def test_auto_picks_fused_for_micro_and_int8_and_the_loop_for_a_gru() -> None:
    stacked, gru = case("stacked").proto, case("gru").proto
    micro = lower(stacked, "auto", micro=True)
    assert micro.lowering == "fused" and micro.requested == "auto" and "TFLite Micro" in micro.reason
    assert lower(stacked, "auto", precision="int8").lowering == "fused"
    loop = lower(gru, "auto")
    assert loop.lowering == "loop" and loop.notes[0].startswith("lowering: auto: loop")
    plain = lower(stacked, "auto")  # a rule, not a timing: the same artifact on every machine
    assert plain.lowering == "loop" and "ran faster than the fused op" in plain.reason
    assert lower(stacked, "auto").data == plain.data
