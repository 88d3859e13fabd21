"""16x8 TFLite quantization (int16 activations, int8 weights, int64 biases) on the real Seattle forecaster.

Run on the kernels that take it: TFLite Micro's fused LSTM (the host interpreter)
and LiteRT's int16 ops for the loop lowering; the file's tensor types are read
back from the flatbuffer.
"""

from __future__ import annotations

import numpy as np
import pytest

from edge_lstm.errors import DataError, UsageError
from edge_lstm.quantize import quantize_tflite
from edge_lstm.spec import Precision

litert = pytest.importorskip("ai_edge_litert.interpreter")


@pytest.fixture(scope="module")
def lowered(forecaster) -> dict[str, bytes]:
    from edge_lstm.lower.tflite import lower

    return {lw: lower(forecaster.proto, lw).data for lw in ("fused", "loop")}


@pytest.fixture(scope="module")
def arts(lowered, forecaster) -> dict[str, bytes]:
    out = {}
    for lw, data in lowered.items():
        out[lw] = quantize_tflite(data, Precision.INT16X8, calib=forecaster.calib).data
        out[lw + "-int8"] = quantize_tflite(data, Precision.INT8, calib=forecaster.calib, int16_cell=True).data
    return out


def run_litert(data: bytes, windows: np.ndarray) -> np.ndarray:
    from edge_lstm.runners.litert import LiteRTRunner

    outs = []
    with LiteRTRunner(data, prefer="litert") as r:
        for w in windows:
            r.reset_state()
            outs.append(r.infer({"x": w[None]})["y"])
    return np.concatenate(outs).reshape(len(windows), -1)


def run_tflm(data: bytes, windows: np.ndarray) -> np.ndarray:
    pytest.importorskip("tflite_micro")
    from edge_lstm.runners.tflm import TFLMRunner

    outs = []
    with TFLMRunner(data) as r:
        for w in windows:
            r.reset_state()
            outs.append(r.infer({"x": w[None]})["y"])
    return np.concatenate(outs).reshape(len(windows), -1)


def mae(pred: np.ndarray, target: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(pred, np.float64) - target)))


def _types(data: bytes) -> dict[str, set[str]]:
    """Tensor types by role, read from the file: weights, biases, activations (non-constant, quantized)."""
    from edge_lstm.tflite_read import dtype_name, op_name, read

    model = read(data)
    weights = {"FULLY_CONNECTED": (1,), "UNIDIRECTIONAL_SEQUENCE_LSTM": tuple(range(1, 9))}
    biases = {"FULLY_CONNECTED": (2,), "UNIDIRECTIONAL_SEQUENCE_LSTM": (12, 13, 14, 15)}
    out: dict[str, set[str]] = {"weights": set(), "biases": set(), "activations": set(), "ops": set()}
    for g in model.subgraphs:
        const = set()
        for op in g.operators:
            name = op_name(model, op)
            out["ops"].add(name)
            for role, table in (("weights", weights), ("biases", biases)):
                for k in table.get(name, ()):
                    if k < len(op.inputs) and op.inputs[k] >= 0:
                        out[role].add(dtype_name(g.tensors[op.inputs[k]].type))
                        const.add(int(op.inputs[k]))
        for i, t in enumerate(g.tensors):
            if i not in const and t.scale and not model.buffer_sizes[t.buffer]:
                out["activations"].add(dtype_name(t.type))
    return out


@pytest.mark.parametrize("lowering", ["fused", "loop"])
def test_file_has_int16_activations_int8_weights_int64_biases(arts, lowering):
    got = _types(arts[lowering])
    assert got["weights"] == {"int8"}
    assert got["biases"] == {"int64"}
    assert got["activations"] == {"int16"}  # no int8 activation left (the fused cell state is int16 too)


def test_fused_cell_state_scale_is_a_power_of_two(arts):
    from edge_lstm.tflite_read import op_name, read

    model = read(arts["fused"])
    g = model.subgraphs[0]
    cells = [g.tensors[op.inputs[19]] for op in g.operators if op_name(model, op) == "UNIDIRECTIONAL_SEQUENCE_LSTM"]
    assert len(cells) == 2
    for c in cells:
        assert c.is_variable and c.zero_point == [0]
        assert float(np.log2(c.scale[0])).is_integer()


@pytest.mark.parametrize("lowering", ["fused", "loop"])
def test_same_inputs_give_identical_bytes(lowered, forecaster, arts, lowering):
    again = quantize_tflite(lowered[lowering], Precision.INT16X8, calib=forecaster.calib).data
    assert again == arts[lowering]


def test_fused_16x8_on_tflite_micro_matches_pytorch_and_beats_int8(arts, forecaster):
    """16-bit activations: the error against PyTorch is an order of magnitude under int8's."""
    x, ref, y = forecaster.test_x[:400], forecaster.torch_pred[:400], forecaster.test_y[:400]
    got16, got8 = run_tflm(arts["fused"], x), run_tflm(arts["fused-int8"], x)
    err16, err8 = float(np.abs(got16 - ref).max()), float(np.abs(got8 - ref).max())
    assert err16 <= 0.01, err16  # int8's tolerance is relative L2 0.15; 16x8 holds an elementwise 0.01 (normalised)
    assert err16 <= 0.2 * err8, (err16, err8)
    f = mae(ref, y)
    assert mae(got16, y) <= 1.01 * f, (mae(got16, y), f)  # task-metric drop within 1%


def test_fused_16x8_is_refused_by_litert_with_the_kernel_message(arts, forecaster):
    from edge_lstm.quantize.int16x8 import FUSED_LITERT_REFUSAL

    with pytest.raises(Exception, match="INT64 != FLOAT32"):
        run_litert(arts["fused"], forecaster.test_x[:1])
    assert "INT64 != FLOAT32" in FUSED_LITERT_REFUSAL  # the note quotes what the kernel says


def test_loop_16x8_on_litert_matches_pytorch_and_beats_int8(arts, forecaster):
    x, ref, y = forecaster.test_x[:400], forecaster.torch_pred[:400], forecaster.test_y[:400]
    got16, got8 = run_litert(arts["loop"], x), run_litert(arts["loop-int8"], x)
    err16, err8 = float(np.abs(got16 - ref).max()), float(np.abs(got8 - ref).max())
    assert err16 <= 0.01, err16
    assert err16 <= 0.2 * err8, (err16, err8)
    f = mae(ref, y)
    assert mae(got16, y) <= 1.01 * f, (mae(got16, y), f)


def test_loop_16x8_on_tflite_micro_says_which_kernel_refuses(arts, forecaster):
    """TFLite Micro's GATHER has no int16 kernel: the loop's 16x8 artifact is for LiteRT (the fused one for TFLM)."""
    with pytest.raises(RuntimeError, match=r"INT16.*gather|gather.*INT16"):
        run_tflm(arts["loop"], forecaster.test_x[:1])


def test_needs_calibration_and_float_io(lowered):
    with pytest.raises(DataError, match="int16x8 needs calibration"):
        quantize_tflite(lowered["fused"], Precision.INT16X8)
    with pytest.raises(UsageError, match="--io int8 needs --precision int8"):
        quantize_tflite(lowered["fused"], Precision.INT16X8, calib=np.zeros((4, 24, 1), np.float32), io="int8")


def test_a_projected_fused_lstm_is_refused_saying_why(tmp_path):
    """No runtime runs a 16x8 LSTM with a projection (TFLite Micro's kernel has none, LiteRT has no 16x8 fused
    kernel): refused before a file is written."""
    from models import WINDOW, write

    from edge_lstm import capture, load
    from edge_lstm.errors import UnsupportedModel
    from edge_lstm.lower.tflite import lower

    proto = capture.to_onnx(load.load(write("proj_size", "checkpoint", tmp_path)[0]))
    calib = np.random.default_rng(0).standard_normal((32, WINDOW, 1)).astype(np.float32)
    with pytest.raises(UnsupportedModel, match="projection"):
        quantize_tflite(lower(proto, "fused").data, Precision.INT16X8, calib=calib)


def test_an_op_16x8_lacks_outside_the_lstm_does_not_suggest_another_lowering(lowered, forecaster):
    """The refusal names a lowering only when the lowering wrote the op; a model's own op (a ReLU head's RELU: no
    lowering helps; here a planted HARD_SWISH stands for any such op) gets "no other lowering helps"."""
    from edge_lstm.errors import UnsupportedModel
    from edge_lstm.quantize.int16x8 import _check_ops
    from edge_lstm.tflite_schema import unpack

    m = unpack(lowered["loop"])
    ops = {i: "HARD_SWISH" for i in range(len(m.operatorCodes))}
    with pytest.raises(UnsupportedModel) as e:
        _check_ops(m, ops)
    assert "no other lowering helps" in e.value.render() and "--lowering" not in e.value.render(), e.value.render()
    ops = {i: "UNIDIRECTIONAL_SEQUENCE_RNN" for i in range(len(m.operatorCodes))}
    with pytest.raises(UnsupportedModel) as e:
        _check_ops(m, ops)
    assert "--lowering fused or loop" in e.value.render()
