"""Follow the input's time axis through a whole-window ONNX graph (for :mod:`edge_lstm.streaming`).

:class:`Flow` walks the nodes in order, giving every value a kind
(:mod:`edge_lstm.stream_ops`), finds the recurrent nodes that run over the time
axis (their state is what a stream carries), and collects the constants that
must change for a one-step window. It refuses, naming the node, wherever the
output would need the whole window.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from edge_lstm.errors import UnsupportedModel
from edge_lstm.spec import Dim
from edge_lstm.stream_ops import (
    CONST,
    RECURRENT,
    STATE,
    STEP,
    TIME_DIM,
    VIEW,
    Kind,
    Seq,
    ShapeVec,
    apply,
    attr,
    refuse,
)

if TYPE_CHECKING:
    import onnx


def value_shapes(model: onnx.ModelProto) -> dict[str, tuple[Dim | None, ...]]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    out: dict[str, tuple[Dim | None, ...]] = {}
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        tt = vi.type.tensor_type
        if tt.HasField("shape"):
            out[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                                 for d in tt.shape.dim)
    for init in inferred.graph.initializer:
        out[init.name] = tuple(int(d) for d in init.dims)
    return out


def constant_values(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    from onnx import helper, numpy_helper

    vals = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output:
            for a in n.attribute:
                if a.name in ("value", "sparse_value"):
                    vals[n.output[0]] = numpy_helper.to_array(a.t) if a.name == "value" else np.zeros(0)
                elif a.name.startswith("value_"):
                    vals[n.output[0]] = np.asarray(helper.get_attribute_value(a))
    return vals


class Flow:
    """Follows the time axis through the graph, collecting rewrites for the one-step model."""

    def __init__(self, model: onnx.ModelProto, x_name: str | None, time_axis: int | None,
                 pairs: list[tuple[str, str]]) -> None:
        self.model = model
        g = model.graph
        inits = {i.name for i in g.initializer}
        self.graph_inputs = [i for i in g.input if i.name not in inits]
        if not self.graph_inputs:
            raise UnsupportedModel("The ONNX graph has no inputs: nothing to stream.")
        self.x = x_name or self.graph_inputs[0].name
        x_vi = next((i for i in self.graph_inputs if i.name == self.x), None)
        if x_vi is None:
            raise UnsupportedModel(f"The ONNX graph has no input '{self.x}'.")
        rank = len(x_vi.type.tensor_type.shape.dim)
        self.time_axis = time_axis if time_axis is not None else (1 if rank >= 2 else 0)
        self.shapes = value_shapes(model)
        self.consts = constant_values(model)
        self.steps = self.shapes[self.x][self.time_axis]
        self.pairs = pairs
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
        self.kinds: dict[str, Kind] = {self.x: Seq(self.time_axis)}
        for s_in, _ in pairs:
            self.kinds[s_in] = STATE
        self.zeros: set[str] = set()
        self.stateful: list[Any] = []  # recurrent nodes (and Scans) that run over the time axis
        #: (node, state input slot, final state output slot, shape or None to derive it from the node)
        self.state_slots: list[tuple[Any, int, int, tuple[Any, ...] | None]] = []
        self.rewrites: list[tuple[Any, int, np.ndarray]] = []  # (node, input slot, new constant)
        self.squeeze_axes: list[tuple[Any, list[int]]] = []
        for name, v in self.consts.items():
            if v.size and not np.any(v):
                self.zeros.add(name)

    # ------------------------------------------------------------ helpers

    def kind(self, name: str) -> Kind:
        """The kind of value ``name`` (constants and absent optional inputs are CONST)."""
        if not name:
            return CONST
        return self.kinds.get(name, CONST)

    def rank(self, name: str) -> int | None:
        """The rank of ``name`` in the whole-window graph (None when shape inference did not say)."""
        s = self.shapes.get(name)
        return None if s is None else len(s)

    def const(self, name: str) -> np.ndarray | None:
        """The constant value of ``name`` (initializer or Constant node), else None."""
        return self.consts.get(name) if name else None

    def set(self, node: Any, kind: Kind, outputs: list[str] | None = None) -> None:
        """Give ``outputs`` (default: all of ``node``'s outputs) the kind ``kind``."""
        for o in outputs if outputs is not None else list(node.output):
            if o:
                self.kinds[o] = kind

    def vec_len(self, name: str) -> int:
        """The length of a 1-D (shape) vector; 1 for a scalar."""
        val = self.const(name)
        if val is not None:
            return int(val.size)
        shape = self.shapes.get(name) or ()
        return int(shape[0]) if shape and isinstance(shape[0], int) else 1

    def is_t(self, value: Any) -> bool:
        """True when ``value`` is the window length (a constant that must become 1 for one step)."""
        return isinstance(self.steps, int) and int(value) == self.steps

    # ------------------------------------------------------------ the walk

    def run(self) -> None:
        """Walk every node; refuse when the output would need the whole window."""
        for node in self.model.graph.node:
            kinds = [self.kind(i) for i in node.input]
            self._track_zeros(node)
            if node.op_type in RECURRENT:
                self._recurrent(node, kinds)
            elif node.op_type == "Scan" and any(isinstance(k, Seq) for k in kinds):
                self._scan(node, kinds)
            elif any(k == STATE for k in kinds):
                self._state_view(node, kinds)
            elif not any(isinstance(k, (Seq, ShapeVec)) or k == TIME_DIM for k in kinds):
                self._outer_scope(node)
                self.set(node, STEP if STEP in kinds else CONST)
            elif any(isinstance(k, ShapeVec) or k == TIME_DIM for k in kinds) and not any(
                    isinstance(k, Seq) for k in kinds) and node.op_type not in ("Reshape", "Expand",
                                                                              "ConstantOfShape"):
                self._shape_op(node, kinds)
            else:
                apply(self, node, kinds)
        self._check_outputs()
        if not self.stateful:
            raise UnsupportedModel(
                "This model cannot stream: no recurrent layer (LSTM, GRU, RNN) runs over the input's time axis, "
                "so there is no state to carry from one step to the next.",
                "Export without --streaming.",
            )

    def _track_zeros(self, node: Any) -> None:
        op = node.op_type
        if op == "ConstantOfShape":
            from onnx import numpy_helper

            v = attr(node, "value")
            if v is None or not np.any(numpy_helper.to_array(v)):
                self.zeros.update(o for o in node.output if o)
        elif op in VIEW and node.input and node.input[0] in self.zeros and (
                op != "Concat" or all(i in self.zeros for i in node.input)):
            self.zeros.update(o for o in node.output if o)

    def _outer_scope(self, node: Any) -> None:
        """Ops with subgraphs (If, Loop, Scan) must not read a sequence from the outer scope."""
        for a in node.attribute:
            graphs = [a.g] if a.HasField("g") else list(a.graphs)
            for sub in graphs:
                for inner in sub.node:
                    for i in inner.input:
                        if isinstance(self.kind(i), Seq):
                            raise refuse(node, f"runs a subgraph over the window (it reads '{i}')")

    # ------------------------------------------------------------ shape vectors

    def _shape_op(self, node: Any, kinds: list[Kind]) -> None:
        op, k0 = node.op_type, kinds[0]
        if op in ("Cast", "Identity", "Unsqueeze", "Squeeze") and k0 == TIME_DIM:
            self.set(node, TIME_DIM)
        elif op in ("Cast", "Identity") and isinstance(k0, ShapeVec):
            self.set(node, k0)
        elif op == "Gather" and isinstance(k0, ShapeVec):
            idx = self.const(node.input[1])
            if idx is None:
                raise refuse(node, "reads a shape element chosen at run time")
            n = self.vec_len(node.input[0])
            picked = {int(i) % max(n, 1) for i in np.ravel(idx)}
            if k0.time_pos is not None and k0.time_pos in picked:
                if np.ndim(idx) == 0 or idx.size == 1:
                    self.set(node, TIME_DIM)
                else:
                    self.set(node, ShapeVec(list(np.ravel(idx) % n).index(k0.time_pos)))
            else:
                self.set(node, CONST)
        elif op == "Slice" and isinstance(k0, ShapeVec):
            self._slice_shape(node, k0)
        elif op == "Concat":
            self._concat_shape(node, kinds)
        else:
            raise refuse(node, "computes with the window length (a shape that holds the number of time steps)")

    def _slice_shape(self, node: Any, k0: ShapeVec) -> None:
        starts, ends = self.const(node.input[1]), self.const(node.input[2])
        if starts is None or ends is None or k0.time_pos is None:
            self.set(node, ShapeVec(None) if k0.time_pos is None else CONST)
            if k0.time_pos is not None:
                raise refuse(node, "slices a shape that holds the window length at run time")
            return
        n = self.vec_len(node.input[0])
        s, e = int(starts.ravel()[0]), int(ends.ravel()[0])
        s = s + n if s < 0 else s
        e = min(e + n if e < 0 else e, n)
        pos = k0.time_pos - s if s <= k0.time_pos < e else None
        self.set(node, ShapeVec(pos) if pos is not None else CONST)

    def _concat_shape(self, node: Any, kinds: list[Kind]) -> None:
        offset, pos = 0, None
        for name, k in zip(node.input, kinds, strict=True):
            length = self.vec_len(name)
            if k == TIME_DIM:
                pos = offset
            elif isinstance(k, ShapeVec) and k.time_pos is not None:
                pos = offset + k.time_pos
            offset += length
        self.set(node, ShapeVec(pos))

    # ------------------------------------------------------------ explicit state inputs

    def _state_view(self, node: Any, kinds: list[Kind]) -> None:
        if node.op_type == "Shape":
            self.set(node, CONST)
            return
        if node.op_type not in VIEW or any(isinstance(k, Seq) for k in kinds):
            raise refuse(node, "uses the model's state input other than as a recurrent layer's initial state")
        self.set(node, STATE)

    # ------------------------------------------------------------ recurrent layers

    def _recurrent(self, node: Any, kinds: list[Kind]) -> None:
        k0 = kinds[0]
        layout = int(attr(node, "layout", 0))
        if not isinstance(k0, Seq):
            if any(k == STATE for k in kinds[5:7]):
                raise refuse(node, "starts from the model's state input but does not run over the time axis")
            self.set(node, STEP)  # runs over something else (a decoder's horizon) on each step's value
            return
        if not k0.exact or k0.axis != layout:
            why = ("reads a sequence that mixes in the latest step" if not k0.exact else
                   "runs over an axis other than the input's time axis")
            raise refuse(node, why)
        direction = attr(node, "direction", "forward")
        if direction != "forward":
            raise refuse(node, f"is {direction} (it reads the window backwards, as a bidirectional layer does)")
        if len(node.input) > 4 and node.input[4]:
            raise refuse(node, "takes per-sample sequence lengths")
        for slot in (5, 6):
            if len(node.input) > slot and node.input[slot]:
                name = node.input[slot]
                if kinds[slot] != STATE and name not in self.zeros:
                    raise refuse(node, "starts from a state computed inside the model, not from zeros or a state "
                                       "input")
        self.stateful.append(node)
        for slot in ((5, 6) if node.op_type == "LSTM" else (5,)):
            self.state_slots.append((node, slot, slot - 4, None))
        self.kinds[node.output[0]] = Seq(layout)  # Y: [T, D, B, H], or [B, T, D, H] with layout 1
        self.set(node, STEP, list(node.output[1:]))

    def _scan(self, node: Any, kinds: list[Kind]) -> None:
        """A Scan over the time axis (a projected LSTM, a custom cell): its state variables are what streams."""
        m = int(attr(node, "num_scan_inputs"))
        n = len(node.input) - m
        axes = list(attr(node, "scan_input_axes", [0] * m))
        dirs = list(attr(node, "scan_input_directions", [0] * m))
        for j, k in enumerate(kinds[n:]):
            r = self.rank(node.input[n + j]) or 0
            if not isinstance(k, Seq) or not k.exact or k.axis != int(axes[j]) % max(r, 1):
                raise refuse(node, "scans over something other than the input's time axis")
            if int(dirs[j]):
                raise refuse(node, "scans the window backwards (as a bidirectional layer does)")
        self._outer_scope(node)
        for i in range(n):
            if kinds[i] != STATE and node.input[i] not in self.zeros:
                raise refuse(node, "starts from a state computed inside the model, not from zeros or a state input")
            shape = self.shapes.get(node.input[i])
            self.state_slots.append((node, i, i, tuple(d if d is not None else "batch" for d in shape)
                                     if shape is not None else None))
        self.stateful.append(node)
        out_axes = list(attr(node, "scan_output_axes", [0] * (len(node.output) - n)))
        out_dirs = list(attr(node, "scan_output_directions", [0] * (len(node.output) - n)))
        self.set(node, STEP, list(node.output[:n]))
        for j, name in enumerate(node.output[n:]):
            if name:
                if int(out_dirs[j]):
                    raise refuse(node, "writes its outputs backwards along the time axis")
                self.kinds[name] = Seq(int(out_axes[j]) % max(self.rank(name) or 1, 1))

    # ------------------------------------------------------------ outputs

    def _check_outputs(self) -> None:
        names = [o.name for o in self.model.graph.output]
        state_outs = {o for _, o in self.pairs}
        for name in names:
            k = self.kind(name)
            if isinstance(k, Seq) and not k.exact:
                raise UnsupportedModel(
                    f"This model cannot stream one time step at a time: every step of output '{name}' uses the "
                    "window's last step, which a stream has not seen yet.",
                    "Export without --streaming, or output only the last step.",
                )
            if isinstance(k, Seq) and name in state_outs:
                raise UnsupportedModel(f"The model's state output '{name}' has the time axis; it cannot be fed back.")
            if isinstance(k, ShapeVec) or k == TIME_DIM:
                raise UnsupportedModel(f"Output '{name}' depends on the window length: the model cannot stream.")
