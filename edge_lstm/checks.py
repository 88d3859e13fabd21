"""Does the model take the inputs it was given? Checked on the captured graph, before any export work.

A traced TorchScript LSTM runs on whatever feature count it is fed (its weights
are not checked against the input), so ``--input-shape 1x96x7`` for a model
built for one feature used to pass ``info`` and end ``export`` in an ONNX Runtime
error. The graph knows better: a recurrent layer's weight says how many features
it takes per step, a fully-connected layer how many inputs, a convolution how
many channels, an embedding that it wants integer ids. A mismatch is the user's
mistake: :class:`ShapeError` (exit 2) saying what the model expects and which
``--input-shape`` would fit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edge_lstm.errors import ShapeError

if TYPE_CHECKING:
    import onnx

    from edge_lstm.spec import TensorSpec

_LAYOUT_OPS = ("Transpose", "Identity", "Cast", "Dropout")


def check_inputs(proto: onnx.ModelProto, inputs: tuple[TensorSpec, ...]) -> None:
    """Raise :class:`ShapeError` when a layer fed (directly or through a transpose) by a graph input
    does not take that input's rank or feature size; then when ONNX shape inference finds a mismatch."""
    import onnx

    check_layers(proto, inputs)
    try:
        onnx.shape_inference.infer_shapes(proto, strict_mode=True, data_prop=True)
    except Exception as e:  # inference names the node whose input shapes disagree
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ShapeError(
            f"The model does not take input(s) {_shown(inputs)}: {first}",
            "Check --input-shape against what forward() expects (batch, time, features for batch_first).",
        ) from e


def check_layers(proto: onnx.ModelProto, inputs: tuple[TensorSpec, ...]) -> None:
    """The rank and feature checks of :func:`check_inputs`, which the capture runs before ``onnx.checker``
    (a graph fed the wrong rank fails the checker, and that is the user's mistake, not an exporter bug)."""
    import onnx

    model = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    shapes = _shapes(model)
    inits = {i.name: i for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    by_name = {t.name: t for t in inputs}
    for node in model.graph.node:
        source = _graph_input(node.input[0] if node.input else "", producers, by_name)
        if source is None:
            continue
        rank = _expected_rank(node, inits)
        if rank is not None and rank != len(by_name[source].shape):
            layer = _recurrent_after(node, model.graph.node)
            layout = next((a.i for a in layer.attribute if a.name == "layout"), 0)
            seq_first = layer is node and layout == 0  # ONNX's recurrent ops take (time, batch, features)
            raise _rank_mismatch(by_name[source], layer, rank, _expected_features(layer, inits), seq_first)
        want = _expected_features(node, inits)
        got = shapes.get(node.input[0])
        if want is not None and got and isinstance(got[-1], int) and got[-1] != want:
            raise _mismatch(by_name[source], node, want, got[-1])


def _graph_input(name: str, producers: dict[str, Any], inputs: dict[str, TensorSpec]) -> str | None:
    """The graph input ``name`` comes from through layout-only ops, or None."""
    for _ in range(8):
        if name in inputs:
            return name
        node = producers.get(name)
        if node is None or node.op_type not in _LAYOUT_OPS:
            return None
        name = node.input[0]
    return None


def _expected_features(node: Any, inits: dict[str, Any]) -> int | None:
    """The size of the last input axis the node's weights take (None when it does not say)."""
    w = inits.get(node.input[1]) if len(node.input) > 1 else None
    if w is None:
        return None
    dims = list(w.dims)
    if node.op_type in ("LSTM", "GRU", "RNN") and len(dims) == 3:
        return int(dims[2])
    if node.op_type == "MatMul" and len(dims) == 2:
        return int(dims[0])
    if node.op_type == "Gemm" and len(dims) == 2:
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return int(dims[1] if trans_b else dims[0])
    return None


def _expected_rank(node: Any, inits: dict[str, Any]) -> int | None:
    """How many axes the node's first input must have (None when the node does not fix it).

    A traced TorchScript LSTM runs on a 4-D input without complaint, and ONNX shape inference lets a
    ``Transpose`` with a 3-axis ``perm`` take 4 axes; ONNX Runtime then fails at run time. The node knows.
    """
    if node.op_type == "Transpose":
        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
        return len(perm) if perm else None
    if node.op_type in ("LSTM", "GRU", "RNN"):
        return 3
    if node.op_type == "Gemm":
        return 2
    if node.op_type in ("Conv", "ConvTranspose") and len(node.input) > 1 and node.input[1] in inits:
        return len(inits[node.input[1]].dims)
    return None


def _recurrent_after(node: Any, nodes: Any) -> Any:
    """The recurrent layer a (batch-first) ``Transpose`` feeds, else the node itself: the layer is what to name."""
    if node.op_type != "Transpose":
        return node
    return next((n for n in nodes if n.op_type in ("LSTM", "GRU", "RNN") and n.input and n.input[0] == node.output[0]),
                node)


def _rank_mismatch(spec: TensorSpec, node: Any, rank: int, features: int | None, seq_first: bool) -> ShapeError:
    shape = spec.concrete(1)
    layer = node.op_type if node.op_type in ("LSTM", "GRU", "RNN") else None
    what = f"{layer} layer" if layer else f"{node.op_type} node"
    axes = (" (time, batch, features)" if seq_first else " (batch, time, features)") if rank == 3 and layer else ""
    fits = _fitting_shape(shape, rank, features)
    hint = (f"Pass --input-shape {'x'.join(map(str, fits))}." if fits else
            f"Pass an --input-shape with {rank} axes{axes}.")
    per_step = f", {features} feature(s) per time step" if features and layer else ""
    return ShapeError(
        f"The model does not take input '{spec.name}' of shape {'x'.join(map(str, shape))} ({len(shape)} axes): "
        f"its first {what} ('{node.name or node.op_type}') takes {rank} axes{axes}{per_step}.", hint)


def _fitting_shape(shape: tuple[int, ...], rank: int, features: int | None) -> tuple[int, ...] | None:
    """The given shape brought to ``rank`` axes: unit axes after the first dropped, or a feature axis added."""
    dims = list(shape)
    while len(dims) > rank:
        unit = next((a for a in range(len(dims) - 1, 0, -1) if dims[a] == 1), None)
        if unit is None:
            return None
        del dims[unit]
    if len(dims) == rank - 1 and features is not None:
        dims.append(features)
    if len(dims) != rank:
        return None
    if features is not None:
        dims[-1] = features
    return tuple(dims)


def _mismatch(spec: TensorSpec, node: Any, want: int, got: int) -> ShapeError:
    return feature_mismatch(spec, node.op_type, node.name or node.op_type, want, got)


def feature_mismatch(spec: TensorSpec, op: str, name: str, want: int, got: int) -> ShapeError:
    """The error for input ``spec`` feeding ``got`` features per time step to the first recurrent layer (``op``:
    LSTM, GRU, RNN, or another op's type; ``name``), which takes ``want``: the captured graph's check here, and
    :mod:`edge_lstm.load`'s for an eager module that PyTorch itself refused."""
    what = {"LSTM": "LSTM layer", "GRU": "GRU layer", "RNN": "RNN layer"}.get(op, f"{op} layer")
    shape = spec.concrete(1)
    hint = "Check --input-shape against what forward() expects (batch, time, features for batch_first)."
    if shape and shape[-1] == got:
        fixed = "x".join(str(d) for d in (*shape[:-1], want))
        hint = f"Pass --input-shape {fixed} (the last axis is the features per time step)."
    return ShapeError(
        f"The model does not take input '{spec.name}' of shape {'x'.join(map(str, shape))}: its first "
        f"{what} ('{name}') takes {want} feature(s) per time step, the input gives {got}.",
        hint,
    )


def _shapes(model: onnx.ModelProto) -> dict[str, tuple[int | str, ...]]:
    out: dict[str, tuple[int | str, ...]] = {}
    for vi in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        tt = vi.type.tensor_type
        if tt.HasField("shape"):
            out[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else d.dim_param for d in tt.shape.dim)
    return out


def _shown(inputs: tuple[TensorSpec, ...]) -> str:
    return ", ".join(f"{t.name} {'x'.join(map(str, t.concrete(1)))}" for t in inputs)


#: TorchScript recurrent ops (input, hx, params, has_biases, layers, dropout, train, bidirectional, batch_first)
_TS_RECURRENT = {"aten::lstm": "LSTM", "aten::gru": "GRU", "aten::rnn_tanh": "RNN", "aten::rnn_relu": "RNN"}
_TS_SAME_RANK = {"aten::to", "aten::contiguous", "aten::transpose", "aten::clone", "aten::detach", "aten::dropout",
                 "aten::float", "aten::type_as"}


def check_torchscript(module: Any, inputs: tuple[TensorSpec, ...]) -> None:
    """Before the capture: a graph input that reaches a recurrent layer unchanged in rank must have 3 axes.

    A traced ``aten::lstm`` runs on a 4-D input, and PyTorch's ONNX exporter then dies (signal 11) on a 5-D
    one: the rank is the user's mistake, and the layer says what it takes.
    """
    from edge_lstm.id_inputs import ts_weight_dim

    graph = getattr(module, "inlined_graph", None)
    if graph is None:
        return
    index = {v.unique(): i for i, v in enumerate(list(graph.inputs())[1:])}
    for node in graph.nodes():
        if node.kind() not in _TS_RECURRENT:
            continue
        value = next(iter(node.inputs()))
        for _ in range(8):
            if value.unique() in index or value.node().kind() not in _TS_SAME_RANK:
                break
            value = next(iter(value.node().inputs()))
        i = index.get(value.unique())
        if i is None or i >= len(inputs) or len(inputs[i].shape) == 3:
            continue
        args = list(node.inputs())
        weights = list(args[2].node().inputs()) if args[2].node().kind() == "prim::ListConstruct" else []
        w = ts_weight_dim(weights[0], module, axis=1) if weights else None
        batch_first = args[8].node().kind() == "prim::Constant" and bool(args[8].toIValue())
        fake = _TsLayer(_TS_RECURRENT[node.kind()], f"{_TS_RECURRENT[node.kind()].lower()}")
        raise _rank_mismatch(inputs[i], fake, 3, w, seq_first=not batch_first)


class _TsLayer:
    """Enough of an ONNX node for :func:`_rank_mismatch` to name a TorchScript layer."""

    def __init__(self, op_type: str, name: str) -> None:
        self.op_type = op_type
        self.name = name
