"""The one-step streaming model, derived from a whole-window ONNX graph.

Any captured graph (from a checkpoint, TorchScript, ``.pt2``, a pickled module or
an ONNX file made elsewhere) becomes a model that takes one time step per call:
the input's time axis is set to 1, each recurrent node that runs over the input's
time axis gets its initial state from a graph input and returns its final state
as a graph output, and the caller feeds the state back on the next call. A model
that already takes and returns its state (``forward(x, h0, c0) -> (y, h, c)``)
keeps its own state inputs and outputs.

Whether streaming is *equal* to running the whole window is decided first, by
following the time axis through the graph (:mod:`edge_lstm.stream_flow`): ops
that act on each step on their own, select the last step, or recur forwards are
allowed; pooling or softmax over time, a reverse or bidirectional layer, a
convolution spanning several steps, taking an early step of the window or
computing with the window length refuse streaming with the reason and the node,
before any other work. A head after the last step can be anything.

The proof stays with the caller: feeding a window step by step must equal the
whole-window output (``feeds.validate_streaming`` checks it on every runtime).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_lstm.errors import UnsupportedModel
from edge_lstm.spec import Dim, InputSpec, TensorSpec
from edge_lstm.stream_flow import Flow
from edge_lstm.stream_ops import STATE, Seq, attr

if TYPE_CHECKING:
    import onnx

#: ONNX metadata key of the one-step model's description (:meth:`StreamingModel.to_dict`)
METADATA_KEY = "edge_lstm.streaming"


@dataclass(frozen=True)
class StateLink:
    """One carried state: fed to ``input`` on the next call from ``output`` of this one."""

    input: str
    output: str
    shape: tuple[Dim, ...]
    node: str  #: the recurrent node whose state this is, or "explicit" for the model's own state input

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"input": self.input, "output": self.output, "shape": list(self.shape), "node": self.node}

    def zeros(self, batch: int = 1) -> np.ndarray:
        """The initial (zero) state for ``batch`` samples."""
        return np.zeros(tuple(d if isinstance(d, int) else batch for d in self.shape), np.float32)


@dataclass
class StreamingModel:
    """A one-step ONNX model and how to drive it."""

    proto: onnx.ModelProto
    x: str  #: the input that carries the time axis
    time_axis: int  #: its time axis (length 1 in the one-step model)
    states: tuple[StateLink, ...]
    #: per output of the whole-window model: the time axis of an all-steps output, None for the latest step's value
    output_axes: dict[str, int | None]
    inputs: InputSpec
    outputs: tuple[TensorSpec, ...]
    notes: list[str] = field(default_factory=list)

    @property
    def explicit_state(self) -> bool:
        """True when the whole-window model itself takes its state as inputs."""
        return any(s.node == "explicit" for s in self.states)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (also stored in the ONNX metadata under :data:`METADATA_KEY`)."""
        return {"x": self.x, "time_axis": self.time_axis, "states": [s.to_dict() for s in self.states],
                "outputs": dict(self.output_axes)}


def derive(proto: onnx.ModelProto, x_name: str | None = None, time_axis: int | None = None,
           state_pairs: list[tuple[str, str]] | None = None) -> StreamingModel:
    """The one-step model of ``proto``; :class:`UnsupportedModel` naming the node when it cannot stream.

    ``x_name`` is the input with the time axis (default: the first input), ``time_axis`` its time axis
    (default: 1 for inputs of rank 2 or more, else 0), ``state_pairs`` the model's own (state input,
    state output) pairs when its forward takes and returns the state.
    """
    import onnx

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    flow = Flow(model, x_name, time_axis, state_pairs or [])
    flow.run()
    return _build(flow)


def plan_of(proto: onnx.ModelProto) -> dict[str, Any] | None:
    """The streaming description stored in a one-step model's metadata (None for a whole-window model)."""
    for p in proto.metadata_props:
        if p.key == METADATA_KEY:
            return dict(json.loads(p.value))
    return None


def _build(flow: Flow) -> StreamingModel:
    from onnx import helper, numpy_helper

    g = flow.model.graph
    for node, slot, value in flow.rewrites:
        name = _unique(flow, f"{node.name or node.op_type}_stream_{slot}")
        g.initializer.append(numpy_helper.from_array(value, name))
        node.input[slot] = name
    for node, axes in flow.squeeze_axes:  # with a one-step window the time axis would be squeezed too
        if flow.opset >= 13:
            name = _unique(flow, f"{node.name or 'Squeeze'}_stream_axes")
            g.initializer.append(numpy_helper.from_array(np.asarray(axes, np.int64), name))
            node.input.append(name)
        else:
            node.attribute.append(helper.make_attribute("axes", axes))
    links = _state_links(flow)
    x_vi = next(i for i in g.input if i.name == flow.x)
    x_vi.type.tensor_type.shape.dim[flow.time_axis].Clear()
    x_vi.type.tensor_type.shape.dim[flow.time_axis].dim_value = 1
    output_axes = {o.name: (k.axis if isinstance(k := flow.kind(o.name), Seq) else None) for o in g.output}
    for o in g.output:
        o.type.tensor_type.ClearField("shape")
    del g.value_info[:]
    for link in links:
        if link.node != "explicit":
            g.output.append(helper.make_tensor_value_info(link.output, onnx_float(), None))
    _drop_dead(g)
    model = _infer(flow.model)
    inputs, outputs = _io_specs(model)
    sm = StreamingModel(model, flow.x, flow.time_axis, tuple(links), output_axes, inputs, outputs)
    _set_meta(model, METADATA_KEY, json.dumps(sm.to_dict()))
    return sm


def _drop_dead(g: Any) -> None:
    """Remove nodes and initializers nothing reads any more (the zero-state subgraphs the state inputs replace).

    Names a subgraph (a Scan's body) reads from the outer scope count as read.
    """
    while True:
        used = _reads(g) | {o.name for o in g.output}
        live = [n for n in g.node if any(o in used for o in n.output)]
        if len(live) == len(g.node):
            break
        del g.node[:]
        g.node.extend(live)
    used = _reads(g) | {o.name for o in g.output}
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)


def _reads(g: Any) -> set[str]:
    """Every value name a graph's nodes read, subgraphs included."""
    names: set[str] = set()
    for n in g.node:
        names.update(i for i in n.input if i)
        for a in n.attribute:
            for sub in ([a.g] if a.HasField("g") else list(a.graphs)):
                names |= _reads(sub)
    return names


def onnx_float() -> int:
    """ONNX's FLOAT element type."""
    from onnx import TensorProto

    return int(TensorProto.FLOAT)


def _unique(flow: Flow, base: str) -> str:
    g = flow.model.graph
    taken = {i.name for i in g.initializer} | {o for n in g.node for o in n.output} | {i.name for i in g.input}
    name, k = base, 1
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    return name


def _state_links(flow: Flow) -> list[StateLink]:
    """The model's own state pairs, then a new (input, output) pair per zero-initialised state."""
    links = [StateLink(i, o, _dims(flow, i), "explicit") for i, o in flow.pairs]
    x_dims = list(_dims(flow, flow.x))
    batch = x_dims[1 - flow.time_axis] if len(x_dims) >= 2 and flow.time_axis in (0, 1) else 1
    index = {id(node): k for k, node in enumerate(flow.stateful)}
    for node, slot, out_slot, known in flow.state_slots:
        while len(node.input) <= slot:
            node.input.append("")
        if flow.kind(node.input[slot]) == STATE:
            continue  # the model's own state input already feeds it
        k = index[id(node)]
        if known is not None:  # a Scan's state variable: its shape as inferred, the batch axis dynamic
            shape: tuple[Dim, ...] = tuple("batch" if isinstance(d, str) else d for d in known)
            name_in, name_out = _unique(flow, f"s0_{k}_{slot}"), _unique(flow, f"s_{k}_{slot}")
        else:
            layout = int(attr(node, "layout", 0))
            hidden = int(attr(node, "hidden_size"))
            shape = (batch, 1, hidden) if layout else (1, batch, hidden)
            letter = "hc"[slot - 5]
            name_in, name_out = _unique(flow, f"{letter}0_{k}"), _unique(flow, f"{letter}_{k}")
        _wire(flow, node, slot, out_slot, name_in, name_out, shape)
        links.append(StateLink(name_in, name_out, shape, node.name or f"{node.op_type}_{k}"))
    return links


def _wire(flow: Flow, node: Any, slot: int, out_slot: int, name_in: str, name_out: str,
          shape: tuple[Dim, ...]) -> None:
    """Feed ``node``'s initial state (input ``slot``) from a new graph input; name its final state ``name_out``."""
    from onnx import helper

    g = flow.model.graph
    node.input[slot] = name_in
    g.input.append(helper.make_tensor_value_info(name_in, onnx_float(), list(shape)))
    while len(node.output) <= out_slot:
        node.output.append("")
    old = node.output[out_slot]
    node.output[out_slot] = name_out
    if not old:
        return
    for other in g.node:
        for j, i in enumerate(other.input):
            if i == old:
                other.input[j] = name_out
    for o in g.output:
        if o.name == old:
            o.name = name_out


def _dims(flow: Flow, name: str) -> tuple[Dim, ...]:
    vi = next(i for i in flow.model.graph.input if i.name == name)
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "batch")
                 for d in vi.type.tensor_type.shape.dim)


def _set_meta(model: onnx.ModelProto, key: str, value: str) -> None:
    for p in model.metadata_props:
        if p.key == key:
            p.value = value
            return
    entry = model.metadata_props.add()
    entry.key, entry.value = key, value


def _infer(model: onnx.ModelProto) -> onnx.ModelProto:
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
        onnx.checker.check_model(inferred, full_check=True)
    except Exception as e:  # a rewrite left shapes that disagree: say so rather than hand on a broken graph
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnsupportedModel(
            f"The one-step model derived from this graph does not check: {first}",
            "Export without --streaming, and please report the model: this is a case the derivation missed.",
        ) from e
    return inferred


def _io_specs(model: onnx.ModelProto) -> tuple[InputSpec, tuple[TensorSpec, ...]]:
    from onnx import helper

    inits = {i.name for i in model.graph.initializer}

    def spec(vi: Any) -> TensorSpec:
        tt = vi.type.tensor_type
        dims: tuple[Dim, ...] = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "batch")
                                      for d in tt.shape.dim)
        return TensorSpec(vi.name, dims, helper.tensor_dtype_to_np_dtype(tt.elem_type).name)

    ins = InputSpec(tuple(spec(i) for i in model.graph.input if i.name not in inits))
    return ins, tuple(spec(o) for o in model.graph.output)
