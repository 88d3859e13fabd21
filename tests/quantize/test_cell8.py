"""The residual int8 LSTM cell (quantize/cell8.py) on the tests' real forecaster: what it computes, where it runs.

The loop lowering quantized to full int8 with ``int16_cell`` (what the export pipeline asks for) gets cell8's
cells: every op of the loop body int8 and of a kind XNNPACK takes (LiteRT runs the body as one delegate kernel),
close to PyTorch within the int8 gate, on LiteRT, TFLite Micro and tflite-runtime 2.14, the same bytes each time.
"""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from litert_helpers import first_outputs as _litert

from edge_lstm.lower.tflite import lower
from edge_lstm.quantize import cell8, quantize_tflite
from edge_lstm.spec import Precision
from edge_lstm.tflite_schema import model_op_name, pack, unpack

schema = pytest.importorskip("ai_edge_litert.schema_py_generated")
TT = schema.TensorType
#: the ops of a residual loop body, all with int8 data (int32 for the counter and the gather index)
XNNPACK_INT8 = {"FULLY_CONNECTED", "ADD", "SUB", "MUL", "LOGISTIC", "TANH", "SPLIT", "CONCATENATION", "QUANTIZE",
                "RESHAPE", "GATHER"}


@pytest.fixture(scope="module")
def loop_float(forecaster: Any) -> bytes:
    return lower(forecaster.proto, "loop", precision=Precision.INT8).data


@pytest.fixture(scope="module")
def calib(forecaster: Any) -> np.ndarray:
    """200 training windows, each also shifted by +-0.3: how the export pipeline calibrates (recipe
    calibration_margin); without the shifted copies the held-out winter's colder inputs clip."""
    c = forecaster.calib[np.unique(np.linspace(0, len(forecaster.calib) - 1, 200).round().astype(int))]
    return np.concatenate([c, c - 0.3, c + 0.3]).astype(np.float32)


@pytest.fixture(scope="module")
def residual(loop_float: bytes, calib: np.ndarray) -> Any:
    return quantize_tflite(loop_float, Precision.INT8, calib, int16_cell=True)


def _mae(pred: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(pred, np.float64).ravel() - y.ravel())))


def _close_to_pytorch(got: np.ndarray, ref: np.ndarray) -> None:
    """The int8 gate's output metrics (export/default.toml: cosine >= 0.99, relative L2 <= 0.15), and a relative
    L2 within 0.05 (the residual cell measured 0.019 here)."""
    ref = ref.ravel()
    cos = float(got @ ref / (np.linalg.norm(got) * np.linalg.norm(ref)))
    rel = float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
    assert cos >= 0.99 and rel <= 0.05, (cos, rel)


def test_float_rewrite_computes_the_same_function(loop_float: bytes, forecaster: Any) -> None:
    from edge_lstm.quantize.tflite import _run_all

    model = unpack(loop_float)
    assert cell8.residual_cells(model) == 2 * 4  # two layers, four steps an iteration
    feeds = [[x[None]] for x in forecaster.test_x[:8]]
    ref, got = _run_all(loop_float, feeds)[0], _run_all(pack(model), feeds)[0]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_body_is_int8_ops_xnnpack_takes(residual: Any) -> None:
    model = unpack(residual.data)
    assert cell8.residual_chains(model) == 2
    assert "residual cell, 2 layer(s)" in " ".join(residual.notes)
    for graph in model.subgraphs[1:]:
        for op in graph.operators:
            name = model_op_name(model, op)
            types = {graph.tensors[t].type for t in [*op.inputs, *op.outputs] if t >= 0}
            if name in ("ADD", "LESS") and types <= {TT.INT32, TT.BOOL}:
                continue  # the loop counter
            assert name in XNNPACK_INT8, name
            assert types <= {TT.INT8, TT.INT32}, (name, types)


def test_litert_delegates_the_whole_body(residual: Any) -> None:
    from ai_edge_litert.interpreter import Interpreter

    from edge_lstm.runners.litert import node_details

    model = unpack(residual.data)
    body = copy.deepcopy(model)
    body.subgraphs = [body.subgraphs[2]]  # the loop body as a model of its own: LiteRT lists its partitions
    interp = Interpreter(model_content=pack(body), num_threads=1)
    interp.allocate_tensors()
    kinds = [d["op_name"] for d in node_details(interp)]
    assert kinds.count("DELEGATE") == 1, kinds  # one XNNPACK kernel (the counter and the gather stay builtin)


def test_matches_pytorch_within_the_int8_gate(residual: Any, forecaster: Any) -> None:
    xs, ys, ref = forecaster.test_x[::4], forecaster.test_y[::4], forecaster.torch_pred[::4]
    got = _litert(residual.data, xs)
    _close_to_pytorch(got, ref)
    assert _mae(got, ys) <= 1.03 * _mae(ref, ys), (_mae(got, ys), _mae(ref, ys))  # the recipe's 3% task gate


def test_more_accurate_than_the_quantizers_int8_cell(residual: Any, loop_float: bytes, calib: np.ndarray,
                                                     forecaster: Any) -> None:
    plain = quantize_tflite(loop_float, Precision.INT8, calib)
    xs, ref = forecaster.test_x[::4], forecaster.torch_pred[::4].ravel()
    err = {k: float(np.linalg.norm(_litert(d, xs) - ref)) for k, d in (("residual", residual.data),
                                                                       ("plain", plain.data))}
    assert err["residual"] < 0.9 * err["plain"], err


def test_byte_deterministic(residual: Any, loop_float: bytes, calib: np.ndarray) -> None:
    again = quantize_tflite(loop_float, Precision.INT8, calib, int16_cell=True)
    assert again.data == residual.data


def test_runs_on_tflite_micro(residual: Any, forecaster: Any) -> None:
    pytest.importorskip("tflite_micro")
    from edge_lstm.runners.tflm import TFLMRunner

    xs = forecaster.test_x[::16]
    with TFLMRunner(residual.data) as r:
        got = []
        for x in xs:
            r.reset_state()
            got.append(np.asarray(r.infer({"x": x[None]})["y"]).ravel()[0])
    _close_to_pytorch(np.array(got), forecaster.torch_pred[::16])  # its kernels round differently from LiteRT's


@pytest.mark.skipif(not os.environ.get("EDGE_LSTM_TFLRT_PYTHON"), reason="EDGE_LSTM_TFLRT_PYTHON is not set")
def test_runs_on_tflite_runtime(residual: Any, forecaster: Any, tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        from test_tflite_runtime import _on_tflite_runtime
    finally:
        sys.path.remove(str(Path(__file__).parent))
    xs = forecaster.test_x[::64]
    _close_to_pytorch(_on_tflite_runtime(residual.data, xs, tmp_path).ravel(), forecaster.torch_pred[::64])
