"""Elementwise, reduction and shape ops of the op table (beyond the core ones in :mod:`.ops`).

Single-input elementwise ops (activations, clips, ``Log``, ``Softplus``, ...) run on
a convolution's channels-last twin when the input has one (see
:mod:`.ops_nn`), so they do not force a transpose between two convolutions.
Ops TFLite has no builtin for are composed from builtins, and say so here:
``Softplus`` is ``relu(x) + log(1 + exp(-|x|))`` (exact, without overflow),
``HardSigmoid`` a multiply-add clipped to [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from ai_edge_litert import schema_py_generated as schema

from edge_lstm.lower.tflite.context import OP, Context
from edge_lstm.lower.tflite.graph import attr, require
from edge_lstm.lower.tflite.ops_nn import bind_nhwc
from edge_lstm.lower.tflite.writer import TensorRef
from edge_lstm.tflite_schema import TENSOR_TYPES

Lowering = Callable[[Context, onnx.NodeProto], None]
Build = Callable[[Context, TensorRef], TensorRef]


def eltwise(ctx: Context, node: onnx.NodeProto, build: Build) -> None:
    """Lower a one-input elementwise node with ``build`` (on the channels-last twin when there is one)."""
    src, out = node.input[0], node.output[0]
    if src in ctx.nhwc:
        bind_nhwc(ctx, out, build(ctx, ctx.nhwc[src]))
        return
    ctx.bind(out, build(ctx, ctx.tensor(src)))


def unary(code: int, options: Callable[[], object] | None = None) -> Lowering:
    """A table entry for a TFLite op with one input and the ONNX op's semantics."""

    def lower(ctx: Context, node: onnx.NodeProto) -> None:
        eltwise(ctx, node, lambda c, x: c.unary(code, x, options() if options else None))

    return lower


def _scalar(ctx: Context, value: float) -> TensorRef:
    return ctx.const_tensor("scalar", np.array(value, np.float32))


def _optional_const(ctx: Context, node: onnx.NodeProto, index: int, attr_name: str) -> float | None:
    if len(node.input) > index and node.input[index]:
        arr = ctx.const(node.input[index])
        require(arr is not None, node, f"a run-time {attr_name}")
        assert arr is not None
        return float(np.asarray(arr).reshape(-1)[0])
    value = attr(node, attr_name)
    return None if value is None else float(value)


def _clip(ctx: Context, node: onnx.NodeProto) -> None:
    lo, hi = _optional_const(ctx, node, 1, "min"), _optional_const(ctx, node, 2, "max")

    def build(c: Context, x: TensorRef) -> TensorRef:
        # int8: TFLite Micro's integer RELU6 ignored the output scale TFLite's quantizer gave it (wrong values)
        if (lo, hi) == (0.0, 6.0) and not c.int8:
            return c.unary(OP.RELU6, x)
        if (lo, hi) == (-1.0, 1.0) and not c.int8:
            return c.unary(OP.RELU_N1_TO_1, x)
        if lo == 0.0 and hi is None:
            return c.unary(OP.RELU, x)
        y = x if lo is None else c.binary(OP.MAXIMUM, x, _scalar(c, lo))
        return y if hi is None else c.binary(OP.MINIMUM, y, _scalar(c, hi))

    eltwise(ctx, node, build)


def _hard_sigmoid(ctx: Context, node: onnx.NodeProto) -> None:
    alpha, beta = float(attr(node, "alpha", 0.2)), float(attr(node, "beta", 0.5))

    def build(c: Context, x: TensorRef) -> TensorRef:
        y = c.binary(OP.ADD, c.binary(OP.MUL, x, _scalar(c, alpha)), _scalar(c, beta))
        return c.binary(OP.MAXIMUM, c.binary(OP.MINIMUM, y, _scalar(c, 1.0)), _scalar(c, 0.0))

    eltwise(ctx, node, build)


def _softplus(ctx: Context, node: onnx.NodeProto) -> None:
    def build(c: Context, x: TensorRef) -> TensorRef:
        # 0 - |x| rather than NEG: TFLite's integer quantizer has no NEG
        tail = c.unary(OP.EXP, c.binary(OP.SUB, _scalar(c, 0.0), c.unary(OP.ABS, x)))
        log1p = c.unary(OP.LOG, c.binary(OP.ADD, tail, _scalar(c, 1.0)))
        return c.binary(OP.ADD, c.unary(OP.RELU, x), log1p)

    eltwise(ctx, node, build)


def _pow(ctx: Context, node: onnx.NodeProto) -> None:
    e = ctx.const(node.input[1])
    if e is not None and e.size == 1 and node.input[0] not in ctx.graph.consts:
        k = float(e.reshape(-1)[0])
        if k in (1.0, 2.0, 0.5):
            builds: dict[float, Build] = {
                1.0: lambda c, x: x,
                2.0: lambda c, x: c.binary(OP.MUL, x, x),
                0.5: lambda c, x: c.unary(OP.SQRT, x),
            }
            eltwise(ctx, node, builds[k])
            return
    a, b = (_float(ctx, n) for n in node.input[:2])
    ctx.bind(node.output[0], ctx.binary(OP.POW, a, b))


def _float(ctx: Context, name: str) -> TensorRef:
    arr = ctx.const(name)
    return ctx.const_tensor(name, arr.astype(np.float32)) if arr is not None else ctx.tensor(name)


# ---- reductions --------------------------------------------------------------------------------

_REDUCERS = {"ReduceMean": OP.MEAN, "ReduceSum": OP.SUM, "ReduceMax": OP.REDUCE_MAX, "ReduceMin": OP.REDUCE_MIN}


def _reduce(ctx: Context, node: onnx.NodeProto) -> None:
    x = ctx.tensor(node.input[0])
    rank = len(x.shape)
    axes = attr(node, "axes")
    if len(node.input) > 1 and node.input[1]:
        arr = ctx.const(node.input[1])
        require(arr is not None, node, "run-time reduction axes")
        axes = list(np.asarray(arr).reshape(-1))
    if not axes:
        require(not attr(node, "noop_with_empty_axes", 0), node, "an empty-axes no-op reduction")
        axes = list(range(rank))
    axes = sorted({int(a) % rank for a in axes})
    out = node.output[0]
    keep = bool(attr(node, "keepdims", 1))
    opts = schema.ReducerOptionsT()
    opts.keepDims = keep
    y = ctx.output(out)
    ctx.op(_REDUCERS[node.op_type], [x, ctx.int32(out + "_axes", axes)], [y], opts)


def _arg_max(ctx: Context, node: onnx.NodeProto) -> None:
    x = ctx.tensor(node.input[0])
    require(not attr(node, "select_last_index", 0), node, "select_last_index")
    axis = int(attr(node, "axis", 0)) % len(x.shape)
    out = node.output[0]
    reduced = tuple(d for a, d in enumerate(x.shape) if a != axis)
    y = ctx.temp(reduced, np.int32)
    opts = schema.ArgMaxOptionsT()
    opts.outputType = schema.TensorType.INT32
    ctx.op(OP.ARG_MAX, [x, ctx.int32(out + "_axis", [axis])], [y], opts)
    if ctx.graph.shapes[out] != reduced:  # keepdims
        y = ctx.reshape(y, ctx.graph.shapes[out], out, out=ctx.writer.add_tensor("", ctx.graph.shapes[out], np.int32))
    ctx.bind(out, y)


# ---- shape and selection ------------------------------------------------------------------------


def _expand(ctx: Context, node: onnx.NodeProto) -> None:
    x, out = ctx.tensor(node.input[0]), node.output[0]
    shape = ctx.graph.shapes[out]
    if tuple(x.shape) == tuple(shape) or int(np.prod(x.shape)) == int(np.prod(shape)):
        ctx.bind(out, ctx.reshape(x, shape, out))
        return
    y = ctx.output(out, dtype=_dtype(ctx, x))
    # version 2: TFLite registers BROADCAST_TO from version 2 (1 was the converter's flex fallback)
    ctx.op(OP.BROADCAST_TO, [x, ctx.int32(out + "_shape", list(shape))], [y], schema.BroadcastToOptionsT(), version=2)


def _tile(ctx: Context, node: onnx.NodeProto) -> None:
    reps = ctx.const(node.input[1])
    require(reps is not None, node, "run-time repeats")
    assert reps is not None
    x, out = ctx.tensor(node.input[0]), node.output[0]
    if np.all(reps == 1):
        ctx.bind(out, x)
        return
    y = ctx.output(out, dtype=_dtype(ctx, x))
    ctx.op(OP.TILE, [x, ctx.int32(out + "_multiples", [int(r) for r in reps])], [y], schema.TileOptionsT())


def _pad(ctx: Context, node: onnx.NodeProto) -> None:
    x, out = ctx.tensor(node.input[0]), node.output[0]
    rank = len(x.shape)
    pads = ctx.const(node.input[1]) if len(node.input) > 1 and node.input[1] else np.asarray(attr(node, "pads", []))
    require(pads is not None, node, "run-time pads")
    assert pads is not None
    pads = np.asarray(pads, np.int64).reshape(-1)
    axes = list(range(rank))
    if len(node.input) > 3 and node.input[3]:
        ax = ctx.const(node.input[3])
        require(ax is not None, node, "run-time pad axes")
        axes = [int(a) % rank for a in np.asarray(ax).reshape(-1)]
    require(bool(np.all(pads >= 0)), node, "negative pads (cropping)")
    table = np.zeros((rank, 2), np.int32)
    for i, a in enumerate(axes):
        table[a] = (pads[i], pads[i + len(axes)])
    mode = attr(node, "mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    value = _optional_const(ctx, node, 2, "value") or 0.0
    y = ctx.output(out)
    if mode == "reflect":
        opts = schema.MirrorPadOptionsT()
        opts.mode = schema.MirrorPadMode.REFLECT
        ctx.op(OP.MIRROR_PAD, [x, ctx.const_tensor("paddings", table)], [y], opts)
    elif mode == "constant" and value == 0.0:
        ctx.op(OP.PAD, [x, ctx.const_tensor("paddings", table)], [y], schema.PadOptionsT())
    elif ctx.int8:  # TFLite's quantizer leaves PADV2's value in float: pad x - value with zeros, add value back
        require(mode == "constant", node, f"pad mode '{mode}'")
        shifted = ctx.binary(OP.SUB, x, _scalar(ctx, value))
        padded = ctx.temp(ctx.graph.shapes[out])
        ctx.op(OP.PAD, [shifted, ctx.const_tensor("paddings", table)], [padded], schema.PadOptionsT())
        ctx.op(OP.ADD, [padded, _scalar(ctx, value)], [y], schema.AddOptionsT())
    else:
        require(mode == "constant", node, f"pad mode '{mode}'")
        ins: list[TensorRef | None] = [x, ctx.const_tensor("paddings", table), _scalar(ctx, value)]
        ctx.op(OP.PADV2, ins, [y], schema.PadV2OptionsT())


def _where(ctx: Context, node: onnx.NodeProto) -> None:
    cond = ctx.const(node.input[0])
    c = ctx.const_tensor("cond", cond.astype(np.bool_)) if cond is not None else ctx.tensor(node.input[0])
    a, b = _float(ctx, node.input[1]), _float(ctx, node.input[2])
    y = ctx.output(node.output[0])
    ctx.op(OP.SELECT_V2, [c, a, b], [y], schema.SelectV2OptionsT())


_CAST_TO = {1: np.float32, 10: np.float32, 11: np.float32, 6: np.int32, 7: np.int32, 9: np.bool_}


def _dtype(ctx: Context, x: TensorRef) -> type:
    code = ctx.writer.tensors[x.index].type
    return np.dtype(TENSOR_TYPES[code]).type if code in TENSOR_TYPES else np.float32


def _cast(ctx: Context, node: onnx.NodeProto) -> None:
    to = int(attr(node, "to", 1))
    require(to in _CAST_TO, node, f"a cast to ONNX type {to}")
    x, out = ctx.tensor(node.input[0]), node.output[0]
    want = _CAST_TO[to]
    have = _dtype(ctx, x)
    if have == want or (want is np.int32 and have is np.int64):
        ctx.bind(out, x)  # int64 values are int32 in the lowering already (or stay int64 inputs)
        return
    y = ctx.output(out, dtype=want)
    ctx.op(OP.CAST, [x], [y])


def _dropout(ctx: Context, node: onnx.NodeProto) -> None:
    require(len(node.output) < 2 or not ctx.graph.used(node.output[1]), node, "a Dropout mask output")
    ctx.bind(node.output[0], ctx.tensor(node.input[0]))


def _variadic(code: int) -> Lowering:
    """Max/Min/Sum over any number of inputs: a chain of MAXIMUM/MINIMUM/ADD."""

    def lower(ctx: Context, node: onnx.NodeProto) -> None:
        parts = [_float(ctx, n) for n in node.input]
        acc = parts[0]
        for p in parts[1:]:
            acc = ctx.binary(code, acc, p)
        ctx.bind(node.output[0], acc)

    return lower


def _compare(code: int) -> Lowering:
    def lower(ctx: Context, node: onnx.NodeProto) -> None:
        a, b = (_float(ctx, n) for n in node.input[:2])
        y = ctx.output(node.output[0], dtype=np.bool_)
        ctx.op(code, [a, b], [y])

    return lower


def _reciprocal(ctx: Context, node: onnx.NodeProto) -> None:
    eltwise(ctx, node, lambda c, x: c.binary(OP.DIV, _scalar(c, 1.0), x))


def _softmax(ctx: Context, node: onnx.NodeProto) -> None:
    """SOFTMAX on the last axis; another axis is moved last and back (two transposes)."""
    x, out = ctx.tensor(node.input[0]), node.output[0]
    rank = len(x.shape)
    axis = int(attr(node, "axis", -1)) % rank
    opts = schema.SoftmaxOptionsT()
    opts.beta = 1.0
    if axis == rank - 1 or all(d == 1 for d in x.shape[axis + 1 :]):  # memory order already puts it last
        flat = ctx.reshape(x, (*x.shape[:axis], int(np.prod(x.shape[axis:]))), out + "_flat")
        ctx.bind(out, ctx.reshape(ctx.unary(OP.SOFTMAX, flat, opts), ctx.graph.shapes[out], out))
        return
    perm = [a for a in range(rank) if a != axis] + [axis]
    moved = ctx.temp(tuple(x.shape[p] for p in perm))
    ctx.op(OP.TRANSPOSE, [x, ctx.int32("perm", perm)], [moved], schema.TransposeOptionsT())
    sm = ctx.unary(OP.SOFTMAX, moved, opts)
    back = ctx.output(out)
    ctx.op(OP.TRANSPOSE, [sm, ctx.int32("perm_back", list(np.argsort(perm)))], [back], schema.TransposeOptionsT())


MATH_OPS: dict[str, Lowering] = {
    "ReduceMean": _reduce,
    "ReduceSum": _reduce,
    "ReduceMax": _reduce,
    "ReduceMin": _reduce,
    "ArgMax": _arg_max,
    "Clip": _clip,
    "HardSigmoid": _hard_sigmoid,
    "HardSwish": unary(OP.HARD_SWISH),
    "Softplus": _softplus,
    "Log": unary(OP.LOG),
    "Abs": unary(OP.ABS),
    "Floor": unary(OP.FLOOR),
    "Ceil": unary(OP.CEIL),
    "Reciprocal": _reciprocal,
    "Pow": _pow,
    "Max": _variadic(OP.MAXIMUM),
    "Min": _variadic(OP.MINIMUM),
    "Sum": _variadic(OP.ADD),
    "Greater": _compare(OP.GREATER),
    "Less": _compare(OP.LESS),
    "Equal": _compare(OP.EQUAL),
    "Where": _where,
    "Cast": _cast,
    "Expand": _expand,
    "Tile": _tile,
    "Pad": _pad,
    "Dropout": _dropout,
    "Softmax": _softmax,
}
