"""Runners: one interface over PyTorch, ONNX Runtime, LiteRT / tflite-runtime and TFLite Micro.

Runner modules import their runtime lazily, so a device with numpy and one
runtime can import this package.
"""

from edge_lstm.runners.base import Runner

__all__ = ["Runner"]
