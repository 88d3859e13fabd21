"""Lower ONNX ``LSTM`` and ``GRU`` nodes: fused TFLite LSTM ops, a WHILE loop, or every step written out.

*Fused*: one ``UNIDIRECTIONAL_SEQUENCE_LSTM`` per direction, weights stored once,
state in variable tensors; a reverse direction runs between two ``REVERSE_V2``
ops, so TFLite Micro (which has no bidirectional kernel) runs it too. GRUs and
LSTMs the fused op cannot express (explicit state) go to the loop, with a note.

*Loop* (the ``loop`` lowering, and the fused lowering's fallback): with more
than one time step, a TFLite ``WHILE`` loop whose body advances every stacked
layer a few time steps (see :mod:`.loop`); the weights are written once and the
body's ops use them at every step. With one time step (streaming models) the
step is written out directly.

*Unrolled* (only when asked): the steps are written out: one fully-connected op
computes the input projection of every time step at once; each step then costs
one fully-connected op on the state, with that step's input projection as its
(run-time) bias, plus elementwise ops. XNNPACK leaves a fully-connected op with
a run-time bias to the builtin kernel, which reads the one shared weight matrix
(a delegated op would get a private packed copy per step). A one-step graph
uses a fully-connected op plus an ``ADD`` instead, which TFLite's integer
quantizer takes (it wants constant, 1-D biases).

Batch is 1 (the graph was prepared with batch 1), so ``[T, 1, F]`` and
``[1, T, F]`` have the same memory order and differ only by a reshape.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from ai_edge_litert import schema_py_generated as schema

from edge_lstm.errors import ShapeError
from edge_lstm.lower.tflite.context import OP, Context
from edge_lstm.lower.tflite.graph import attr, require
from edge_lstm.lower.tflite.loop import LoopLayer, run_loop
from edge_lstm.lower.tflite.writer import TensorRef


@dataclass(frozen=True)
class Recurrent:
    """The parsed attributes and inputs of one ONNX LSTM/GRU node."""

    node: onnx.NodeProto
    hidden: int
    directions: int
    steps: int
    w: np.ndarray  # [D, G*H, I]
    r: np.ndarray  # [D, G*H, H]
    b: np.ndarray  # [D, 2*G*H]

    @property
    def reverse_only(self) -> bool:
        """True for direction="reverse"."""
        return attr(self.node, "direction", b"forward") in (b"reverse", "reverse")

    def is_reversed(self, d: int) -> bool:
        """Whether direction ``d`` runs from the last step to the first."""
        return d == 1 or self.reverse_only


def _parse(ctx: Context, node: onnx.NodeProto, gates: int) -> Recurrent:
    x_shape = ctx.shape(node.input[0])
    layout = int(attr(node, "layout", 0))
    steps = x_shape[1] if layout else x_shape[0]
    w, r = ctx.const(node.input[1]), ctx.const(node.input[2])
    require(w is not None and r is not None, node, "run-time weights")
    assert w is not None and r is not None
    hidden = int(attr(node, "hidden_size", r.shape[-1]))
    d = w.shape[0]
    has_b = len(node.input) > 3 and node.input[3]
    b = ctx.const(node.input[3]) if has_b else np.zeros((d, 2 * gates * hidden), np.float32)
    require(b is not None, node, "a run-time bias")
    assert b is not None
    require(attr(node, "clip") is None, node, "cell clipping")
    require(not attr(node, "input_forget", 0), node, "coupled input-forget gates")
    acts = [a.decode() if isinstance(a, bytes) else a for a in attr(node, "activations", [])]
    default = ["Sigmoid", "Tanh", "Tanh"][: gates - 1] * d if gates == 4 else ["Sigmoid", "Tanh"] * d
    require(not acts or acts == default, node, f"activations {acts}")
    if len(node.input) > 4 and node.input[4]:
        lens = ctx.const(node.input[4])
        require(lens is not None and bool(np.all(lens == steps)), node, "variable sequence lengths")
    return Recurrent(node, hidden, d, steps, w.astype(np.float32), r.astype(np.float32), b.astype(np.float32))


def _initial(ctx: Context, rec: Recurrent, slot: int, what: str) -> np.ndarray | str | None:
    """The initial state input: None for zeros, a constant, or the value name when computed at run time."""
    node = rec.node
    if len(node.input) <= slot or not node.input[slot]:
        return None
    name = node.input[slot]
    want = (rec.directions, 1, rec.hidden)
    got = ctx.shape(name)
    if tuple(got) != want:
        raise ShapeError(
            f"The initial {what} state of '{node.name}' has shape {list(got)}, but the layer needs {list(want)} "
            "(directions x batch x hidden).",
            "Pass h0/c0 shaped (layers*directions, batch, hidden), as nn.LSTM/nn.GRU take them.",
        )
    arr = ctx.const(name)
    if arr is None:
        return name
    return None if not np.any(arr) else arr.astype(np.float32)


def _x_time_major(ctx: Context, rec: Recurrent) -> TensorRef:
    x = ctx.tensor(rec.node.input[0])
    return ctx.reshape(x, (rec.steps, 1, x.shape[-1]), rec.node.input[0] + "_tm")


def _bind_outputs(ctx: Context, rec: Recurrent, seqs: list[TensorRef], finals: list[list[TensorRef]]) -> None:
    """Bind Y ([T, D, 1, H]) from per-direction [T, H]-sized sequences, and Y_h/Y_c from [1, H]-sized finals."""
    out = rec.node.output
    if seqs and ctx.graph.used(out[0]):
        flat = [ctx.reshape(s, (rec.steps, rec.hidden), out[0] + "_dir") for s in seqs]
        y = flat[0] if len(flat) == 1 else ctx.concat(flat, 1, out[0] + "_cat")
        ctx.bind(out[0], ctx.reshape(y, ctx.graph.shapes[out[0]], out[0]))
    for k, parts in enumerate(finals, start=1):
        if len(out) > k and ctx.graph.used(out[k]):
            flat = [ctx.reshape(p, (1, rec.hidden), out[k] + "_dir") for p in parts]
            v = flat[0] if len(flat) == 1 else ctx.concat(flat, 0, out[k] + "_cat")
            ctx.bind(out[k], ctx.reshape(v, ctx.graph.shapes[out[k]], out[k]))


# ---- LSTM ---------------------------------------------------------------------------------------


def lower_lstm(ctx: Context, node: onnx.NodeProto) -> None:
    """Lower an ONNX LSTM fused when asked and possible, else as a loop or unrolled (with a note saying why)."""
    rec = _parse(ctx, node, 4)
    h0, c0 = _initial(ctx, rec, 5, "hidden"), _initial(ctx, rec, 6, "cell")
    peep = ctx.const(node.input[7]) if len(node.input) > 7 and node.input[7] else None
    mode = ctx.lowering
    if mode == "fused":
        why = _fused_blocker(ctx, rec, h0, c0)
        if why is None:
            _fused_lstm(ctx, rec, peep)
            ctx.used_lowerings.add("fused")
            ctx.variable_state = True
            return
        ctx.notes.append(f"LSTM '{node.name}': {why}; lowered as a loop.")
        mode = "loop"
    require(peep is None or not np.any(peep), node, "peephole connections outside the fused form")
    if mode == "loop" and rec.steps > 1:
        _looped(ctx, rec)
    else:
        _unrolled_lstm(ctx, rec, h0, c0)
    ctx.used_lowerings.add(mode)


def _fused_blocker(ctx: Context, rec: Recurrent, h0: object, c0: object) -> str | None:
    if len(rec.node.output) > 2 and ctx.graph.used(rec.node.output[2]):
        return "the final cell state is a model output, which the fused TFLite LSTM op cannot return"
    if h0 is not None or c0 is not None:
        return "the initial state is an input or non-zero, and the fused op keeps state in variable tensors"
    return None


def _gate_blocks(m: np.ndarray, h: int, order: list[int]) -> list[np.ndarray]:
    return [np.ascontiguousarray(m[g * h : (g + 1) * h]) for g in order]


def _fused_lstm(ctx: Context, rec: Recurrent, peep: np.ndarray | None) -> None:
    h, name = rec.hidden, rec.node.name or rec.node.output[0]
    x = _x_time_major(ctx, rec)
    seqs, finals_h = [], []
    for d in range(rec.directions):
        # ONNX gate order is i, o, f, c; TFLite's slots are i, f, c, o.
        order = [0, 2, 3, 1]
        w = _gate_blocks(rec.w[d], h, order)
        r = _gate_blocks(rec.r[d], h, order)
        bias = _gate_blocks(rec.b[d][: 4 * h] + rec.b[d][4 * h :], h, order)
        tag = f"{name}_d{d}"
        ins: list[TensorRef | None] = [_reverse(ctx, x, tag + "_in") if rec.is_reversed(d) else x]
        ins += [ctx.const_tensor(f"{tag}_w{g}", a) for g, a in zip("ifco", w, strict=True)]
        ins += [ctx.const_tensor(f"{tag}_r{g}", a) for g, a in zip("ifco", r, strict=True)]
        if peep is not None and np.any(peep):
            p = peep[d].astype(np.float32)  # ONNX order i, o, f; TFLite slots i, f, o
            ins += [ctx.const_tensor(f"{tag}_p{g}", p[k * h : (k + 1) * h]) for g, k in (("i", 0), ("f", 2), ("o", 1))]
        else:
            ins += [None, None, None]
        ins += [ctx.const_tensor(f"{tag}_b{g}", a) for g, a in zip("ifco", bias, strict=True)]
        ins += [None, None]  # no projection
        ins += [ctx.writer.add_tensor(f"{tag}_h_state", (1, h), variable=True)]
        ins += [ctx.writer.add_tensor(f"{tag}_c_state", (1, h), variable=True)]
        ins += [None, None, None, None]  # no layer norm
        out = ctx.temp(tag + "_y", (rec.steps, 1, h))
        opts = schema.UnidirectionalSequenceLSTMOptionsT()
        opts.fusedActivationFunction = schema.ActivationFunctionType.TANH
        opts.timeMajor = True
        ctx.op(OP.UNIDIRECTIONAL_SEQUENCE_LSTM, ins, [out], opts)
        last = ctx.temp(tag + "_last", (1, 1, h))
        ctx.slice_to(out, 0, rec.steps - 1, rec.steps, last)
        seqs.append(_reverse(ctx, out, tag + "_y_fwd") if rec.is_reversed(d) else out)
        finals_h.append(last)
    _bind_outputs(ctx, rec, seqs, [finals_h])


def _reverse(ctx: Context, x: TensorRef, hint: str) -> TensorRef:
    out = ctx.temp(hint, x.shape)
    ctx.op(OP.REVERSE_V2, [x, ctx.int32("axis0", [0])], [out], schema.ReverseV2OptionsT())
    return out


def _state_tensor(ctx: Context, init: np.ndarray | str | None, d: int, hint: str) -> TensorRef | None:
    """Direction ``d``'s initial state as a [1, H] tensor, or None for zeros."""
    if init is None:
        return None
    if isinstance(init, np.ndarray):
        return ctx.const_tensor(hint, init[d].reshape(1, -1))
    full = ctx.tensor(init)
    if full.shape[0] == 1:
        return ctx.reshape(full, (1, full.shape[-1]), hint)
    part = ctx.temp(hint + "_slice", (1, *full.shape[1:]))
    ctx.slice_to(full, 0, d, d + 1, part)
    return ctx.reshape(part, (1, full.shape[-1]), hint)


def _per_step(ctx: Context, xp: TensorRef, steps: int, hint: str) -> list[TensorRef]:
    """Split a [T, N] projection into T tensors of [1, N]."""
    if steps == 1:
        return [ctx.reshape(xp, (1, xp.shape[-1]), hint)]
    return ctx.split(xp, 0, [1] * steps, hint)


def _unrolled_lstm(ctx: Context, rec: Recurrent, h0: np.ndarray | str | None, c0: np.ndarray | str | None) -> None:
    h, name = rec.hidden, rec.node.name or rec.node.output[0]
    x = _x_time_major(ctx, rec)
    order = [0, 2, 1, 3]  # ONNX i, o, f, c -> i, f, o, c: the three sigmoid gates first
    seqs, finals_h, finals_c = [], [], []
    for d in range(rec.directions):
        tag = f"{name}_d{d}"
        w = ctx.const_tensor(tag + "_w", np.concatenate(_gate_blocks(rec.w[d], h, order)))
        r = ctx.const_tensor(tag + "_r", np.concatenate(_gate_blocks(rec.r[d], h, order)))
        b = ctx.const_tensor(tag + "_b", np.concatenate(_gate_blocks(rec.b[d][: 4 * h] + rec.b[d][4 * h :], h, order)))
        xs = _per_step(ctx, ctx.fully_connected(x, w, b, tag + "_xproj"), rec.steps, tag + "_x")
        hs: list[TensorRef | None] = [None] * rec.steps
        hc = (_state_tensor(ctx, h0, d, tag + "_h0"), _state_tensor(ctx, c0, d, tag + "_c0"))
        times = range(rec.steps - 1, -1, -1) if rec.is_reversed(d) else range(rec.steps)
        for t in times:
            hc = lstm_step(ctx, xs[t], hc, r, f"{tag}_t{t}", runtime_bias=rec.steps > 1)
            hs[t] = hc[0]
        assert hc[0] is not None and hc[1] is not None
        if ctx.graph.used(rec.node.output[0]):
            seqs.append(ctx.concat([s for s in hs if s is not None], 0, tag + "_y"))
        finals_h.append(hc[0])
        finals_c.append(hc[1])
    _bind_outputs(ctx, rec, seqs, [finals_h, finals_c])


def lstm_step(
    ctx: Context,
    xt: TensorRef,
    hc: tuple[TensorRef | None, TensorRef | None],
    r: TensorRef,
    tag: str,
    runtime_bias: bool = True,
) -> tuple[TensorRef, TensorRef]:
    """One LSTM step from the step's input projection ``xt`` ([1, 4H], gates i, f, o, c) and the state.

    ``runtime_bias``: the projection is the recurrent fully-connected op's bias
    (no ADD); otherwise an ADD follows a bias-free fully-connected op, which
    XNNPACK takes (inside a loop body, where its packed weights are shared).
    """
    h_prev, c_prev = hc
    gates = xt
    if h_prev is not None and runtime_bias:  # the step's input projection is the recurrent product's bias
        gates = ctx.fully_connected(h_prev, r, xt, tag + "_gates")
    elif h_prev is not None:
        gates = ctx.binary(OP.ADD, ctx.fully_connected(h_prev, r, None, tag + "_rh"), xt, tag + "_gates")
    sig = ctx.unary(OP.LOGISTIC, gates, tag + "_sig")
    tnh = ctx.unary(OP.TANH, gates, tag + "_tanh")
    i, f, o, _ = ctx.split(sig, 1, [xt.shape[1] // 4] * 4, tag + "_s")
    g = ctx.split(tnh, 1, [xt.shape[1] // 4] * 4, tag + "_t")[3]
    c = ctx.binary(OP.MUL, i, g, tag + "_ig")
    if c_prev is not None:
        c = ctx.binary(OP.ADD, ctx.binary(OP.MUL, f, c_prev, tag + "_fc"), c, tag + "_c")
    h_new = ctx.binary(OP.MUL, o, ctx.unary(OP.TANH, c, tag + "_tc"), tag + "_h")
    return h_new, c


# ---- GRU ----------------------------------------------------------------------------------------


def lower_gru(ctx: Context, node: onnx.NodeProto) -> None:
    """Lower an ONNX GRU as a loop (or unrolled when asked): TFLite has no fused GRU op."""
    rec = _parse(ctx, node, 3)
    mode = ctx.lowering
    if mode == "fused":
        ctx.notes.append(f"GRU '{node.name}': TFLite has no fused GRU op; lowered as a loop.")
        mode = "loop"
    h0 = _initial(ctx, rec, 5, "hidden")
    ctx.used_lowerings.add(mode)
    if mode == "loop" and rec.steps > 1:
        _looped(ctx, rec)
        return
    lbr = bool(attr(node, "linear_before_reset", 0))
    h, name = rec.hidden, rec.node.name or rec.node.output[0]
    x = _x_time_major(ctx, rec)
    seqs, finals = [], []
    for d in range(rec.directions):
        tag = f"{name}_d{d}"
        wb, rb = rec.b[d][: 3 * h], rec.b[d][3 * h :]
        bzr = wb[: 2 * h] + rb[: 2 * h]
        xzr_all = ctx.fully_connected(x, ctx.const_tensor(tag + "_wzr", rec.w[d][: 2 * h]),
                                      ctx.const_tensor(tag + "_bzr", bzr), tag + "_xzr")
        xn_all = ctx.fully_connected(x, ctx.const_tensor(tag + "_wn", rec.w[d][2 * h :]),
                                     ctx.const_tensor(tag + "_bn", wb[2 * h :]), tag + "_xn")
        weights = (ctx.const_tensor(tag + "_rzr", rec.r[d][: 2 * h]), ctx.const_tensor(tag + "_rn", rec.r[d][2 * h :]),
                   ctx.const_tensor(tag + "_rbn", rb[2 * h :]))
        xzr, xn = _per_step(ctx, xzr_all, rec.steps, tag + "_xzr"), _per_step(ctx, xn_all, rec.steps, tag + "_xn")
        hs: list[TensorRef | None] = [None] * rec.steps
        state = _state_tensor(ctx, h0, d, tag + "_h0")
        times = range(rec.steps - 1, -1, -1) if rec.is_reversed(d) else range(rec.steps)
        for t in times:
            state = gru_step(ctx, (xzr[t], xn[t]), state, weights, lbr, f"{tag}_t{t}", runtime_bias=rec.steps > 1)
            hs[t] = state
        assert state is not None
        if ctx.graph.used(node.output[0]):
            seqs.append(ctx.concat([s for s in hs if s is not None], 0, tag + "_y"))
        finals.append(state)
    _bind_outputs(ctx, rec, seqs, [finals])


def gru_step(
    ctx: Context,
    x: tuple[TensorRef, TensorRef],
    h_prev: TensorRef | None,
    weights: tuple[TensorRef, TensorRef, TensorRef],
    lbr: bool,
    tag: str,
    runtime_bias: bool = True,
) -> TensorRef:
    """One GRU step from the step's input projections (z and r; n) and the state; see :func:`lstm_step`."""
    xzr, xn = x
    rzr, rn, rbn = weights
    pre = xzr
    if h_prev is not None and runtime_bias:
        pre = ctx.fully_connected(h_prev, rzr, xzr, tag + "_zr")
    elif h_prev is not None:
        pre = ctx.binary(OP.ADD, ctx.fully_connected(h_prev, rzr, None, tag + "_rzr"), xzr, tag + "_zr")
    z, r = ctx.split(ctx.unary(OP.LOGISTIC, pre, tag + "_sig"), 1, [rn.shape[0]] * 2, tag + "_s")
    if h_prev is None:
        hn: TensorRef = rbn
    elif lbr:
        hn = ctx.fully_connected(h_prev, rn, rbn, tag + "_rn")
    else:
        hn = ctx.fully_connected(ctx.binary(OP.MUL, r, h_prev, tag + "_rh"), rn, rbn, tag + "_rn")
    gated = ctx.binary(OP.MUL, r, hn, tag + "_rhn") if lbr else hn
    n = ctx.unary(OP.TANH, ctx.binary(OP.ADD, xn, gated, tag + "_npre"), tag + "_n")
    if h_prev is None:  # h = (1 - z) * n
        return ctx.binary(OP.SUB, n, ctx.binary(OP.MUL, z, n, tag + "_zn"), tag + "_h")
    diff = ctx.binary(OP.SUB, h_prev, n, tag + "_hmn")
    return ctx.binary(OP.ADD, n, ctx.binary(OP.MUL, z, diff, tag + "_zd"), tag + "_h")



# ---- time loop ----------------------------------------------------------------------------------

_RESHAPES = ("Squeeze", "Unsqueeze", "Reshape", "Identity", "Flatten")


def _looped(ctx: Context, rec: Recurrent) -> None:
    """Lower ``rec`` (and the single-direction layers stacked on it) as WHILE loops over time steps."""
    name = rec.node.name or rec.node.output[0]
    if rec.directions == 2:
        seqs, finals_h, finals_c = [], [], []
        need_seq = ctx.graph.used(rec.node.output[0])
        for d in range(2):
            seq, [(h, c)] = run_loop(ctx, _x_2d(ctx, rec), [_loop_layer(ctx, rec, d)], rec.steps, rec.is_reversed(d),
                                     need_seq, f"{name}_d{d}")
            if seq is not None:
                seqs.append(seq)
            finals_h.append(h)
            finals_c.append(c)
        _bind_outputs(ctx, rec, seqs, [finals_h, [c for c in finals_c if c is not None]])
        return
    chain, glue = [rec], []
    while (nxt := _stacked_on(ctx, chain[-1])) is not None:
        chain.append(nxt[0])
        glue += nxt[1]
    layers = [_loop_layer(ctx, r, 0) for r in chain]
    last = chain[-1]
    shortcut = None if rec.reverse_only else _last_step_reads(ctx, last.node.output[0], last.steps)
    need_seq = ctx.graph.used(last.node.output[0]) and shortcut is None
    seq, states = run_loop(ctx, _x_2d(ctx, rec), layers, rec.steps, rec.reverse_only, need_seq, name)
    for r, (h, c) in zip(chain, states, strict=True):
        _bind_outputs(ctx, r, [seq] if r is last and seq is not None else [], [[h], [c] if c is not None else []])
    if shortcut:
        out = shortcut[-1].output[0]
        ctx.bind(out, ctx.reshape(states[-1][0], ctx.graph.shapes[out], out))
    ctx.done.update(id(n) for n in [*(r.node for r in chain[1:]), *glue, *(shortcut or [])])


def _x_2d(ctx: Context, rec: Recurrent) -> TensorRef:
    x = ctx.tensor(rec.node.input[0])
    return ctx.reshape(x, (rec.steps, x.shape[-1]), rec.node.input[0] + "_2d")


def _loop_layer(ctx: Context, rec: Recurrent, d: int) -> LoopLayer:
    h, name = rec.hidden, f"{rec.node.name or rec.node.output[0]}_d{d}"
    if rec.node.op_type == "LSTM":
        order = [0, 2, 1, 3]
        h0, c0 = _initial(ctx, rec, 5, "hidden"), _initial(ctx, rec, 6, "cell")
        return LoopLayer(
            "lstm", h, np.concatenate(_gate_blocks(rec.w[d], h, order)),
            np.concatenate(_gate_blocks(rec.b[d][: 4 * h] + rec.b[d][4 * h :], h, order)),
            np.concatenate(_gate_blocks(rec.r[d], h, order)), None, False,
            _state_tensor(ctx, h0, d, name + "_h0"), _state_tensor(ctx, c0, d, name + "_c0"),
        )
    h0 = _initial(ctx, rec, 5, "hidden")
    wb, rb = rec.b[d][: 3 * h], rec.b[d][3 * h :]
    return LoopLayer(
        "gru", h, rec.w[d], np.concatenate([wb[: 2 * h] + rb[: 2 * h], wb[2 * h :]]), rec.r[d], rb[2 * h :],
        bool(attr(rec.node, "linear_before_reset", 0)), _state_tensor(ctx, h0, d, name + "_h0"), None,
    )


def _users(ctx: Context, name: str) -> list[onnx.NodeProto]:
    return [n for n in ctx.graph.nodes if name in n.input]


def _stacked_on(ctx: Context, below: Recurrent) -> tuple[Recurrent, list[onnx.NodeProto]] | None:
    """The single-direction layer whose only input is ``below``'s sequence (through reshapes), and those reshapes."""
    name, glue = below.node.output[0], []
    while True:
        users = _users(ctx, name)
        if len(users) != 1 or name in ctx.graph.outputs or ctx.graph.consumers.get(name, 0) != 1:
            return None
        user = users[0]
        if user.op_type in _RESHAPES:
            glue.append(user)
            name = user.output[0]
            continue
        if user.op_type not in ("LSTM", "GRU") or list(user.input).index(name) != 0:
            return None
        break
    if user.op_type == "LSTM" and len(user.input) > 7 and user.input[7]:
        peep = ctx.const(user.input[7])
        if peep is None or np.any(peep):
            return None
    rec = _parse(ctx, user, 4 if user.op_type == "LSTM" else 3)
    if rec.directions != 1 or rec.reverse_only or rec.steps != below.steps or below.reverse_only:
        return None
    for slot in (5, 6):
        if len(user.input) > slot:
            _ensure(ctx, user.input[slot])
    return rec, glue


def _ensure(ctx: Context, name: str) -> None:
    """Lower the nodes computing ``name`` now (a stacked layer's initial state, needed before the loop)."""
    if not name or name in ctx.values or ctx.const(name) is not None:
        return
    from edge_lstm.lower.tflite.ops import lower_node

    producer = next(n for n in ctx.graph.nodes if name in n.output)
    for i in producer.input:
        _ensure(ctx, i)
    lower_node(ctx, producer)
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
