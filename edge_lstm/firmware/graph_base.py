"""The firmware graph walker's vocabulary: dynamic values, the op-handler table and the builder handlers write into.

``graph.py`` walks the graph and ``graph_ops.py`` holds the handlers; both import this module, so neither imports
the other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_lstm.firmware.program import Buffer, Op


@dataclass
class Val:
    """A dynamic value: per-step (``seq``, with its time axis) or read after the step (``post``)."""

    kind: str
    shape: tuple[int, ...]
    taxis: int | None
    buf: str

    @property
    def step_shape(self) -> tuple[int, ...]:
        """The shape of one time step (the time axis removed)."""
        return tuple(d for a, d in enumerate(self.shape) if a != self.taxis)

    @property
    def size(self) -> int:
        """Floats in one time step."""
        return int(np.prod(self.step_shape, dtype=np.int64))


Handler = Callable[["Builder", Any], None]
TABLE: dict[str, Handler] = {}  # filled by edge_lstm.firmware.graph_ops


class Builder:
    """Walks the graph once; handlers add ops and buffers and record every problem."""

    def __init__(self, proto: Any, shapes: dict[str, tuple[int, ...]], consts: dict[str, np.ndarray]) -> None:
        self.proto = proto
        self.shapes = shapes
        self.consts = consts
        self.values: dict[str, Val] = {}
        self.bad: set[str] = set()
        self.ops: list[Op] = []
        self.buffers: dict[str, Buffer] = {}
        self.problems: list[str] = []
        self.phase_of_node = ""
        self._n = 0

    # ------------------------------------------------------------ values

    def const(self, name: str) -> np.ndarray | None:
        """The folded constant ``name``, or None when it depends on the input."""
        return self.consts.get(name) if name else None

    def val(self, name: str) -> Val | None:
        """The dynamic value ``name`` (None when it is constant or already refused)."""
        return self.values.get(name)

    def new_buffer(self, size: int, role: str = "work", init: np.ndarray | None = None, stem: str = "b") -> str:
        """A fresh static buffer of ``size`` floats."""
        name = f"{stem}{self._n}"
        self._n += 1
        self.buffers[name] = Buffer(name, int(size), role, init)
        return name

    def emit(self, kind: str, node: Any, out: str, ins: tuple[str, ...], phase: str,
             attrs: dict[str, Any] | None = None, consts: dict[str, np.ndarray] | None = None) -> None:
        """Append one op."""
        self.ops.append(Op(kind, phase, node.name or node.output[0], out, ins, attrs or {}, consts or {}))

    def refuse(self, node: Any, why: str) -> None:
        """Record why ``node`` cannot be generated; its outputs are skipped downstream."""
        self.problems.append(f"node '{node.name or node.output[0]}' ({node.op_type}): {why}")
        self.bad.update(o for o in node.output if o)

    def inputs_ok(self, node: Any) -> bool:
        """False when an input was already refused (so one problem is not reported twice)."""
        return not any(i in self.bad for i in node.input)


def map_axis(shape_from: tuple[int, ...], axis: int, shape_to: tuple[int, ...]) -> int | None:
    """The axis of ``shape_to`` that a reshape maps ``axis`` of ``shape_from`` onto, keeping element order.

    A reshape keeps the time axis intact when the elements before it and its length
    are the same on both sides; then one time step's elements keep their order.
    """
    before = int(np.prod(shape_from[:axis], dtype=np.int64))
    for k, d in enumerate(shape_to):
        if d == shape_from[axis] and int(np.prod(shape_to[:k], dtype=np.int64)) == before:
            return k
    return None


def attr(node: Any, name: str, default: Any = None) -> Any:
    """An ONNX node attribute's value (strings decoded), or ``default``."""
    import onnx

    for a in node.attribute:
        if a.name == name:
            v = onnx.helper.get_attribute_value(a)
            if isinstance(v, list):
                return [i.decode() if isinstance(i, bytes) else i for i in v]
            return v.decode() if isinstance(v, bytes) else v
    return default
