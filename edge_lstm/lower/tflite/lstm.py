"""Lower ONNX ``LSTM``, ``GRU`` and ``RNN`` nodes (and projected-LSTM ``Scan``\\ s): fused TFLite ops, a WHILE
loop, or every step written out.

*Fused*: one ``UNIDIRECTIONAL_SEQUENCE_LSTM`` (``UNIDIRECTIONAL_SEQUENCE_RNN``
for ``nn.RNN``) per direction, weights stored once, state in variable tensors;
a reverse direction runs between two ``REVERSE_V2`` ops, so TFLite Micro (which
has no bidirectional kernel) runs it too. A projected LSTM uses the op's
projection inputs. GRUs, layers whose state is explicit, and RNNs where the
fused op does not serve (full int8: TFLite's quantizer has no integer sequence
RNN; TFLite Micro: no kernel) go to the loop, with a note.

*Loop* (the ``loop`` lowering, and the fused lowering's fallback): with more
than one time step, a TFLite ``WHILE`` loop whose body advances every stacked
layer a few time steps (see :mod:`.loop` and :mod:`.chain`); the weights are
written once and the body's ops use them at every step. With one time step
(streaming models) the step is written out directly.

*Unrolled* (only when asked): the steps are written out: one fully-connected op
computes the input projection of every time step at once; each step then costs
one fully-connected op on the state, with that step's input projection as its
(run-time) bias, plus elementwise ops. XNNPACK leaves a fully-connected op with
a run-time bias to the builtin kernel, which reads the one shared weight matrix
(a delegated op would get a private packed copy per step). A one-step graph
uses a fully-connected op plus an ``ADD`` instead, which TFLite's integer
quantizer takes (it wants constant, 1-D biases).

The cell steps, the gate layouts and the time reversal are :mod:`.cells`'s, shared with the loop.
"""

from __future__ import annotations

import numpy as np
import onnx
from ai_edge_litert import schema_py_generated as schema

from edge_lstm.lower.tflite import recurrent as rc
from edge_lstm.lower.tflite.cells import (
    FUSED_ORDER,
    gru_step,
    gru_weights,
    lstm_step,
    plain_weights,
    reverse_time,
    rnn_step,
)
from edge_lstm.lower.tflite.chain import looped
from edge_lstm.lower.tflite.context import OP, Context
from edge_lstm.lower.tflite.graph import require
from edge_lstm.lower.tflite.recurrent import Recurrent
from edge_lstm.lower.tflite.writer import TensorRef


def lower_recurrent(ctx: Context, node: onnx.NodeProto) -> None:
    """Lower one recurrent layer, fused when asked and possible, else as a loop or unrolled (with a note)."""
    rec = rc.parse(ctx, node)
    h0, c0 = rc.initial(ctx, rec, "h"), rc.initial(ctx, rec, "c")
    peep = ctx.const(node.input[7]) if rec.kind == "lstm" and len(node.input) > 7 and node.input[7] else None
    mode = ctx.lowering
    if mode == "fused":
        why = _fused_blocker(ctx, rec, h0, c0)
        if why is None:
            (_fused_lstm if rec.kind == "lstm" else _fused_rnn)(ctx, rec, peep)
            ctx.used_lowerings.add("fused")
            ctx.variable_state = True
            return
        ctx.notes.append(f"{rec.kind.upper()} '{rec.name}': {why}; lowered as a loop.")
        mode = "loop"
    require(peep is None or not np.any(peep), node, "peephole connections outside the fused form")
    ctx.used_lowerings.add(mode)
    if mode == "loop" and rec.steps > 1:
        looped(ctx, rec)
    else:
        _unrolled(ctx, rec, h0, c0)


def kernel_blocker(kind: str, projected: bool, int8: bool, micro: bool) -> str | None:
    """Why no fused TFLite kernel serves a layer of this ``kind`` ("lstm", "gru", "rnn"), whatever its state;
    None when one does. (The streaming lowering asks it before it moves a layer's state into variables.)"""
    if kind == "gru":
        return "TFLite has no fused GRU op"
    if kind == "rnn" and int8:
        return "TFLite's integer quantizer has no sequence-RNN kernel (full int8)"
    if kind == "rnn" and micro:
        return "TFLite Micro has no sequence-RNN kernel"
    if projected and micro:
        return "TFLite Micro's LSTM kernel has no projection"
    return None


def _fused_blocker(ctx: Context, rec: Recurrent, h0: object, c0: object) -> str | None:
    why = kernel_blocker(rec.kind, rec.proj is not None, ctx.int8, ctx.micro)
    if why is not None:
        return why
    if rec.y_c and ctx.graph.used(rec.y_c):
        return "the final cell state is a model output, which the fused TFLite LSTM op cannot return"
    if h0 is not None or c0 is not None:
        return "the initial state is an input or non-zero, and the fused op keeps state in variable tensors"
    return None


def _fused_lstm(ctx: Context, rec: Recurrent, peep: np.ndarray | None) -> None:
    h, b, o = rec.hidden, rec.batch, rec.out_size
    x = rc.x_time_major(ctx, rec)
    seqs, finals = [], []
    for d in range(rec.directions):
        w = rc.gate_blocks(rec.w[d], h, FUSED_ORDER)
        r = rc.gate_blocks(rec.r[d], h, FUSED_ORDER)
        bias = rc.gate_blocks(rec.b[d][: 4 * h] + rec.b[d][4 * h :], h, FUSED_ORDER)
        tag = f"{rec.name}_d{d}"
        ins: list[TensorRef | None] = [reverse_time(ctx, x) if rec.is_reversed(d) else x]
        ins += [ctx.const_tensor(f"{tag}_w{g}", a) for g, a in zip("ifco", w, strict=True)]
        ins += [ctx.const_tensor(f"{tag}_r{g}", a) for g, a in zip("ifco", r, strict=True)]
        if peep is not None and np.any(peep):
            p = peep[d].astype(np.float32)  # ONNX order i, o, f; TFLite slots i, f, o
            ins += [ctx.const_tensor(f"{tag}_p{g}", p[k * h : (k + 1) * h]) for g, k in (("i", 0), ("f", 2), ("o", 1))]
        else:
            ins += [None, None, None]
        ins += [ctx.const_tensor(f"{tag}_b{g}", a) for g, a in zip("ifco", bias, strict=True)]
        ins += [None if rec.proj is None else ctx.const_tensor(tag + "_proj", rec.proj[d]), None]
        ins += [ctx.writer.add_tensor(f"{tag}_h_state", (b, o), variable=True)]
        ins += [ctx.writer.add_tensor(f"{tag}_c_state", (b, h), variable=True)]
        ins += [None, None, None, None]  # no layer norm
        out = ctx.temp((rec.steps, b, o))
        opts = schema.UnidirectionalSequenceLSTMOptionsT()
        opts.fusedActivationFunction = schema.ActivationFunctionType.TANH
        opts.timeMajor = True
        ctx.op(OP.UNIDIRECTIONAL_SEQUENCE_LSTM, ins, [out], opts)
        seqs.append(reverse_time(ctx, out) if rec.is_reversed(d) else out)
        finals.append(_last_step(ctx, out, rec))
    rc.bind_outputs(ctx, rec, seqs, finals, [])


def _fused_rnn(ctx: Context, rec: Recurrent, _peep: object) -> None:
    h, b = rec.hidden, rec.batch
    x = rc.x_time_major(ctx, rec)
    seqs, finals = [], []
    for d in range(rec.directions):
        tag = f"{rec.name}_d{d}"
        ins: list[TensorRef | None] = [reverse_time(ctx, x) if rec.is_reversed(d) else x]
        ins += [ctx.const_tensor(tag + "_w", rec.w[d]), ctx.const_tensor(tag + "_r", rec.r[d]),
                ctx.const_tensor(tag + "_b", rec.b[d][:h] + rec.b[d][h:]),
                ctx.writer.add_tensor(f"{tag}_h_state", (b, h), variable=True)]
        out = ctx.temp((rec.steps, b, h))
        opts = schema.SequenceRNNOptionsT()
        opts.timeMajor = True
        opts.fusedActivationFunction = _ACTIVATION[rec.activation]
        ctx.op(OP.UNIDIRECTIONAL_SEQUENCE_RNN, ins, [out], opts)
        seqs.append(reverse_time(ctx, out) if rec.is_reversed(d) else out)
        finals.append(_last_step(ctx, out, rec))
    rc.bind_outputs(ctx, rec, seqs, finals, [])


_ACTIVATION = {"Tanh": schema.ActivationFunctionType.TANH, "Relu": schema.ActivationFunctionType.RELU}


def _last_step(ctx: Context, out: TensorRef, rec: Recurrent) -> TensorRef:
    """The state after the direction's last step: the op's last output row (its first, run reversed)."""
    last = ctx.temp((1, *out.shape[1:]))
    ctx.slice_to(out, 0, rec.steps - 1, rec.steps, last)
    return last


def _unrolled(ctx: Context, rec: Recurrent, h0: np.ndarray | str | None, c0: np.ndarray | str | None) -> None:
    """Every step written out (or the one step of a streaming graph)."""
    x = ctx.reshape(rc.x_time_major(ctx, rec), (rec.steps * rec.batch, ctx.shape(rec.x)[-1]), rec.x + "_rows")
    seqs, finals_h, finals_c = [], [], []
    runtime_bias = rec.steps > 1 and rec.batch == 1  # a run-time bias is one row: batch 1 only
    for d in range(rec.directions):
        tag = f"{rec.name}_d{d}"
        w, b, weights = step_weights(ctx, rec, d, tag)
        xs = rc.per_step(ctx, ctx.fully_connected(x, w, b), rec.steps, rec.batch, tag + "_x")
        hs: list[TensorRef | None] = [None] * rec.steps
        h = rc.state_tensor(ctx, rec, h0, d, tag + "_h0")
        c = rc.state_tensor(ctx, rec, c0, d, tag + "_c0")
        times = range(rec.steps - 1, -1, -1) if rec.is_reversed(d) else range(rec.steps)
        for t in times:
            if rec.kind == "lstm":
                proj = weights[1] if len(weights) > 1 else None
                h, c = lstm_step(ctx, xs[t], (h, c), weights[0], f"{tag}_t{t}", runtime_bias, proj)
            elif rec.kind == "gru":
                xzr, xn = ctx.split(xs[t], 1, [2 * rec.hidden, rec.hidden], f"{tag}_t{t}_x")
                h = gru_step(ctx, (xzr, xn), h, (weights[0], weights[1], weights[2]), rec.lbr, f"{tag}_t{t}",
                             runtime_bias)
            else:
                h = rnn_step(ctx, xs[t], h, weights[0], rec.activation, runtime_bias)
            hs[t] = h
        assert h is not None
        if rec.y and ctx.graph.used(rec.y):
            seqs.append(ctx.concat([s for s in hs if s is not None], 0))
        finals_h.append(h)
        if c is not None:
            finals_c.append(c)
    rc.bind_outputs(ctx, rec, seqs, finals_h, finals_c)


def step_weights(ctx: Context, rec: Recurrent, d: int, tag: str) -> tuple[TensorRef, TensorRef, list[TensorRef]]:
    """Direction ``d``'s input weight and bias (for the all-steps projection) and its recurrent weights."""
    pw = plain_weights(rec, d)
    if rec.kind == "gru":
        assert pw.rbn is not None
        rest = list(gru_weights(ctx, pw.r, pw.rbn, tag))
    else:
        rest = [ctx.const_tensor(tag + "_r", pw.r)]
        rest += [ctx.const_tensor(tag + "_p", pw.proj)] if pw.proj is not None else []
    return ctx.const_tensor(tag + "_w", np.ascontiguousarray(pw.w)), ctx.const_tensor(tag + "_b", pw.b), rest
