"""Runners: one interface over PyTorch, ONNX Runtime (``.onnx``, ``.ort``), LiteRT / tflite-runtime, TFLite Micro and
ExecuTorch; :mod:`edge_lstm.registry` says which runner runs which format.

Runner modules import their runtime lazily, so a device with numpy and one
runtime can import this package.
"""

from edge_lstm.runners.base import Runner

__all__ = ["Runner"]
