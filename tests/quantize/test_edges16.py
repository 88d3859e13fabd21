"""The full-int8 loop's edges (quantize/edges16.py) on real forecasters: the input projection reads the input split
into its int8 value and its rounding residual, the head is 16x8; the loop body is untouched (one XNNPACK kernel), the
error against PyTorch is smaller, and LiteRT, TFLite Micro and tflite-runtime 2.14 run the file."""

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


def _calib(f: Any) -> np.ndarray:
    """200 training windows, each also shifted by +-0.3 (the export pipeline's calibration)."""
    c = f.calib[np.unique(np.linspace(0, len(f.calib) - 1, 200).round().astype(int))]
    return np.concatenate([c, c - 0.3, c + 0.3]).astype(np.float32)


def _pair(f: Any, **kw: Any) -> tuple[bytes, bytes]:
    """(int8 edges, 16-bit edges) full-int8 loop models of forecaster ``f``."""
    loop = lower(f.proto, "loop", precision=Precision.INT8).data
    calib = _calib(f)
    plain = quantize_tflite(loop, Precision.INT8, calib, int16_cell=True, wide_edges=False, **kw).data
    wide = quantize_tflite(loop, Precision.INT8, calib, int16_cell=True, **kw).data
    return plain, wide


@pytest.fixture(scope="module")
def pair(forecaster: Any) -> tuple[bytes, bytes]:
    return _pair(forecaster)


@pytest.fixture(scope="module")
def int16_pair(forecaster: Any) -> tuple[bytes, bytes]:
    """The same with the int16 cell (cell16.py) instead of the residual int8 one."""
    return _pair(forecaster, residual=False)


def _rms(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(got, np.float64).ravel() - ref.ravel()) ** 2)))


def _ops(model: Any, graph: Any) -> list[str]:
    return [model_op_name(model, op) for op in graph.operators]


def test_only_the_main_graph_changes(pair: tuple[bytes, bytes]) -> None:
    plain, wide = (unpack(d) for d in pair)
    for a, b in zip(plain.subgraphs[1:], wide.subgraphs[1:], strict=True):  # the loop's condition and body
        assert _ops(plain, a) == _ops(wide, b)
        assert [t.type for t in a.tensors] == [t.type for t in b.tensors]
    main = wide.subgraphs[0]
    fcs = [op for op in main.operators if model_op_name(wide, op) == "FULLY_CONNECTED"]
    assert len(fcs) == 2
    proj, head = fcs
    x, w = main.tensors[proj.inputs[0]], main.tensors[proj.inputs[1]]
    assert x.type == w.type == TT.INT8 and int(w.shape[1]) == 2  # [x_hi, K x_lo] against [W, W / K]: one feature
    assert model_op_name(wide, next(op for op in main.operators if proj.inputs[0] in op.outputs)) == "CONCATENATION"
    assert main.tensors[head.inputs[0]].type == main.tensors[head.outputs[0]].type == TT.INT16
    assert main.tensors[head.inputs[2]].type == TT.INT64
    assert cell8.residual_chains(wide) == 2


def test_the_body_is_still_one_xnnpack_kernel(pair: tuple[bytes, bytes]) -> None:
    from ai_edge_litert.interpreter import Interpreter

    model = unpack(pair[1])
    body = copy.deepcopy(model)
    body.subgraphs = [body.subgraphs[2]]
    interp = Interpreter(model_content=pack(body), num_threads=1)
    interp.allocate_tensors()
    assert [d["op_name"] for d in interp._get_ops_details()].count("DELEGATE") == 1


def _closer(plain: bytes, wide: bytes, f: Any) -> tuple[float, float]:
    xs, ref = f.test_x[::4], f.torch_pred[::4]
    return _rms(_litert(plain, xs), ref), _rms(_litert(wide, xs), ref)


def test_closer_to_pytorch(pair: tuple[bytes, bytes], forecaster: Any) -> None:
    before, after = _closer(*pair, forecaster)
    assert after < 0.95 * before, (before, after)


def test_closer_to_pytorch_on_a_three_layer_stack(three_layers: Any) -> None:
    plain, wide = _pair(three_layers)
    before, after = _closer(plain, wide, three_layers)
    assert after < before, (before, after)


def test_int16_cell_gets_the_edges_too(int16_pair: tuple[bytes, bytes], forecaster: Any) -> None:
    plain, wide = int16_pair
    assert not cell8.residual_chains(unpack(wide))
    before, after = _closer(plain, wide, forecaster)
    assert after < before, (before, after)


def test_byte_deterministic(pair: tuple[bytes, bytes], forecaster: Any) -> None:
    assert _pair(forecaster)[1] == pair[1]


@pytest.mark.parametrize("cell", ["residual", "int16"])
def test_runs_on_tflite_micro(cell: str, forecaster: Any, request: pytest.FixtureRequest) -> None:
    """Both cells, and the export validates both there: TFLite Micro has their kernels (the int16 cell's int8 ->
    int16 CASTs included)."""
    pytest.importorskip("tflite_micro")
    from edge_lstm.lower.tflite.support import micro_blockers
    from edge_lstm.runners.tflm import TFLMRunner

    data = request.getfixturevalue("pair" if cell == "residual" else "int16_pair")[1]
    assert micro_blockers(data) == []
    xs, ref = forecaster.test_x[::16], forecaster.torch_pred[::16]
    with TFLMRunner(data) as r:
        got = []
        for x in xs:
            r.reset_state()
            got.append(np.asarray(r.infer({"x": x[None]})["y"]).ravel()[0])
    assert _rms(np.array(got), ref) <= 0.05 * float(np.sqrt(np.mean(ref ** 2)))  # the int8 gate's rel L2 is 0.15


@pytest.mark.skipif(not os.environ.get("EDGE_LSTM_TFLRT_PYTHON"), reason="EDGE_LSTM_TFLRT_PYTHON is not set")
def test_runs_on_tflite_runtime(pair: tuple[bytes, bytes], forecaster: Any, tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        from test_tflite_runtime import _on_tflite_runtime
    finally:
        sys.path.remove(str(Path(__file__).parent))
    xs, ref = forecaster.test_x[::64], forecaster.torch_pred[::64]
    got = _on_tflite_runtime(pair[1], xs, tmp_path).ravel()
    assert _rms(got, ref) <= 0.05 * float(np.sqrt(np.mean(ref ** 2)))
