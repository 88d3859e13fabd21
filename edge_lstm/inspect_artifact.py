"""What is inside an ``.onnx`` or ``.tflite`` file: ops, parameters, sizes, inputs and outputs (``edge-lstm info``).

``.pte`` and ``.ort`` files are described by :mod:`edge_lstm.inspect_mobile`, from their bytes alone.

ONNX files are read with ``onnx``; TFLite files with :mod:`edge_lstm.tflite_read`
(numpy only). MACs come from :mod:`edge_lstm.cost` and :mod:`edge_lstm.cost_tflite`,
so ``info`` on an artifact and ``profile`` on it count the same way.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_lstm.errors import InputFileError

if TYPE_CHECKING:
    import onnx

_FLOAT_TYPES = {1, 10, 11, 16}  # ONNX FLOAT, FLOAT16, DOUBLE, BFLOAT16


def op_counts(proto: onnx.ModelProto) -> dict[str, int]:
    """Op type -> count over the main graph, most frequent first (Constant nodes left out)."""
    counts = Counter(n.op_type if not n.domain or n.domain == "ai.onnx" else f"{n.domain}.{n.op_type}"
                     for n in proto.graph.node if n.op_type != "Constant")
    return dict(counts.most_common())


def onnx_parameters(proto: onnx.ModelProto) -> int:
    """Elements of every weight initializer (float or quantized integer tensors of rank >= 1)."""
    total = 0
    for t in proto.graph.initializer:
        n = 1
        for d in t.dims:
            n *= int(d)
        if len(t.dims) >= 1 and (t.data_type in _FLOAT_TYPES or t.data_type in (2, 3)):  # + UINT8, INT8
            total += n
    return total


def load_external(proto: onnx.ModelProto, path: Path) -> None:
    """Inline external weights, refusing locations outside the model's directory (``info`` and ``export`` both)."""
    from onnx.external_data_helper import load_external_data_for_model, uses_external_data

    base = path.resolve().parent
    tensors = [t for t in proto.graph.initializer if uses_external_data(t)]
    for t in tensors:
        loc = next((e.value for e in t.external_data if e.key == "location"), "")
        target = (base / loc).resolve()
        if not loc or Path(loc).is_absolute() or base not in target.parents or not target.is_file():
            raise InputFileError(
                f"'{path}' keeps tensor '{t.name}' in an external file '{loc}' that is missing or outside "
                "the model's directory.", "Keep the .onnx and its data file together, or save it as one file.")
    if tensors:
        load_external_data_for_model(proto, str(base))


def describe(path: str | Path) -> dict[str, Any]:
    """A JSON-ready description of an ``.onnx``, ``.tflite``, ``.pte`` or ``.ort`` artifact."""
    from edge_lstm.cost import artifact_format

    p = Path(path)
    fmt = artifact_format(p)
    if fmt == "onnx":
        return _describe_onnx(p)
    if fmt == "tflite":
        return _describe_tflite(p)
    if fmt in ("executorch", "ort"):
        from edge_lstm import inspect_mobile

        return inspect_mobile.describe_pte(p) if fmt == "executorch" else inspect_mobile.describe_ort(p)
    raise InputFileError(f"'{p}' is neither an ONNX, TFLite, ExecuTorch nor ONNX Runtime format file.")


def _describe_onnx(p: Path) -> dict[str, Any]:
    import onnx
    from onnx import helper

    from edge_lstm import cost

    try:
        proto = onnx.load(str(p), load_external_data=False)
    except Exception as e:
        raise InputFileError(f"'{p}' cannot be read as ONNX: {e}.") from e
    load_external(proto, p)  # an external-data location outside the model's directory is refused here
    inits = {i.name for i in proto.graph.initializer}

    def spec(vi: Any) -> dict[str, Any]:
        tt = vi.type.tensor_type
        return {"name": vi.name, "shape": [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                                           for d in tt.shape.dim],
                "dtype": helper.tensor_dtype_to_np_dtype(tt.elem_type).name if tt.elem_type else "unknown"}

    c = cost.cost_of(p)
    from edge_lstm.streaming import plan_of

    return {
        "name": p.name, "format": "onnx", "producer": f"{proto.producer_name} {proto.producer_version}".strip(),
        "opset": {o.domain or "ai.onnx": o.version for o in proto.opset_import},
        "ops": op_counts(proto), "parameters": onnx_parameters(proto), "size": cost.onnx_sizes(p),
        "inputs": [spec(i) for i in proto.graph.input if i.name not in inits],
        "outputs": [spec(o) for o in proto.graph.output],
        "precision": c.precision if c else None,
        "macs_per_inference": c.macs if c else None, "macs_per_step": c.macs_per_step if c else None,
        "streaming": plan_of(proto),
    }


def _describe_tflite(p: Path) -> dict[str, Any]:
    from edge_lstm import tflite_read
    from edge_lstm.cost_tflite import parse, tflite_cost, tflite_sizes

    data = p.read_bytes()
    try:
        model = parse(data)  # every index checked, so nothing below reads past a list
        c = tflite_cost(data)
    except InputFileError as e:
        raise InputFileError(f"'{p}': {e.message}", e.hint) from e
    g = model.subgraphs[0]
    counts = Counter(tflite_read.op_name(model, op) for sub in model.subgraphs for op in sub.operators)

    def spec(i: int) -> dict[str, Any]:
        t = g.tensors[i]
        out: dict[str, Any] = {"name": t.name, "shape": list(t.shape), "dtype": tflite_read.dtype_name(t.type)}
        if t.scale:
            out["quantization"] = {"scale": t.scale[0], "zero_point": t.zero_point[0] if t.zero_point else 0}
        return out

    form = lowering_form(model, c.time_steps)
    return {
        "name": p.name, "format": "tflite", "description": model.description,
        "subgraphs": len(model.subgraphs), "ops": dict(counts.most_common()), "parameters": c.params,
        "parameters_counted": PARAMETERS_COUNTED, "lowering": form, "lowering_basis": LOWERING_BASIS,
        "size": tflite_sizes(data), "inputs": [spec(i) for i in g.inputs], "outputs": [spec(i) for i in g.outputs],
        "variable_tensors": sum(1 for t in g.tensors if t.is_variable), "precision": c.precision,
        "macs_per_inference": c.macs, "macs_per_step": c.macs_per_step,
        "state": _tflite_state(data, form, c.time_steps),
    }


#: what a .tflite's "parameters" counts (the file does not record the model's own count)
PARAMETERS_COUNTED = ("every element of the constant weight tensors stored in the file, as this lowering lays them "
                      "out: a loop's zero initial states and a wavefront cell's zero blocks count, and LSTM biases "
                      "are stored once (PyTorch keeps two); the model's own count is in the export report")
#: how :func:`lowering_form` tells the forms apart (the file records no lowering)
LOWERING_BASIS = ("read from the ops: a TFLite sequence-LSTM/RNN op is fused, a WHILE loop is loop (wavefront when "
                  "it carries the step-0 feature of a stacked pair run as one cell), gate ops without either are "
                  "unrolled, or one-step for a streaming model (loop and unrolled write the same single step)")
_FUSED_OPS = {"UNIDIRECTIONAL_SEQUENCE_LSTM", "BIDIRECTIONAL_SEQUENCE_LSTM", "UNIDIRECTIONAL_SEQUENCE_RNN",
              "BIDIRECTIONAL_SEQUENCE_RNN"}


def lowering_form(model: Any, steps: int = 0) -> str | None:
    """``fused``, ``loop``, ``wavefront``, ``unrolled`` or ``one-step`` from a parsed TFLite model's ops and its
    time ``steps`` (see :data:`LOWERING_BASIS`); ``None`` for a graph with no recurrent cell."""
    from edge_lstm import tflite_read

    names = {tflite_read.op_name(model, op) for g in model.subgraphs for op in g.operators}
    if names & _FUSED_OPS:
        return "fused"
    if "WHILE" in names:
        step0 = any(t.name.endswith("_step0") for t in model.subgraphs[0].tensors)
        return "wavefront" if step0 else "loop"
    if {"LOGISTIC", "TANH"} & names and "FULLY_CONNECTED" in names:
        return "one-step" if steps == 1 else "unrolled"
    return None


def _tflite_state(data: bytes, form: str | None, steps: int) -> dict[str, Any] | None:
    """The state map of a streaming (one-step) or stateful artifact, as a bundle records it; ``None`` when stateless."""
    from edge_lstm.bundle_state import io_specs, state_map

    ins, outs = io_specs("tflite", data)
    streaming = form is not None and steps == 1
    state = state_map("tflite", data, ins, outs, streaming, {})
    return None if state["storage"] == "none" else state


def render(info: dict[str, Any]) -> str:
    """Human-readable lines for ``edge-lstm info`` on an artifact."""
    if info["format"] in ("executorch", "ort"):
        from edge_lstm import inspect_mobile

        return inspect_mobile.render(info)
    size = info["size"]
    lowering = f", {info['lowering']} lowering" if info.get("lowering") else ""
    counted = " (stored weight values, as this lowering lays them out)" if info["format"] == "tflite" else ""
    lines = [
        f"{info['name']} ({info['format']}, {info.get('precision') or 'unknown'} precision{lowering})",
        f"parameters: {info['parameters']:,}{counted}",
        f"size: {size['file_bytes']:,} B ({size['weights_bytes']:,} B weights, {size['graph_bytes']:,} B graph)",
    ]
    if info.get("macs_per_inference") is not None:
        lines.append(f"MACs per inference: {info['macs_per_inference']:,} ({info['macs_per_step']:,} per time step)")
    for key in ("inputs", "outputs"):
        lines.append(f"{key + ':':<8} " + ", ".join(
            f"{t['name']}: {t['dtype']}[{'x'.join(str(d) for d in t['shape'])}]" for t in info[key]))
    lines.append("ops: " + ", ".join(f"{op} x{n}" for op, n in info["ops"].items()))
    if info.get("streaming"):
        states = ", ".join(f"{s['input']} -> {s['output']}" for s in info["streaming"]["states"])
        lines.append(f"streaming: one step per call, state {states}")
    if info.get("state"):
        st = info["state"]
        links = ", ".join(_state_link(t) for t in st["tensors"])
        lines.append(f"state ({st['storage']}): {links}; reset: {st['reset']}")
    return "\n".join(lines)


def _state_link(t: dict[str, Any]) -> str:
    """One carried state: ``layer 0 h: h0_0 -> h_0``, or the variable tensor that holds it."""
    where = t["variable"] if t.get("variable") else f"{t['input']} -> {t['output']}"
    layer = f"layer {t['layer']} " if t.get("layer") is not None else ""
    return f"{layer}{t['kind']}: {where}"
