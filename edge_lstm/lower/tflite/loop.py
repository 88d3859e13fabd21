"""The unrolled lowering's time loop: a TFLite ``WHILE`` whose body is one time step.

Stacked single-direction layers whose sequence output feeds only the next
layer run in *one* loop: the body advances every layer by one step, so no
intermediate sequence is ever stored. The first layer's input projection for
all steps is one fully-connected op before the loop (a GEMM); each step
gathers its row. Inside the body every weight is one constant tensor, so
XNNPACK packs each weight once and runs the step as one delegate kernel
(fully-connected ops without a run-time bias, the adds and the gate
activations); the gather, the counter and the sequence update stay on
builtin kernels.

Loop variables: ``[t, xp, h_1, (c_1), ..., h_n, (c_n), (ys)]``; ``t`` is an
int32 ``[1]`` step counter, ``xp`` the first layer's projection (passed
through unchanged, so the interpreter does not copy it), ``ys`` the last
layer's ``[T, H]`` sequence, written a row per step with
``DYNAMIC_UPDATE_SLICE`` only when the graph reads more than the last step.
A reverse direction runs the same loop over a reversed input and reverses
its sequence back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from edge_lstm.lower.tflite.context import OP, Context
from edge_lstm.lower.tflite.writer import TensorRef


@dataclass(frozen=True)
class LoopLayer:
    """One layer (one direction) of a loop: its weights in the unrolled gate layout and initial state."""

    kind: str  #: "lstm" or "gru"
    hidden: int
    w: np.ndarray  #: [G*H, I] input weights (LSTM gates i, f, o, c; GRU z, r, n)
    b: np.ndarray  #: [G*H] input-side bias (LSTM: both biases; GRU: z, r both, n input only)
    r: np.ndarray  #: [G*H, H] recurrent weights
    rbn: np.ndarray | None  #: GRU: the recurrent bias of the n gate
    lbr: bool  #: GRU: linear_before_reset
    h0: TensorRef | None  #: [1, H] in the main subgraph, None for zeros
    c0: TensorRef | None


def run_loop(
    ctx: Context, x: TensorRef, layers: list[LoopLayer], steps: int, reverse: bool, need_seq: bool, tag: str
) -> tuple[TensorRef | None, list[tuple[TensorRef, TensorRef | None]]]:
    """Emit the loop over ``x`` ([T, F]); returns the last layer's [T, H] sequence (if asked) and final states."""
    first = layers[0]
    if reverse:
        x = _reverse(ctx, x, tag + "_in_rev")
    xp = ctx.fully_connected(x, ctx.const_tensor(tag + "_w0", first.w), ctx.const_tensor(tag + "_b0", first.b),
                             tag + "_xproj")
    # the initial loop variables, in the main subgraph
    init: list[TensorRef] = [ctx.int32(tag + "_t0", [0]), xp]
    for layer in layers:
        zeros = ctx.const_tensor(tag + "_zeros", np.zeros((1, layer.hidden), np.float32))
        init.append(layer.h0 or zeros)
        if layer.kind == "lstm":
            init.append(layer.c0 or zeros)
    last_h = layers[-1].hidden
    if need_seq:
        ys0 = ctx.temp(tag + "_ys0", (steps, last_h))
        ctx.op(OP.FILL, [ctx.int32(tag + "_ys_shape", [steps, last_h]),
                         ctx.const_tensor(tag + "_zero", np.array(0.0, np.float32))], [ys0])
        init.append(ys0)

    types = [np.int32] + [np.float32] * (len(init) - 1)
    writer = ctx.writer
    cond, body = writer.add_subgraph(tag + "_cond"), writer.add_subgraph(tag + "_body")
    with writer.in_subgraph(cond):
        ins = [writer.add_tensor("", v.shape, d) for v, d in zip(init, types, strict=True)]
        keep_going = writer.add_tensor("", (1,), np.bool_)
        ctx.op(OP.LESS, [ins[0], ctx.int32("steps", [steps])], [keep_going], schema.LessOptionsT())
        writer.set_io(cond, [r.index for r in ins], [keep_going.index])
    with writer.in_subgraph(body):
        ins = [writer.add_tensor("", v.shape, d) for v, d in zip(init, types, strict=True)]
        t, xp_in = ins[0], ins[1]
        t_next = writer.add_tensor("", (1,), np.int32)
        ctx.op(OP.ADD, [t, ctx.int32("one", [1])], [t_next], schema.AddOptionsT())
        proj = ctx.temp("xt", (1, xp.shape[1]))
        gopts = schema.GatherOptionsT()
        gopts.axis = 0
        ctx.op(OP.GATHER, [xp_in, t], [proj], gopts)
        state, h_top = _step(ctx, layers, proj, ins[2 : len(ins) - (1 if need_seq else 0)], tag)
        outs: list[TensorRef] = [t_next, xp_in, *state]
        if need_seq:
            pos = writer.add_tensor("", (2,), np.int32)
            ctx.concat([t, ctx.int32("zero", [0])], 0, "pos", out=pos)
            ys = ctx.temp("ys", (steps, last_h))
            ctx.op(OP.DYNAMIC_UPDATE_SLICE, [ins[-1], h_top, pos], [ys], schema.DynamicUpdateSliceOptionsT())
            outs.append(ys)
        writer.set_io(body, [r.index for r in ins], [r.index for r in outs])

    final = [writer.add_tensor("", v.shape, d) for v, d in zip(init, types, strict=True)]
    opts = schema.WhileOptionsT()
    opts.condSubgraphIndex, opts.bodySubgraphIndex = cond, body
    loop_inputs: list[TensorRef | None] = list(init)
    ctx.op(OP.WHILE, loop_inputs, final, opts)
    states: list[tuple[TensorRef, TensorRef | None]] = []
    k = 2
    for layer in layers:
        if layer.kind == "lstm":
            states.append((final[k], final[k + 1]))
            k += 2
        else:
            states.append((final[k], None))
            k += 1
    seq = final[k] if need_seq else None
    if seq is not None and reverse:
        seq = _reverse(ctx, seq, tag + "_ys_rev")
    return seq, states


def _step(
    ctx: Context, layers: list[LoopLayer], proj: TensorRef, state: list[TensorRef], tag: str
) -> tuple[list[TensorRef], TensorRef]:
    """Advance every layer one step inside the body; returns the new state and the top layer's output."""
    from edge_lstm.lower.tflite.lstm import gru_step, lstm_step

    new: list[TensorRef] = []
    k, h_below = 0, None
    for n, layer in enumerate(layers):
        if n > 0:
            assert h_below is not None
            proj = ctx.fully_connected(h_below, ctx.const_tensor(f"{tag}_w{n}", layer.w),
                                       ctx.const_tensor(f"{tag}_b{n}", layer.b), "xp")
        if layer.kind == "lstm":
            r = ctx.const_tensor(f"{tag}_r{n}", layer.r)
            h, c = lstm_step(ctx, proj, (state[k], state[k + 1]), r, "step", runtime_bias=False)
            new += [h, c]
            k += 2
        else:
            hh = layer.hidden
            xzr, xn = ctx.split(proj, 1, [2 * hh, hh], "xzr")
            assert layer.rbn is not None
            weights = (ctx.const_tensor(f"{tag}_rzr{n}", layer.r[: 2 * hh]),
                       ctx.const_tensor(f"{tag}_rn{n}", layer.r[2 * hh :]),
                       ctx.const_tensor(f"{tag}_rbn{n}", layer.rbn))
            h = gru_step(ctx, (xzr, xn), state[k], weights, layer.lbr, "step", runtime_bias=False)
            new.append(h)
            k += 1
        h_below = h
    assert h_below is not None
    return new, h_below


def _reverse(ctx: Context, x: TensorRef, hint: str) -> TensorRef:
    out = ctx.temp(hint, x.shape)
    ctx.op(OP.REVERSE_V2, [x, ctx.int32("axis0", [0])], [out], schema.ReverseV2OptionsT())
    return out
