"""The recurrent cells in plain TFLite ops, and the gate layouts the lowerings store their weights in.

Shared by the fused lowering (:mod:`.lstm`: gate order of the fused op, reversing a direction), the unrolled
lowering (:mod:`.lstm`) and the loop lowering (:mod:`.loop`, :mod:`.chain`): one step of an LSTM, GRU or plain
RNN from the step's input projection and the state, the weights of one direction in the plain ops' layout, and
``REVERSE_V2`` over the time axis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from edge_lstm.lower.tflite import recurrent as rc
from edge_lstm.lower.tflite.context import OP, Context
from edge_lstm.lower.tflite.recurrent import Recurrent
from edge_lstm.lower.tflite.writer import TensorRef

#: ONNX LSTM gate order i, o, f, c as TFLite's fused slots i, f, c, o, and as the plain ops' i, f, o, c
FUSED_ORDER, PLAIN_ORDER = [0, 2, 3, 1], [0, 2, 1, 3]


@dataclass(frozen=True)
class PlainWeights:
    """One direction of a layer in the plain ops' layout (LSTM gates i, f, o, c; GRU z, r, n)."""

    w: np.ndarray  #: [G*H, I] input weights
    b: np.ndarray  #: [G*H] input-side bias (LSTM, RNN: both biases; GRU: z, r both, n input only)
    r: np.ndarray  #: [G*H, O] recurrent weights
    rbn: np.ndarray | None = None  #: GRU: the recurrent bias of the n gate
    proj: np.ndarray | None = None  #: LSTM: [P, H] projection of the hidden state


def plain_weights(rec: Recurrent, d: int) -> PlainWeights:
    """Direction ``d`` of ``rec`` in the plain ops' gate layout, biases merged where the cell allows."""
    h = rec.hidden
    if rec.kind == "lstm":
        return PlainWeights(
            np.concatenate(rc.gate_blocks(rec.w[d], h, PLAIN_ORDER)),
            np.concatenate(rc.gate_blocks(rec.b[d][: 4 * h] + rec.b[d][4 * h :], h, PLAIN_ORDER)),
            np.concatenate(rc.gate_blocks(rec.r[d], h, PLAIN_ORDER)),
            proj=None if rec.proj is None else rec.proj[d],
        )
    if rec.kind == "gru":
        wb, rb = rec.b[d][: 3 * h], rec.b[d][3 * h :]
        return PlainWeights(rec.w[d], np.concatenate([wb[: 2 * h] + rb[: 2 * h], wb[2 * h :]]), rec.r[d], rb[2 * h :])
    return PlainWeights(rec.w[d], rec.b[d][:h] + rec.b[d][h:], rec.r[d])


def gru_weights(ctx: Context, r: np.ndarray, rbn: np.ndarray, tag: str, suffix: str = "") -> tuple[
        TensorRef, TensorRef, TensorRef]:
    """A GRU's recurrent weights as :func:`gru_step` takes them: z and r rows, n rows, the n gate's bias."""
    h = r.shape[0] // 3
    return (ctx.const_tensor(f"{tag}_rzr{suffix}", r[: 2 * h]), ctx.const_tensor(f"{tag}_rn{suffix}", r[2 * h :]),
            ctx.const_tensor(f"{tag}_rbn{suffix}", rbn))


def reverse_time(ctx: Context, x: TensorRef) -> TensorRef:
    """``x`` with its first (time) axis reversed: one ``REVERSE_V2``."""
    out = ctx.temp(x.shape)
    ctx.op(OP.REVERSE_V2, [x, ctx.int32("axis0", [0])], [out], schema.ReverseV2OptionsT())
    return out


def _recurrent_product(ctx: Context, h_prev: TensorRef, r: TensorRef, x: TensorRef, runtime_bias: bool) -> TensorRef:
    """``x + h_prev @ r.T``: one fully-connected op with ``x`` as its run-time bias, or the op and an ADD."""
    if runtime_bias:
        return ctx.fully_connected(h_prev, r, x)
    return ctx.binary(OP.ADD, ctx.fully_connected(h_prev, r, None), x)


def lstm_step(
    ctx: Context,
    xt: TensorRef,
    hc: tuple[TensorRef | None, TensorRef | None],
    r: TensorRef,
    tag: str,
    runtime_bias: bool = True,
    proj: TensorRef | None = None,
    split_first: bool = False,
) -> tuple[TensorRef, TensorRef]:
    """One LSTM step from the step's input projection ``xt`` ([B, 4H], gates i, f, o, c) and the state.

    ``runtime_bias``: the projection is the recurrent fully-connected op's bias
    (no ADD); otherwise an ADD follows a bias-free fully-connected op, which
    XNNPACK takes (inside a loop body, where its packed weights are shared).
    ``proj`` ([P, H]) projects the new hidden state (``proj_size``).
    ``split_first``: slice the gates into i, f, o and c before the activations, so LOGISTIC reads 3H values and
    TANH H, not 4H each (one op more: a second slice); the same values, computed by the same elementwise ops.
    """
    h_prev, c_prev = hc
    gates = xt if h_prev is None else _recurrent_product(ctx, h_prev, r, xt, runtime_bias)
    q = xt.shape[1] // 4
    if split_first:
        ifo, pre_g = ctx.split(gates, 1, [3 * q, q], tag + "_g")
        i, f, o = ctx.split(ctx.unary(OP.LOGISTIC, ifo), 1, [q] * 3, tag + "_s")
        g = ctx.unary(OP.TANH, pre_g)
    else:
        sig, tnh = ctx.unary(OP.LOGISTIC, gates), ctx.unary(OP.TANH, gates)
        i, f, o, _ = ctx.split(sig, 1, [q] * 4, tag + "_s")
        g = ctx.split(tnh, 1, [q] * 4, tag + "_t")[3]
    c = ctx.binary(OP.MUL, i, g)
    if c_prev is not None:
        c = ctx.binary(OP.ADD, ctx.binary(OP.MUL, f, c_prev), c)
    h_new = ctx.binary(OP.MUL, o, ctx.unary(OP.TANH, c))
    if proj is not None:
        h_new = ctx.fully_connected(h_new, proj, None)
    return h_new, c


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
    pre = xzr if h_prev is None else _recurrent_product(ctx, h_prev, rzr, xzr, runtime_bias)
    z, r = ctx.split(ctx.unary(OP.LOGISTIC, pre), 1, [rn.shape[0]] * 2, tag + "_s")
    if h_prev is None:
        hn: TensorRef = rbn
    elif lbr:
        hn = ctx.fully_connected(h_prev, rn, rbn)
    else:
        hn = ctx.fully_connected(ctx.binary(OP.MUL, r, h_prev), rn, rbn)
    gated = ctx.binary(OP.MUL, r, hn) if lbr else hn
    n = ctx.unary(OP.TANH, ctx.binary(OP.ADD, xn, gated))
    if h_prev is None:  # h = (1 - z) * n
        return ctx.binary(OP.SUB, n, ctx.binary(OP.MUL, z, n))
    diff = ctx.binary(OP.SUB, h_prev, n)
    return ctx.binary(OP.ADD, n, ctx.binary(OP.MUL, z, diff))


def rnn_step(ctx: Context, xt: TensorRef, h_prev: TensorRef | None, r: TensorRef, activation: str,
             runtime_bias: bool = True) -> TensorRef:
    """One plain RNN step: ``act(x W^T + b + h R^T)`` from the step's input projection ``xt`` ([B, H])."""
    pre = xt if h_prev is None else _recurrent_product(ctx, h_prev, r, xt, runtime_bias)
    return ctx.unary(OP.TANH if activation == "Tanh" else OP.RELU, pre)
