"""Lowerings from the captured ONNX graph to other formats: ``lower.tflite`` writes TFLite flatbuffers itself."""
