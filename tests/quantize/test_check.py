"""A quantized artifact must hold its weights in its precision: read back from the file, or the export fails."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lower"))

from tflite_models import case

from edge_lstm.errors import UnsupportedModel
from edge_lstm.lower.tflite import lower
from edge_lstm.quantize import quantize_onnx, quantize_tflite
from edge_lstm.quantize.check import ensure_precision, onnx_weights, tflite_weights
from edge_lstm.spec import Precision

onnx = pytest.importorskip("onnx")


@pytest.mark.parametrize("prec", [Precision.FP16, Precision.DYNAMIC_INT8, Precision.INT8])
def test_a_float_file_labelled_quantized_is_refused(prec: Precision) -> None:
    data = lower(case("stacked").proto, "loop").data
    with pytest.raises(UnsupportedModel, match=f"does not hold its weights in {prec.value}") as info:
        ensure_precision("tflite", data, prec)
    assert info.value.exit_code == 5 and "FULLY_CONNECTED" in info.value.message


def test_a_float_onnx_labelled_dynamic_int8_is_refused() -> None:
    data = case("bidirectional").proto.SerializeToString()
    with pytest.raises(UnsupportedModel, match="LSTM"):
        ensure_precision("onnx", data, Precision.DYNAMIC_INT8)


@pytest.mark.parametrize("name", ["bidirectional", "stacked", "all_steps"])
def test_dynamic_int8_onnx_lstms_hold_int8_weights(name: str) -> None:
    q = quantize_onnx(case(name).proto, Precision.DYNAMIC_INT8)
    report = onnx_weights(q.data)
    lstm = {k: v for k, v in report.layers.items() if "LSTM" in k}
    assert lstm and set(lstm.values()) == {"INT8"}


def _constant_weights(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The same graph with every initializer as a Constant node, as some exporters write weights."""
    from onnx import helper

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    consts = [helper.make_node("Constant", [], [i.name], value=i) for i in model.graph.initializer]
    del model.graph.initializer[:]
    nodes = [*consts, *model.graph.node]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def test_lstm_weights_in_constant_nodes_are_quantized_not_left_float() -> None:
    # ONNX Runtime's quantizer skips LSTM weights that are not initializers: the file would hold no int8 weight
    c = case("bidirectional")
    q = quantize_onnx(_constant_weights(c.proto), Precision.DYNAMIC_INT8)
    assert onnx_weights(q.data).share(("INT8",)) > 0.9
    import onnxruntime as ort

    feeds = c.feeds()
    sess = ort.InferenceSession(q.data, providers=["CPUExecutionProvider"])
    got = sess.run(None, feeds)[0]
    ref = c.reference(feeds)["y"]
    assert np.abs(got - ref).max() < 0.05 * max(1.0, np.abs(ref).max())


@pytest.mark.parametrize("prec", [Precision.FP16, Precision.DYNAMIC_INT8])
@pytest.mark.parametrize("lowering", ["fused", "loop"])
def test_tflite_quantizers_report_their_weights(prec: Precision, lowering: str) -> None:
    q = quantize_tflite(lower(case("stacked").proto, lowering).data, prec)
    report = tflite_weights(q.data)
    want = "FLOAT16" if prec is Precision.FP16 else "INT8"
    assert report.share((want,)) > 0.95
