"""Float <-> integer conversion at a model's edges, for int8-I/O artifacts (numpy only).

A full-integer TFLite model built with ``io="int8"`` takes and returns int8
tensors; callers that hold float32 data quantize inputs with the input tensor's
scale and zero point, and dequantize outputs with the output's. Runners and
device-side code use these so that a float32 feed works with any artifact.
"""

from __future__ import annotations

import numpy as np

_RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}


def quantize_input(arr: np.ndarray, dtype: str, scale: float, zero_point: int) -> np.ndarray:
    """``round(x / scale) + zero_point``, saturated to ``dtype``'s range (TFLite's affine rule)."""
    if dtype not in _RANGES:
        raise ValueError(f"cannot quantize to {dtype}; supported: {', '.join(_RANGES)}")
    if scale <= 0:
        raise ValueError(f"quantization scale must be positive, got {scale}")
    lo, hi = _RANGES[dtype]
    q = np.round(np.asarray(arr, dtype=np.float64) / scale) + zero_point
    return np.clip(q, lo, hi).astype(dtype)


def dequantize_output(arr: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """``(q - zero_point) * scale`` as float32."""
    return ((np.asarray(arr, dtype=np.float32) - np.float32(zero_point)) * np.float32(scale)).astype(np.float32)


def to_model(arr: np.ndarray, dtype: str, quant: tuple[float, int] | None) -> np.ndarray:
    """Feed ``arr`` to a tensor of ``dtype``: quantized when the tensor is integer with a scale and ``arr`` is float."""
    if quant is not None and quant[0] > 0 and dtype in _RANGES and np.asarray(arr).dtype.kind == "f":
        return quantize_input(arr, dtype, quant[0], quant[1])
    return np.ascontiguousarray(arr, dtype=dtype)


def from_model(arr: np.ndarray, quant: tuple[float, int] | None) -> np.ndarray:
    """An output as float32: dequantized when the tensor is integer with a scale, else unchanged."""
    if quant is not None and quant[0] > 0 and np.asarray(arr).dtype.kind in "iu":
        return dequantize_output(arr, quant[0], quant[1])
    return np.asarray(arr)
