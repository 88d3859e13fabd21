"""The ``auto`` lowering: fused for TFLite Micro, else the loop, or whichever of fused and loop runs faster.

Where both the fused ops and the loop can express every recurrent layer, both
are built and timed on LiteRT (XNNPACK on, one thread, the runtime's defaults):
interleaved rounds of a fixed number of invocations, the median of each
round's median; the faster is kept and the note gives both figures. On this
project's host the loop ran about 1.4-2x faster than fused for 2-layer LSTMs
(README, Benchmark), but the ratio depends on the CPU, so it is measured
rather than assumed. The choice therefore depends on the machine that runs the
export: ``--lowering fused`` or ``--lowering loop`` pins it (and makes the
artifact byte-identical across machines). A streaming model's fused and loop
forms take different inputs (state in variable tensors against explicit
state), so streaming takes the fused form where it can, without timing.
TFLite Micro targets get the fused form: it is the form TFLite Micro has
kernels for and the smallest graph. Full int8 takes the fused form too, where
it can: TFLite's integer LSTM kernel keeps its cell state in int16, while the
loop's state is int8 (on the Seattle-temperature test forecaster of
``tests/quantize`` the loop's int8 forecast MAE was 4.3% above float, over the 3%
gate the fused int8 model passes).
"""

from __future__ import annotations

import time

import numpy as np
import onnx

from edge_lstm.lower.tflite import LoweredTFLite
from edge_lstm.lower.tflite.build import build, with_reason

#: timing rounds and invocations per round and model (bounded by count, not by seconds)
ROUNDS, RUNS, WARMUP = 5, 3, 2


def choose(proto: onnx.ModelProto, streaming: bool, micro: bool, int8: bool) -> LoweredTFLite:
    """The ``auto`` lowering of ``proto``; see the module docstring."""
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
    if int8:  # accuracy before speed: the loop's state is int8 (see the module docstring)
        return with_reason(fused, "auto", "auto: fused for full int8: TFLite's integer LSTM kernel keeps the cell "
                                          "state in int16, closer to float than the loop's int8 state")
    loop = build(proto, "loop", streaming, int8=int8)
    times = measure({"fused": fused.data, "loop": loop.data})
    pick, other = ("loop", "fused") if times["loop"] <= times["fused"] else ("fused", "loop")
    chosen = loop if pick == "loop" else fused
    reason = (f"auto: {pick} measured {times[pick] * 1e6:,.0f} µs against {other} {times[other] * 1e6:,.0f} µs "
              "per window on LiteRT on this machine (pin it with --lowering fused or loop)")
    return with_reason(chosen, "auto", reason)


def measure(models: dict[str, bytes]) -> dict[str, float]:
    """Median seconds per invocation of each model on LiteRT, measured in interleaved rounds."""
    from ai_edge_litert.interpreter import Interpreter

    interps = {}
    for key, data in models.items():
        interp = Interpreter(model_content=data, num_threads=1)
        interp.allocate_tensors()
        for d in interp.get_input_details():
            interp.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
        interps[key] = interp
        for _ in range(WARMUP):
            _invoke(interp)
    rounds: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(ROUNDS):
        for key, interp in interps.items():
            samples = []
            for _ in range(RUNS):
                start = time.perf_counter()
                _invoke(interp)
                samples.append(time.perf_counter() - start)
            rounds[key].append(float(np.median(samples)))
    return {k: float(np.median(v)) for k, v in rounds.items()}


def _invoke(interp: object) -> None:
    interp.reset_all_variables()  # type: ignore[attr-defined]
    interp.invoke()  # type: ignore[attr-defined]
