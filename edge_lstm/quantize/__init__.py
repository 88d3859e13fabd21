"""Quantize exported artifacts: ONNX (fp16, dynamic int8) and TFLite (fp16, dynamic int8, int8, int16x8).

Each quantizer takes a float artifact and returns a :class:`QuantizedArtifact`
whose weights were read back and found in the precision asked for
(:mod:`edge_lstm.quantize.check`); nothing here writes files (the pipeline does).
They work on whole-window and on streaming (one-step) graphs alike. Heavy dependencies (onnx,
onnxruntime, ai-edge-litert) are imported when a quantizer is called, so
``edge_lstm.runners.quant_io`` (float <-> int8 at the edges) stays usable on a device with only numpy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edge_lstm.quantize.artifact import QuantizedArtifact

if TYPE_CHECKING:
    import numpy as np
    import onnx

    from edge_lstm.quantize.calibration import CalibrationSet
    from edge_lstm.spec import Precision

__all__ = ["QuantizedArtifact", "quantize_onnx", "quantize_tflite"]


def quantize_onnx(proto: onnx.ModelProto, precision: Precision) -> QuantizedArtifact:
    """Quantize an ONNX float model; see :func:`edge_lstm.quantize.onnx.quantize_onnx`."""
    import edge_lstm.quantize.onnx as _onnx
    from edge_lstm.quantize.check import ensure_precision

    q = _onnx.quantize_onnx(proto, precision)
    ensure_precision("onnx", q.data, q.precision, q.float_layers)
    return q


def quantize_tflite(
    float_tflite: bytes,
    precision: Precision,
    calib: np.ndarray | dict[str, np.ndarray] | CalibrationSet | None = None,
    io: str = "float",
    **kwargs: Any,
) -> QuantizedArtifact:
    """Quantize a float TFLite model; see :func:`edge_lstm.quantize.tflite.quantize_tflite`, and
    :func:`edge_lstm.quantize.int16x8.to_int16x8` for int16x8 (which widens the int8 model, so it sits above)."""
    import edge_lstm.quantize.tflite as _tflite
    from edge_lstm.quantize.check import ensure_precision

    if _tflite.check_request(precision, io, calib).value == "int16x8":
        from edge_lstm.quantize.int16x8 import to_int16x8

        q = to_int16x8(float_tflite, calib, kwargs.get("count", _tflite.DEFAULT_COUNT))
    else:
        q = _tflite.quantize_tflite(float_tflite, precision, calib=calib, io=io, **kwargs)
    ensure_precision("tflite", q.data, q.precision, q.float_layers)
    return q
