"""ONNX capture of every model kind, in every file form, proven equal to PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from models import KINDS, write

from edge_lstm import capture
from edge_lstm.errors import UnsupportedModel
from edge_lstm.load import example_inputs, load
from edge_lstm.runners.onnxrt import OnnxRuntimeRunner
from edge_lstm.runners.torch import TorchRunner

FORMS = ("checkpoint", "torchscript", "pt2")


def _compare(model, proto: onnx.ModelProto, batch: int = 1) -> None:  # type: ignore[no-untyped-def]
    xs = example_inputs(model.inputs, batch=batch, seed=1)
    feed = {t.name: x.numpy() for t, x in zip(model.inputs.inputs, xs, strict=True)}
    ref = TorchRunner(model).infer(feed)
    got = OnnxRuntimeRunner(proto.SerializeToString()).infer(feed)
    assert list(got) == list(ref)
    for name in ref:
        np.testing.assert_allclose(got[name], ref[name], atol=1e-5, rtol=1e-5, err_msg=name)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_exports_equal(kind: str, form: str, tmp_path: Path) -> None:
    path, shapes = write(kind, form, tmp_path)
    model = load(path, shapes if form == "torchscript" else None)
    proto = capture.to_onnx(model)  # a projected LSTM too, in every form: read from the graph
    onnx.checker.check_model(proto, full_check=True)
    ops = capture.op_types(proto)
    cfg = KINDS[kind]
    if cfg.proj_size:  # ONNX's LSTM has no projection: one Scan per layer direction, weights once
        assert "LSTM" not in ops and ops.count("Scan") == cfg.layers
    else:
        assert ("GRU" if cfg.cell == "gru" else "LSTM") in ops
    _compare(model, proto)


@pytest.mark.parametrize("form", ["checkpoint", "torchscript", "pickle"])
@pytest.mark.parametrize("kind", ["stacked", "seq_first", "state_io", "gru_state_io_seq_first"])
def test_batch_axis_is_dynamic(kind: str, form: str, tmp_path: Path) -> None:
    path, shapes = write(kind, form, tmp_path)
    model = load(path, shapes if form != "checkpoint" else None, trust_pickle=True)  # found by probing if not stored
    proto = capture.to_onnx(model)
    io = capture.onnx_io(proto)
    assert all("batch" in dims for dims in io["inputs"].values())
    _compare(model, proto, batch=3)


@pytest.mark.parametrize("kind", ["stacked", "bidirectional", "gru", "all_steps", "state_io", "proj_size"])
def test_streaming_step_by_step_equals_whole_window(kind: str, tmp_path: Path) -> None:
    from edge_lstm.feeds import stream_window

    model = load(write(kind, "checkpoint", tmp_path)[0])
    if KINDS[kind].bidirectional:
        with pytest.raises(UnsupportedModel, match="bidirectional"):
            capture.streaming_model(model)
        return
    step = capture.streaming_model(model)
    assert step.inputs.inputs[0].concrete(1)[1] == 1
    runner = OnnxRuntimeRunner(step.proto.SerializeToString())
    xs = example_inputs(model.inputs, seed=2)
    feed = {t.name: x.numpy() for t, x in zip(model.inputs.inputs, xs, strict=True)}
    ref = TorchRunner(model).infer(feed)
    with runner:
        got = stream_window(runner, step, feed)
    for name in ref:
        np.testing.assert_allclose(got[name], ref[name], atol=1e-5, rtol=1e-5, err_msg=name)


def test_unexportable_model_is_exit_5(tmp_path: Path) -> None:
    import torch

    class Fft(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.fft.rfft(x, dim=1).abs()

    p = tmp_path / "fft.pt"
    torch.jit.trace(Fft(), torch.randn(1, 8, 1)).save(str(p))
    model = load(p, [(1, 8, 1)])
    with pytest.raises(UnsupportedModel) as e:
        capture.to_onnx(model)
    assert e.value.exit_code == 5


def test_an_invalid_captured_graph_is_refused_naming_the_checker_error() -> None:
    """A node with an empty required input (the error once seen on a residual head) is exit 5, not exit 1."""
    from onnx import TensorProto, helper

    node = helper.make_node("Add", ["", "x"], ["y"], name="skip_add")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])])
    with pytest.raises(UnsupportedModel, match="invalid") as info:
        capture.check(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert info.value.exit_code == 5 and "onnx.checker" in info.value.message


@pytest.mark.parametrize("form", ["torchscript", "pt2", "pickle"])
def test_residual_heads_capture_a_valid_graph(form: str, tmp_path: Path) -> None:
    import torch
    import zoo

    path, shapes = zoo.save("residual", form, tmp_path)
    model = load(path, shapes if form != "pt2" else None, trust_pickle=True)
    proto = capture.to_onnx(model)
    x = zoo.ZOO["residual"].example(4)[0]
    with torch.no_grad():
        ref = zoo.build("residual")(x).numpy()
    import onnxruntime as ort

    got = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {model.inputs.names[0]: x.numpy()})[0]
    np.testing.assert_allclose(got, ref, atol=1e-5)
