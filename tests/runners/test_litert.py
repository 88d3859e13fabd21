"""LiteRTRunner on ai-edge-litert: I/O specs, XNNPACK on and off, variable-state reset, feed checks."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lower"))

from tflite_models import assert_close, case

from edge_lstm.errors import ShapeError
from edge_lstm.lower.tflite import lower
from edge_lstm.runners.litert import LiteRTRunner


@pytest.fixture(scope="module")
def fused() -> bytes:
    return lower(case("stacked").proto, "fused").data


def test_specs_runtime_and_version(fused: bytes) -> None:
    with LiteRTRunner(fused) as r:
        assert r.runtime == "litert"
        assert r.input_names == ["x"] and r.output_names == ["y"]
        assert r.inputs[0].shape == (1, 12, 3) and r.inputs[0].dtype == "float32"
        assert r.version().startswith("ai-edge-litert ")
        assert r.load_time_s > 0


@pytest.mark.parametrize("xnnpack", [True, False])
def test_runs_from_a_file_with_and_without_xnnpack(fused: bytes, tmp_path: Path, xnnpack: bool) -> None:
    path = tmp_path / "m.tflite"
    path.write_bytes(fused)
    c = case("stacked")
    feeds = c.feeds()
    with LiteRTRunner(path, threads=1, xnnpack=xnnpack) as r:
        assert_close(r.infer(feeds), c.reference(feeds))
        assert len(r.latencies_s) == 1


def test_variable_state_persists_until_reset(fused: bytes) -> None:
    c = case("stacked")
    feeds = c.feeds()
    with LiteRTRunner(fused) as r:
        first = r.infer(feeds)["y"]
        carried = r.infer(feeds)["y"]  # starts from the first window's final state
        r.reset_state()
        again = r.infer(feeds)["y"]
    assert not np.allclose(first, carried, atol=1e-6)
    np.testing.assert_array_equal(first, again)


def test_feed_is_checked_and_cast(fused: bytes) -> None:
    c = case("stacked")
    feeds = c.feeds()
    with LiteRTRunner(fused) as r:
        with pytest.raises(ShapeError, match="shape"):
            r.infer({"x": np.zeros((1, 11, 3), np.float32)})
        with pytest.raises(ShapeError, match="feed has inputs"):
            r.infer({"x": feeds["x"], "extra": feeds["x"]})
        r.reset_state()
        as_f64 = r.infer({"x": feeds["x"].astype(np.float64)})
    assert_close(as_f64, c.reference(feeds))


def test_unknown_preferred_runtime() -> None:
    with pytest.raises(ValueError, match="unknown TFLite runtime"):
        LiteRTRunner(b"", prefer="tflite-gpu")
