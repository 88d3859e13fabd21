"""The rules for following the time axis through ONNX ops (used by :mod:`edge_lstm.stream_flow`).

Each value of the graph has a *kind*: a sequence (:class:`Seq`, with the input's
time axis), a ``STEP`` value (computed from the latest step and the carried
state), a ``CONST``, a shape vector (:class:`ShapeVec`) that may hold the window
length, ``TIME_DIM`` (the window length itself) or ``STATE`` (the model's own
state input). A rule takes a node whose inputs include a sequence and either sets
its outputs' kinds (recording any constant that must change for a one-step window)
or refuses with the reason, naming the node.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_lstm.errors import UnsupportedModel
from edge_lstm.spec import Dim

RECURRENT = ("LSTM", "GRU", "RNN")

#: ops that act on each element on its own (broadcasting like numpy)
ELEMENTWISE = frozenset({
    "Abs", "Acos", "Acosh", "Add", "And", "Asin", "Asinh", "Atan", "Atanh", "BitShift", "Cast", "CastLike", "Ceil",
    "Celu", "Clip", "Cos", "Cosh", "DequantizeLinear", "Div", "Dropout", "Elu", "Equal", "Erf", "Exp", "Floor",
    "Gelu", "Greater", "GreaterOrEqual", "HardSigmoid", "HardSwish", "Identity", "IsInf", "IsNaN", "LeakyRelu",
    "Less", "LessOrEqual", "Log", "Max", "Mean", "Min", "Mish", "Mod", "Mul", "Neg", "Not", "Or", "Pow", "PRelu",
    "QuantizeLinear", "Reciprocal", "Relu", "Round", "Selu", "Sigmoid", "Sign", "Sin", "Sinh", "Softplus",
    "Softsign", "Sqrt", "Sub", "Sum", "Tan", "Tanh", "ThresholdedRelu", "Where", "Xor",
})
REDUCE = frozenset({"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
                     "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"})
AXIS_OPS = frozenset({"Softmax", "LogSoftmax", "Hardmax", "ArgMax", "ArgMin", "CumSum", "TopK"})
POOL = frozenset({"MaxPool", "AveragePool", "LpPool"})
GLOBAL_POOL = frozenset({"GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"})
#: ops that only move a state tensor around (an explicit state input may pass through these)
VIEW = frozenset({"Slice", "Gather", "Squeeze", "Unsqueeze", "Reshape", "Identity", "Split", "Transpose", "Cast",
                   "Concat", "Expand"})


@dataclass(frozen=True)


class Seq:
    """A value with the input's time axis at ``axis``; ``exact=False`` when only its last step streams right."""

    axis: int
    exact: bool = True


@dataclass(frozen=True)


class ShapeVec:
    """A shape vector read from a sequence: element ``time_pos`` holds the window length (None: none does)."""

    time_pos: int | None


STEP, CONST, TIME_DIM, STATE = "step", "const", "time-dim", "state"
Kind = Seq | ShapeVec | str


def refuse(node: Any, why: str) -> UnsupportedModel:
    """The streaming refusal for ``node``: what it does with the time axis, and what to do instead."""
    where = f"node '{node.name or node.op_type}' ({node.op_type})" if node is not None else "the model"
    return UnsupportedModel(
        f"This model cannot stream one time step at a time: {where} {why}, so its output needs the whole window.",
        "Export without --streaming, or make the model causal (unidirectional layers, use the last step or every "
        "step's output rather than pooling over the window).",
    )


def attr(node: Any, name: str, default: Any = None) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            v = helper.get_attribute_value(a)
            return v.decode() if isinstance(v, bytes) else v
    return default


def prod(dims: tuple[Dim | None, ...]) -> tuple[Any, ...]:
    """A comparable product: the int part times the sorted symbolic factors."""
    n, syms = 1, []
    for d in dims:
        if isinstance(d, int):
            n *= d
        else:
            syms.append(str(d))
    return (n, *sorted(syms))


def seq0(node: Any, kinds: list[Kind]) -> Seq:
    """The first input's kind, which these rules need to be a sequence."""
    k = kinds[0]
    if not isinstance(k, Seq):
        raise refuse(node, "combines the window with a value it cannot follow")
    return k


def elementwise(flow: Any, node: Any, kinds: list[Kind]) -> None:
    """Elementwise ops (broadcasting): the sequences' time axes must line up; other inputs must not span it."""
    out_rank = flow.rank(node.output[0])
    ranks = [flow.rank(i) if i else None for i in node.input]
    if out_rank is None or any(r is None for r, i in zip(ranks, node.input, strict=True) if i):
        out_rank = max((r or 0) for r in ranks)
    axis, exact = None, True
    for k, r in zip(kinds, ranks, strict=True):
        if isinstance(k, Seq):
            a = k.axis + out_rank - (r or out_rank)
            if axis is not None and a != axis:
                raise refuse(node, "combines two sequences whose time axes do not line up")
            axis, exact = a, exact and k.exact
    assert axis is not None
    for name, k, r in zip(node.input, kinds, ranks, strict=True):
        if not name or isinstance(k, Seq):
            continue
        shape = flow.shapes.get(name)
        pos = axis - (out_rank - (r or 0))
        if shape is not None and 0 <= pos < len(shape) and shape[pos] not in (1, None):
            raise refuse(node, f"combines every step with a value spanning the window ('{name}')")
        if k == STEP:
            exact = False  # the latest step's value, broadcast over every earlier step
    flow.set(node, Seq(axis, exact), [node.output[0]])
    for extra in node.output[1:]:  # Dropout's mask
        if extra:
            flow.kinds[extra] = Seq(axis, exact)


def reduce(flow: Any, node: Any, kinds: list[Kind]) -> None:
    """Reductions: allowed over other axes; over the time axis they pool the window."""
    k = seq0(node, kinds)
    r = flow.rank(node.input[0]) or 0
    axes = attr(node, "axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        val = flow.const(node.input[1])
        if val is None:
            raise refuse(node, "reduces over axes chosen at run time")
        axes = [int(a) for a in val.ravel()]
    if not axes:
        if int(attr(node, "noop_with_empty_axes", 0)):
            flow.set(node, k)
            return
        raise refuse(node, f"{node.op_type} over every axis, the time axis included (pooling over the window)")
    axes = sorted(int(a) % r for a in axes)
    if k.axis in axes:
        raise refuse(node, f"computes {node.op_type} over the time axis (pooling over the window)")
    keep = int(attr(node, "keepdims", 1))
    flow.set(node, Seq(k.axis - (0 if keep else sum(a < k.axis for a in axes)), k.exact))


def axis_op(flow: Any, node: Any, kinds: list[Kind]) -> None:
    """Softmax, ArgMax, CumSum and the like: allowed along other axes only."""
    k = seq0(node, kinds)
    r = flow.rank(node.input[0]) or 0
    if node.op_type == "CumSum":
        val = flow.const(node.input[1])
        axis = int(val.ravel()[0]) if val is not None else None
    else:
        axis = int(attr(node, "axis", -1 if node.op_type in ("Softmax", "LogSoftmax", "Hardmax") else 0))
    if axis is None or axis % r == k.axis:
        what = {"Softmax": "a softmax over the time axis (attention weights over the window)",
                "LogSoftmax": "a log-softmax over the time axis", "CumSum": "a running sum over the time axis"}
        raise refuse(node, "computes " + what.get(node.op_type, f"{node.op_type} over the time axis"))
    keep = int(attr(node, "keepdims", 1))
    drop = node.op_type in ("ArgMax", "ArgMin") and not keep and axis % r < k.axis
    flow.set(node, Seq(k.axis - int(drop), k.exact))


def pool(flow: Any, node: Any, kinds: list[Kind]) -> None:
    """Pooling over spatial axes: a one-step kernel and stride along time only."""
    k = seq0(node, kinds)
    if k.axis < 2:
        spatial_only(flow, node, kinds, "")
        return
    kernel = list(attr(node, "kernel_shape", []))
    strides = list(attr(node, "strides", [1] * len(kernel)))
    i = k.axis - 2
    if i >= len(kernel) or kernel[i] != 1 or strides[i] != 1:
        size = kernel[i] if i < len(kernel) else "?"
        raise refuse(node, f"pools over {size} time steps")
    flow.set(node, k)


def spatial_only(flow: Any, node: Any, kinds: list[Kind], why: str) -> None:
    """Ops that work over every spatial axis: the time axis must be the batch axis."""
    k = seq0(node, kinds)
    if k.axis >= 2:
        raise refuse(node, why or "works over the time axis")
    if k.axis == 1:
        raise refuse(node, "treats the time axis as channels")
    flow.set(node, k)


def transpose(flow: Any, node: Any, kinds: list[Kind]) -> None:
    """The time axis moves with the permutation."""
    k = seq0(node, kinds)
    r = flow.rank(node.input[0]) or 0
    perm = list(attr(node, "perm", list(range(r))[::-1]))
    flow.set(node, Seq(perm.index(k.axis), k.exact))


def squeeze(flow: Any, node: Any, kinds: list[Kind]) -> None:
    """Squeezing other axes; squeezing with no axes given is made explicit (a one-step window has size 1)."""
    k = seq0(node, kinds)
    shape = flow.shapes.get(node.input[0]) or ()
    axes = axes_of(flow, node)
    if axes is None:
        axes = [a for a, d in enumerate(shape) if d == 1]
        flow.squeeze_axes.append((node, axes))  # at T=1 the time axis would be squeezed too
    axes = [a % len(shape) for a in axes] if shape else axes
    if k.axis in axes:
        raise refuse(node, "squeezes away the time axis")
    flow.set(node, Seq(k.axis - sum(a < k.axis for a in axes), k.exact))


def unsqueeze(flow: Any, node: Any, kinds: list[Kind]) -> None:
    """New axes shift the time axis."""
    k = seq0(node, kinds)
    axes = axes_of(flow, node) or []
    r = (flow.rank(node.input[0]) or 0) + len(axes)
    axis = k.axis
    for a in sorted(x % r for x in axes):
        if a <= axis:
            axis += 1
    flow.set(node, Seq(axis, k.exact))


def axes_of(flow: Any, node: Any) -> list[int] | None:
    """The ``axes`` of a node, from its attribute or its constant second input (None when absent)."""
    axes = attr(node, "axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        val = flow.const(node.input[1])
        if val is None:
            raise refuse(node, "uses axes chosen at run time")
        axes = [int(a) for a in val.ravel()]
    return None if axes is None else [int(a) for a in axes]


def reshape(flow: Any, node: Any, kinds: list[Kind]) -> None:
    """A reshape must keep the time axis whole; a constant window length in the shape becomes 1."""
    k0, k1 = kinds[0], kinds[1] if len(kinds) > 1 else CONST
    if not isinstance(k0, Seq):
        if isinstance(k1, ShapeVec) and k1.time_pos is not None:
            flow.set(node, Seq(k1.time_pos, k0 == CONST))
            return
        raise refuse(node, "reshapes a value using the window length")
    src, dst = flow.shapes.get(node.input[0]), flow.shapes.get(node.output[0])
    if src is None or dst is None:
        raise refuse(node, "reshapes the window to a shape edge-lstm cannot follow")
    before = prod(src[: k0.axis])
    b = next((i for i in range(len(dst)) if dst[i] == src[k0.axis] and prod(dst[:i]) == before), None)
    if b is None or src[k0.axis] in (1, None):
        raise refuse(node, "folds the time axis into another axis (e.g. time into batch, as a dilated RNN does)")
    val = flow.const(node.input[1])
    if val is not None and flow.is_t(val.ravel()[b]):
        new = val.copy()
        new.ravel()[b] = 1
        flow.rewrites.append((node, 1, new))
    elif val is None and not (isinstance(k1, ShapeVec) and k1.time_pos == b):
        raise refuse(node, "reshapes the window with a run-time shape that does not keep the time axis")
    flow.set(node, Seq(b, k0.exact))


def expand(flow: Any, node: Any, kinds: list[Kind]) -> None:
    """Broadcasting keeps the time axis; a constant window length in the shape becomes 1."""
    k0, k1 = kinds[0], kinds[1]
    out_rank = flow.rank(node.output[0]) or 0
    if not isinstance(k0, Seq):
        if isinstance(k1, ShapeVec) and k1.time_pos is not None:
            flow.set(node, Seq(k1.time_pos, k0 == CONST))  # broadcast along time
        else:
            flow.set(node, STEP if k0 == STEP else CONST)
        return
    axis = k0.axis + out_rank - (flow.rank(node.input[0]) or out_rank)
    val = flow.const(node.input[1])
    if val is not None:
        pos = axis - (out_rank - val.size)
        if 0 <= pos < val.size and flow.is_t(val.ravel()[pos]):
            new = val.copy()
            new.ravel()[pos] = 1
            flow.rewrites.append((node, 1, new))
    flow.set(node, Seq(axis, k0.exact))


def constant_of_shape(flow: Any, node: Any, kinds: list[Kind]) -> None:
    """A constant shaped like a sequence is the same at every step."""
    k = kinds[0]
    if isinstance(k, ShapeVec) and k.time_pos is not None:
        flow.set(node, Seq(k.time_pos))  # the same constant at every step
    else:
        flow.set(node, CONST)


def shape(flow: Any, node: Any, kinds: list[Kind]) -> None:
    """The shape of a sequence holds the window length at the time axis."""
    k = seq0(node, kinds)
    r = flow.rank(node.input[0]) or 0
    start = int(attr(node, "start", 0)) % max(r, 1) if attr(node, "start") is not None else 0
    end = attr(node, "end")
    end = r if end is None else (int(end) + r if int(end) < 0 else min(int(end), r))
    flow.set(node, ShapeVec(k.axis - start if start <= k.axis < end else None))


def slice_op(flow: Any, node: Any, kinds: list[Kind]) -> None:
    """Slicing the whole time axis, or its last step (which becomes a step value); anything else is refused."""
    k = seq0(node, kinds)
    r = flow.rank(node.input[0]) or 0
    if len(node.input) < 3:  # opset < 10: attributes
        starts, ends = attr(node, "starts"), attr(node, "ends")
        axes = attr(node, "axes", list(range(len(starts))))
        if k.axis in [a % r for a in axes]:
            raise refuse(node, "slices the time axis (opset < 10 Slice)")
        flow.set(node, k)
        return
    starts, ends = flow.const(node.input[1]), flow.const(node.input[2])
    axes_v = flow.const(node.input[3]) if len(node.input) > 3 and node.input[3] else np.arange(len(starts or []))
    steps_v = flow.const(node.input[4]) if len(node.input) > 4 and node.input[4] else None
    if starts is None or ends is None or axes_v is None:
        raise refuse(node, "slices with bounds chosen at run time")
    axes = [int(a) % r for a in axes_v.ravel()]
    if k.axis not in axes:
        flow.set(node, k)
        return
    j = axes.index(k.axis)
    step = 1 if steps_v is None else int(steps_v.ravel()[j])
    t = flow.steps
    if not isinstance(t, int):
        raise refuse(node, "slices a window of unknown length")
    s, e = int(starts.ravel()[j]), int(ends.ravel()[j])
    s = max(s + t if s < 0 else s, 0)
    e = min(e + t if e < 0 else e, t)
    if step == 1 and s == 0 and e >= t:
        flow.set(node, k)
    elif step == 1 and s == t - 1 and e >= t:
        if int(starts.ravel()[j]) != -1:
            new = starts.copy()
            new.ravel()[j] = -1
            flow.rewrites.append((node, 1, new))
        flow.set(node, STEP)
    else:
        raise refuse(node, f"takes time steps {s}..{e - 1} (step {step}) of the {t}, not the latest one")


def gather(flow: Any, node: Any, kinds: list[Kind]) -> None:
    """Gathering the last time step, along another axis, or embedding token ids."""
    k0, k1 = kinds[0], kinds[1]
    r = flow.rank(node.input[0]) or 0
    axis = int(attr(node, "axis", 0)) % max(r, 1)
    if isinstance(k1, Seq):  # an embedding lookup of token ids
        if isinstance(k0, Seq):
            raise refuse(node, "indexes the window with the window")
        flow.set(node, Seq(axis + k1.axis, k1.exact and k0 == CONST))
        return
    k = seq0(node, kinds)
    idx = flow.const(node.input[1])
    if axis != k.axis:
        flow.set(node, Seq(k.axis if k.axis < axis else k.axis - 1 + (flow.rank(node.input[1]) or 0), k.exact))
        return
    if idx is None or idx.size != 1:
        raise refuse(node, "picks time steps chosen at run time" if idx is None else "picks several time steps")
    i = int(idx.ravel()[0])
    t = flow.steps
    if i == -1 or (isinstance(t, int) and i == t - 1):
        if i != -1:
            flow.rewrites.append((node, 1, np.full_like(idx, -1)))
        flow.set(node, STEP)
        return
    raise refuse(node, f"takes time step {i} of the window, not the latest one")


def split(flow: Any, node: Any, kinds: list[Kind]) -> None:
    """Splitting along another axis than time."""
    k = seq0(node, kinds)
    r = flow.rank(node.input[0]) or 0
    if int(attr(node, "axis", 0)) % r == k.axis:
        raise refuse(node, "splits the window along the time axis")
    flow.set(node, k)


def concat(flow: Any, node: Any, kinds: list[Kind]) -> None:
    """Joining sequences along another axis than time."""
    r = flow.rank(node.output[0]) or 0
    axis = int(attr(node, "axis", 0)) % max(r, 1)
    seqs = [k for k in kinds if isinstance(k, Seq)]
    if len({k.axis for k in seqs}) > 1:
        raise refuse(node, "joins sequences whose time axes do not line up")
    if seqs[0].axis == axis:
        raise refuse(node, "joins tensors along the time axis")
    if len(seqs) != len(kinds):
        raise refuse(node, "joins the window with a tensor that spans it but is not computed from it")
    flow.set(node, Seq(seqs[0].axis, all(k.exact for k in seqs)))


def matmul(flow: Any, node: Any, kinds: list[Kind]) -> None:
    """A matrix product over features; contracting over time or multiplying two sequences is refused."""
    ka, kb = kinds[0], kinds[1]
    ra, rb = flow.rank(node.input[0]) or 2, flow.rank(node.input[1]) or 2
    out = max(ra, rb)
    if isinstance(ka, Seq) and isinstance(kb, Seq):
        raise refuse(node, "multiplies the window with itself (attention over time)")
    if isinstance(ka, Seq):
        if ka.axis == ra - 1:
            raise refuse(node, "contracts over the time axis")
        exact = ka.exact and kb == CONST
        flow.set(node, Seq(ka.axis + out - ra, exact))
        return
    assert isinstance(kb, Seq)
    if kb.axis == rb - 2:
        raise refuse(node, "contracts over the time axis")
    flow.set(node, Seq(kb.axis + out - rb, kb.exact and ka == CONST))


def gemm(flow: Any, node: Any, kinds: list[Kind]) -> None:
    """A fully-connected layer on rows that are time steps."""
    ka = kinds[0]
    if not isinstance(ka, Seq) or any(isinstance(k, Seq) for k in kinds[1:]):
        raise refuse(node, "multiplies by a matrix computed from the window")
    trans = int(attr(node, "transA", 0))
    if ka.axis == (0 if trans else 1):
        raise refuse(node, "contracts over the time axis")
    c = node.input[2] if len(node.input) > 2 else ""
    if c and (flow.shapes.get(c) or (1,))[0] not in (1, None) and len(flow.shapes.get(c) or ()) == 2:
        raise refuse(node, "adds a bias spanning the window")
    exact = ka.exact and all(k == CONST for k in kinds[1:])
    flow.set(node, Seq(0, exact))


def conv(flow: Any, node: Any, kinds: list[Kind]) -> None:
    """A convolution is step-wise only with a one-step kernel, stride and dilation along time."""
    k = seq0(node, kinds)
    if any(isinstance(kk, Seq) for kk in kinds[1:]):
        raise refuse(node, "convolves with a kernel computed from the window")
    if k.axis == 1:
        raise refuse(node, "treats the time axis as channels")
    if k.axis >= 2:
        i = k.axis - 2
        w = flow.shapes.get(node.input[1]) or ()
        kernel = list(attr(node, "kernel_shape", list(w[2:])))
        strides = list(attr(node, "strides", [1] * len(kernel)))
        dil = list(attr(node, "dilations", [1] * len(kernel)))
        if node.op_type == "ConvTranspose" or kernel[i] != 1 or strides[i] != 1 or dil[i] != 1:
            raise refuse(node, f"convolves over {kernel[i]} time steps (it needs the previous steps of the "
                               "window, not only the latest)")
    flow.set(node, Seq(k.axis, k.exact))


def batchnorm(flow: Any, node: Any, kinds: list[Kind]) -> None:
    """Inference batch normalisation is per channel: fine unless time is the channel axis."""
    k = seq0(node, kinds)
    if k.axis == 1:
        raise refuse(node, "normalises with the time axis as channels")
    flow.set(node, k, [node.output[0]])


def layernorm(flow: Any, node: Any, kinds: list[Kind]) -> None:
    """Layer normalisation over feature axes after the time axis."""
    k = seq0(node, kinds)
    r = flow.rank(node.input[0]) or 0
    axis = int(attr(node, "axis", -1)) % r
    if k.axis >= axis:
        raise refuse(node, "normalises over the time axis")
    flow.set(node, k, [node.output[0]])


def instancenorm(flow: Any, node: Any, kinds: list[Kind]) -> None:
    """Instance and group normalisation normalise over the spatial axes."""
    spatial_only(flow, node, kinds, "normalises over the time axis")


def pad(flow: Any, node: Any, kinds: list[Kind]) -> None:
    """Padding other axes than time."""
    k = seq0(node, kinds)
    r = flow.rank(node.input[0]) or 0
    pads = flow.const(node.input[1]) if len(node.input) > 1 else np.asarray(attr(node, "pads", []))
    axes_v = flow.const(node.input[3]) if len(node.input) > 3 and node.input[3] else np.arange(r)
    if pads is None or axes_v is None:
        raise refuse(node, "pads by amounts chosen at run time")
    axes = [int(a) % r for a in axes_v.ravel()]
    if k.axis in axes:
        j = axes.index(k.axis)
        if pads.ravel()[j] != 0 or pads.ravel()[j + len(axes)] != 0:
            raise refuse(node, "pads the time axis")
    flow.set(node, k)


def tile(flow: Any, node: Any, kinds: list[Kind]) -> None:
    """Tiling other axes than time."""
    k = seq0(node, kinds)
    reps = flow.const(node.input[1])
    if reps is None or int(reps.ravel()[k.axis]) != 1:
        raise refuse(node, "repeats the window along the time axis")
    flow.set(node, k)


def flatten(flow: Any, node: Any, kinds: list[Kind]) -> None:
    """Flattening that keeps the time axis as the rows."""
    k = seq0(node, kinds)
    shape = flow.shapes.get(node.input[0]) or ()
    axis = int(attr(node, "axis", 1)) % max(len(shape), 1)
    if k.axis >= axis or any(d != 1 for i, d in enumerate(shape[:axis]) if i != k.axis):
        raise refuse(node, "flattens the time axis into the features")
    flow.set(node, Seq(0, k.exact))


#: op type -> its rule (ops not listed: elementwise, reductions, axis ops, pools, or refused)


HANDLERS: dict[str, Callable[[Any, Any, list[Kind]], None]] = {
    "Transpose": transpose, "Squeeze": squeeze, "Unsqueeze": unsqueeze, "Reshape": reshape, "Expand": expand,
    "ConstantOfShape": constant_of_shape, "Shape": shape, "Slice": slice_op, "Gather": gather, "Split": split,
    "Concat": concat, "MatMul": matmul, "Gemm": gemm, "Conv": conv, "ConvTranspose": conv,
    "BatchNormalization": batchnorm, "LayerNormalization": layernorm, "InstanceNormalization": instancenorm,
    "GroupNormalization": instancenorm, "Pad": pad, "Tile": tile, "Flatten": flatten,
}


def apply(flow: Any, node: Any, kinds: list[Kind]) -> None:
    """Apply the rule of ``node``'s op to a node that reads a sequence; refuse ops with no rule."""
    op = node.op_type
    rule = HANDLERS.get(op)
    if rule is not None:
        rule(flow, node, kinds)
    elif op in ELEMENTWISE:
        elementwise(flow, node, kinds)
    elif op in REDUCE:
        reduce(flow, node, kinds)
    elif op in AXIS_OPS:
        axis_op(flow, node, kinds)
    elif op in POOL:
        pool(flow, node, kinds)
    elif op in GLOBAL_POOL:
        spatial_only(flow, node, kinds, "pools over the whole window")
    else:
        raise refuse(node, "reads the time axis in a way edge-lstm cannot prove step-wise")
