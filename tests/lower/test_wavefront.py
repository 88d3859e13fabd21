"""The dynamic-int8 loop: a stacked LSTM pair as one wavefront cell (edge_lstm/lower/tflite/wavefront.py)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema
from tflite_models import KINDS, assert_close, case

from edge_lstm.lower.tflite import lower
from edge_lstm.lower.tflite.loop import LoopLayer, pairable
from edge_lstm.lower.tflite.wavefront import combine, step0_feature
from edge_lstm.quantize import quantize_tflite
from edge_lstm.runners.litert import LiteRTRunner
from edge_lstm.spec import Precision

OP = schema.BuiltinOperator


def _run(data: bytes, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    with LiteRTRunner(data) as r:
        r.reset_state()
        return r.infer({k: feeds[k] for k in r.input_names})


def _body_ops(data: bytes) -> list[int]:
    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    return [codes[op.opcodeIndex] for op in model.subgraphs[-1].operators]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-z)))


def test_combined_cell_keeps_the_upper_layer_at_zero_on_step_0_and_then_follows_it() -> None:
    rng = np.random.default_rng(0)
    h1, h2, i = 3, 2, 2
    w1, r1, b1 = rng.normal(size=(4 * h1, i)), rng.normal(size=(4 * h1, h1)), rng.normal(size=4 * h1)
    w2, r2, b2 = rng.normal(size=(4 * h2, h1)), rng.normal(size=(4 * h2, h2)), rng.normal(size=4 * h2)
    pair = combine(*(a.astype(np.float32) for a in (w1, r1, b1, w2, r2, b2)))

    def cell(x: np.ndarray, h: np.ndarray, c: np.ndarray, w: np.ndarray, r: np.ndarray, b: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
        z = w @ x + r @ h + b
        n = len(h)
        gi, go, gf, gc = (z[k * n : (k + 1) * n] for k in range(4))  # ONNX order i, o, f, c
        c = _sigmoid(gf) * c + _sigmoid(gi) * np.tanh(gc)
        return _sigmoid(go) * np.tanh(c), c

    xs = rng.normal(size=(5, i)).astype(np.float32)
    feature = step0_feature(len(xs), 1)
    hc, cc = np.zeros(h1 + h2), np.zeros(h1 + h2)
    ha, ca, hb, cb = np.zeros(h1), np.zeros(h1), np.zeros(h2), np.zeros(h2)
    for t in range(len(xs) + 1):
        x = np.concatenate([xs[t] if t < len(xs) else np.zeros(i), feature[t]])
        hc, cc = cell(x, hc, cc, pair.w, pair.r, pair.b)
        if t == 0:
            assert not np.any(hc[h1:]) and not np.any(cc[h1:])  # exactly zero: tanh(b - b) = 0
        if t > 0:  # the upper layer's step t-1, from the lower layer's output of step t-1
            hb, cb = cell(ha, hb, cb, w2, r2, b2)
            np.testing.assert_allclose(hc[h1:], hb, rtol=1e-5, atol=1e-6)
        if t < len(xs):
            ha, ca = cell(xs[t], ha, ca, w1, r1, b1)
            np.testing.assert_allclose(hc[:h1], ha, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["stacked", "reference"])
def test_dynamic_int8_loop_runs_the_pair_as_one_cell(name: str) -> None:
    c = case(name)
    plain = lower(c.proto, "loop")
    paired = lower(c.proto, "loop", precision=Precision.DYNAMIC_INT8)
    assert paired.op_counts["WHILE"] == 1
    body = _body_ops(paired.data)
    steps = body.count(OP.LOGISTIC)
    assert body.count(OP.FULLY_CONNECTED) == steps  # one recurrent product a step for both layers
    apart = _body_ops(plain.data)  # two cells a time step, and the upper layer's input product
    assert apart.count(OP.FULLY_CONNECTED) / (apart.count(OP.LOGISTIC) / 2) > 1
    for seed in (0, 1):
        feeds = c.feeds(seed)
        assert_close(_run(paired.data, feeds), c.reference(feeds))  # float: the fp32 tolerance
        hybrid = quantize_tflite(paired.data, Precision.DYNAMIC_INT8).data
        ref = c.reference(feeds)
        for name_, got in _run(hybrid, feeds).items():
            scale = float(np.abs(ref[name_]).max()) or 1.0
            assert float(np.abs(got - ref[name_]).max()) < 0.02 * scale


def test_the_pair_cell_applies_each_activation_only_to_its_gates() -> None:
    """The pair's step slices the gates first: LOGISTIC reads i, f, o (3 x 128 values) and TANH the cell gate
    (128), not all 512 each (the plain loop's cell, whose ops are counted by XNNPACK's per-op cost)."""
    c = case("reference")
    model = schema.ModelT.InitFromPackedBuf(bytearray(lower(c.proto, "loop", precision=Precision.DYNAMIC_INT8).data),
                                            0)
    codes = [max(oc.builtinCode, oc.deprecatedBuiltinCode) for oc in model.operatorCodes]
    body = model.subgraphs[-1]
    width = {code: sorted({int(np.prod(body.tensors[op.inputs[0]].shape)) for op in body.operators
                           if codes[op.opcodeIndex] == code}) for code in (OP.LOGISTIC, OP.TANH)}
    n = 4 * 128  # the combined cell's gates: 2 x 64 units, 4 gates
    assert width[OP.LOGISTIC] == [3 * n // 4]
    assert width[OP.TANH] == [n // 4]  # the cell gate, and the cell state (the same width)
    plain = schema.ModelT.InitFromPackedBuf(bytearray(lower(c.proto, "loop").data), 0)
    pcodes = [max(oc.builtinCode, oc.deprecatedBuiltinCode) for oc in plain.operatorCodes]
    pbody = plain.subgraphs[-1]
    assert {int(np.prod(pbody.tensors[op.inputs[0]].shape)) for op in pbody.operators
            if pcodes[op.opcodeIndex] == OP.LOGISTIC} == {4 * 64}  # float keeps its cell (measured no faster)


def test_dynamic_int8_loop_keeps_the_layers_apart_where_more_than_the_top_h_is_read() -> None:
    for name in ("all_steps", "gru"):
        if name not in KINDS:
            continue
        c = case(name)
        assert lower(c.proto, "loop", precision=Precision.DYNAMIC_INT8).data == lower(c.proto, "loop").data


def test_hybrid_weights_shared_between_the_loop_and_its_last_step_are_stored_once() -> None:
    c = case("reference")
    paired = lower(c.proto, "loop", precision=Precision.DYNAMIC_INT8).data
    hybrid = quantize_tflite(paired, Precision.DYNAMIC_INT8).data
    assert len(hybrid) < 0.4 * len(paired)
    assert quantize_tflite(paired, Precision.DYNAMIC_INT8).data == hybrid  # deterministic
    assert lower(c.proto, "loop", precision=Precision.DYNAMIC_INT8).data == paired


def test_only_small_pairs_run_as_one_cell() -> None:
    def layer(h: int, i: int) -> LoopLayer:
        return LoopLayer("lstm", h, np.zeros((4 * h, i), np.float32), np.zeros(4 * h, np.float32),
                         np.zeros((4 * h, h), np.float32), None, False, None, None)

    assert pairable([layer(64, 1), layer(64, 64)])  # the reference forecaster: 64 KiB of int8 combined weights
    assert not pairable([layer(128, 1), layer(128, 128)])
    assert not pairable([layer(16, 1), layer(16, 16), layer(16, 16)])


@pytest.mark.skipif(not os.environ.get("EDGE_LSTM_TFLRT_PYTHON"),
                    reason="EDGE_LSTM_TFLRT_PYTHON is not set (make test creates .venv-tflrt with tflite-runtime 2.14)")
def test_dynamic_int8_pair_runs_on_tflite_runtime(tmp_path: Path) -> None:
    """tflite-runtime 2.14 (what Raspberry Pi images ship) runs the pair's hybrid artifact like LiteRT does."""
    c = case("reference")
    hybrid = quantize_tflite(lower(c.proto, "loop", precision=Precision.DYNAMIC_INT8).data,
                             Precision.DYNAMIC_INT8).data
    feeds = [c.feeds(seed) for seed in range(3)]
    (tmp_path / "m.tflite").write_bytes(hybrid)
    np.savez(tmp_path / "feed.npz", x=np.stack([f["x"] for f in feeds]))
    cmd = [os.environ["EDGE_LSTM_TFLRT_PYTHON"], "-m", "edge_lstm.device", str(tmp_path / "m.tflite"), "--inputs",
           str(tmp_path / "feed.npz"), "--outputs", str(tmp_path / "out.npz"), "--runtime", "tflite-runtime"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with np.load(tmp_path / "out.npz") as z:
        got = {k: z[k] for k in z.files}
    for n, f in enumerate(feeds):
        for name, want in _run(hybrid, f).items():
            np.testing.assert_allclose(got[name][n].reshape(want.shape), want, atol=1e-4)
