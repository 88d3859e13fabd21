"""What is inside an ExecuTorch ``.pte`` or an ONNX Runtime ``.ort`` file, from its bytes alone (``edge-lstm info``).

Both are flatbuffers; the few tables read here are decoded by their field numbers
in the formats' own schemas (ExecuTorch's ``program.fbs``, ONNX Runtime's
``ort.fbs``) with the reader of :mod:`edge_lstm.tflite_read`. Nothing is loaded
into a runtime and nothing runs: a program's ``edge_lstm_io`` method (the I/O
names edge-lstm stores, :mod:`edge_lstm.export_executorch`) is a constant, so its
bytes are read from the file rather than executed. ``tests/test_inspect_mobile.py``
checks what is read here against ExecuTorch's and ONNX Runtime's own loaders.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_lstm.errors import InputFileError
from edge_lstm.tflite_read import _Table as Table

#: ExecuTorch ScalarType codes (``scalar_type.fbs``) -> numpy dtype names
_ET_DTYPES = {0: "uint8", 1: "int8", 2: "int16", 3: "int32", 4: "int64", 5: "float16", 6: "float32",
              7: "float64", 11: "bool", 15: "bfloat16", 27: "uint16", 28: "uint32", 29: "uint64"}
#: ExecuTorch's KernelTypes union members (the EValue's value), after flatbuffers' implicit NONE
_ET_KINDS = ("none", "null", "int", "bool", "double", "tensor", "string", "int list", "double list", "bool list",
             "tensor list", "optional tensor list")
#: ONNX TensorProto data types -> numpy dtype names
_ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 9: "bool",
                10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 16: "bfloat16"}
_ET_TENSOR = _ET_KINDS.index("tensor")
_ET_IO_METHOD = "edge_lstm_io"  # edge_lstm.export_executorch.IO_METHOD (that module needs torch)


def _strings(t: Table, n: int) -> list[str]:
    at = t._target(n)
    if at is None:
        return []
    out = []
    for k in range(struct.unpack_from("<I", t.buf, at)[0]):
        slot = at + 4 + 4 * k
        s = slot + struct.unpack_from("<I", t.buf, slot)[0]
        length = struct.unpack_from("<I", t.buf, s)[0]
        out.append(t.buf[s + 4: s + 4 + length].decode("utf-8", errors="replace"))
    return out


def _common(p: Path, data: bytes, fmt: str) -> dict[str, Any]:
    return {"name": p.name, "format": fmt, "sha256": hashlib.sha256(data).hexdigest(),
            "size": {"file_bytes": len(data)}}


def describe_pte(p: Path) -> dict[str, Any]:
    """A JSON-ready description of an ExecuTorch program: version, methods, operators, delegates, I/O."""
    return _parsed(p, _pte, "an ExecuTorch program")


def _pte(p: Path, data: bytes) -> dict[str, Any]:
    root = Table(data, struct.unpack_from("<I", data, 0)[0])
    info = _common(p, data, "executorch")
    base = 0
    if data[8:12] == b"eh00":  # the extended header: program and segment sizes
        length, program, base = struct.unpack_from("<IQQ", data, 12)
        info["size"]["program_bytes"] = program
        info["size"]["segment_bytes"] = struct.unpack_from("<Q", data, 32)[0] if length >= 32 else len(data) - base
    info["schema_version"] = int(root.scalar(0, "I"))
    plans = {plan.string(0): plan for plan in root.tables(1)}
    info["methods"] = sorted(plans)
    forward = plans.get("forward") or next(iter(plans.values()), None)
    if forward is None:
        raise InputFileError(f"'{p}' holds no method.")
    names = _io_names(data, root, plans.get(_ET_IO_METHOD), base)
    values = forward.tables(2)
    info["inputs"] = [_et_value(values, int(i), names.get("inputs", []), k, "input")
                      for k, i in enumerate(forward.scalars(3, "i"))]
    info["outputs"] = [_et_value(values, int(i), names.get("outputs", []), k, "output")
                       for k, i in enumerate(forward.scalars(4, "i"))]
    ops = Counter(f"{o.string(0)}.{o.string(1)}" if o.string(1) else o.string(0) for o in forward.tables(6))
    info["ops"] = dict(ops.most_common())
    info["delegates"] = dict(Counter(d.string(0) for d in forward.tables(7)).most_common())
    return info


def _et_value(values: list[Table], i: int, names: list[str], k: int, kind: str) -> dict[str, Any]:
    name = names[k] if k < len(names) else f"{kind}_{k}"
    v = values[i]
    vtype = int(v.scalar(0, "B"))
    if vtype != _ET_TENSOR:
        return {"name": name, "kind": _ET_KINDS[vtype] if vtype < len(_ET_KINDS) else f"type {vtype}",
                "shape": [], "dtype": "none"}
    t = v.table(1)
    if t is None:
        raise ValueError(f"value {i} has no tensor")
    code = int(t.scalar(0, "b"))
    return {"name": name, "shape": [int(d) for d in t.scalars(2, "i")], "dtype": _ET_DTYPES.get(code, f"type {code}")}


def _io_names(data: bytes, root: Table, plan: Table | None, base: int) -> dict[str, list[str]]:
    """The names edge-lstm stored in the ``edge_lstm_io`` constant method; ``{}`` when there are none."""
    outputs = plan.scalars(4, "i") if plan is not None else []
    if plan is None or len(outputs) != 1:
        return {}
    v = plan.tables(2)[int(outputs[0])]
    t = v.table(1) if int(v.scalar(0, "B")) == _ET_TENSOR else None
    if t is None or int(t.scalar(0, "b")) != 0:  # a uint8 tensor
        return {}
    n = 1
    for d in t.scalars(2, "i"):
        n *= int(d)
    idx = int(t.scalar(5, "I"))
    raw = _constant(data, root, idx, n, base)
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _constant(data: bytes, root: Table, idx: int, n: int, base: int) -> bytes:
    buffers = root.tables(2)
    if idx < len(buffers) and buffers[idx].vector_len(0):
        at = buffers[idx]._target(0)
        return data[at + 4: at + 4 + n] if at is not None else b""
    seg = root.table(5)  # constant_segment: offsets into one of the segments after the program
    if seg is None:
        return b""
    offsets = seg.scalars(1, "Q")
    segments = root.tables(4)
    k = int(seg.scalar(0, "I"))
    if idx >= len(offsets) or k >= len(segments):
        return b""
    start = base + int(segments[k].scalar(0, "Q")) + int(offsets[idx])
    return data[start: start + n]


def describe_ort(p: Path) -> dict[str, Any]:
    """A JSON-ready description of an ONNX Runtime format model: versions, opsets, ops, parameters, I/O."""
    return _parsed(p, _ort, "an ONNX Runtime format model")


def _parsed(p: Path, parse: Callable[[Path, bytes], dict[str, Any]], what: str) -> dict[str, Any]:
    """``parse`` of the file's bytes; a file the reader cannot follow is :class:`InputFileError` (exit 2)."""
    data = p.read_bytes()
    try:
        return parse(p, data)
    except (struct.error, IndexError, UnicodeError, ValueError) as e:
        raise InputFileError(f"'{p}' is truncated or corrupted as {what} ({e}).") from e


def _ort(p: Path, data: bytes) -> dict[str, Any]:
    root = Table(data, struct.unpack_from("<I", data, 0)[0])
    model = root.table(1)
    graph = model.table(7) if model is not None else None
    if model is None or graph is None:
        raise InputFileError(f"'{p}' holds no model graph.")
    info = _common(p, data, "ort")
    info["ort_version"] = root.string(0)
    info["ir_version"] = int(model.scalar(0, "q"))
    info["producer"] = f"{model.string(2)} {model.string(3)}".strip()
    info["opset"] = {o.string(0) or "ai.onnx": int(o.scalar(1, "q")) for o in model.tables(1)}
    inits = graph.tables(0)
    init_names = {t.string(0) for t in inits}
    params = weight_bytes = 0
    for t in inits:
        n = 1
        for d in t.scalars(2, "q"):
            n *= int(d)
        if t.vector_len(2) and int(t.scalar(3, "i")) in (1, 2, 3, 10, 11, 16):
            params += n
        weight_bytes += t.vector_len(4)
    info["parameters"] = params
    info["size"]["weights_bytes"] = weight_bytes
    args = {a.string(0): a for a in graph.tables(1)}
    info["inputs"] = [_ort_value(args, n) for n in _strings(graph, 5) if n not in init_names]
    info["outputs"] = [_ort_value(args, n) for n in _strings(graph, 6)]
    ops = Counter(n.string(5) if n.string(2) in ("", "ai.onnx") else f"{n.string(2)}.{n.string(5)}"
                  for n in graph.tables(2))
    info["ops"] = dict(ops.most_common())
    return info


def _ort_value(args: dict[str, Table], name: str) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "shape": [], "dtype": "unknown"}
    type_info = args[name].table(2) if name in args else None
    tensor = type_info.table(2) if type_info is not None and int(type_info.scalar(1, "B")) == 1 else None
    if tensor is None:
        return out
    code = int(tensor.scalar(0, "i"))
    out["dtype"] = _ONNX_DTYPES.get(code, f"type {code}")
    shape = tensor.table(1)
    dims: list[int | str] = []
    for d in shape.tables(0) if shape is not None else []:
        v = d.table(0)
        if v is None:
            dims.append("?")
        elif int(v.scalar(0, "b")) == 1:
            dims.append(int(v.scalar(1, "q")))
        else:
            dims.append(v.string(2) or "?")
    out["shape"] = dims
    return out


def render(info: dict[str, Any]) -> str:
    """Human-readable lines for ``edge-lstm info`` on a ``.pte`` or ``.ort`` file."""
    size = info["size"]
    parts = [f"{size['file_bytes']:,} B"]
    parts += [f"{size[k]:,} B {label}" for k, label in (("program_bytes", "program"),
                                                         ("segment_bytes", "segments"),
                                                         ("weights_bytes", "weights")) if k in size]
    if info["format"] == "executorch":
        head = f"{info['name']} (ExecuTorch program, schema version {info['schema_version']})"
        extra = [f"methods: {', '.join(info['methods'])}",
                 "delegates: " + (", ".join(f"{d} x{n}" for d, n in info["delegates"].items()) or "none")]
    else:
        opset = ", ".join(f"{d} {v}" for d, v in info["opset"].items())
        head = f"{info['name']} (ONNX Runtime format, version {info['ort_version'] or 'unknown'})"
        extra = [f"IR version {info['ir_version']}, opsets: {opset}", f"parameters: {info['parameters']:,}"]
    lines = [head, f"size: {parts[0]}" + (f" ({', '.join(parts[1:])})" if len(parts) > 1 else ""),
             f"sha256: {info['sha256']}", *extra]
    for key in ("inputs", "outputs"):
        lines.append(f"{key + ':':<8} " + ", ".join(
            f"{t['name']}: {t['dtype']}[{'x'.join(str(d) for d in t['shape'])}]" for t in info[key]))
    lines.append("ops: " + (", ".join(f"{op} x{n}" for op, n in info["ops"].items()) or "none"))
    return "\n".join(lines)
