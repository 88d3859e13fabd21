"""The unrolled lowering's time loop: a TFLite ``WHILE`` whose body is one or a few time steps.

Stacked single-direction layers whose sequence output feeds only the next
layer run in *one* loop, so no intermediate sequence is ever stored. The
first layer's input projection for all steps is one fully-connected op before
the loop (a GEMM). A single layer's body is one step. A stack's body is ``u``
steps (4, 3 or 2, the first that divides the sequence length), layer by
layer: the first layer takes its ``u`` steps, then an upper layer's input
projection of those ``u`` steps is *one* fully-connected op on the ``u``
outputs below, then that layer takes its ``u`` steps. At batch 1 a step's
time is mostly its fully-connected ops streaming their weights from cache;
this reads an upper layer's input weights once per ``u`` steps instead of
once per step. Each iteration gathers its row of the projection (viewed as
``[T/u, u*G]``) and splits it into steps. Inside the body every weight is
one constant tensor, written once in the file; XNNPACK runs the steps as one
delegate kernel (fully-connected ops without a run-time bias: one with a
run-time bias stays on the builtin kernel, 2x slower; the adds and the gate
activations), the gather, the counter and the sequence update stay on builtin
kernels. XNNPACK packs a private copy of a weight for each op that reads it,
so ``u`` steps keep ``u`` copies of each recurrent matrix in cache: measured
on the reference forecaster (LiteRT, one thread), 8 steps an iteration ran
1.1-1.3x slower than 4, even with every split and concatenation kept to the
4 parts XNNPACK takes.

For dynamic int8 (``ctx.dynamic``) a pair of small stacked LSTM layers read
only at the upper layer's last step runs as *one* cell, the upper layer a step
behind (:func:`run_pair`, :mod:`.wavefront`): half the ops a step, which is
what the time goes to once the weights are int8 (its step slices the gates
before the activations, so LOGISTIC and TANH read 3H and H values, not 4H each:
one op more, measured 2-3% faster there, no faster in float). In float the combined
matrix's extra bytes (the zero block, the upper layer's input weights read
every step) cost more than the ops saved, so float keeps the layers apart.

Loop variables: ``[t, xp, h_1, (c_1), ..., h_n, (c_n), (ys)]``; ``t`` is an
int32 ``[1]`` iteration counter, ``xp`` the first layer's projection (passed
through unchanged, so the interpreter does not copy it), ``ys`` the last
layer's sequence as ``[T/u, u*H]`` (the memory order of ``[T, H]``), written
a row per iteration with ``DYNAMIC_UPDATE_SLICE`` only when the graph reads
more than the last step. A reverse direction runs the same loop over a
reversed input and reverses its sequence back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from edge_lstm.lower.tflite.cells import gru_step, gru_weights, lstm_step, reverse_time, rnn_step
from edge_lstm.lower.tflite.context import OP, Context
from edge_lstm.lower.tflite.wavefront import combine, step0_feature
from edge_lstm.lower.tflite.writer import TensorRef


@dataclass(frozen=True)
class LoopLayer:
    """One layer (one direction) of a loop: its weights in the unrolled gate layout and initial state."""

    kind: str  #: "lstm", "gru" or "rnn"
    hidden: int
    w: np.ndarray  #: [G*H, I] input weights (LSTM gates i, f, o, c; GRU z, r, n)
    b: np.ndarray  #: [G*H] input-side bias (LSTM, RNN: both biases; GRU: z, r both, n input only)
    r: np.ndarray  #: [G*H, O] recurrent weights
    rbn: np.ndarray | None  #: GRU: the recurrent bias of the n gate
    lbr: bool  #: GRU: linear_before_reset
    h0: TensorRef | None  #: [B, O] in the main subgraph, None for zeros
    c0: TensorRef | None  #: [B, H]
    proj: np.ndarray | None = None  #: LSTM: [P, H] projection of the hidden state
    activation: str = "Tanh"  #: RNN: "Tanh" or "Relu"

    @property
    def out_size(self) -> int:
        """Size of the state ``h`` (the projection's when projected)."""
        return int(self.proj.shape[0]) if self.proj is not None else self.hidden


def run_loop(
    ctx: Context, x: TensorRef, layers: list[LoopLayer], steps: int, reverse: bool, need_seq: bool, tag: str,
    batch: int = 1,
) -> tuple[TensorRef | None, list[tuple[TensorRef, TensorRef | None]]]:
    """Emit the loop over ``x`` ([T*B, F], time-major rows); returns the last layer's [T*B, O] sequence (if asked)
    and the final states ([B, O] and [B, H])."""
    first = layers[0]
    if reverse:
        x = reverse_time(ctx, ctx.reshape(x, (steps, batch * x.shape[-1]), tag + "_in_t"))
        x = ctx.reshape(x, (steps * batch, x.shape[-1] // batch), tag + "_in_rows")
    xp = ctx.fully_connected(x, ctx.const_tensor(tag + "_w0", first.w), ctx.const_tensor(tag + "_b0", first.b))
    u = steps_per_iteration(layers, steps)
    iters, width = steps // u, xp.shape[1] * batch
    xp = ctx.reshape(xp, (iters, u * width), tag + "_xproj_u")
    # the initial loop variables, in the main subgraph
    init: list[TensorRef] = [ctx.int32(tag + "_t0", [0]), xp]
    for layer in layers:
        init.append(layer.h0 or ctx.const_tensor(tag + "_zeros", np.zeros((batch, layer.out_size), np.float32)))
        if layer.kind == "lstm":
            init.append(layer.c0 or ctx.const_tensor(tag + "_zeros", np.zeros((batch, layer.hidden), np.float32)))
    last_h = layers[-1].out_size * batch
    if need_seq:
        ys0 = ctx.temp((iters, u * last_h))
        ctx.op(OP.FILL, [ctx.int32(tag + "_ys_shape", [iters, u * last_h]),
                         ctx.const_tensor(tag + "_zero", np.array(0.0, np.float32))], [ys0])
        init.append(ys0)

    def step(t: TensorRef, xp_in: TensorRef, state: list[TensorRef]) -> list[TensorRef]:
        projs = _rows(ctx, xp_in, t, u, batch)
        new, tops = _steps(ctx, layers, projs, state[: len(state) - (1 if need_seq else 0)], tag)
        if not need_seq:
            return new
        tops = [ctx.reshape(h, (1, last_h), "top") for h in tops]
        h_top = ctx.concat(tops, 1) if u > 1 else tops[0]
        pos = ctx.writer.add_tensor("", (2,), np.int32)
        ctx.concat([t, ctx.int32("zero", [0])], 0, out=pos)
        ys = ctx.temp((iters, u * last_h))
        ctx.op(OP.DYNAMIC_UPDATE_SLICE, [state[-1], h_top, pos], [ys], schema.DynamicUpdateSliceOptionsT())
        return [*new, ys]

    final = _while(ctx, init, iters, tag, step)
    states: list[tuple[TensorRef, TensorRef | None]] = []
    k = 2
    for layer in layers:
        if layer.kind == "lstm":
            states.append((final[k], final[k + 1]))
            k += 2
        else:
            states.append((final[k], None))
            k += 1
    seq = ctx.reshape(final[k], (steps, last_h), tag + "_ys") if need_seq else None
    if seq is not None and reverse:
        seq = reverse_time(ctx, seq)
    return seq, states


#: time steps per iteration of a stacked loop: the first of these that divides the sequence length
_UNROLL = (4, 3, 2)
#: bytes one layer's step adds to the body (about 11 ops and 15 tensors), and the share of the weight bytes the
#: extra steps of a body may cost: small stacks keep one step an iteration, so their file stays near the weights
_STEP_BYTES, _BODY_SHARE = 1500, 0.05


def steps_per_iteration(layers: list[LoopLayer], steps: int) -> int:
    """How many time steps one iteration takes: several for a stack whose weights dwarf the extra body ops.

    At batch 1 a step's time is mostly its fully-connected ops streaming their weights from cache; taking ``u``
    steps an iteration reads an upper layer's input weights once per ``u`` steps. Each extra step writes the
    cell's ops again, which only pays where they are small against the weights.
    """
    if len(layers) < 2:
        return 1
    weight_bytes = 4 * sum(a.size for layer in layers for a in (layer.w, layer.r) if a is not None)
    for u in _UNROLL:
        if steps % u == 0 and (u - 1) * len(layers) * _STEP_BYTES <= _BODY_SHARE * weight_bytes:
            return u
    return 1


def _steps(
    ctx: Context, layers: list[LoopLayer], projs: list[TensorRef], state: list[TensorRef], tag: str
) -> tuple[list[TensorRef], list[TensorRef]]:
    """Advance every layer ``len(projs)`` steps inside the body, layer by layer; returns the new state and the
    top layer's outputs. An upper layer's input projection of all those steps is one fully-connected op."""
    new: list[TensorRef] = []
    outs: list[TensorRef] = []
    k, u = 0, len(projs)
    batch = projs[0].shape[0]
    for n, layer in enumerate(layers):
        if n > 0:
            below = ctx.concat(outs, 0) if u > 1 else outs[0]
            proj = ctx.fully_connected(below, ctx.const_tensor(f"{tag}_w{n}", layer.w),
                                       ctx.const_tensor(f"{tag}_b{n}", layer.b))
            projs = ctx.split(proj, 0, [batch] * u, "xp") if u > 1 else [proj]
        outs = []
        if layer.kind == "lstm":
            r = ctx.const_tensor(f"{tag}_r{n}", layer.r)
            p = None if layer.proj is None else ctx.const_tensor(f"{tag}_p{n}", layer.proj)
            h, c = state[k], state[k + 1]
            for proj in projs:
                h, c = lstm_step(ctx, proj, (h, c), r, "step", runtime_bias=False, proj=p)
                outs.append(h)
            new += [h, c]
            k += 2
        elif layer.kind == "rnn":
            r = ctx.const_tensor(f"{tag}_r{n}", layer.r)
            h = state[k]
            for proj in projs:
                h = rnn_step(ctx, proj, h, r, layer.activation, runtime_bias=False)
                outs.append(h)
            new.append(h)
            k += 1
        else:
            hh = layer.hidden
            assert layer.rbn is not None
            weights = gru_weights(ctx, layer.r, layer.rbn, tag, str(n))
            h = state[k]
            for proj in projs:
                xzr, xn = ctx.split(proj, 1, [2 * hh, hh], "xzr")
                h = gru_step(ctx, (xzr, xn), h, weights, layer.lbr, "step", runtime_bias=False)
                outs.append(h)
            new.append(h)
            k += 1
    return new, outs


# ---------------------------------------------------------------- dynamic int8: a stacked pair as one cell
#: the largest combined recurrent matrix, in int8 bytes, a pair runs as one cell with: measured on LiteRT
#: (XNNPACK, one thread, dynamic int8), 2 x LSTM(32) and 2 x LSTM(64) (64 KiB) ran 1.9x and 1.2x faster as one
#: cell, 2 x LSTM(128) (256 KiB) and 2 x LSTM(256) 1.2x slower: there the zero block and the upper layer's
#: input weights read at every step cost more than the ops saved
PAIR_BYTES = 64 * 1024


def pairable(layers: list[LoopLayer]) -> bool:
    """Whether the loop's layers are a pair :mod:`.wavefront` runs as one cell: two small LSTM layers (see
    :data:`PAIR_BYTES`) without projection, the upper one starting from zeros."""
    if len(layers) != 2 or any(la.kind != "lstm" or la.proj is not None for la in layers):
        return False
    n = layers[0].hidden + layers[1].hidden
    return layers[1].h0 is None and layers[1].c0 is None and 4 * n * n <= PAIR_BYTES


def run_pair(ctx: Context, x: TensorRef, layers: list[LoopLayer], steps: int, tag: str, batch: int) -> TensorRef:
    """The pair's loop over ``x`` ([T*B, F], time-major rows): ``steps`` wavefront steps (``u`` an iteration),
    then the upper layer's last step after the loop; returns the upper layer's final ``h`` ([B, H2]), the one
    value of the pair the graph may read."""
    pair = combine(*(a for layer in layers for a in (layer.w, layer.r, layer.b)))
    n, first = pair.h1 + pair.h2, layers[0]
    u = next((k for k in _UNROLL if steps % k == 0), 1)
    iters = steps // u
    step0 = ctx.const_tensor(tag + "_step0", step0_feature(steps, batch)[: steps * batch])
    xp = ctx.fully_connected(ctx.concat([x, step0], 1), ctx.const_tensor(tag + "_w", pair.w),
                             ctx.const_tensor(tag + "_b", pair.b))
    init: list[TensorRef] = [ctx.int32(tag + "_t0", [0]), ctx.reshape(xp, (iters, u * batch * 4 * n), tag + "_xp")]
    zeros = np.zeros((batch, n), np.float32)
    upper0 = ctx.const_tensor(tag + "_zeros", zeros[:, pair.h1 :])
    for lower0 in (first.h0, first.c0):
        init.append(ctx.const_tensor(tag + "_zeros", zeros) if lower0 is None else ctx.concat([lower0, upper0], 1))

    def step(t: TensorRef, xp_in: TensorRef, state: list[TensorRef]) -> list[TensorRef]:
        h, c = state
        for p in _rows(ctx, xp_in, t, u, batch):
            h, c = lstm_step(ctx, p, (h, c), ctx.const_tensor(tag + "_r", pair.r), "step", runtime_bias=False,
                             split_first=True)
        return [h, c]

    final = _while(ctx, init, iters, tag, step)
    # the upper layer's step T-1; the lower half computes a step past the window, read by nothing
    bias = ctx.const_tensor(tag + "_b_last", np.tile(pair.b, (batch, 1)))
    h, _ = lstm_step(ctx, bias, (final[2], final[3]), ctx.const_tensor(tag + "_r", pair.r), "last",
                     runtime_bias=False)
    out = ctx.temp((batch, pair.h2))
    ctx.slice_to(h, 1, pair.h1, n, out)
    return out


def _while(ctx: Context, init: list[TensorRef], iters: int, tag: str,
           step: Callable[[TensorRef, TensorRef, list[TensorRef]], list[TensorRef]]) -> list[TensorRef]:
    """A ``WHILE`` over loop variables ``[t, xp, *state]`` running ``iters`` iterations; ``step(t, xp, state)``
    writes one iteration's ops into the body and returns the new state. Returns the final loop variables."""
    types = [np.int32] + [np.float32] * (len(init) - 1)
    writer = ctx.writer
    cond, body = writer.add_subgraph(tag + "_cond"), writer.add_subgraph(tag + "_body")
    with writer.in_subgraph(cond):
        ins = [writer.add_tensor("", v.shape, d) for v, d in zip(init, types, strict=True)]
        keep_going = writer.add_tensor("", (1,), np.bool_)
        ctx.op(OP.LESS, [ins[0], ctx.int32("steps", [iters])], [keep_going], schema.LessOptionsT())
        writer.set_io(cond, [r.index for r in ins], [keep_going.index])
    with writer.in_subgraph(body):
        ins = [writer.add_tensor("", v.shape, d) for v, d in zip(init, types, strict=True)]
        t_next = writer.add_tensor("", (1,), np.int32)
        ctx.op(OP.ADD, [ins[0], ctx.int32("one", [1])], [t_next], schema.AddOptionsT())
        outs = [t_next, ins[1], *step(ins[0], ins[1], ins[2:])]
        writer.set_io(body, [r.index for r in ins], [r.index for r in outs])
    final = [writer.add_tensor("", v.shape, d) for v, d in zip(init, types, strict=True)]
    opts = schema.WhileOptionsT()
    opts.condSubgraphIndex, opts.bodySubgraphIndex = cond, body
    ctx.op(OP.WHILE, list(init), final, opts)
    return final


def _rows(ctx: Context, xp: TensorRef, t: TensorRef, u: int, batch: int) -> list[TensorRef]:
    """Iteration ``t``'s ``u`` steps of the input projection ``xp`` ([iters, u*B*G]), each ``[B, G]``."""
    width = xp.shape[1] // u
    row = ctx.temp((1, u * width))
    gopts = schema.GatherOptionsT()
    gopts.axis = 0
    ctx.op(OP.GATHER, [xp, t], [row], gopts)
    projs = ctx.split(row, 1, [width] * u, "xt") if u > 1 else [row]
    return [ctx.reshape(p, (batch, width // batch), "xt") for p in projs]
