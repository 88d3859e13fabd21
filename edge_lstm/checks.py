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
    does not take that input's feature size or dtype; then when ONNX shape inference finds a mismatch."""
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
        want = _expected_features(node, inits)
        got = shapes.get(node.input[0])
        if want is not None and got and isinstance(got[-1], int) and got[-1] != want:
            raise _mismatch(by_name[source], node, want, got[-1])
    try:
        onnx.shape_inference.infer_shapes(proto, strict_mode=True, data_prop=True)
    except Exception as e:  # inference names the node whose input shapes disagree
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ShapeError(
            f"The model does not take input(s) {_shown(inputs)}: {first}",
            "Check --input-shape against what forward() expects (batch, time, features for batch_first).",
        ) from e


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


def _mismatch(spec: TensorSpec, node: Any, want: int, got: int) -> ShapeError:
    what = {"LSTM": "LSTM layer", "GRU": "GRU layer", "RNN": "RNN layer"}.get(node.op_type, f"{node.op_type} layer")
    shape = spec.concrete(1)
    hint = "Check --input-shape against what forward() expects (batch, time, features for batch_first)."
    if shape and shape[-1] == got:
        fixed = "x".join(str(d) for d in (*shape[:-1], want))
        hint = f"Pass --input-shape {fixed} (the last axis is the features per time step)."
    return ShapeError(
        f"The model does not take input '{spec.name}' of shape {'x'.join(map(str, shape))}: its first "
        f"{what} ('{node.name or node.op_type}') takes {want} feature(s) per time step, the input gives {got}.",
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
