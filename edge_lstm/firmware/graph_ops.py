"""The op table of the C generator: one handler per ONNX op, each turning a node into per-step ops.

A handler reads its inputs as folded constants (``b.const``) or dynamic values
(``b.val``), checks that the node can run one time step at a time, and either
adds ops and binds its outputs or records why not (``b.refuse``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_lstm.firmware.graph_base import TABLE, Builder, Val, attr, map_axis
from edge_lstm.firmware.program import BINARY, UNARY, UNARY_ATTRS


def _register(*ops: str) -> Any:
    def deco(fn: Any) -> Any:
        for op in ops:
            TABLE[op] = fn
        return fn

    return deco


def _out_taxis(v: Val, out_shape: tuple[int, ...]) -> int | None:
    """The time axis of an elementwise result (broadcasting may prepend axes)."""
    return None if v.taxis is None else v.taxis + len(out_shape) - len(v.shape)


def _step_size(shape: tuple[int, ...], taxis: int | None) -> int:
    return int(np.prod([d for a, d in enumerate(shape) if a != taxis], dtype=np.int64))


# ---------------------------------------------------------------- layout: aliases, no data moved


@_register("Identity", "Dropout", "Cast", "Transpose", "Squeeze", "Unsqueeze", "Reshape", "Flatten")
def _layout(b: Builder, node: Any) -> None:
    v = b.val(node.input[0])
    out_shape = b.shapes[node.output[0]]
    if v is None:
        return b.refuse(node, "its data input is a constant the generator did not fold")
    if node.op_type == "Cast" and attr(node, "to") != 1:
        return b.refuse(node, "casts to a type other than float32")
    taxis: int | None = None
    if node.op_type == "Transpose":
        perm = list(attr(node, "perm", list(range(len(v.shape)))[::-1]))
        before = [a for a in range(len(v.shape)) if a != v.taxis and v.shape[a] > 1]
        after = [a for a in perm if a != v.taxis and v.shape[a] > 1]
        if before != after:
            return b.refuse(node, "the transpose reorders the elements within a time step")
        taxis = perm.index(v.taxis) if v.taxis is not None else None
    elif v.taxis is not None:
        taxis = map_axis(v.shape, v.taxis, out_shape)
        if taxis is None:
            return b.refuse(node, f"the reshape {v.shape} -> {out_shape} merges the time axis with other axes")
    b.values[node.output[0]] = Val(v.kind, out_shape, taxis, v.buf)


@_register("Gather")
def _gather(b: Builder, node: Any) -> None:
    v, idx = b.val(node.input[0]), b.const(node.input[1])
    if v is None and b.const(node.input[0]) is not None:
        return b.refuse(node, "an embedding lookup (a table indexed by the input) is not supported: the C API takes "
                              "float readings")
    if v is None or idx is None or v.taxis is None or attr(node, "axis", 0) % len(v.shape) != v.taxis:
        return b.refuse(node, "only selecting the last time step (x[:, -1]) is supported")
    steps = v.shape[v.taxis]
    if idx.size != 1 or int(idx.reshape(-1)[0]) % steps != steps - 1:
        return b.refuse(node, f"selects time step {idx.reshape(-1).tolist()}; only the last step of a stream is known")
    b.values[node.output[0]] = Val("post", b.shapes[node.output[0]], None, v.buf)


@_register("Slice")
def _slice(b: Builder, node: Any) -> None:
    v = b.val(node.input[0])
    cs = [b.const(node.input[i]) if len(node.input) > i and node.input[i] else None for i in range(1, 5)]
    out_shape = b.shapes[node.output[0]]
    if v is None or any(c is None for c in cs[:2]) or (cs[3] is not None and np.any(cs[3] != 1)):
        return b.refuse(node, "needs constant starts and ends and a step of 1")
    if out_shape == v.shape:
        b.values[node.output[0]] = v
        return None
    starts = cs[0]
    assert starts is not None
    axes = [int(a) % len(v.shape) for a in (cs[2] if cs[2] is not None else range(len(starts)))]
    changed = [a for a in range(len(v.shape)) if out_shape[a] != v.shape[a]]
    if v.taxis is None or changed != [v.taxis] or out_shape[v.taxis] != 1 or v.taxis not in axes:
        return b.refuse(node, "only slicing out the last time step (x[:, -1:]) is supported")
    start = int(starts[axes.index(v.taxis)])
    steps = v.shape[v.taxis]
    if (start + steps if start < 0 else min(start, steps)) != steps - 1:
        return b.refuse(node, f"slices from time step {start}; only the last step of a stream is known")
    b.values[node.output[0]] = Val("post", out_shape, None, v.buf)
    return None


# ---------------------------------------------------------------- elementwise


@_register(*UNARY)
def _unary(b: Builder, node: Any) -> None:
    v = b.val(node.input[0])
    if v is None:
        return b.refuse(node, "its input is a constant the generator did not fold")
    params = {k: float(attr(node, k, d)) for k, d in UNARY_ATTRS.get(node.op_type, {}).items()}
    fn = node.op_type
    if fn == "Gelu" and attr(node, "approximate", "none") != "none":
        return b.refuse(node, "the tanh approximation of GELU is not supported")
    if fn == "Clip":
        lo = b.const(node.input[1]) if len(node.input) > 1 and node.input[1] else None
        hi = b.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        params = {"min": float(lo) if lo is not None else float(attr(node, "min", -3.4028234663852886e38)),
                  "max": float(hi) if hi is not None else float(attr(node, "max", 3.4028234663852886e38))}
    out = b.new_buffer(v.size)
    b.emit("unary", node, out, (v.buf,), v.kind, {"fn": fn, **params, "n": v.size})
    b.values[node.output[0]] = Val(v.kind, b.shapes[node.output[0]], v.taxis, out)
    return None


@_register(*BINARY)
def _binary(b: Builder, node: Any) -> None:
    out_shape = b.shapes[node.output[0]]
    va, vb = b.val(node.input[0]), b.val(node.input[1])
    if va is not None and vb is not None:
        return _binary_vv(b, node, va, vb, out_shape)
    v, c = (va, b.const(node.input[1])) if va is not None else (vb, b.const(node.input[0]))
    if v is None or c is None:
        return b.refuse(node, "an operand is neither a constant nor a value of the input's path")
    taxis = _out_taxis(v, out_shape)
    size = _step_size(out_shape, taxis)
    if size != v.size:
        return b.refuse(node, f"the constant of shape {c.shape} broadcasts {v.shape} up to {out_shape}")
    full = c.reshape((1,) * (len(out_shape) - c.ndim) + c.shape).astype(np.float32)
    if taxis is not None and full.shape[taxis] != 1:
        return b.refuse(node, "the constant varies over time steps")
    per_step = np.broadcast_to(full, out_shape)
    flat = np.ascontiguousarray(np.take(per_step, 0, axis=taxis) if taxis is not None else per_step).reshape(-1)
    attrs: dict[str, Any] = {"fn": node.op_type, "n": size, "const_first": va is None}
    consts = {}
    if np.all(flat == flat[0]):
        attrs["scalar"] = float(flat[0])
    else:
        consts["c"] = flat
    out = b.new_buffer(size)
    b.emit("binary", node, out, (v.buf,), v.kind, attrs, consts)
    b.values[node.output[0]] = Val(v.kind, out_shape, taxis, out)
    return None


def _binary_vv(b: Builder, node: Any, va: Val, vb: Val, out_shape: tuple[int, ...]) -> None:
    if va.kind != vb.kind:
        return b.refuse(node, "combines a per-step value with one that exists only after the last step")
    lead = va if len(va.shape) >= len(vb.shape) else vb
    taxis = _out_taxis(lead, out_shape)
    size = _step_size(out_shape, taxis)
    if va.size not in (1, size) or vb.size not in (1, size) or (va.taxis is None) != (vb.taxis is None):
        return b.refuse(node, f"broadcasts {va.shape} with {vb.shape} in a way that is not elementwise per step")
    out = b.new_buffer(size)
    b.emit("binary", node, out, (va.buf, vb.buf), va.kind,
           {"fn": node.op_type, "n": size, "a_scalar": va.size == 1 < size, "b_scalar": vb.size == 1 < size})
    b.values[node.output[0]] = Val(va.kind, out_shape, taxis, out)
    return None


# ---------------------------------------------------------------- dense, norms, softmax, concat


@_register("MatMul", "Gemm")
def _dense(b: Builder, node: Any) -> None:
    v, w = b.val(node.input[0]), b.const(node.input[1])
    if v is None or w is None or w.ndim != 2:
        return b.refuse(node, "needs a value of the input's path times a 2-D constant weight")
    if node.op_type == "Gemm":
        if attr(node, "transA", 0):
            return b.refuse(node, "transA=1 is not supported")
        w = (w.T if attr(node, "transB", 0) else w) * float(attr(node, "alpha", 1.0))
    k, n = w.shape
    out_shape = b.shapes[node.output[0]]
    if v.shape[-1] != k or v.taxis == len(v.shape) - 1:
        return b.refuse(node, f"multiplies over an axis of {v.shape} that is not the feature axis")
    rows = v.size // k
    consts = {"w": np.ascontiguousarray(w, dtype=np.float32)}
    c = b.const(node.input[2]) if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2] else None
    if c is not None:
        bias = np.broadcast_to(c.astype(np.float32) * float(attr(node, "beta", 1.0)), out_shape)
        if v.taxis is not None:
            bias = np.take(bias, 0, axis=v.taxis)
        consts["b"] = np.ascontiguousarray(bias, dtype=np.float32).reshape(-1)
    out = b.new_buffer(rows * n)
    b.emit("dense", node, out, (v.buf,), v.kind, {"rows": rows, "k": k, "n": n}, consts)
    b.values[node.output[0]] = Val(v.kind, out_shape, v.taxis, out)
    return None


@_register("LayerNormalization")
def _layernorm(b: Builder, node: Any) -> None:
    v, gamma = b.val(node.input[0]), b.const(node.input[1])
    beta = b.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if v is None or gamma is None or (len(node.input) > 2 and node.input[2] and beta is None):
        return b.refuse(node, "needs constant scale and bias")
    axis = int(attr(node, "axis", -1)) % len(v.shape)
    if v.taxis is not None and v.taxis >= axis:
        return b.refuse(node, "normalises over the time axis")
    d = int(np.prod(v.shape[axis:], dtype=np.int64))
    consts = {"gamma": np.broadcast_to(gamma, v.shape[axis:]).astype(np.float32).reshape(-1),
              "beta": (np.zeros(d, np.float32) if beta is None
                       else np.broadcast_to(beta, v.shape[axis:]).astype(np.float32).reshape(-1))}
    out = b.new_buffer(v.size)
    b.emit("layernorm", node, out, (v.buf,), v.kind,
           {"rows": v.size // d, "d": d, "eps": float(attr(node, "epsilon", 1e-5))}, consts)
    b.values[node.output[0]] = Val(v.kind, v.shape, v.taxis, out)
    return None


@_register("Softmax", "LogSoftmax")
def _softmax(b: Builder, node: Any) -> None:
    v = b.val(node.input[0])
    if v is None:
        return b.refuse(node, "its input is a constant the generator did not fold")
    axis = int(attr(node, "axis", -1)) % len(v.shape)
    if axis == v.taxis:
        return b.refuse(node, "a softmax over the time axis needs the whole window, so it cannot stream")
    if int(np.prod(v.shape[axis + 1:], dtype=np.int64)) != 1:
        return b.refuse(node, "only a softmax over the last non-unit axis is supported")
    d = v.shape[axis]
    out = b.new_buffer(v.size)
    b.emit("softmax", node, out, (v.buf,), v.kind, {"rows": v.size // d, "d": d, "log": node.op_type != "Softmax"})
    b.values[node.output[0]] = Val(v.kind, v.shape, v.taxis, out)
    return None


@_register("Concat")
def _concat(b: Builder, node: Any) -> None:
    vals = [b.val(i) for i in node.input]
    if any(v is None for v in vals) or len({v.kind for v in vals if v}) != 1:
        return b.refuse(node, "concatenates constants, or per-step values with after-the-step ones")
    first = vals[0]
    assert first is not None
    axis = int(attr(node, "axis", 0)) % len(first.shape)
    lead = [d for a, d in enumerate(first.shape[:axis]) if a != first.taxis]
    if axis == first.taxis or any(d != 1 for d in lead):
        return b.refuse(node, "only concatenating along the feature axis is supported")
    sizes = [v.size for v in vals if v]
    out = b.new_buffer(sum(sizes))
    b.emit("copy", node, out, tuple(v.buf for v in vals if v), first.kind, {"sizes": sizes})
    b.values[node.output[0]] = Val(first.kind, b.shapes[node.output[0]], first.taxis, out)
    return None


# ---------------------------------------------------------------- recurrent layers

_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
_DEFAULT_ACTS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"], "RNN": ["Tanh"]}


@_register("LSTM", "GRU", "RNN")
def _recurrent(b: Builder, node: Any) -> None:
    why = _recurrent_problem(b, node)
    if why:
        return b.refuse(node, why)
    op, g = node.op_type, _GATES[node.op_type]
    v = b.val(node.input[0])
    w, r = b.const(node.input[1]), b.const(node.input[2])
    assert v is not None and w is not None and r is not None
    hidden = int(attr(node, "hidden_size", r.shape[-1]))
    bias = _opt(b, node, 3, np.zeros((1, 2 * g * hidden), np.float32))
    h0 = _opt(b, node, 5, np.zeros(hidden, np.float32)).reshape(hidden).astype(np.float32)
    h = b.new_buffer(hidden, "state", h0, stem="h")
    consts = {"wx": np.ascontiguousarray(w[0].T, np.float32), "wh": np.ascontiguousarray(r[0].T, np.float32)}
    bx, bh = bias[0, : g * hidden].astype(np.float32), bias[0, g * hidden:].astype(np.float32)
    attrs: dict[str, Any] = {"hidden": hidden, "input": int(w.shape[2]), "gx": b.new_buffer(g * hidden)}
    if op == "GRU":
        consts.update(bx=bx, bh=bh)
        attrs.update(gh=b.new_buffer(g * hidden), lbr=int(attr(node, "linear_before_reset", 0)))
    else:
        consts["b"] = bx + bh
    if op == "RNN":
        attrs["act"] = (attr(node, "activations") or ["Tanh"])[0]
    kind = op.lower()
    if op == "LSTM":
        c0 = _opt(b, node, 6, np.zeros(hidden, np.float32)).reshape(hidden).astype(np.float32)
        c = b.new_buffer(hidden, "state", c0, stem="c")
        attrs["c"] = c
        if len(node.output) > 2 and node.output[2]:
            b.values[node.output[2]] = Val("post", b.shapes[node.output[2]], None, c)
    b.emit(kind, node, h, (v.buf,), "seq", attrs, consts)
    if node.output[0]:
        b.values[node.output[0]] = Val("seq", b.shapes[node.output[0]], 0, h)
    if len(node.output) > 1 and node.output[1]:
        b.values[node.output[1]] = Val("post", b.shapes[node.output[1]], None, h)
    return None


def _opt(b: Builder, node: Any, i: int, default: np.ndarray) -> np.ndarray:
    """Optional input ``i``: its folded constant, or ``default`` when absent."""
    if len(node.input) <= i or not node.input[i]:
        return default
    c = b.const(node.input[i])
    return default if c is None else c


def _recurrent_problem(b: Builder, node: Any) -> str | None:
    """Why this recurrent node cannot run one step at a time, or None."""
    op = node.op_type
    v = b.val(node.input[0])
    if v is None or v.kind != "seq" or v.taxis != 0 or len(v.shape) != 3 or v.shape[1] != 1:
        return "its input is not a per-step sequence [time, batch 1, features]"
    if attr(node, "direction", "forward") != "forward":
        return (f"a {attr(node, 'direction')} layer reads the window backwards, so it cannot run one step at a "
                "time; the C generator supports forward layers")
    if b.const(node.input[1]) is None or b.const(node.input[2]) is None:
        return "its weights are not constants"
    acts = attr(node, "activations")
    if acts and list(acts) != _DEFAULT_ACTS[op] and not (op == "RNN" and list(acts) == ["Relu"]):
        return f"activations {acts} are not supported"
    if attr(node, "clip") is not None or attr(node, "input_forget", 0) or attr(node, "layout", 0):
        return "clip, input_forget and layout=1 are not supported"
    for i in range(4, len(node.input)):
        name = node.input[i]
        if name and b.const(name) is None:
            return f"input {i} ('{name}') is not a constant: state passed in from outside is not supported"
    seq_lens = _opt(b, node, 4, np.array([v.shape[0]]))
    if np.any(seq_lens != v.shape[0]):
        return "sequence_lens shorter than the window are not supported"
    if op == "LSTM" and np.any(_opt(b, node, 7, np.zeros(1, np.float32)) != 0):
        return "peephole connections are not supported"
    return None
