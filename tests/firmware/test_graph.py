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
    "proj_size": "no LSTM, GRU or RNN layer",  # captured as explicit per-step cells, with no recurrent node
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
    with HostModel(code.header, code.source, "model", prog.n_input, prog.window, prog.step_output_size,
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
