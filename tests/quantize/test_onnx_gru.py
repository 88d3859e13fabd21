"""ONNX dynamic-int8 for GRU and RNN layers: each becomes a Scan of two int8-weight products, runs on ONNX
Runtime and stays close to PyTorch; cells PyTorch does not export stay refused, saying why."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from tflite_models import case, streaming_case

from edge_lstm.errors import UnsupportedModel
from edge_lstm.quantize import quantize_onnx
from edge_lstm.quantize.check import ensure_precision
from edge_lstm.spec import Precision

KINDS = ["gru", "gru_bidirectional", "gru_state_io_seq_first", "gru_wide", "rnn", "rnn_bidirectional_all_steps",
         "rnn_state_io"]


def _run(data: bytes, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, {i.name: feeds[i.name] for i in sess.get_inputs()}), strict=True))


def _recurrent_weights(proto: onnx.ModelProto) -> int:
    inits = {i.name: i for i in proto.graph.initializer}
    return sum(int(np.prod(inits[w].dims)) for n in proto.graph.node if n.op_type in ("GRU", "RNN")
               for w in n.input[1:3])


@pytest.mark.parametrize("name", KINDS)
def test_gru_and_rnn_weights_become_int8_and_outputs_stay_close(name: str) -> None:
    c = case(name)
    art = quantize_onnx(c.proto, Precision.DYNAMIC_INT8)
    model = onnx.load_from_string(art.data)
    assert not any(n.op_type in ("GRU", "RNN") for n in model.graph.node)
    graphs = [model.graph, *(a.g for n in model.graph.node for a in n.attribute if a.type == a.GRAPH)]
    int8 = sum(int(np.prod(i.dims)) for g in graphs for i in g.initializer  # the loop bodies hold them
               if i.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8))
    assert int8 >= _recurrent_weights(c.proto), (int8, _recurrent_weights(c.proto))
    ensure_precision("onnx", art.data, Precision.DYNAMIC_INT8, art.float_layers)  # the pipeline's own check
    assert not any("GRU" in f or "RNN" in f for f in art.float_layers), art.float_layers
    for seed in range(3):
        feeds = c.feeds(seed)
        want, got = c.reference(feeds), _run(art.data, feeds)
        for k, v in want.items():
            err = np.linalg.norm(got[k].reshape(v.shape) - v) / (np.linalg.norm(v) + 1e-9)
            assert err < 0.05, (k, err)


def test_the_streaming_step_quantizes_too() -> None:
    s = streaming_case("gru")
    art = quantize_onnx(s.proto, Precision.DYNAMIC_INT8)
    ref = _run(s.proto.SerializeToString(), feeds := {
        i.name: np.random.default_rng(0).standard_normal([d.dim_value or 1 for d in i.type.tensor_type.shape.dim])
        .astype(np.float32) for i in s.proto.graph.input})
    got = _run(art.data, feeds)
    assert set(got) == set(ref)
    for k, v in ref.items():
        assert np.abs(got[k] - v).max() < 0.05 * (np.abs(v).max() + 1e-6), k


def test_a_gru_pytorch_does_not_export_stays_refused_saying_why() -> None:
    proto = onnx.ModelProto()
    proto.CopyFrom(case("gru").proto)
    for n in proto.graph.node:
        if n.op_type == "GRU":
            for a in n.attribute:
                if a.name == "linear_before_reset":
                    a.i = 0
    with pytest.raises(UnsupportedModel, match=r"linear_before_reset=0 \(PyTorch exports 1\)") as e:
        quantize_onnx(proto, Precision.DYNAMIC_INT8)
    assert e.value.exit_code == 5 and "no quantized GRU or RNN op" in e.value.message


@pytest.mark.parametrize("name", ["gru", "rnn_bidirectional_all_steps"])
def test_the_note_says_why_the_loop_is_slow_from_the_files_own_op_kinds(name: str) -> None:
    """Not a timing: the Scan body's node count and kinds as the file holds them, and the steps the window runs."""
    import re
    from collections import Counter

    c = case(name)
    art = quantize_onnx(c.proto, Precision.DYNAMIC_INT8)
    model = onnx.load_from_string(art.data)
    scans = [n for n in model.graph.node if n.op_type == "Scan"]
    body = next(a.g for a in scans[0].attribute if a.name == "body")
    note = next(n for n in art.notes if "Scan loops" in n)
    kinds = Counter(n.op_type for n in body.node)
    assert f"a body of {len(body.node)} nodes in this file" in note
    assert f"MatMulInteger x{kinds['MatMulInteger']}" in note
    steps = next(t for t in c.model.inputs.inputs).concrete(1)[1]  # batch-first [1, T, features]
    assert f"a {steps}-step window runs the {len(scans)} loop body(ies) {steps} times each" in note
    total = int(re.search(r"([\d,]+) node steps", note).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert total == steps * sum(len(next(a.g for a in s.attribute if a.name == "body").node) for s in scans)
    assert "saves file size, not time" in note and "µs" not in note  # computed from the file, never a timing
