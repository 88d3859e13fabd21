"""The state one lowering run shares between op lowerings: ONNX values -> TFLite tensors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
from ai_edge_litert import schema_py_generated as schema

from edge_lstm.lower.tflite.graph import Graph
from edge_lstm.lower.tflite.writer import ModelWriter, TensorRef

OP = schema.BuiltinOperator


class Context:
    """Maps ONNX value names to TFLite tensors and emits operators through a :class:`ModelWriter`."""

    def __init__(self, graph: Graph, lowering: str, lower_node: Callable[[Context, onnx.NodeProto], None],
                 int8: bool = False, micro: bool = False, dynamic: bool = False) -> None:
        self.graph = graph
        #: lowers one ONNX node (the op table's dispatch, :func:`edge_lstm.lower.tflite.ops.lower_node`): the loop
        #: lowering calls it for a stacked layer's initial state, without importing the op table
        self._lower_node = lower_node
        self.lowering = lowering  #: "fused", "loop" or "unrolled"
        self.int8 = int8  #: the model will be quantized to full int8: only ops TFLite's quantizer takes
        self.micro = micro  #: the artifact is for TFLite Micro: only ops it has kernels for
        #: the model will be quantized to dynamic int8: a stacked LSTM pair's loop is one wavefront cell
        #: (:mod:`.wavefront`), which pays with int8 weights and not in float
        self.dynamic = dynamic
        self.writer = ModelWriter()
        self.values: dict[str, TensorRef] = {}
        self.notes: list[str] = []
        self.used_lowerings: set[str] = set()
        self.variable_state = False  #: a fused op keeps its state in variable tensors
        self._const_cache: dict[tuple[int, str, bytes, tuple[int, ...]], TensorRef] = {}
        #: ids of ONNX nodes already lowered as part of another node's lowering (a WHILE loop over layers)
        self.done: set[int] = set()
        #: ONNX values whose tensor is written only when something reads it (an NCHW view of a conv's output)
        self.lazy: dict[str, Callable[[], TensorRef]] = {}
        #: channels-last twins of NCHW/NCW values: ``[N, H, W, C]`` (``[N, 1, W, C]`` for 1-D), as TFLite's
        #: convolutions and pools take them, so a chain of them transposes only at its ends
        self.nhwc: dict[str, TensorRef] = {}

    # ---- values -------------------------------------------------------------------------
    def const(self, name: str) -> np.ndarray | None:
        """The constant value of an ONNX value, or None when it is computed at run time."""
        return self.graph.consts.get(name)

    def shape(self, name: str) -> tuple[int, ...]:
        """Static shape of an ONNX value."""
        if name in self.values:
            return self.values[name].shape
        return self.graph.shapes[name]

    def tensor(self, name: str) -> TensorRef:
        """The TFLite tensor holding an ONNX value; constants and lazy values are written on first use."""
        if name not in self.values and name in self.lazy:
            self.values[name] = self.lazy.pop(name)()
        if name not in self.values:
            arr = self.graph.consts[name]
            if arr.dtype == np.float64:
                arr = arr.astype(np.float32)
            elif arr.dtype == np.int64:
                arr = arr.astype(np.int32)
            self.values[name] = self.writer.add_const(name, arr)
        return self.values[name]

    def output(self, name: str, shape: tuple[int, ...] | None = None, dtype: Any = np.float32) -> TensorRef:
        """A new tensor for the ONNX value ``name`` (shape from inference unless given)."""
        ref = self.writer.add_tensor(name, shape if shape is not None else self.graph.shapes[name], dtype)
        self.values[name] = ref
        return ref

    def temp(self, shape: tuple[int, ...], dtype: Any = np.float32) -> TensorRef:
        """A new intermediate tensor with no ONNX counterpart (unnamed: names would dominate unrolled files)."""
        return self.writer.add_tensor("", shape, dtype)

    def const_tensor(self, hint: str, arr: np.ndarray) -> TensorRef:
        """A constant tensor; identical constants are written once."""
        arr = np.array(arr, order="C")  # (ascontiguousarray would make a scalar 1-D)
        key = (self.writer.current, str(arr.dtype), arr.tobytes(), tuple(arr.shape))
        if key not in self._const_cache:
            self._const_cache[key] = self.writer.add_const(hint, arr)
        return self._const_cache[key]

    def int32(self, hint: str, values: Any) -> TensorRef:
        """An int32 constant (shapes, axes, sizes)."""
        return self.const_tensor(hint, np.asarray(values, dtype=np.int32))

    def bind(self, name: str, ref: TensorRef) -> None:
        """Make the ONNX value ``name`` an alias of an existing tensor."""
        self.values[name] = ref

    def known(self, name: str) -> bool:
        """True when ``name`` has a tensor already (or will on first read)."""
        return name in self.values or name in self.lazy

    def lower_node(self, node: onnx.NodeProto) -> None:
        """Lower one ONNX node now, through the op table."""
        self._lower_node(self, node)

    # ---- emitting ------------------------------------------------------------------------
    def op(self, code: int, inputs: list[TensorRef | None], outputs: list[TensorRef], options: Any = None,
           version: int = 1) -> None:
        """Emit one operator; ``None`` inputs are written as absent (-1)."""
        self.writer.add_op(code, [-1 if t is None else t.index for t in inputs], [t.index for t in outputs], options,
                           version)

    def unary(self, code: int, x: TensorRef, options: Any = None) -> TensorRef:
        """Emit an elementwise op with one input; returns its output."""
        out = self.temp(x.shape)
        self.op(code, [x], [out], options)
        return out

    def binary(self, code: int, a: TensorRef, b: TensorRef) -> TensorRef:
        """Emit ADD/SUB/MUL/DIV with numpy broadcasting; returns its output."""
        out = self.temp(tuple(np.broadcast_shapes(a.shape, b.shape)))
        options: Any = {
            OP.ADD: schema.AddOptionsT,
            OP.SUB: schema.SubOptionsT,
            OP.MUL: schema.MulOptionsT,
            OP.DIV: schema.DivOptionsT,
        }.get(code, lambda: None)()
        self.op(code, [a, b], [out], options)
        return out

    def reshape(self, x: TensorRef, shape: tuple[int, ...], hint: str, out: TensorRef | None = None) -> TensorRef:
        """RESHAPE ``x`` to ``shape`` (no op when the shape already matches and no output is forced)."""
        if out is None and tuple(x.shape) == tuple(shape):
            return x
        out = out or self.temp(shape)
        opts = schema.ReshapeOptionsT()
        opts.newShape = list(shape)
        self.op(OP.RESHAPE, [x, self.int32(hint + "_shape", list(shape))], [out], opts)
        return out

    def fully_connected(
        self, x: TensorRef, weight: TensorRef, bias: TensorRef | None, keep_dims: bool = False
    ) -> TensorRef:
        """FULLY_CONNECTED: ``x @ weight.T + bias``; ``weight`` is ``[N, K]``."""
        n, k = weight.shape
        shape = (*x.shape[:-1], n) if keep_dims else (int(np.prod(x.shape)) // k, n)
        out = self.temp(shape)
        opts = schema.FullyConnectedOptionsT()
        opts.keepNumDims = keep_dims
        self.op(OP.FULLY_CONNECTED, [x, weight, bias], [out], opts)
        return out

    def split(self, x: TensorRef, axis: int, sizes: list[int], hint: str) -> list[TensorRef]:
        """Split ``x`` along ``axis``: SPLIT when the parts are equal, else one STRIDED_SLICE per part."""
        axis = axis % len(x.shape)
        outs = []
        for s in sizes:
            shape = list(x.shape)
            shape[axis] = s
            outs.append(self.temp(tuple(shape)))
        if len(set(sizes)) == 1:
            opts = schema.SplitOptionsT()
            opts.numSplits = len(sizes)
            self.op(OP.SPLIT, [self.int32(hint + "_axis", axis), x], outs, opts)
            return outs
        start = 0
        for s, out in zip(sizes, outs, strict=True):
            self.slice_to(x, axis, start, start + s, out)
            start += s
        return outs

    def slice_to(self, x: TensorRef, axis: int, start: int, stop: int, out: TensorRef) -> None:
        """STRIDED_SLICE ``x[..., start:stop, ...]`` along one axis into ``out``."""
        begin = [0] * len(x.shape)
        end = list(x.shape)
        begin[axis], end[axis] = start, stop
        opts = schema.StridedSliceOptionsT()
        self.op(
            OP.STRIDED_SLICE,
            [x, self.int32("begin", begin), self.int32("end", end), self.int32("strides", [1] * len(x.shape))],
            [out],
            opts,
        )

    def concat(self, parts: list[TensorRef], axis: int, out: TensorRef | None = None) -> TensorRef:
        """CONCATENATION along ``axis``."""
        axis = axis % len(parts[0].shape)
        if out is None:
            shape = list(parts[0].shape)
            shape[axis] = sum(p.shape[axis] for p in parts)
            out = self.temp(tuple(shape))
        opts = schema.ConcatenationOptionsT()
        opts.axis = axis
        self.op(OP.CONCATENATION, list(parts), [out], opts)
        return out
