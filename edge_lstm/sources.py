"""Where the model to export comes from: a PyTorch file (:func:`edge_lstm.load.load`) or an ONNX file.

An ONNX model made elsewhere (another framework's exporter, PyTorch's dynamo
exporter, an older opset) is an input like a ``model.pt``: it is recognised by
its content before :func:`~edge_lstm.load.load` sees it, normalised into the
graph the later stages read (external data inlined, local functions inlined,
converted to the opset the capture writes), and the *source file as given*,
run by ONNX Runtime, is the reference every artifact is validated against.

Its inputs are read from the graph: a dynamic first axis is the batch; any other
dynamic axis (a sequence length) needs ``--input-shape``, since TFLite and the
validation windows need a static window.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from edge_lstm.errors import InputFileError, ShapeError, UsageError
from edge_lstm.inspect_artifact import load_external, onnx_parameters, op_counts
from edge_lstm.load import LoadedModel, load
from edge_lstm.spec import Dim, InputSpec, TensorSpec

if TYPE_CHECKING:
    import onnx

    from edge_lstm.runners.base import Runner

#: the opset the capture writes and the lowering reads
TARGET_OPSET = 17
_BATCH = re.compile(r"batch|^n$|^b$|^bs$|^N$", re.IGNORECASE)


@dataclass
class OnnxModel(LoadedModel):
    """An ONNX file as an export source: the normalised graph, and the source file as the reference."""

    proto: Any = None  #: the normalised ``onnx.ModelProto`` (what the fp32 artifact holds)
    notes: list[str] = field(default_factory=list)  #: what normalisation did (opset conversion, inlining)

    def summary(self) -> dict[str, Any]:
        """JSON-ready description: format, producer, opset, op counts, parameters, specs."""
        counts = op_counts(self.proto)
        return {
            "name": self.name, "format": "onnx", "arch": None, "config": None, "task": self.task,
            "parameters": onnx_parameters(self.proto),
            "layers": [f"{op}: {n}" for op, n in counts.items()],
            "inputs": self.inputs.to_dict(), "outputs": [o.to_dict() for o in self.outputs],
            "normalization": None, "producer": self.metadata.get("producer"),
            "opset": self.metadata.get("opset"), "notes": list(self.notes),
        }


def is_onnx(path: str | Path) -> bool:
    """True when the file's content is an ONNX model (a protobuf starting with its IR version field)."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            head = f.read(2)
    except OSError:
        return False
    return p.is_file() and head[:1] == b"\x08"


def open_model(path: str | Path, input_shapes: list[tuple[int, ...]] | None = None,
               trust_pickle: bool = False, input_dtypes: Sequence[str] = ()) -> LoadedModel:
    """An ONNX file as :class:`OnnxModel`; anything else through :func:`edge_lstm.load.load`."""
    if is_onnx(path):
        return load_onnx(path, input_shapes, input_dtypes)
    return load(path, input_shapes, trust_pickle, input_dtypes)


def graph_of(model: LoadedModel) -> onnx.ModelProto:
    """The whole-window ONNX graph of ``model``: the normalised file, or the PyTorch capture."""
    if isinstance(model, OnnxModel):
        return cast("onnx.ModelProto", model.proto)
    from edge_lstm import capture

    return capture.to_onnx(model)


def reference_runner(model: LoadedModel) -> Runner:
    """The reference every artifact is compared with: PyTorch, or ONNX Runtime on the source ONNX file."""
    if isinstance(model, OnnxModel):
        from edge_lstm.runners.onnxrt import OnnxRuntimeRunner

        assert model.source is not None
        return OnnxRuntimeRunner(model.source)
    from edge_lstm.runners.torch import TorchRunner

    return TorchRunner(model)


def load_onnx(path: str | Path, input_shapes: list[tuple[int, ...]] | None = None,
              input_dtypes: Sequence[str] = ()) -> OnnxModel:
    """Read and normalise an ONNX file; :class:`InputFileError` / :class:`ShapeError` on bad input.

    Input dtypes are the file's own (``input_dtypes`` may only repeat them); an integer input that indexes
    an embedding table gets the table's row count as its id range.
    """
    import onnx

    p = Path(path)
    try:
        proto = onnx.load(str(p), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and friends
        raise InputFileError(f"'{p}' looks like an ONNX model but cannot be read: {e}.",
                             "The file may be truncated or corrupted; export it again.") from e
    load_external(proto, p)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)  # as written
    notes = _normalise(proto, p)
    inputs = _with_ids(_inputs(proto, input_shapes, p), proto, input_dtypes, p)
    _fix_dims(proto, inputs)
    model = OnnxModel(
        cast(Any, None), "onnx", p.stem.split(".")[0], inputs, _outputs(proto, inputs), source=p,
        metadata={"producer": f"{proto.producer_name} {proto.producer_version}".strip(), "opset": opset},
        proto=proto, notes=notes,
    )
    return model


def _normalise(proto: onnx.ModelProto, path: Path) -> list[str]:
    """Check, inline local functions and convert to :data:`TARGET_OPSET`; what was done, as notes."""
    import onnx

    notes = []
    try:
        onnx.checker.check_model(proto)
    except Exception as e:
        raise InputFileError(f"'{path}' is not a valid ONNX model: {str(e).splitlines()[0]}",
                             "Export it again, or check it with onnx.checker.") from e
    if proto.functions:
        from onnx import inliner

        inlined = inliner.inline_local_functions(proto)
        proto.CopyFrom(inlined)
        notes.append("local functions inlined")
    folded = _fold_constants(proto)
    if folded:
        notes.append(f"{folded} node(s) computed from constants only were folded into weights")
    version = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), TARGET_OPSET)
    if version != TARGET_OPSET:
        try:
            converted = onnx.version_converter.convert_version(proto, TARGET_OPSET)
            onnx.checker.check_model(converted)
        except Exception as e:  # the converter has no adapter for some op: keep the file's own opset
            notes.append(f"kept opset {version}: conversion to {TARGET_OPSET} failed ({str(e).splitlines()[0]})")
        else:
            proto.CopyFrom(converted)
            notes.append(f"converted from opset {version} to {TARGET_OPSET}")
    return notes


#: ops never folded (random, or with side effects)
_NO_FOLD = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}
_FOLD_LIMIT = 1 << 24  # elements: a folded constant larger than this stays computed


def _fold_constants(proto: onnx.ModelProto) -> int:
    """Replace nodes whose inputs are all constants by the initializers they compute; how many were folded.

    Other exporters compute weights at run time (PyTorch's dynamo exporter feeds an LSTM's recurrent weight
    through an ``Unsqueeze`` of an initializer); the quantizers and the lowering need them as initializers.
    """
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    consts = {i.name for i in proto.graph.initializer}
    graph_inputs = {i.name for i in proto.graph.input} - consts
    outputs = {o.name for o in proto.graph.output}
    values = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    keep, folded = [], 0
    for node in proto.graph.node:
        ins = [i for i in node.input if i]
        foldable = (node.op_type not in _NO_FOLD and not node.domain and all(i in values for i in ins)
                    and not any(a.type in (5, 10) for a in node.attribute)  # no subgraphs
                    and not any(o in outputs for o in node.output) and not (set(ins) & graph_inputs))
        if foldable:
            try:
                model = helper.make_model(
                    helper.make_graph([node], "fold", [], [helper.make_tensor_value_info(o, 0, None)
                                                            for o in node.output if o],
                                      [numpy_helper.from_array(values[i], i) for i in dict.fromkeys(ins)]),
                    opset_imports=list(proto.opset_import))
                results = ReferenceEvaluator(model).run(None, {})
            except Exception:  # the evaluator lacks this op: leave the node as it is
                results = None
            if results is not None and all(np.asarray(r).size <= _FOLD_LIMIT for r in results):
                for name, value in zip([o for o in node.output if o], results, strict=True):
                    values[name] = np.asarray(value)
                    proto.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
                folded += node.op_type != "Constant"
                continue
        keep.append(node)
    if len(keep) != len(proto.graph.node):
        del proto.graph.node[:]
        proto.graph.node.extend(keep)
        used = {i for n in keep for i in n.input} | outputs  # a folded node's sources are not stored twice
        live = [i for i in proto.graph.initializer if i.name in used]
        del proto.graph.initializer[:]
        proto.graph.initializer.extend(live)
    return folded


def _inputs(proto: onnx.ModelProto, shapes: list[tuple[int, ...]] | None, path: Path) -> InputSpec:
    from onnx import helper

    inits = {i.name for i in proto.graph.initializer}
    graph_inputs = [i for i in proto.graph.input if i.name not in inits]
    if shapes and len(shapes) != len(graph_inputs):
        raise ShapeError(f"{len(shapes)} --input-shape given, but '{path.name}' takes {len(graph_inputs)} input(s) "
                         f"({', '.join(i.name for i in graph_inputs)}).",
                         "Pass --input-shape once per input, in order.")
    specs = []
    for k, vi in enumerate(graph_inputs):
        tt = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim]
        given = shapes[k] if shapes else None
        specs.append(TensorSpec(vi.name, _resolve(vi.name, dims, given, k),
                                helper.tensor_dtype_to_np_dtype(tt.elem_type).name))
    return InputSpec(tuple(specs))


def _with_ids(spec: InputSpec, proto: onnx.ModelProto, given: Sequence[str], path: Path) -> InputSpec:
    from edge_lstm import id_inputs

    if given:
        if len(given) != len(spec.inputs):
            raise UsageError(f"{len(given)} --input-dtype given, but '{path.name}' takes {len(spec.inputs)} input(s).",
                             "Pass --input-dtype once per input, in order.")
        for t, d in zip(spec.inputs, given, strict=True):
            if d != t.dtype:
                raise UsageError(f"--input-dtype {d} for input '{t.name}' of '{path.name}', which the file declares "
                                 f"as {t.dtype}.", "Drop --input-dtype: an ONNX file carries its input dtypes.")
    rows = id_inputs.from_onnx(proto)
    return InputSpec(tuple(replace(t, vocab=rows.get(t.name)) if not t.dtype.startswith("float") else t
                           for t in spec.inputs))


def _resolve(name: str, dims: list[int | str], given: tuple[int, ...] | None, index: int) -> tuple[Dim, ...]:
    """Static dims as stored; the batch axis dynamic; other dynamic axes from ``--input-shape``."""
    shown = "x".join(str(d) for d in dims)
    if given is not None and len(given) != len(dims):
        raise ShapeError(f"--input-shape {'x'.join(map(str, given))} has rank {len(given)}, but input '{name}' has "
                         f"rank {len(dims)} ({shown}).")
    out: list[Dim] = []
    for axis, d in enumerate(dims):
        is_batch = isinstance(d, str) and (bool(_BATCH.search(d)) or (axis == 0 and index == 0 and d == "?"))
        if isinstance(d, int):
            if given is not None and given[axis] != d:
                raise ShapeError(f"Input '{name}' has size {d} at axis {axis} ({shown}); --input-shape gives "
                                 f"{given[axis]}.", f"Pass --input-shape with {d} at axis {axis}.")
            out.append(d)
        elif is_batch or (given is None and axis == 0):
            out.append("batch")
        elif given is not None:
            out.append(int(given[axis]))
        else:
            raise ShapeError(
                f"Input '{name}' has a dynamic axis '{d}' at axis {axis} (shape {shown}); a window needs a fixed "
                "length to validate and to lower to TFLite.",
                "Pass --input-shape, e.g. --input-shape 1x96x1 (once per input, in order).")
    return tuple(out)


def _fix_dims(proto: onnx.ModelProto, inputs: InputSpec) -> None:
    """Write the resolved static dims into the graph (the batch axis stays dynamic, named 'batch')."""
    by_name = {t.name: t for t in inputs.inputs}
    for vi in proto.graph.input:
        spec = by_name.get(vi.name)
        if spec is None:
            continue
        for d, value in zip(vi.type.tensor_type.shape.dim, spec.shape, strict=True):
            d.Clear()
            if isinstance(value, int):
                d.dim_value = value
            else:
                d.dim_param = "batch"


def _outputs(proto: onnx.ModelProto, inputs: InputSpec) -> tuple[TensorSpec, ...]:
    """Output specs from shape inference at batch 1 (unknown dims filled later from the reference's outputs)."""
    import onnx
    from onnx import helper

    fixed = onnx.ModelProto()
    fixed.CopyFrom(proto)
    try:
        inferred = onnx.shape_inference.infer_shapes(fixed, data_prop=True)
    except Exception:  # a graph shape inference cannot follow: the reference run will say
        inferred = fixed
    out = []
    for vi in inferred.graph.output:
        tt = vi.type.tensor_type
        # a dim shape inference could not tell is settled from the reference's outputs (settle_outputs)
        dims: tuple[Dim, ...] = tuple(d.dim_value if d.HasField("dim_value") else "batch" for d in tt.shape.dim)
        out.append(TensorSpec(vi.name, dims, helper.tensor_dtype_to_np_dtype(tt.elem_type).name))
    return tuple(out)


def settle_outputs(model: OnnxModel, reference: dict[str, np.ndarray]) -> None:
    """Output specs from what the reference returned (stacked over samples), the batch axis kept dynamic."""
    outs = []
    for spec in model.outputs:
        got = reference.get(spec.name)
        if got is None:
            outs.append(spec)
            continue
        shape = got.shape[1:]
        dims: tuple[Dim, ...] = tuple(
            "batch" if a < len(spec.shape) and spec.shape[a] == "batch" else int(d) for a, d in enumerate(shape))
        outs.append(TensorSpec(spec.name, dims, spec.dtype))
    model.outputs = tuple(outs)
