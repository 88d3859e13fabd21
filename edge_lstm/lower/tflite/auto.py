"""The ``auto`` lowering: fused for TFLite Micro, streaming and full int8 (the loop for full int8 on LiteRT), else
the loop; with a LiteRT ``--target``, the faster form where it is clearly faster.

:func:`choose` is a rule over the model and the request, never a timing, so the
same inputs give the same artifact on every machine (an earlier version timed
both forms on LiteRT and kept the faster, which made the artifact depend on the
machine that ran the export and its load at that moment). Without a ``--target``
(or with a microcontroller one) the rule is the whole story.

With a ``--target`` that runs LiteRT or tflite-runtime, the export also builds
the other form of each whole-window artifact, validates both and times both side
by side on that runtime here (:mod:`edge_lstm.lowering_choice`); :func:`pick`
then keeps the rule's form unless the other one is faster by at least
:data:`MARGIN` in p50, so the choice flips only where the rule is clearly wrong on
this host, and the report says which it was and shows both candidates' figures.
Each candidate's bytes are themselves deterministic.

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


def choose(proto: onnx.ModelProto, streaming: bool, micro: bool, int8: bool, litert: bool = False,
           dynamic: bool = False) -> LoweredTFLite:
    """The ``auto`` lowering of ``proto``; see the module docstring (``litert``: the target runs LiteRT or
    tflite-runtime, not TFLite Micro; ``dynamic``: the float model will be quantized to dynamic int8, which the
    loop lowers for, :mod:`.wavefront`)."""
    fused = build(proto, "fused", streaming, int8=int8, micro=micro)
    if micro:
        if "fused" not in fused.lowering:  # a GRU, an RNN, a projection: nothing the fused op expresses
            return with_reason(fused, "auto", f"auto: {fused.lowering} for TFLite Micro: no layer the fused op can "
                                              "express (TFLite Micro runs the loop's ops)")
        partly = "" if fused.lowering == "fused" else f" (as {fused.lowering}: some layers cannot be fused)"
        return with_reason(fused, "auto", "auto: fused for TFLite Micro, which has fused LSTM kernels" + partly)
    if fused.lowering != "fused":
        loop = build(proto, "loop", streaming, int8=int8, micro=micro, dynamic=dynamic)
        why = "no layer the fused op can express" if "fused" not in fused.lowering else "some layers cannot be fused"
        return with_reason(loop, "auto", f"auto: loop ({why})")
    if streaming:
        return with_reason(fused, "auto", "auto: fused for streaming (state in variable tensors, x -> y)")
    if int8 and not litert:
        return with_reason(fused, "auto", "auto: fused for full int8, which LiteRT and TFLite Micro both run (a "
                                          "rule, not timed here); for LiteRT alone --lowering loop (or a LiteRT "
                                          "--target) is several times faster: every op of its loop body int8 and "
                                          "of a kind XNNPACK runs")
    loop = build(proto, "loop", streaming, int8=int8, dynamic=dynamic)
    if int8:
        return with_reason(loop, "auto", "auto: loop for full int8 on LiteRT: every op of its loop body int8 and of a "
                                         "kind XNNPACK runs (TFLite's fused integer LSTM kernel is not delegated)")
    return with_reason(loop, "auto", "auto: loop, which ran faster than the fused op on LiteRT with XNNPACK in "
                                     "edge-lstm's benchmark (a rule, not timed here: a LiteRT --target times both "
                                     "forms; pin the other with --lowering fused)")


#: how much faster (in p50) the other form must measure than the rule's to be chosen instead
MARGIN = 0.15


def pick(rule: str, p50_s: dict[str, float], runtime: str) -> tuple[str, str]:
    """The form to keep and why, from the measured p50 (seconds) of each candidate that passed validation.

    ``rule`` is the form :func:`choose` took; a candidate missing from ``p50_s`` was not timed (it failed, or did
    not run on ``runtime``). The rule's form stays unless another is at least :data:`MARGIN` faster.
    """
    if rule not in p50_s:
        if not p50_s:
            return rule, f"auto: {rule}, the rule's choice: no candidate passed validation and ran on {runtime}"
        form = min(p50_s, key=lambda k: p50_s[k])
        return form, f"auto: {form}, the only candidate that passed validation and ran on {runtime} here"
    others = {k: v for k, v in p50_s.items() if k != rule}
    if not others:
        return rule, f"auto: {rule}, the rule's choice: the only candidate that passed validation on {runtime}"
    rival = min(others, key=lambda k: others[k])
    if p50_s[rule] >= (1 + MARGIN) * others[rival]:
        return rival, f"auto: measured: {rival} {p50_s[rule] / others[rival]:.2f}x faster than {rule} on {runtime} here"
    if others[rival] >= (1 + MARGIN) * p50_s[rule]:
        return rule, (f"auto: measured: {rule} {others[rival] / p50_s[rule]:.2f}x faster than {rival} on {runtime} "
                      "here (the rule's choice)")
    ratio = others[rival] / p50_s[rule]
    return rule, (f"auto: within {MARGIN:.0%}: the rule's choice, {rule} ({rival} {ratio:.2f}x its time on "
                  f"{runtime} here)")
