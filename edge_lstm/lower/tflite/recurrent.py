"""Recurrent layers as the lowering sees them: one parsed form for ONNX ``LSTM``, ``GRU`` and ``RNN`` nodes and
for the ``Scan`` nodes a projected LSTM (``proj_size``) is captured as (see :mod:`edge_lstm.projection`).

Weights keep ONNX's layout and gate order (LSTM i, o, f, c; GRU z, r, n);
a layer's state is ``[batch, size]`` per direction. The batch is what the graph
has at batch 1: usually 1, more where a model folds time into the batch (a
dilated RNN). ``[T, B, F]`` is time-major in memory, as ONNX's recurrent ops
take it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import onnx

from edge_lstm.errors import ShapeError
from edge_lstm.lower.tflite.context import Context
from edge_lstm.lower.tflite.graph import attr, require
from edge_lstm.lower.tflite.writer import TensorRef
from edge_lstm.projection import PROJECTION_TAG

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
#: PyTorch's LSTM gate order i, f, g, o as ONNX's i, o, f, c
_TORCH_TO_ONNX = [0, 3, 1, 2]


@dataclass(frozen=True)
class Recurrent:
    """One parsed recurrent layer (all its directions)."""

    node: onnx.NodeProto
    kind: str  #: "lstm" | "gru" | "rnn"
    hidden: int
    directions: int
    steps: int
    batch: int
    w: np.ndarray  #: [D, G*H, I]
    r: np.ndarray  #: [D, G*H, O] (O: the output size, the projection's when there is one)
    b: np.ndarray  #: [D, 2*G*H] input-side then recurrent-side bias
    proj: np.ndarray | None = None  #: [D, P, H] LSTM projection (proj_size)
    activation: str = "Tanh"  #: RNN: "Tanh" or "Relu"
    lbr: bool = False  #: GRU: linear_before_reset
    reverse_only: bool = False  #: direction="reverse"
    x: str = ""
    h0: str = ""
    c0: str = ""
    y: str = ""
    y_h: str = ""
    y_c: str = ""

    @property
    def out_size(self) -> int:
        """Size of the hidden state and of each output step (the projection size when projected)."""
        return int(self.proj.shape[1]) if self.proj is not None else self.hidden

    @property
    def gates(self) -> int:
        """Gate blocks of the weight matrices."""
        return {"lstm": 4, "gru": 3, "rnn": 1}[self.kind]

    @property
    def name(self) -> str:
        """The node's name, for tensor names and notes."""
        return self.node.name or self.node.output[0]

    def is_reversed(self, d: int) -> bool:
        """Whether direction ``d`` runs from the last step to the first."""
        return d == 1 or self.reverse_only


def parse(ctx: Context, node: onnx.NodeProto) -> Recurrent:
    """The :class:`Recurrent` of an ONNX LSTM/GRU/RNN node or a projected-LSTM Scan."""
    if node.op_type == "Scan":
        return _parse_scan(ctx, node)
    gates = GATES[node.op_type]
    x_shape = ctx.shape(node.input[0])
    layout = int(attr(node, "layout", 0))
    steps, batch = (x_shape[1], x_shape[0]) if layout else (x_shape[0], x_shape[1])
    require(not layout or batch == 1, node, "a batch-major (layout=1) input with a batch above 1")
    w, r = ctx.const(node.input[1]), ctx.const(node.input[2])
    require(w is not None and r is not None, node, "run-time weights")
    assert w is not None and r is not None
    hidden = int(attr(node, "hidden_size", r.shape[-1]))
    d = w.shape[0]
    has_b = len(node.input) > 3 and node.input[3]
    b = ctx.const(node.input[3]) if has_b else np.zeros((d, 2 * gates * hidden), np.float32)
    require(b is not None, node, "a run-time bias")
    assert b is not None
    require(attr(node, "clip") is None, node, "cell clipping")
    require(not attr(node, "input_forget", 0), node, "coupled input-forget gates")
    acts = [a.decode() if isinstance(a, bytes) else a for a in attr(node, "activations", [])]
    activation = "Tanh"
    if gates == 1:
        activation = acts[0] if acts else "Tanh"
        require(activation in ("Tanh", "Relu") and all(a == activation for a in acts), node, f"activations {acts}")
    else:
        default = ["Sigmoid", "Tanh", "Tanh"] * d if gates == 4 else ["Sigmoid", "Tanh"] * d
        require(not acts or acts == default, node, f"activations {acts}")
    if len(node.input) > 4 and node.input[4]:
        lens = ctx.const(node.input[4])
        require(lens is not None and bool(np.all(lens == steps)), node, "variable sequence lengths")
    ins = [*node.input, "", "", "", ""]
    outs = [*node.output, "", "", ""]
    direction = attr(node, "direction", b"forward")
    return Recurrent(
        node, node.op_type.lower(), hidden, d, steps, batch, w.astype(np.float32), r.astype(np.float32),
        b.astype(np.float32), None, activation, bool(attr(node, "linear_before_reset", 0)),
        direction in (b"reverse", "reverse"), ins[0], ins[5], ins[6] if gates == 4 else "", outs[0], outs[1],
        outs[2] if gates == 4 else "",
    )


def is_projected_scan(node: onnx.NodeProto) -> bool:
    """True for the Scan a projected LSTM layer direction is captured as."""
    return node.op_type == "Scan" and node.doc_string.startswith(PROJECTION_TAG)


def _parse_scan(ctx: Context, node: onnx.NodeProto) -> Recurrent:
    meta = json.loads(node.doc_string[len(PROJECTION_TAG):])
    arrays = {k: ctx.const(meta[k]) for k in ("w", "r", "b", "p")}
    require(all(a is not None for a in arrays.values()), node, "run-time projection weights")
    w, r, b, p = (np.asarray(arrays[k], np.float32) for k in ("w", "r", "b", "p"))
    hidden = int(meta["hidden"])
    x_shape = ctx.shape(node.input[2])

    def onnx_order(m: np.ndarray) -> np.ndarray:
        return np.concatenate([m[g * hidden : (g + 1) * hidden] for g in _TORCH_TO_ONNX])

    bias = np.concatenate([onnx_order(b), np.zeros(4 * hidden, np.float32)])
    return Recurrent(
        node, "lstm", hidden, 1, int(x_shape[0]), int(x_shape[1]), onnx_order(w)[None], onnx_order(r)[None],
        bias[None], p[None], reverse_only=bool(meta.get("reverse", 0)), x=node.input[2], h0=node.input[0],
        c0=node.input[1], y=node.output[2], y_h=node.output[0], y_c=node.output[1],
    )


def initial(ctx: Context, rec: Recurrent, which: str) -> np.ndarray | str | None:
    """The initial ``which`` ("h" or "c") state: None for zeros, a constant, or the value name at run time."""
    name = rec.h0 if which == "h" else rec.c0
    if not name:
        return None
    size = rec.out_size if which == "h" else rec.hidden
    want = (rec.directions, rec.batch, size)
    got = tuple(ctx.shape(name))
    if int(np.prod(got)) != int(np.prod(want)) or not got or got[-1] != size:
        raise ShapeError(
            f"The initial {'hidden' if which == 'h' else 'cell'} state of '{rec.name}' has shape {list(got)}, but "
            f"the layer needs {list(want)} (directions x batch x size).",
            "Pass h0/c0 shaped (layers*directions, batch, hidden), as nn.LSTM/nn.GRU take them.",
        )
    arr = ctx.const(name)
    if arr is None:
        return name
    return None if not np.any(arr) else arr.astype(np.float32).reshape(want)


def state_tensor(ctx: Context, rec: Recurrent, init: np.ndarray | str | None, d: int, hint: str) -> TensorRef | None:
    """Direction ``d``'s initial state as a ``[B, size]`` tensor, or None for zeros."""
    if init is None:
        return None
    if isinstance(init, np.ndarray):
        return ctx.const_tensor(hint, np.ascontiguousarray(init[d]))
    full = ctx.tensor(init)
    size = full.shape[-1]
    if rec.directions == 1:
        return ctx.reshape(full, (rec.batch, size), hint)
    flat = ctx.reshape(full, (rec.directions, rec.batch * size), hint + "_flat")
    part = ctx.temp((1, rec.batch * size))
    ctx.slice_to(flat, 0, d, d + 1, part)
    return ctx.reshape(part, (rec.batch, size), hint)


def x_time_major(ctx: Context, rec: Recurrent) -> TensorRef:
    """The layer input as ``[T, B, F]``."""
    x = ctx.tensor(rec.x)
    return ctx.reshape(x, (rec.steps, rec.batch, x.shape[-1]), rec.x + "_tm")


def x_rows(ctx: Context, rec: Recurrent) -> TensorRef:
    """The layer input as ``[T*B, F]`` (time-major rows)."""
    x = ctx.tensor(rec.x)
    return ctx.reshape(x, (rec.steps * rec.batch, x.shape[-1]), rec.x + "_2d")


def bind_outputs(ctx: Context, rec: Recurrent, seqs: list[TensorRef], finals_h: list[TensorRef],
                 finals_c: list[TensorRef]) -> None:
    """Bind the sequence output from per-direction ``[T, B, O]``-sized tensors and the final states from
    per-direction ``[B, size]``-sized tensors, in the node's own output layout."""
    b, o = rec.batch, rec.out_size
    if seqs and rec.y and ctx.graph.used(rec.y):
        flat = [ctx.reshape(s, (rec.steps, 1, b * o), rec.y + "_dir") for s in seqs]
        y = flat[0] if len(flat) == 1 else ctx.concat(flat, 1)
        ctx.bind(rec.y, ctx.reshape(y, ctx.graph.shapes[rec.y], rec.y))
    for name, parts, size in ((rec.y_h, finals_h, o), (rec.y_c, finals_c, rec.hidden)):
        if parts and name and ctx.graph.used(name):
            flat = [ctx.reshape(p, (1, b * size), name + "_dir") for p in parts]
            v = flat[0] if len(flat) == 1 else ctx.concat(flat, 0)
            ctx.bind(name, ctx.reshape(v, ctx.graph.shapes[name], name))


def gate_blocks(m: np.ndarray, h: int, order: list[int]) -> list[np.ndarray]:
    """The gate blocks of ``m`` (rows of ``h``) in ``order``."""
    return [np.ascontiguousarray(m[g * h : (g + 1) * h]) for g in order]


def per_step(ctx: Context, xp: TensorRef, steps: int, batch: int, hint: str) -> list[TensorRef]:
    """Split a ``[T*B, N]`` projection into T tensors of ``[B, N]``."""
    if steps == 1:
        return [ctx.reshape(xp, (batch, xp.shape[-1]), hint)]
    return ctx.split(xp, 0, [batch] * steps, hint)
