"""The op table: each supported ONNX op type and the function that lowers it to TFLite ops.

Every lowering reads its inputs from the :class:`Context` (constants are
written on first use) and binds each of its ONNX outputs to a TFLite tensor.
An op outside :data:`OP_TABLE` raises :class:`UnsupportedOp` naming the node,
the op and the supported set.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from ai_edge_litert import schema_py_generated as schema

from edge_lstm.errors import UnsupportedOp
from edge_lstm.lower.tflite import lstm
from edge_lstm.lower.tflite.context import OP, Context
from edge_lstm.lower.tflite.graph import FC_OP, attr, require
from edge_lstm.lower.tflite.ops_math import MATH_OPS, eltwise, unary
from edge_lstm.lower.tflite.ops_nn import NN_OPS, channels_last_view
from edge_lstm.lower.tflite.recurrent import is_projected_scan
from edge_lstm.lower.tflite.writer import TensorRef

Lowering = Callable[[Context, onnx.NodeProto], None]


def _inp(ctx: Context, node: onnx.NodeProto, i: int = 0):  # type: ignore[no-untyped-def]
    return ctx.tensor(node.input[i])


def _binary(code: int) -> Lowering:
    def lower(ctx: Context, node: onnx.NodeProto) -> None:
        a, b = (_float_operand(ctx, n) for n in node.input[:2])
        ctx.bind(node.output[0], ctx.binary(code, a, b))

    return lower


def _float_operand(ctx: Context, name: str):  # type: ignore[no-untyped-def]
    arr = ctx.const(name)
    if arr is not None:
        return ctx.const_tensor(name, arr.astype(np.float32))
    return ctx.tensor(name)


def _leaky_relu(ctx: Context, node: onnx.NodeProto) -> None:
    opts = schema.LeakyReluOptionsT()
    opts.alpha = float(attr(node, "alpha", 0.01))
    eltwise(ctx, node, lambda c, x: c.unary(OP.LEAKY_RELU, x, opts))


def _gelu(ctx: Context, node: onnx.NodeProto) -> None:
    opts = schema.GeluOptionsT()
    opts.approximate = attr(node, "approximate", b"none") in (b"tanh", "tanh")
    eltwise(ctx, node, lambda c, x: c.unary(OP.GELU, x, opts))


def _reshape_like(ctx: Context, node: onnx.NodeProto) -> None:
    """Reshape, Squeeze, Unsqueeze, Flatten, Identity: only the shape changes."""
    out = node.output[0]
    ctx.bind(out, ctx.reshape(_inp(ctx, node), ctx.graph.shapes[out], out))


def _transpose(ctx: Context, node: onnx.NodeProto) -> None:
    if channels_last_view(ctx, node):  # NCW -> NWC of a convolution's output: its channels-last twin
        return
    x = _inp(ctx, node)
    perm = list(attr(node, "perm", list(reversed(range(len(x.shape))))))
    out = node.output[0]
    moved = [a for a in perm if x.shape[a] != 1]
    if moved == sorted(moved):  # only unit axes move: the memory order is unchanged
        ctx.bind(out, ctx.reshape(x, ctx.graph.shapes[out], out))
        return
    y = ctx.output(out)
    ctx.op(OP.TRANSPOSE, [x, ctx.int32(out + "_perm", perm)], [y], schema.TransposeOptionsT())


def _slice(ctx: Context, node: onnx.NodeProto) -> None:
    x = _inp(ctx, node)
    rank = len(x.shape)
    consts = [ctx.const(n) if len(node.input) > i and node.input[i] else None for i, n in enumerate(node.input)]
    require(all(c is not None for c in consts[1:]), node, "run-time slice bounds")
    starts, ends = consts[1], consts[2]
    assert starts is not None and ends is not None
    axes = consts[3] if len(consts) > 3 and consts[3] is not None else np.arange(len(starts))
    steps = consts[4] if len(consts) > 4 and consts[4] is not None else np.ones(len(starts), np.int64)
    begin, end, strides = [0] * rank, list(x.shape), [1] * rank
    end_mask = 0
    for s, e, a, st in zip(starts, ends, axes, steps, strict=True):
        a = int(a) % rank
        b, stop, step = slice(int(s), int(e), int(st)).indices(x.shape[a])
        begin[a], end[a], strides[a] = b, stop, step
        if step < 0 and stop < 0:
            end_mask |= 1 << a
    opts = schema.StridedSliceOptionsT()
    opts.endMask = end_mask
    ins = [x, ctx.int32("begin", begin), ctx.int32("end", end), ctx.int32("strides", strides)]
    ctx.op(OP.STRIDED_SLICE, ins, [ctx.output(node.output[0])], opts)


def _gather(ctx: Context, node: onnx.NodeProto) -> None:
    x = _inp(ctx, node)
    axis = int(attr(node, "axis", 0)) % len(x.shape)
    idx = ctx.const(node.input[1])
    if idx is not None and idx.ndim == 0:  # one index: a slice that drops the axis
        i = int(idx) % x.shape[axis]
        begin, end = [0] * len(x.shape), list(x.shape)
        begin[axis], end[axis] = i, i + 1
        opts = schema.StridedSliceOptionsT()
        opts.shrinkAxisMask = 1 << axis
        ins = [x, ctx.int32("begin", begin), ctx.int32("end", end), ctx.int32("strides", [1] * len(x.shape))]
        ctx.op(OP.STRIDED_SLICE, ins, [ctx.output(node.output[0])], opts)
        return
    indices = ctx.const_tensor("indices", (idx % x.shape[axis]).astype(np.int32)) if idx is not None else None
    opts2 = schema.GatherOptionsT()
    opts2.axis = axis
    ctx.op(OP.GATHER, [x, indices or ctx.tensor(node.input[1])], [ctx.output(node.output[0])], opts2)


def _gemm(ctx: Context, node: onnx.NodeProto) -> None:
    w = ctx.const(node.input[1])
    require(w is not None and not attr(node, "transA", 0), node, "a run-time weight or transA")
    assert w is not None
    weight = (w if attr(node, "transB", 0) else w.T) * float(attr(node, "alpha", 1.0))
    bias = None
    if len(node.input) > 2 and node.input[2]:
        c = ctx.const(node.input[2])
        require(c is not None and c.size in (1, weight.shape[0]), node, "a run-time or 2-D bias")
        assert c is not None
        bias = np.broadcast_to(c.reshape(-1) * float(attr(node, "beta", 1.0)), (weight.shape[0],))
    _fc(ctx, node, weight, bias)


def _fc(ctx: Context, node: onnx.NodeProto, weight: np.ndarray, bias: np.ndarray | None) -> None:
    x = _inp(ctx, node)
    wt = ctx.const_tensor(node.input[1] + "_weight", np.ascontiguousarray(weight, dtype=np.float32))
    bt = None if bias is None else ctx.const_tensor(node.output[0] + "_bias", np.asarray(bias, np.float32))
    y = ctx.fully_connected(x, wt, bt, keep_dims=len(x.shape) > 2)
    ctx.bind(node.output[0], ctx.reshape(y, ctx.graph.shapes[node.output[0]], node.output[0]))


def _matmul(ctx: Context, node: onnx.NodeProto) -> None:
    w = ctx.const(node.input[1])
    if w is not None and w.ndim == 2:
        _fc(ctx, node, w.T, None)
        return
    opts = schema.BatchMatMulOptionsT()
    ins = [_float_operand(ctx, node.input[0]), _float_operand(ctx, node.input[1])]
    ctx.op(OP.BATCH_MATMUL, ins, [ctx.output(node.output[0])], opts)


def _fused_fc(ctx: Context, node: onnx.NodeProto) -> None:
    w, b = ctx.const(node.input[1]), ctx.const(node.input[2])
    assert w is not None and b is not None
    _fc(ctx, node, w.T, b.reshape(-1))


def _layer_norm(ctx: Context, node: onnx.NodeProto) -> None:
    x = _inp(ctx, node)
    rank = len(x.shape)
    require(int(attr(node, "axis", -1)) % rank == rank - 1, node, "a LayerNormalization over several axes")
    out = node.output[0]
    mean = _mean_last(ctx, x)
    d = ctx.binary(OP.SUB, x, mean)
    var = _mean_last(ctx, ctx.binary(OP.MUL, d, d))
    eps = ctx.const_tensor("eps", np.array(float(attr(node, "epsilon", 1e-5)), np.float32))
    r = ctx.unary(OP.RSQRT, ctx.binary(OP.ADD, var, eps))
    y = ctx.binary(OP.MUL, d, r)
    if len(node.input) > 1 and node.input[1]:
        y = ctx.binary(OP.MUL, y, _float_operand(ctx, node.input[1]))
    if len(node.input) > 2 and node.input[2]:
        y = ctx.binary(OP.ADD, y, _float_operand(ctx, node.input[2]))
    ctx.bind(out, y)


def _mean_last(ctx: Context, x: TensorRef) -> TensorRef:
    out = ctx.temp((*x.shape[:-1], 1))
    opts = schema.ReducerOptionsT()
    opts.keepDims = True
    ctx.op(OP.MEAN, [x, ctx.int32("axis_last", [len(x.shape) - 1])], [out], opts)
    return out


def _concat(ctx: Context, node: onnx.NodeProto) -> None:
    parts = [_float_operand(ctx, n) for n in node.input]
    ctx.concat(parts, int(attr(node, "axis", 0)), out=ctx.output(node.output[0]))


def _split(ctx: Context, node: onnx.NodeProto) -> None:
    x = _inp(ctx, node)
    axis = int(attr(node, "axis", 0)) % len(x.shape)
    sizes = [ctx.graph.shapes[o][axis] for o in node.output]
    for name, ref in zip(node.output, ctx.split(x, axis, sizes, node.output[0]), strict=True):
        ctx.bind(name, ref)


def _scan(ctx: Context, node: onnx.NodeProto) -> None:
    """The Scan a projected LSTM is captured as; any other Scan is outside the table."""
    if not is_projected_scan(node):
        raise UnsupportedOp(node.name or node.output[0], "Scan", SUPPORTED_OPS, target="TFLite")
    lstm.lower_recurrent(ctx, node)


OP_TABLE: dict[str, Lowering] = {
    "Add": _binary(OP.ADD),
    "Sub": _binary(OP.SUB),
    "Mul": _binary(OP.MUL),
    "Div": _binary(OP.DIV),
    "Relu": unary(OP.RELU),
    "Tanh": unary(OP.TANH),
    "Sigmoid": unary(OP.LOGISTIC),
    "Exp": unary(OP.EXP),
    "Neg": unary(OP.NEG),
    "Sqrt": unary(OP.SQRT),
    "LeakyRelu": _leaky_relu,
    "Gelu": _gelu,
    "Identity": _reshape_like,
    "Reshape": _reshape_like,
    "Squeeze": _reshape_like,
    "Unsqueeze": _reshape_like,
    "Flatten": _reshape_like,
    "Transpose": _transpose,
    "Slice": _slice,
    "Gather": _gather,
    "Gemm": _gemm,
    "MatMul": _matmul,
    FC_OP: _fused_fc,
    "LayerNormalization": _layer_norm,
    "Concat": _concat,
    "Split": _split,
    "LSTM": lstm.lower_recurrent,
    "GRU": lstm.lower_recurrent,
    "RNN": lstm.lower_recurrent,
    "Scan": _scan,
    **NN_OPS,
    **MATH_OPS,
}

#: ONNX op types a user's graph may contain (internal fused ops excluded)
SUPPORTED_OPS: tuple[str, ...] = tuple(sorted([*(k for k in OP_TABLE if k not in (FC_OP, "Scan")),
                                               "Erf (as part of GELU)", "Scan (a projected LSTM's)"]))


def lower_node(ctx: Context, node: onnx.NodeProto) -> None:
    """Lower one ONNX node through the op table."""
    fn = OP_TABLE.get(node.op_type)
    if fn is None or node.domain not in ("", "ai.onnx"):
        raise UnsupportedOp(node.name or node.output[0], node.op_type, SUPPORTED_OPS, target="TFLite")
    fn(ctx, node)
