"""Editing a quantized TFLite model in the object API: the subgraph view the loop and cell rewrites share.

:class:`SubgraphView` knows which op produces and which ops read each tensor, and adds tensors and operators;
the functions below replace a tensor's uses, drop dead ops and empty unused buffers. Model-level helpers
(parse, pack, operator codes, constant data, quantization parameters) are :mod:`edge_lstm.tflite_schema`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_lstm.tflite_schema import op_builtin, opcode_index, schema


@dataclass
class SubgraphView:
    """A subgraph with its producer and consumer maps (rebuilt with :meth:`refresh`)."""

    model: Any
    graph: Any
    producer: dict[int, int] = field(default_factory=dict)
    consumers: dict[int, list[int]] = field(default_factory=dict)

    def refresh(self) -> None:
        """Recompute which op produces and which ops read each tensor."""
        self.producer, self.consumers = {}, {}
        for k, op in enumerate(self.graph.operators):
            for t in op.outputs:
                self.producer[int(t)] = k
            for t in op.inputs:
                if t >= 0:
                    self.consumers.setdefault(int(t), []).append(k)

    def code(self, k: int) -> int:
        """Builtin code of operator ``k``."""
        return op_builtin(self.model, self.graph.operators[k])

    def tensor(self, i: int) -> Any:
        """Tensor ``i``."""
        return self.graph.tensors[i]

    def index(self, op: Any) -> int:
        """The position of operator ``op`` (the object) in the subgraph."""
        return next(k for k, o in enumerate(self.graph.operators) if o is op)

    def add_tensor(self, like: Any, type_: int, quant: Any = None, suffix: str = "") -> int:
        """A new tensor shaped like ``like``; returns its index."""
        t = schema().TensorT()
        t.shape, t.type, t.buffer, t.quantization = list(like.shape), type_, 0, quant
        t.name = (like.name or b"") + suffix.encode() if suffix else like.name
        self.graph.tensors.append(t)
        return len(self.graph.tensors) - 1

    def add_op(self, at: int, builtin: int, inputs: list[int], outputs: list[int], version: int = 1) -> None:
        """Insert an operator at position ``at``."""
        s = schema()
        op = s.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = opcode_index(self.model, builtin, version), list(inputs), list(outputs)
        if builtin == s.BuiltinOperator.RESHAPE:
            op.builtinOptionsType, op.builtinOptions = s.BuiltinOptions.ReshapeOptions, s.ReshapeOptionsT()
            op.builtinOptions.newShape = list(self.tensor(outputs[0]).shape)
        self.graph.operators.insert(at, op)


def whiles(model: Any) -> list[tuple[int, int, Any]]:
    """(subgraph, op index, op) of every WHILE op."""
    found = []
    for gi, graph in enumerate(model.subgraphs):
        sub = SubgraphView(model, graph)
        for k, op in enumerate(graph.operators):
            if sub.code(k) == schema().BuiltinOperator.WHILE:
                found.append((gi, k, op))
    return found


def while_loops(model: Any) -> list[tuple[SubgraphView, SubgraphView, SubgraphView, Any]]:
    """(the subgraph holding it, its body, its condition, the op) of every WHILE op."""
    return [(SubgraphView(model, model.subgraphs[gi]),
             SubgraphView(model, model.subgraphs[op.builtinOptions.bodySubgraphIndex]),
             SubgraphView(model, model.subgraphs[op.builtinOptions.condSubgraphIndex]), op)
            for gi, _, op in whiles(model)]


def with_slot(tensors: Any, slot: int, tensor: int) -> list[int]:
    """A copy of an op's (or a subgraph's) tensor list with ``tensor`` in position ``slot``."""
    out = [int(t) for t in tensors]
    out[slot] = tensor
    return out


def replace_input(op: Any, old: int, new: int) -> None:
    """Operator ``op`` reads tensor ``new`` wherever it read ``old``."""
    op.inputs = [new if int(i) == old else int(i) for i in op.inputs]


def replace_uses(sub: SubgraphView, old: int, new: int) -> None:
    """Every op of the subgraph, and its outputs, use tensor ``new`` wherever they used ``old``."""
    for op in sub.graph.operators:
        replace_input(op, old, new)
    sub.graph.outputs = [new if int(o) == old else int(o) for o in sub.graph.outputs]


def drop_dead(sub: SubgraphView) -> None:
    """Remove ops none of whose outputs is read (by an op or as a subgraph output)."""
    while True:
        sub.refresh()
        live_outputs = {int(o) for o in sub.graph.outputs}
        keep = [op for op in sub.graph.operators
                if any(int(t) in live_outputs or sub.consumers.get(int(t)) for t in op.outputs)]
        if len(keep) == len(sub.graph.operators):
            return
        sub.graph.operators = keep


def drop_unused_buffers(model: Any) -> Any:
    """Empty the buffers no tensor points at any more (their bytes would stay in the file)."""
    used = {t.buffer for g in model.subgraphs for t in g.tensors}
    for i, buf in enumerate(model.buffers):
        if i > 0 and i not in used:
            buf.data = None
    return model


def same_quantization(a: Any, b: Any) -> bool:
    """Both are one scale and zero point, the same (scales to 1e-6)."""
    return bool(a is not None and b is not None and len(a.scale) == len(b.scale) == 1
                and np.isclose(float(a.scale[0]), float(b.scale[0]), rtol=1e-6, atol=0)
                and int(a.zeroPoint[0]) == int(b.zeroPoint[0]))
