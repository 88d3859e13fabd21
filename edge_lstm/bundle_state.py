"""An artifact's tensors and state map, read from the artifact itself (for the bundle manifest).

TFLite files are read with :mod:`edge_lstm.tflite_read` (numpy only); ONNX files
with ONNX Runtime, whose model metadata also holds the streaming plan that
``edge_lstm.streaming`` stores in every one-step ONNX model.

The state map says, per carried tensor, which layer it belongs to and whether it
is the hidden (``h``) or cell (``c``) state:

- **variable**: a fused TFLite one-step model keeps its state in variable tensors
  (inputs 18 and 19 of ``UNIDIRECTIONAL_SEQUENCE_LSTM``, input 4 of
  ``UNIDIRECTIONAL_SEQUENCE_RNN``); one fused op is one layer, in graph order.
- **io**: a one-step ONNX model, or a loop-lowered TFLite one, takes each state as
  an input and returns the next as an output; the pairs come from the ONNX plan
  (the TFLite lowering keeps the ONNX names), else by position: the inputs after
  the readings, paired in order with as many last outputs.
"""

from __future__ import annotations

import json
import re
from typing import Any

from edge_lstm.errors import InputFileError

#: ONNX metadata key of the one-step model's plan (``edge_lstm.streaming.METADATA_KEY``; not imported: that module
#: needs the onnx package)
PLAN_KEY = "edge_lstm.streaming"
_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
              "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(int16)": "int16", "tensor(int32)": "int32",
              "tensor(int64)": "int64", "tensor(bool)": "bool"}
#: fused sequence ops -> their variable state input slots and kinds (TFLite's schema.fbs)
_FUSED_STATE = {"UNIDIRECTIONAL_SEQUENCE_LSTM": ((18, "h"), (19, "c")), "UNIDIRECTIONAL_SEQUENCE_RNN": ((4, "h"),)}
_PLAN_NAME = re.compile(r"^(?P<kind>[hc])0_(?P<layer>\d+)$")


def io_specs(fmt: str, data: bytes) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The artifact's inputs and outputs: name, shape, dtype and (integer tensors) scale and zero point."""
    if fmt == "tflite":
        from edge_lstm import tflite_read

        model = tflite_read.read(data)
        g = model.subgraphs[0]

        def spec(i: int) -> dict[str, Any]:
            t = g.tensors[i]
            q = ({"scale": float(t.scale[0]), "zero_point": int(t.zero_point[0]) if t.zero_point else 0}
                 if t.scale and t.scale[0] > 0 and tflite_read.dtype_name(t.type) in ("int8", "uint8", "int16")
                 else None)
            return {"name": t.name, "shape": [int(d) for d in t.shape], "dtype": tflite_read.dtype_name(t.type),
                    "role": "other", "quantization": q}

        return [spec(i) for i in g.inputs], [spec(i) for i in g.outputs]
    session = _ort(data)

    def ort_spec(arg: Any) -> dict[str, Any]:
        shape = [d if isinstance(d, int) else str(d) for d in arg.shape]
        return {"name": arg.name, "shape": shape, "dtype": _ORT_TYPES.get(arg.type, "float32"), "role": "other",
                "quantization": None}

    return [ort_spec(i) for i in session.get_inputs()], [ort_spec(o) for o in session.get_outputs()]


def _ort(data: bytes) -> Any:
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise InputFileError("Bundling an ONNX artifact reads it with ONNX Runtime, which is not installed.",
                             "pip install onnxruntime (or the host extra: pip install 'edge-lstm[export]').") from e
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def onnx_plan(data: bytes) -> dict[str, Any] | None:
    """The streaming plan stored in a one-step ONNX model's metadata (None for a whole-window model)."""
    meta = _ort(data).get_modelmeta().custom_metadata_map
    text = meta.get(PLAN_KEY)
    return dict(json.loads(text)) if text else None


def state_map(fmt: str, data: bytes, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]], streaming: bool,
              plans: dict[tuple[str, ...], dict[str, Any]]) -> dict[str, Any]:
    """The artifact's state map (see the module docstring)."""
    variable = _variable_states(data) if fmt == "tflite" else []
    carried: list[dict[str, Any]] = []
    if streaming:
        plan = onnx_plan(data) if fmt == "onnx" else _matching_plan(inputs, plans)
        carried = _io_states(inputs, outputs, plan)
    storage = "mixed" if variable and carried else "variable" if variable else "io" if carried else "none"
    return {"storage": storage, "reset": _reset_text(storage, streaming), "tensors": variable + carried}


def _reset_text(storage: str, streaming: bool) -> str:
    variable = "interpreter.reset_all_variables() sets every variable state tensor to zero"
    io = ("feed zeros (the zero point for integer tensors) to every state input; after each call feed each state "
          "output to its input")
    if storage == "none":
        return "nothing to reset: the artifact is stateless"
    if not streaming:
        return f"{variable}: call it before each window"
    return {"variable": variable, "io": io, "mixed": f"{variable}; {io}"}[storage]


def _variable_states(data: bytes) -> list[dict[str, Any]]:
    from edge_lstm import tflite_read

    model = tflite_read.read(data)
    g = model.subgraphs[0]
    found: dict[int, tuple[int | None, str]] = {}
    layer = 0
    for op in g.operators:
        slots = _FUSED_STATE.get(tflite_read.op_name(model, op))
        if not slots:
            continue
        for slot, kind in slots:
            if slot < len(op.inputs) and op.inputs[slot] >= 0 and g.tensors[op.inputs[slot]].is_variable:
                found[op.inputs[slot]] = (layer, kind)
        layer += 1
    out = []
    for i, t in enumerate(g.tensors):
        if not t.is_variable:
            continue
        lay, kind = found.get(i, (None, "state"))
        q = {"scale": float(t.scale[0]), "zero_point": int(t.zero_point[0]) if t.zero_point else 0} \
            if t.scale and t.scale[0] > 0 else None
        out.append({"layer": lay, "kind": kind, "input": None, "output": None, "variable": t.name, "node": None,
                    "shape": [int(d) for d in t.shape], "dtype": tflite_read.dtype_name(t.type), "quantization": q,
                    "initial": 0.0})
    return out


def _matching_plan(inputs: list[dict[str, Any]], plans: dict[tuple[str, ...], dict[str, Any]]) -> dict[str, Any] | None:
    names = {t["name"] for t in inputs}
    for key, plan in plans.items():
        if key and set(key) <= names:
            return plan
    return None


def _io_states(inputs: list[dict[str, Any]], outputs: list[dict[str, Any]],
               plan: dict[str, Any] | None) -> list[dict[str, Any]]:
    by_in = {t["name"]: t for t in inputs}
    by_out = {t["name"]: t for t in outputs}
    if plan is not None and all(s["input"] in by_in and s["output"] in by_out for s in plan["states"]):
        links = [(s["input"], s["output"], s.get("node")) for s in plan["states"]]
    else:
        n = len(inputs) - 1
        if n <= 0 or len(outputs) <= n:
            return []
        links = [(i["name"], o["name"], None) for i, o in zip(inputs[1:], outputs[len(outputs) - n:], strict=True)]
    nodes: list[str] = []
    out = []
    for name_in, name_out, node in links:
        if node and node != "explicit" and node not in nodes:
            nodes.append(node)
        m = _PLAN_NAME.match(name_in)
        kind = m.group("kind") if m else name_in[0] if name_in[:1] in ("h", "c") else "state"
        if node and node != "explicit":
            layer: int | None = nodes.index(node)
        else:
            layer = int(m.group("layer")) if m else None
        t = by_in[name_in]
        out.append({"layer": layer, "kind": kind, "input": name_in, "output": name_out, "variable": None,
                    "node": node, "shape": list(t["shape"]), "dtype": t["dtype"], "quantization": t["quantization"],
                    "initial": 0.0})
    return out
