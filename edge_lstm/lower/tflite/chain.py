"""The loop lowering of one recurrent layer, and of the single-direction layers stacked on it, as WHILE loops.

Stacked single-direction layers whose sequence output feeds only the next
layer (through reshapes) share one loop (:func:`edge_lstm.lower.tflite.loop.run_loop`),
so no intermediate sequence is stored; a last layer read only at its last
step writes no sequence at all. A bidirectional layer runs one loop per
direction.
"""

from __future__ import annotations

import numpy as np
import onnx

from edge_lstm.lower.tflite import recurrent as rc
from edge_lstm.lower.tflite.cells import plain_weights
from edge_lstm.lower.tflite.context import Context
from edge_lstm.lower.tflite.graph import attr
from edge_lstm.lower.tflite.loop import LoopLayer, pairable, run_loop, run_pair
from edge_lstm.lower.tflite.recurrent import Recurrent

_RESHAPES = ("Squeeze", "Unsqueeze", "Reshape", "Identity", "Flatten")


def looped(ctx: Context, rec: Recurrent) -> None:
    """Lower ``rec`` (and the single-direction layers stacked on it) as WHILE loops over time steps."""
    if rec.directions == 2:
        seqs, finals_h, finals_c = [], [], []
        need_seq = bool(rec.y) and ctx.graph.used(rec.y)
        for d in range(2):
            seq, [(h, c)] = run_loop(ctx, rc.x_rows(ctx, rec), [loop_layer(ctx, rec, d)], rec.steps,
                                     rec.is_reversed(d), need_seq, f"{rec.name}_d{d}", rec.batch)
            if seq is not None:
                seqs.append(seq)
            finals_h.append(h)
            if c is not None:
                finals_c.append(c)
        rc.bind_outputs(ctx, rec, seqs, finals_h, finals_c)
        return
    chain, glue = [rec], []
    while (nxt := _stacked_on(ctx, chain[-1])) is not None:
        chain.append(nxt[0])
        glue += nxt[1]
    layers = [loop_layer(ctx, r, 0) for r in chain]
    last = chain[-1]
    shortcut = None if rec.reverse_only or rec.batch != 1 or not last.y else _last_step_reads(ctx, last.y, last.steps)
    need_seq = bool(last.y) and ctx.graph.used(last.y) and shortcut is None
    if _pair(ctx, chain, layers, need_seq):
        h = run_pair(ctx, rc.x_rows(ctx, rec), layers, rec.steps, rec.name, rec.batch)
        ctx.notes.append(f"LSTM '{rec.name}' and '{last.name}' run as one cell, the upper layer a step behind (the "
                         "loop lowered for dynamic int8: half the operators a step; the recurrent matrix holds a "
                         "zero block, so the file is larger)")
        rc.bind_outputs(ctx, last, [], [h], [])
        if shortcut:
            out = shortcut[-1].output[0]
            ctx.bind(out, ctx.reshape(h, ctx.graph.shapes[out], out))
        ctx.done.update(id(n) for n in [*(r.node for r in chain[1:]), *glue, *(shortcut or [])])
        return
    seq, states = run_loop(ctx, rc.x_rows(ctx, rec), layers, rec.steps, rec.reverse_only, need_seq, rec.name,
                           rec.batch)
    for r, (h, c) in zip(chain, states, strict=True):
        rc.bind_outputs(ctx, r, [seq] if r is last and seq is not None else [], [h], [c] if c is not None else [])
    if shortcut:
        out = shortcut[-1].output[0]
        ctx.bind(out, ctx.reshape(states[-1][0], ctx.graph.shapes[out], out))
    ctx.done.update(id(n) for n in [*(r.node for r in chain[1:]), *glue, *(shortcut or [])])


def _pair(ctx: Context, chain: list[Recurrent], layers: list[LoopLayer], need_seq: bool) -> bool:
    """Whether a dynamic-int8 stack runs as one wavefront cell (:func:`run_pair`): a pair of forward LSTM layers
    of which the graph reads only the upper layer's last step or final ``h``."""
    if not ctx.dynamic or need_seq or chain[0].reverse_only or not pairable(layers):
        return False
    read = [chain[0].y_h, chain[0].y_c, chain[1].y_c]
    return not any(name and ctx.graph.used(name) for name in read)


def loop_layer(ctx: Context, rec: Recurrent, d: int) -> LoopLayer:
    """Direction ``d`` of ``rec`` in the loop's weight layout, with its initial state tensors."""
    name = f"{rec.name}_d{d}"
    h0 = rc.state_tensor(ctx, rec, rc.initial(ctx, rec, "h"), d, name + "_h0")
    c0 = rc.state_tensor(ctx, rec, rc.initial(ctx, rec, "c"), d, name + "_c0") if rec.kind == "lstm" else None
    pw = plain_weights(rec, d)
    return LoopLayer(rec.kind, rec.hidden, pw.w, pw.b, pw.r, pw.rbn, rec.lbr, h0, c0, pw.proj, rec.activation)


def _users(ctx: Context, name: str) -> list[onnx.NodeProto]:
    return [n for n in ctx.graph.nodes if name in n.input]


def _is_recurrent(node: onnx.NodeProto) -> bool:
    return node.op_type in rc.GATES or rc.is_projected_scan(node)


def _stacked_on(ctx: Context, below: Recurrent) -> tuple[Recurrent, list[onnx.NodeProto]] | None:
    """The single-direction layer whose only input is ``below``'s sequence (through reshapes), and those reshapes."""
    name, glue = below.y, []
    if not name:
        return None
    while True:
        users = _users(ctx, name)
        if len(users) != 1 or name in ctx.graph.outputs or ctx.graph.consumers.get(name, 0) != 1:
            return None
        user = users[0]
        if user.op_type in _RESHAPES:
            glue.append(user)
            name = user.output[0]
            continue
        if not _is_recurrent(user):
            return None
        break
    if user.op_type == "LSTM" and len(user.input) > 7 and user.input[7]:
        peep = ctx.const(user.input[7])
        if peep is None or np.any(peep):
            return None
    rec = rc.parse(ctx, user)
    if rec.x != name or rec.directions != 1 or rec.reverse_only or rec.steps != below.steps or below.reverse_only:
        return None
    if rec.batch != below.batch:
        return None
    for state in (rec.h0, rec.c0):
        _ensure(ctx, state)
    return rec, glue


def _ensure(ctx: Context, name: str) -> None:
    """Lower the nodes computing ``name`` now (a stacked layer's initial state, needed before the loop)."""
    if not name or ctx.known(name) or ctx.const(name) is not None:
        return
    producer = next(n for n in ctx.graph.nodes if name in n.output)
    for i in producer.input:
        _ensure(ctx, i)
    ctx.lower_node(producer)
    ctx.done.add(id(producer))


def _last_step_reads(ctx: Context, y: str, steps: int) -> list[onnx.NodeProto] | None:
    """The Squeeze/Transpose/Gather nodes when ``y`` is read only for its last time step, else None."""
    name, axis, nodes = y, 0, []
    while True:
        users = _users(ctx, name)
        if len(users) != 1 or name in ctx.graph.outputs or ctx.graph.consumers.get(name, 0) != 1:
            return None
        user, rank = users[0], len(ctx.shape(name))
        nodes.append(user)
        if user.op_type == "Squeeze":
            axes = ctx.const(user.input[1]) if len(user.input) > 1 else attr(user, "axes")
            if axes is None:
                return None
            axes = [int(a) % rank for a in np.asarray(axes).reshape(-1)]
            if axis in axes:
                return None
            axis -= sum(1 for a in axes if a < axis)
        elif user.op_type == "Transpose":
            perm = list(attr(user, "perm", list(reversed(range(rank)))))
            axis = perm.index(axis)
        elif user.op_type == "Gather":
            idx = ctx.const(user.input[1])
            if int(attr(user, "axis", 0)) % rank != axis or idx is None or idx.ndim != 0:
                return None
            return nodes if int(idx) % steps == steps - 1 else None
        else:
            return None
        name = user.output[0]
