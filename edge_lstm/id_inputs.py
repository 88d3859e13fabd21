"""Which model inputs are integer ids (token or label ids into an embedding), and the range they take.

A text classifier or an RNN-T prediction network takes ``int64`` ids, not float
windows: fed floats, its embedding refuses them. None of the files a user brings
says so in a field (TorchScript keeps no input dtypes, a pickled module none at
all), but each graph says it by what it does with the input: an input that
reaches an embedding's indices (``aten::embedding``, ONNX ``Gather`` on a weight
table) is ids, and the table's row count is how many ids are valid. Validation
and calibration draw ids below that count, so every sample is one the model can
take.

Found here from the graph each form carries: TorchScript's inlined graph, a
``.pt2``'s ATen graph, the ``nn.Embedding`` a pickled module calls (seen by a
pre-forward hook while the module runs once on zeros), and an ONNX file's
``Gather``. ``--input-dtype`` says it where none of these can.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from edge_lstm.errors import UsageError
from edge_lstm.spec import InputSpec, TensorSpec

if TYPE_CHECKING:
    import onnx
    import torch
    from torch import nn

    from edge_lstm.load import LoadedModel

#: dtypes ``--input-dtype`` accepts
INPUT_DTYPES = ("float32", "int64", "int32")
#: ops an id tensor may pass through on its way to the embedding (layout, casts, clamps)
_TS_PASS = {"aten::to", "aten::long", "aten::int", "aten::contiguous", "aten::view", "aten::reshape",
            "aten::transpose", "aten::permute", "aten::t", "aten::slice", "aten::select", "aten::squeeze",
            "aten::unsqueeze", "aten::flatten", "aten::clamp", "aten::clone", "aten::detach"}
_ONNX_PASS = {"Cast", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Slice", "Clip"}


#: ids an integer input is drawn below when its embedding's size is not known
DEFAULT_IDS = 10


def id_bound(spec: TensorSpec) -> int:
    """How many ids an integer input takes: its embedding's rows, else :data:`DEFAULT_IDS`."""
    return spec.vocab if spec.vocab else DEFAULT_IDS


def parse_dtype(text: str) -> str:
    """A ``--input-dtype`` value, checked: ``float32``, ``int64`` or ``int32``."""
    value = text.strip().lower()
    if value not in INPUT_DTYPES:
        raise UsageError(f"Unknown --input-dtype '{text}'.",
                         f"Accepted: {', '.join(INPUT_DTYPES)} (once per forward() input, in order).")
    return value


def apply(spec: InputSpec, found: dict[int, int | None], given: Sequence[str] = ()) -> InputSpec:
    """``spec`` with the id inputs ``found`` (index -> vocabulary size) as int64, then ``given`` dtypes on top."""
    if given and len(given) != len(spec.inputs):
        raise UsageError(
            f"{len(given)} --input-dtype given, but the model takes {len(spec.inputs)} input(s) "
            f"({', '.join(spec.names)}).", "Pass --input-dtype once per forward() input, in order.")
    out = []
    for i, t in enumerate(spec.inputs):
        if i in found:
            t = replace(t, dtype="int64" if t.dtype.startswith("float") else t.dtype, vocab=found[i])
        if given:
            t = replace(t, dtype=given[i], vocab=t.vocab if given[i].startswith("int") else None)
        out.append(t)
    return InputSpec(tuple(out))


def mark_ids(model: LoadedModel, given: Sequence[str]) -> None:
    """Integer id inputs from the graph (TorchScript, pickled module; a .pt2 says it at load), then ``given``."""
    found: dict[int, int | None] = {}
    if model.format == "torchscript":
        found = from_torchscript(model.module)
    elif model.format == "pickle":
        found = from_module(model.module, model.inputs.inputs)
    model.inputs = apply(model.inputs, found, list(given))


def from_torchscript(module: Any) -> dict[int, int | None]:
    """Forward-input index -> embedding rows, for inputs that reach an ``aten::embedding``'s indices."""
    graph = getattr(module, "inlined_graph", None)
    if graph is None:
        return {}
    inputs = list(graph.inputs())[1:]  # the first is the module itself
    index = {v.unique(): i for i, v in enumerate(inputs)}
    found: dict[int, int | None] = {}
    stack = [graph]
    while stack:
        g = stack.pop()
        for node in g.nodes():
            stack.extend(node.blocks())
            if node.kind() != "aten::embedding":
                continue
            weight, ids = list(node.inputs())[:2]
            source = _ts_source(ids, index)
            if source is not None:
                found[source] = _merge(found.get(source, -1), ts_weight_dim(weight, module))
    return found


def _ts_source(value: Any, index: dict[int, int]) -> int | None:
    for _ in range(16):
        if value.unique() in index:
            return index[value.unique()]
        node = value.node()
        if node.kind() not in _TS_PASS:
            return None
        value = next(iter(node.inputs()))
    return None


def ts_weight_dim(weight: Any, module: Any, axis: int = 0) -> int | None:
    """The row (``axis`` 1: column) count of the 2-D weight a ``prim::GetAttr`` chain from ``self`` names
    (None when it is not one)."""
    path = []
    while weight.node().kind() == "prim::GetAttr":
        path.append(weight.node().s("name"))
        weight = next(iter(weight.node().inputs()))
    obj = module
    for name in reversed(path):
        obj = getattr(obj, name, None)
    shape = getattr(obj, "shape", None)
    return int(shape[axis]) if path and shape is not None and len(shape) == 2 else None


def _merge(old: int | None, new: int | None) -> int | None:
    """Two embeddings read one input: ids must be valid for both (the smaller table); -1 is 'not seen yet'."""
    if old == -1:
        return new
    if old is None or new is None:
        return old if new is None else new
    return min(old, new)


def from_exported(ep: Any) -> dict[str, int | None]:
    """User-input name -> embedding rows, for inputs of a torch.export program that reach ``aten.embedding``."""
    params = {s.arg.name: s.target for s in ep.graph_signature.input_specs if s.kind.name in ("PARAMETER", "BUFFER")}
    users = {s.arg.name for s in ep.graph_signature.input_specs if s.kind.name == "USER_INPUT"}
    found: dict[str, int | None] = {}
    for node in ep.graph.nodes:
        if node.op != "call_function" or "embedding" not in str(node.target) or len(node.args) < 2:
            continue
        weight, ids = node.args[0], node.args[1]
        for _ in range(16):
            if getattr(ids, "op", None) != "call_function" or not ids.args:
                break
            if not any(p in str(ids.target) for p in ("_to_copy", ".to", "view", "reshape", "clone", "clamp")):
                break
            ids = ids.args[0]
        name = str(getattr(ids, "name", ""))
        if name in users:
            table = ep.state_dict.get(params.get(getattr(weight, "name", ""), ""))
            rows = int(table.shape[0]) if table is not None and table.dim() == 2 else None
            found[name] = _merge(found.get(name, -1), rows)
    return found


def from_module(module: nn.Module, specs: tuple[TensorSpec, ...]) -> dict[int, int | None]:
    """Input index -> embedding rows, for inputs a pickled module hands to one of its ``nn.Embedding`` layers.

    Each float input in turn is fed as int64 zeros (the others as float zeros) while a pre-forward hook on
    every embedding records which tensor it was given; an input counts when the module ran and an embedding
    read it (the same tensor, or a view or cast of it: same values and shape).
    """
    import torch
    from torch import nn

    embeddings = [m for m in module.modules() if isinstance(m, nn.Embedding)]
    if not embeddings or not specs:
        return {}
    found: dict[int, int | None] = {}
    for i, spec in enumerate(specs):
        if not spec.dtype.startswith("float"):
            continue
        xs = [torch.zeros(*t.concrete(1), dtype=torch.int64 if k == i or k in found else torch.float32)
              for k, t in enumerate(specs)]
        rows = _embedding_reads(module, embeddings, xs, xs[i])
        if rows is not None:
            found[i] = rows
    return found


def _embedding_reads(module: nn.Module, embeddings: list[Any], xs: list[torch.Tensor],
                     probe: torch.Tensor) -> int | None:
    """The smallest table among the embeddings that read ``probe`` when ``module(*xs)`` runs; None if none did."""
    import torch

    seen: list[int] = []

    def hook(layer: Any, args: tuple[Any, ...]) -> None:
        ids = args[0] if args else None
        if isinstance(ids, torch.Tensor) and (ids is probe or ids.numel() == probe.numel()) \
                and not ids.is_floating_point():
            seen.append(int(layer.num_embeddings))

    handles = [e.register_forward_pre_hook(hook) for e in embeddings]
    try:
        with torch.no_grad():
            module(*xs)
    except Exception:  # this input is not ids (or not alone): the model rejects the feed
        return None
    finally:
        for h in handles:
            h.remove()
    return min(seen) if seen else None


def from_onnx(proto: onnx.ModelProto) -> dict[str, int]:
    """Graph-input name -> rows of the initializer table a ``Gather`` indexes with it (an exported embedding)."""
    inits = {i.name: i for i in proto.graph.initializer}
    inputs = {i.name for i in proto.graph.input} - set(inits)
    producers = {o: n for n in proto.graph.node for o in n.output}
    found: dict[str, int] = {}
    for node in proto.graph.node:
        if node.op_type != "Gather" or len(node.input) < 2 or node.input[0] not in inits:
            continue
        if next((a.i for a in node.attribute if a.name == "axis"), 0) != 0:
            continue
        name = node.input[1]
        for _ in range(16):
            if name in inputs or name not in producers or producers[name].op_type not in _ONNX_PASS:
                break
            name = producers[name].input[0]
        if name in inputs and len(inits[node.input[0]].dims) == 2:
            rows = int(inits[node.input[0]].dims[0])
            found[name] = min(found.get(name, rows), rows)
    return found
