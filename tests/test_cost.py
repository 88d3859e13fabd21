"""Static cost: parameters and MACs from the graph agree with the layer arithmetic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from profile_models import fc_tflite, loaded, write_onnx

from edge_lstm import archs, capture
from edge_lstm.cost import artifact_format, cost_of, onnx_cost, onnx_sizes
from edge_lstm.errors import InputFileError


def _torch_params(model: object) -> int:
    return sum(int(p.numel()) for p in model.module.parameters())  # type: ignore[attr-defined]


def test_reference_forecaster_params_and_macs() -> None:
    model = loaded(archs.ArchConfig())
    cost = onnx_cost(capture.to_onnx(model))
    assert cost.params == _torch_params(model) == 50_497
    per_step = 4 * 64 * (1 + 64) + 4 * 64 * (64 + 64)
    assert cost.macs_per_step == per_step
    assert cost.macs == 96 * per_step + 64
    assert cost.time_steps == 96 and cost.precision == "fp32"
    assert cost.weight_bytes_by_precision["fp32"] == 4 * cost.params
    assert cost.weight_bytes_by_precision["int8"] == cost.params


def test_bidirectional_gru_with_layernorm() -> None:
    cfg = archs.ArchConfig(cell="gru", bidirectional=True, layernorm=True, hidden=32, n_features=3, n_outputs=2)
    model = loaded(cfg, window=20)
    cost = onnx_cost(capture.to_onnx(model))
    assert cost.params == _torch_params(model)
    per_step = 2 * 3 * 32 * (3 + 32) + 2 * 3 * 32 * (64 + 32)
    assert cost.macs == 20 * per_step + 64 * 2
    ln = [layer for layer in cost.layers if layer.op == "LayerNormalization"]
    assert len(ln) == 1 and ln[0].elementwise_ops > 0 and ln[0].params == 128


def test_streaming_variant_costs_one_step() -> None:
    model = loaded(archs.ArchConfig(hidden=16, layers=1), window=10)
    window = onnx_cost(capture.to_onnx(model))
    step = onnx_cost(capture.to_onnx(capture.streaming_model(model)))
    assert step.time_steps == 1
    assert step.macs_per_step == window.macs_per_step == step.macs - 16


def test_onnx_sizes_split(tmp_path: Path) -> None:
    path = write_onnx(tmp_path / "m.onnx")
    sizes = onnx_sizes(path)
    assert sizes["file_bytes"] == path.stat().st_size
    assert sizes["weights_bytes"] + sizes["graph_bytes"] == sizes["file_bytes"]
    assert 4 * 50_497 <= sizes["weights_bytes"] < sizes["file_bytes"]


def test_tflite_fully_connected(tmp_path: Path) -> None:
    path = tmp_path / "fc.tflite"
    path.write_bytes(fc_tflite(4, 3))
    assert artifact_format(path) == "tflite"
    cost = cost_of(path)
    assert cost is not None
    assert (cost.params, cost.macs, cost.weight_bytes, cost.precision) == (15, 12, 60, "fp32")


def test_not_a_model(tmp_path: Path) -> None:
    bad = tmp_path / "notes.onnx"
    bad.write_text("these are notes, not a model\n" * 10)
    with pytest.raises(InputFileError, match="not a model"):
        artifact_format(bad)
    with pytest.raises(InputFileError, match="does not exist"):
        artifact_format(tmp_path / "missing.onnx")
    rng = np.random.default_rng(0)
    noise = tmp_path / "noise.bin"
    noise.write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(InputFileError):
        artifact_format(noise)


@pytest.mark.parametrize("cfg", [archs.ArchConfig(), archs.ArchConfig(cell="gru", hidden=32, layers=2),
                                 archs.ArchConfig(hidden=16, layers=2, proj_size=6),
                                 archs.ArchConfig(cell="rnn", hidden=16, layers=2)])
def test_every_lowering_costs_what_the_onnx_graph_costs(cfg: archs.ArchConfig) -> None:
    """A loop body counts once per iteration and its weights once; the fused ops count T steps."""
    from edge_lstm.cost_tflite import tflite_cost
    from edge_lstm.lower.tflite import lower

    proto = capture.to_onnx(loaded(cfg))
    ref = onnx_cost(proto)
    for lowering in ("fused", "loop"):
        cost = tflite_cost(lower(proto, lowering).data)
        assert cost.macs == ref.macs and cost.time_steps == ref.time_steps, lowering
        assert cost.macs_per_step == ref.macs_per_step, lowering
        # the two biases of each gate are stored summed, and a loop keeps its zero initial states: within 5%,
        # where a weight counted per step or per reader would double it
        assert abs(cost.params - ref.params) <= 0.05 * ref.params, lowering
