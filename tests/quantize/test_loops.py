"""Full int8 of WHILE-loop models (the loop lowering): GRU, explicit state, stacked and bidirectional LSTMs.

TFLite's calibrator used to kill the process (signal 11) on these; now each is
quantized in this process, its loop state is int8 across iterations, and it runs
on LiteRT and on TFLite Micro close to the PyTorch float model.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lower"))

from tflite_models import case

from edge_lstm.lower.tflite import lower
from edge_lstm.quantize import quantize_tflite
from edge_lstm.runners.litert import LiteRTRunner
from edge_lstm.spec import Precision

schema = pytest.importorskip("ai_edge_litert.schema_py_generated")
OP = schema.BuiltinOperator
INT8 = schema.TensorType.INT8


def _calib(c, n: int = 64) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {t.name: rng.standard_normal((n, *t.concrete(1))).astype(np.float32) for t in c.model.inputs.inputs}


def _cosines(c, data: bytes, runner=LiteRTRunner) -> dict[str, float]:
    refs, gots = {}, {}
    with runner(data) as r:
        for seed in range(6):
            feeds = c.feeds(seed)
            r.reset_state()
            got = r.infer(feeds)
            for k, v in c.reference(feeds).items():
                refs.setdefault(k, []).append(v.ravel())
                gots.setdefault(k, []).append(np.asarray(got[k]).ravel())
    out = {}
    for k in refs:
        a, b = np.concatenate(refs[k]), np.concatenate(gots[k])
        out[k] = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    return out


def _unpack(data: bytes):
    return schema.ModelT.InitFromPackedBuf(bytearray(data), 0)


def _while(model):
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    return next(op for op in model.subgraphs[0].operators if codes[op.opcodeIndex] == OP.WHILE)


@pytest.fixture(scope="module")
def int8_loops() -> dict[str, tuple]:
    out = {}
    for name in ("stacked", "gru", "state_io", "gru_state_io_seq_first", "bidirectional", "all_steps"):
        c = case(name)
        fp32 = lower(c.proto, "loop")
        out[name] = (c, fp32, quantize_tflite(fp32.data, Precision.INT8, _calib(c)))
    return out


@pytest.mark.parametrize("name", ["stacked", "gru", "state_io", "gru_state_io_seq_first", "bidirectional",
                                  "all_steps"])
def test_loop_int8_runs_close_to_pytorch(int8_loops, name: str) -> None:
    c, fp32, q = int8_loops[name]
    assert fp32.op_counts["WHILE"] >= 1
    for output, cos in _cosines(c, q.data).items():
        assert cos >= 0.98, (output, cos)


@pytest.mark.parametrize("name", ["stacked", "gru", "state_io"])
def test_loop_state_is_int8_across_iterations(int8_loops, name: str) -> None:
    _, _, q = int8_loops[name]
    model = _unpack(q.data)
    loop = _while(model)
    main, body = model.subgraphs[0], model.subgraphs[loop.builtinOptions.bodySubgraphIndex]
    kinds = [main.tensors[i].type for i in loop.inputs]
    assert kinds[0] == schema.TensorType.INT32 and all(k == INT8 for k in kinds[1:]), kinds
    assert [body.tensors[i].type for i in body.inputs] == [body.tensors[i].type for i in body.outputs] == kinds
    # the input projection passes through the body unchanged (no copy per iteration)
    assert body.inputs[1] == body.outputs[1]
    # every weight in the body is int8
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    fcs = [op for op in body.operators if codes[op.opcodeIndex] == OP.FULLY_CONNECTED]
    assert fcs and all(body.tensors[op.inputs[1]].type == INT8 for op in fcs)


def test_reference_forecaster_loop_int8_is_smaller_than_float() -> None:
    c = case("reference", window=96)
    fp32 = lower(c.proto, "loop")
    q = quantize_tflite(fp32.data, Precision.INT8, _calib(c, 32))
    assert len(q.data) <= 0.5 * len(fp32.data)
    assert _cosines(c, q.data)["y"] >= 0.99


def test_loop_int8_runs_on_tflite_micro(int8_loops) -> None:
    pytest.importorskip("tflite_micro")
    from edge_lstm.runners.tflm import TFLMRunner

    c, _, q = int8_loops["gru"]
    assert _cosines(c, q.data, TFLMRunner)["y"] >= 0.98


@pytest.mark.parametrize("name", ["gru", "state_io"])
def test_unrolled_runtime_biases_are_split_for_the_quantizer(name: str) -> None:
    # the full unroll feeds each step's input projection as a fully-connected op's run-time bias, which
    # TFLite's quantizer refused ("Expected bias tensor to be a vector"); it is split into the op and an ADD
    c = case(name)
    q = quantize_tflite(lower(c.proto, "unrolled").data, Precision.INT8, _calib(c))
    assert min(_cosines(c, q.data).values()) >= 0.98


@pytest.mark.parametrize("prec", [Precision.FP16, Precision.DYNAMIC_INT8])
@pytest.mark.parametrize("name", ["gru", "state_io", "bidirectional"])
def test_loop_fp16_and_dynamic_int8(name: str, prec: Precision) -> None:
    c = case(name)
    fp32 = lower(c.proto, "loop")
    q = quantize_tflite(fp32.data, prec)
    assert len(q.data) < len(fp32.data)
    assert min(_cosines(c, q.data).values()) >= 0.999


@pytest.mark.parametrize("name", ["gru", "state_io"])
def test_loop_int8_with_int8_io(name: str) -> None:
    """TFLite's quantizer would make every subgraph's inputs int8; the loop's main graph edges are made int8."""
    from edge_lstm.runners.quant_io import from_model, to_model

    c = case(name)
    q = quantize_tflite(lower(c.proto, "loop").data, Precision.INT8, _calib(c), io="int8")
    assert q.io_quant and all(p["dtype"] == "int8" for p in q.io_quant.values())
    model = _unpack(q.data)
    main = model.subgraphs[0]
    assert all(main.tensors[i].type == INT8 for i in [*main.inputs, *main.outputs])
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=q.data)
    interp.allocate_tensors()
    refs, gots = [], []
    for seed in range(4):
        feeds = c.feeds(seed)
        for d in interp.get_input_details():
            interp.set_tensor(d["index"], to_model(feeds[d["name"]], "int8", d["quantization"]))
        interp.invoke()
        ref = c.reference(feeds)
        for d in interp.get_output_details():
            refs.append(ref[d["name"]].ravel())
            gots.append(from_model(interp.get_tensor(d["index"]), d["quantization"]).ravel())
    a, b = np.concatenate(refs), np.concatenate(gots)
    assert a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) >= 0.98


@pytest.mark.parametrize(("name", "cells"), [("stacked", 2), ("gru", 0)])
def test_residual_cell_is_an_int8_loop_variable(int8_loops, name: str, cells: int) -> None:
    # with int16_cell (what the export pipeline asks for): each LSTM layer's cell state keeps its rounding residual
    # in one more int8 loop variable (cell8: no int16 anywhere, so XNNPACK takes the whole body), and the loop's
    # output is at least as close to float as the quantizer's all-int8 cell's
    c, fp32, plain = int8_loops[name]
    q = quantize_tflite(fp32.data, Precision.INT8, _calib(c), int16_cell=True)
    model = _unpack(q.data)
    loop = _while(model)
    kinds = [model.subgraphs[0].tensors[i].type for i in loop.inputs]
    assert kinds[0] == schema.TensorType.INT32 and set(kinds[1:]) == {INT8}, kinds
    assert len(kinds) == len(_while(_unpack(plain.data)).inputs) + cells, (kinds, q.notes)
    # no int16 in the loop (the main graph's edges may hold some: quantize/edges16.py)
    assert not any(t.type == schema.TensorType.INT16 for g in model.subgraphs[1:] for t in g.tensors)
    if cells:
        assert f"residual cell, {cells} layer(s)" in " ".join(q.notes), q.notes
        assert min(_cosines(c, q.data).values()) >= min(_cosines(c, plain.data).values()) - 1e-3
