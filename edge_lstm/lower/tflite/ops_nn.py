"""Convolutions, pooling and BatchNormalization: ONNX's channels-first ops on TFLite's channels-last kernels.

ONNX convolutions and pools take ``[N, C, W]`` (1-D) or ``[N, C, H, W]``; TFLite's
take ``[N, H, W, C]`` (a 1-D one as ``H = 1``). Each result is kept as that
channels-last *twin* (``Context.nhwc``) and its channels-first view is written
only if something reads it, so ``Conv -> Relu -> MaxPool -> Conv`` transposes
once on the way in and once on the way out; the usual ``transpose(1, 2)`` into
an LSTM reads the twin directly. BatchNormalization is folded into the
convolution or fully-connected layer before it by :func:`fold_batchnorm` when
that layer's output feeds nothing else; otherwise it is a per-channel MUL and ADD.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from ai_edge_litert import schema_py_generated as schema

from edge_lstm.lower.tflite.context import OP, Context
from edge_lstm.lower.tflite.graph import FC_OP, Graph, attr, require
from edge_lstm.lower.tflite.writer import TensorRef

Lowering = Callable[[Context, onnx.NodeProto], None]


# ---- layout ------------------------------------------------------------------------------------


def to_nhwc(ctx: Context, name: str) -> TensorRef:
    """The channels-last twin of the NCW/NCHW value ``name`` (``[N, 1, W, C]`` for 1-D)."""
    if name in ctx.nhwc:
        return ctx.nhwc[name]
    x = ctx.tensor(name)
    if len(x.shape) == 3:
        n, c, w = x.shape
        t = _transpose(ctx, x, [0, 2, 1], name + "_nwc")
        twin = ctx.reshape(t, (n, 1, w, c), name + "_nhwc")
    else:
        require(len(x.shape) == 4, _node_for(ctx, name), "a convolution or pool input of rank other than 3 or 4")
        twin = _transpose(ctx, x, [0, 2, 3, 1], name + "_nhwc")
    ctx.nhwc[name] = twin
    return twin


def bind_nhwc(ctx: Context, name: str, twin: TensorRef) -> None:
    """Bind the ONNX value ``name`` (NCW/NCHW) to a channels-last result; its own layout is written lazily."""
    ctx.nhwc[name] = twin
    shape = ctx.graph.shapes[name]

    def nchw() -> TensorRef:
        if len(shape) == 3:
            flat = ctx.reshape(twin, (shape[0], shape[2], shape[1]), name + "_nwc")
            return _transpose(ctx, flat, [0, 2, 1], name, out=ctx.writer.add_tensor(name, shape))
        return _transpose(ctx, twin, [0, 3, 1, 2], name, out=ctx.writer.add_tensor(name, shape))

    ctx.lazy[name] = nchw


def _transpose(ctx: Context, x: TensorRef, perm: list[int], hint: str, out: TensorRef | None = None) -> TensorRef:
    shape = tuple(x.shape[p] for p in perm)
    out = out or ctx.temp(shape)
    ctx.op(OP.TRANSPOSE, [x, ctx.int32(hint + "_perm", perm)], [out], schema.TransposeOptionsT())
    return out


def _node_for(ctx: Context, name: str) -> onnx.NodeProto:
    return next((n for n in ctx.graph.nodes if name in n.input), ctx.graph.nodes[0])


def channels_last_view(ctx: Context, node: onnx.NodeProto) -> bool:
    """A Transpose NCW -> NWC (NCHW -> NHWC) of a value with a twin: bind the twin (reshaped), no op."""
    src = node.input[0]
    if node.op_type != "Transpose" or src not in ctx.nhwc:
        return False
    perm = list(attr(node, "perm", []))
    rank = len(ctx.graph.shapes[src])
    if perm != ([0, 2, 1] if rank == 3 else [0, 2, 3, 1]):
        return False
    out = node.output[0]
    ctx.bind(out, ctx.reshape(ctx.nhwc[src], ctx.graph.shapes[out], out))
    return True


# ---- padding -----------------------------------------------------------------------------------


def _spatial(node: onnx.NodeProto, rank: int, name: str, default: int) -> list[int]:
    """Strides or dilations as TFLite's (H, W) pair; a 1-D op runs with H = 1."""
    vals = [int(v) for v in attr(node, name, [default] * rank)]
    return vals if rank == 2 else [1, vals[0]]


def _padding(ctx: Context, node: onnx.NodeProto, x: TensorRef, kernel: list[int], strides: list[int],
             dilations: list[int], value: float = 0.0) -> tuple[TensorRef, int]:
    """TFLite's SAME or VALID padding for the node's pads; an explicit PAD op when neither matches."""
    rank = len(kernel)
    auto = attr(node, "auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    pads = list(attr(node, "pads", [0] * (2 * rank)))
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        require(auto == "SAME_UPPER" or all(s == 1 for s in strides), node, "SAME_LOWER padding with strides")
        return x, schema.Padding.SAME
    require(auto in ("NOTSET", "VALID"), node, f"auto_pad {auto}")
    if rank == 1:
        pads = [0, pads[0], 0, pads[1]]  # H = 1
    begin, end = pads[:2], pads[2:]
    if not any(pads):
        return x, schema.Padding.VALID
    h, w = x.shape[1], x.shape[2]
    same = []
    for size, k, s, d in zip((h, w), kernel if rank == 2 else [1, kernel[0]], strides, dilations, strict=True):
        eff = (k - 1) * d + 1
        total = max((-(-size // s) - 1) * s + eff - size, 0)
        same.append((total // 2, total - total // 2))
    if [b for b, _ in same] == begin and [e for _, e in same] == end:
        return x, schema.Padding.SAME
    paddings = np.array([[0, 0], [begin[0], end[0]], [begin[1], end[1]], [0, 0]], np.int32)
    shape = (x.shape[0], h + begin[0] + end[0], w + begin[1] + end[1], x.shape[3])
    out = ctx.temp(shape)
    if value == 0.0:
        ctx.op(OP.PAD, [x, ctx.const_tensor("paddings", paddings)], [out], schema.PadOptionsT())
    else:
        ctx.op(OP.PADV2, [x, ctx.const_tensor("paddings", paddings), ctx.const_tensor("pad_value",
                                                                                   np.array(value, np.float32))],
               [out], schema.PadV2OptionsT())
    return out, schema.Padding.VALID


def _out_twin_shape(ctx: Context, node: onnx.NodeProto) -> tuple[int, int, int, int]:
    shape = ctx.graph.shapes[node.output[0]]
    return (shape[0], 1, shape[2], shape[1]) if len(shape) == 3 else (shape[0], shape[2], shape[3], shape[1])


# ---- convolutions ------------------------------------------------------------------------------


def _conv(ctx: Context, node: onnx.NodeProto) -> None:
    w = ctx.const(node.input[1])
    require(w is not None, node, "a run-time convolution weight")
    assert w is not None
    rank = w.ndim - 2
    require(rank in (1, 2), node, f"a {rank}-D convolution (1-D and 2-D are supported)")
    group = int(attr(node, "group", 1))
    strides, dilations = _spatial(node, rank, "strides", 1), _spatial(node, rank, "dilations", 1)
    kernel = list(w.shape[2:])
    x, padding = _padding(ctx, node, to_nhwc(ctx, node.input[0]), kernel, strides, dilations)
    cout, cin_g = w.shape[0], w.shape[1]
    filt = w.reshape(cout, cin_g, 1, kernel[0]) if rank == 1 else w
    bias = ctx.const(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(cout, np.float32)
    require(bias is not None, node, "a run-time convolution bias")
    assert bias is not None
    out = ctx.temp(_out_twin_shape(ctx, node))
    cin = x.shape[3]
    if group == 1:
        opts = schema.Conv2DOptionsT()
        code, weight = OP.CONV_2D, np.transpose(filt, (0, 2, 3, 1))  # [O, H, W, I]
    else:
        require(group == cin and cin_g == 1, node, f"a grouped convolution (group {group} of {cin} channels)")
        opts = schema.DepthwiseConv2DOptionsT()
        opts.depthMultiplier = cout // cin
        code, weight = OP.DEPTHWISE_CONV_2D, np.transpose(filt, (1, 2, 3, 0))  # [1, H, W, O]
    opts.padding = padding
    opts.strideH, opts.strideW = strides
    opts.dilationHFactor, opts.dilationWFactor = dilations
    wt = ctx.const_tensor(node.input[1] + "_filter", np.ascontiguousarray(weight, np.float32))
    bt = ctx.const_tensor(node.output[0] + "_bias", np.asarray(bias, np.float32).reshape(-1))
    ctx.op(code, [x, wt, bt], [out], opts)
    bind_nhwc(ctx, node.output[0], out)


def _conv_transpose(ctx: Context, node: onnx.NodeProto) -> None:
    w = ctx.const(node.input[1])
    require(w is not None, node, "a run-time convolution weight")
    assert w is not None
    rank = w.ndim - 2
    require(rank in (1, 2) and int(attr(node, "group", 1)) == 1, node, "a grouped or 3-D transposed convolution")
    require(not any(attr(node, "output_padding", [])) and not attr(node, "output_shape", None), node,
            "output_padding or output_shape on a transposed convolution")
    require(all(d == 1 for d in attr(node, "dilations", [1] * rank)), node, "a dilated transposed convolution")
    strides = _spatial(node, rank, "strides", 1)
    pads = list(attr(node, "pads", [0] * (2 * rank)))
    pads = [0, pads[0], 0, pads[1]] if rank == 1 else pads
    x = to_nhwc(ctx, node.input[0])
    cin, cout = w.shape[0], w.shape[1]
    kernel = [1, w.shape[2]] if rank == 1 else list(w.shape[2:])
    filt = w.reshape(cin, cout, *kernel)
    full = (x.shape[0], (x.shape[1] - 1) * strides[0] + kernel[0], (x.shape[2] - 1) * strides[1] + kernel[1], cout)
    opts = schema.TransposeConvOptionsT()
    opts.padding = schema.Padding.VALID
    opts.strideH, opts.strideW = strides
    bias = ctx.const(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(cout, np.float32)
    assert bias is not None
    y = ctx.temp(full)
    ins: list[TensorRef | None] = [ctx.int32("output_shape", list(full)),
           ctx.const_tensor(node.input[1] + "_filter", np.ascontiguousarray(np.transpose(filt, (1, 2, 3, 0)),
                                                                           np.float32)),
           x, ctx.const_tensor(node.output[0] + "_bias", np.asarray(bias, np.float32))]
    ctx.op(OP.TRANSPOSE_CONV, ins, [y], opts)
    if any(pads):  # ONNX pads crop the full output
        out = ctx.temp(_out_twin_shape(ctx, node))
        begin, end = [0, pads[0], pads[1], 0], [full[0], full[1] - pads[2], full[2] - pads[3], full[3]]
        ctx.op(OP.STRIDED_SLICE, [y, ctx.int32("begin", begin), ctx.int32("end", end), ctx.int32("strides", [1] * 4)],
               [out], schema.StridedSliceOptionsT())
        y = out
    bind_nhwc(ctx, node.output[0], y)


# ---- pooling -----------------------------------------------------------------------------------


def _pool(code: int) -> Lowering:
    def lower(ctx: Context, node: onnx.NodeProto) -> None:
        kernel = list(attr(node, "kernel_shape", []))
        rank = len(kernel)
        require(rank in (1, 2), node, f"{rank}-D pooling")
        require(not attr(node, "ceil_mode", 0) or _floor_equals_ceil(ctx, node, kernel), node, "ceil_mode")
        strides, dilations = _spatial(node, rank, "strides", 1), _spatial(node, rank, "dilations", 1)
        require(all(d == 1 for d in dilations), node, "dilated pooling")
        pad_value = float("-inf") if code == OP.MAX_POOL_2D else 0.0
        if code == OP.AVERAGE_POOL_2D and any(attr(node, "pads", [])) and attr(node, "count_include_pad", 0):
            require(False, node, "average pooling that counts the padding")
        x, padding = _padding(ctx, node, to_nhwc(ctx, node.input[0]), kernel, strides, dilations, pad_value)
        require(padding != schema.Padding.VALID or code == OP.MAX_POOL_2D or x is ctx.nhwc[node.input[0]], node,
                "average pooling with asymmetric padding")
        opts = schema.Pool2DOptionsT()
        opts.padding = padding
        opts.strideH, opts.strideW = strides
        opts.filterHeight, opts.filterWidth = kernel if rank == 2 else [1, kernel[0]]
        out = ctx.temp(_out_twin_shape(ctx, node))
        ctx.op(code, [x], [out], opts)
        bind_nhwc(ctx, node.output[0], out)

    return lower


def _floor_equals_ceil(ctx: Context, node: onnx.NodeProto, kernel: list[int]) -> bool:
    shape = ctx.shape(node.input[0])[2:]
    strides = list(attr(node, "strides", [1] * len(kernel)))
    pads = list(attr(node, "pads", [0] * 2 * len(kernel)))
    for i, (n, k, s) in enumerate(zip(shape, kernel, strides, strict=True)):
        span = n + pads[i] + pads[i + len(kernel)] - k
        if span % s:
            return False
    return True


def _global_average_pool(ctx: Context, node: onnx.NodeProto) -> None:
    x = ctx.tensor(node.input[0])
    out = ctx.output(node.output[0])
    opts = schema.ReducerOptionsT()
    opts.keepDims = True
    ctx.op(OP.MEAN, [x, ctx.int32("spatial_axes", list(range(2, len(x.shape))))], [out], opts)


# ---- batch normalization -----------------------------------------------------------------------


def _bn_scale_shift(graph: Graph, node: onnx.NodeProto) -> tuple[np.ndarray, np.ndarray] | None:
    vals = [graph.consts.get(n) for n in node.input[1:5]]
    if any(v is None for v in vals):
        return None
    gamma, beta, mean, var = (np.asarray(v, np.float64) for v in vals)  # type: ignore[arg-type]
    scale = gamma / np.sqrt(var + float(attr(node, "epsilon", 1e-5)))
    return scale, beta - mean * scale


def fold_batchnorm(graph: Graph) -> None:
    """Fold each inference BatchNormalization into the Conv/ConvTranspose/Gemm/FC before it, where possible."""
    for bn in [n for n in graph.nodes if n.op_type == "BatchNormalization"]:
        ss = _bn_scale_shift(graph, bn)
        producer = next((n for n in graph.nodes if bn.input[0] in n.output), None)
        if ss is None or producer is None or producer.op_type not in ("Conv", "ConvTranspose", "Gemm", FC_OP):
            continue
        users = [n for n in graph.nodes if bn.input[0] in n.input]
        w = graph.consts.get(producer.input[1])
        if len(users) != 1 or bn.input[0] in graph.outputs or w is None:
            continue
        if producer.op_type == "Gemm" and (attr(producer, "transA", 0) or not attr(producer, "transB", 0)):
            continue
        scale, shift = ss
        b = graph.consts.get(producer.input[2]) if len(producer.input) > 2 and producer.input[2] else 0.0
        if b is None:
            continue
        if producer.op_type == "ConvTranspose":  # weight [I, O, k...]: output channels on axis 1
            new_w = w * scale.reshape(1, -1, *([1] * (w.ndim - 2)))
        elif producer.op_type == FC_OP:  # MatMul weight [K, N]
            new_w = w * scale.reshape(1, -1)
        else:  # Conv [O, I, k...], Gemm transB [N, K]
            new_w = w * scale.reshape(-1, *([1] * (w.ndim - 1)))
        new_b = np.asarray(b, np.float64) * scale + shift
        wname, bname = producer.output[0] + "__bn_w", producer.output[0] + "__bn_b"
        graph.consts[wname], graph.consts[bname] = new_w.astype(np.float32), new_b.astype(np.float32)
        graph.shapes[wname], graph.shapes[bname] = tuple(new_w.shape), tuple(new_b.shape)
        inputs = list(producer.input) + [""] * (3 - len(producer.input))
        inputs[1], inputs[2] = wname, bname
        del producer.input[:]
        producer.input.extend(inputs)
        producer.output[0] = bn.output[0]
        graph.nodes.remove(bn)


def _batchnorm(ctx: Context, node: onnx.NodeProto) -> None:
    """A BatchNormalization that could not be folded: x * scale + shift per channel (axis 1)."""
    ss = _bn_scale_shift(ctx.graph, node)
    require(ss is not None, node, "run-time BatchNormalization statistics")
    assert ss is not None
    require(len(node.output) == 1 or not any(node.output[1:]), node, "training-mode BatchNormalization")
    scale, shift = ss
    x = node.input[0]
    if x in ctx.nhwc:  # channels last: the per-channel constants broadcast on the last axis
        twin = ctx.nhwc[x]
        y = ctx.binary(OP.MUL, twin, ctx.const_tensor("bn_scale", scale.astype(np.float32)))
        bind_nhwc(ctx, node.output[0], ctx.binary(OP.ADD, y, ctx.const_tensor("bn_shift", shift.astype(np.float32))))
        return
    rank = len(ctx.shape(x))
    bshape = (-1, *([1] * (rank - 2)))
    t = ctx.tensor(x)
    y = ctx.binary(OP.MUL, t, ctx.const_tensor("bn_scale", scale.astype(np.float32).reshape(bshape)))
    ctx.bind(node.output[0], ctx.binary(OP.ADD, y, ctx.const_tensor("bn_shift", shift.astype(np.float32).reshape(
        bshape))))


NN_OPS: dict[str, Lowering] = {
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "MaxPool": _pool(OP.MAX_POOL_2D),
    "AveragePool": _pool(OP.AVERAGE_POOL_2D),
    "GlobalAveragePool": _global_average_pool,
    "BatchNormalization": _batchnorm,
}
