"""Input checks on the captured graph: a rank or feature size the model's first layer does not take is exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import zoo

from edge_lstm.errors import ShapeError
from edge_lstm.load import load
from edge_lstm.pipeline import prepare


@pytest.mark.parametrize(("name", "given", "axes", "fits"), [
    ("residual", (1, 12, 1, 1), "(batch, time, features), 1 feature(s)", "1x12x1"),
    ("multi_horizon", (1, 48, 1, 1, 1), "(batch, time, features), 1 feature(s)", "1x48x1"),
    ("time_major", (12, 1, 2, 1), "(time, batch, features), 2 feature(s)", "12x1x2"),
    ("gru_layernorm", (1, 16, 2, 1), "(batch, time, features), 2 feature(s)", "1x16x2"),
])
def test_an_extra_axis_names_the_layer_and_the_shape_it_takes(name: str, given: tuple[int, ...], axes: str,
                                                               fits: str, tmp_path: Path) -> None:
    path, _ = zoo.save(name, "torchscript", tmp_path)
    with pytest.raises(ShapeError) as e:  # the traced graph runs on it; the exporter may die on it (5-D)
        prepare(load(path, [given]), streaming=False)
    assert f"takes 3 axes {axes} per time step" in e.value.message
    assert ("GRU layer" if name.startswith("gru") else "LSTM layer") in e.value.message
    assert e.value.hint == f"Pass --input-shape {fits}."


def test_a_torchscript_error_is_the_models_own_line_not_the_interpreter_banner(tmp_path: Path) -> None:
    path, _ = zoo.save("cnn_lstm", "torchscript", tmp_path)
    with pytest.raises(ShapeError, match="Expected 3-dimensional input for 3-dimensional weight") as e:
        load(path, [(1, 32, 6, 1)])
    assert "TorchScript interpreter" not in e.value.message


def test_the_captured_graph_check_names_the_layer_too(tmp_path: Path) -> None:
    """The ONNX-side check (an ONNX file made elsewhere, or a rank the TorchScript walk cannot follow)."""
    from edge_lstm.checks import check_inputs
    from edge_lstm.spec import TensorSpec

    model = load(zoo.save("residual", "torchscript", tmp_path)[0], [(1, 12, 1)])
    proto = prepare(model, streaming=False)[0]
    with pytest.raises(ShapeError, match=r"LSTM layer \('/lstm/LSTM'\) takes 3 axes \(batch, time, features\)") as e:
        check_inputs(proto, (TensorSpec("x", ("batch", 12, 1, 1)),))
    assert e.value.hint == "Pass --input-shape 1x12x1."
