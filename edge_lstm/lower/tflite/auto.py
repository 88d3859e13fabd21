"""The ``auto`` lowering: fused for TFLite Micro, streaming and full int8 (the loop for full int8 on LiteRT), else
the loop.

The choice is a rule over the model and the request, never a timing, so the
same inputs give the same artifact on every machine (an earlier version timed
both forms on LiteRT and kept the faster, which made the artifact depend on the
machine that ran the export and its load at that moment).

* TFLite Micro targets get the fused form: it is the form TFLite Micro has
  kernels for and the smallest graph.
* A model the fused op cannot express (GRU, RNN, projections, ...) gets the loop.
* Streaming takes the fused form: its state lives in variable tensors, so the
  artifact maps x -> y, which is what device code calls once per reading.
* Full int8 for a target that runs LiteRT or tflite-runtime (a Raspberry Pi, a
  phone; ``litert``) takes the loop: its fully-connected ops are int8, which
  XNNPACK runs, and its cell state and gate arithmetic int16
  (:mod:`edge_lstm.quantize.cell16`), while TFLite's fused integer LSTM kernel is
  not delegated: ~10x slower on the reference forecaster (``benchmarks/int8.py``).
* Other full int8 (no target) takes the fused form, which both LiteRT and TFLite
  Micro run, with a note naming the faster LiteRT form.
* Otherwise (float32, float16, dynamic int8 on LiteRT) the loop: on the
  reference forecaster (2 x LSTM(64), window 96) LiteRT ran it at 1.46x ONNX
  Runtime's time against 2.46x for the fused form, and it wins on every
  2-layer LSTM the benchmark measured (``benchmarks/tflite.py``; README,
  Benchmark). ``--lowering fused`` pins the other form.
"""

from __future__ import annotations

import onnx

from edge_lstm.lower.tflite.build import build, with_reason
from edge_lstm.lower.tflite.result import LoweredTFLite


def choose(proto: onnx.ModelProto, streaming: bool, micro: bool, int8: bool, litert: bool = False) -> LoweredTFLite:
    """The ``auto`` lowering of ``proto``; see the module docstring (``litert``: the target runs LiteRT or
    tflite-runtime, not TFLite Micro)."""
    fused = build(proto, "fused", streaming, int8=int8, micro=micro)
    if micro:
        partly = "" if fused.lowering == "fused" else f" (as {fused.lowering}: some layers cannot be fused)"
        return with_reason(fused, "auto", "auto: fused for TFLite Micro, which has fused LSTM kernels" + partly)
    if fused.lowering != "fused":
        loop = build(proto, "loop", streaming, int8=int8, micro=micro)
        why = "no layer the fused op can express" if "fused" not in fused.lowering else "some layers cannot be fused"
        return with_reason(loop, "auto", f"auto: loop ({why})")
    if streaming:
        return with_reason(fused, "auto", "auto: fused for streaming (state in variable tensors, x -> y)")
    if int8 and not litert:
        return with_reason(fused, "auto", "auto: fused for full int8, which LiteRT and TFLite Micro both run; for "
                                          "LiteRT alone --lowering loop (or a LiteRT --target) is several times "
                                          "faster: int8 fully-connected ops XNNPACK runs, int16 cell state")
    loop = build(proto, "loop", streaming, int8=int8)
    if int8:
        return with_reason(loop, "auto", "auto: loop for full int8 on LiteRT: int8 fully-connected ops XNNPACK runs, "
                                         "int16 cell state (TFLite's fused integer LSTM kernel is not delegated)")
    return with_reason(loop, "auto", "auto: loop, which ran faster than the fused op on LiteRT with XNNPACK in "
                                     "edge-lstm's benchmark (a rule, not timed here; pin the other with --lowering "
                                     "fused)")
