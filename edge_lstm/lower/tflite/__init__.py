"""ONNX -> TFLite flatbuffer, written directly with the TFLite schema (no TensorFlow).

:func:`lower` prepares the ONNX graph (batch fixed to 1, shape subgraphs folded),
lowers every node through the op table in :mod:`.ops` (recurrent layers through
:mod:`.lstm`) and packs the result with :mod:`.writer`.

Lowerings of the recurrent layers (:data:`LOWERINGS`, the list in
:mod:`edge_lstm.recipes`):

* ``fused``: one ``UNIDIRECTIONAL_SEQUENCE_LSTM`` (``..._RNN`` for ``nn.RNN``)
  per layer and direction, state in variable tensors. Layers the fused op cannot
  express (GRU, an initial state that is an input, a final cell state that is an
  output) go to the loop, with a note.
* ``loop``: a ``WHILE`` loop over the time steps whose body is the cell in plain
  ops; each weight is stored once. Lowered for dynamic int8, a small stacked LSTM
  pair is one cell, the upper layer a step behind (:mod:`.wavefront`).
* ``unrolled``: every time step written out (hundreds of ops); only when asked.
* ``auto``: fused for TFLite Micro, streaming and full int8 (on a LiteRT target the loop); otherwise the loop
  (a fixed rule, not a timing, so artifacts do not depend on the machine; see
  :mod:`.auto`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_lstm.errors import UsageError
from edge_lstm.lower.tflite.result import LoweredTFLite
from edge_lstm.registry import LOWERINGS

if TYPE_CHECKING:
    import onnx

    from edge_lstm.spec import Precision


def lower(
    proto: onnx.ModelProto,
    lowering: str = "auto",
    streaming: bool = False,
    *,
    micro: bool = False,
    precision: Precision | str | None = None,
    litert: bool = False,
) -> LoweredTFLite:
    """Lower an ONNX model (from :func:`edge_lstm.capture.to_onnx`) to a TFLite flatbuffer.

    ``lowering`` is one of :data:`LOWERINGS` (see the module docstring).
    ``streaming=True`` takes the one-timestep model from
    :func:`edge_lstm.capture.streaming_model`; fused layers then keep their state
    in variable tensors, so the TFLite model maps ``x -> y`` and keeps state
    across ``invoke()`` until reset. ``micro`` says the artifact is for TFLite
    Micro (``auto`` then takes the fused form). ``precision`` is what the float
    model will be quantized to: for ``int8`` the layers TFLite's integer
    quantizer has no fused kernel for (``nn.RNN``) go to the loop; for
    ``dynamic-int8`` the ``loop`` lowering runs a small stacked LSTM pair as one
    wavefront cell (:mod:`.wavefront`), faster once the weights are int8 (the
    artifact is float until :func:`edge_lstm.quantize.quantize_tflite` makes it
    dynamic int8; ``auto`` passes it on to the loop). ``litert`` says
    the artifact is for LiteRT / tflite-runtime (``auto`` then takes the loop for
    full int8, see :mod:`.auto`).
    """
    if lowering not in LOWERINGS:
        raise UsageError(f"Unknown TFLite lowering '{lowering}'.", f"Use one of: {', '.join(LOWERINGS)}.")
    from edge_lstm.spec import Precision

    int8 = precision is not None and Precision(precision) is Precision.INT8
    dynamic = precision is not None and Precision(precision) is Precision.DYNAMIC_INT8
    if lowering == "auto":
        from edge_lstm.lower.tflite.auto import choose

        return choose(proto, streaming, micro, int8, litert and not micro, dynamic)
    from edge_lstm.lower.tflite.build import build

    return build(proto, lowering, streaming, int8=int8, micro=micro, dynamic=dynamic)


__all__ = ["LOWERINGS", "LoweredTFLite", "lower"]
