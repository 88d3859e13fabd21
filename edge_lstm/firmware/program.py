"""The per-time-step program the C generator emits: buffers, ops and outputs, with no ONNX left in it.

:mod:`edge_lstm.firmware.graph` builds a :class:`Program` from the captured ONNX
graph; :mod:`edge_lstm.firmware.cgen` writes it as C. Every value is a float
buffer holding one time step of a tensor (``seq`` phase, advanced by
``model_step``) or a value read after the last step (``post`` phase, such as the
head on the last step's features).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: the ops a :class:`Program` holds, each written by one emitter in :mod:`edge_lstm.firmware.cgen`
KINDS = ("lstm", "gru", "rnn", "dense", "unary", "binary", "layernorm", "softmax", "copy")


@dataclass
class Buffer:
    """A static float array in the generated C; ``init`` is the value ``model_reset()`` restores (state only)."""

    name: str
    size: int
    role: str  # "state" (kept across steps, reset by model_reset) | "work" (recomputed each step)
    init: np.ndarray | None = None


@dataclass
class Op:
    """One operation on per-step buffers.

    ``phase`` is ``seq`` (run on every time step) or ``post`` (run when an output is
    read: every step when streaming, once after the window otherwise). ``consts``
    hold weights in the layout the emitter reads (matrices input-major: ``[K][N]``).
    """

    kind: str
    phase: str
    node: str
    out: str
    ins: tuple[str, ...]
    attrs: dict[str, Any] = field(default_factory=dict)
    consts: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class Output:
    """A graph output: the buffer it is read from, its per-step size and ONNX shape."""

    name: str
    buf: str
    size: int
    phase: str  # "seq": one value per time step (window output holds every step) | "post": one per window
    shape: tuple[int, ...]


@dataclass
class Program:
    """The model as the C generator sees it: one input per time step, buffers, ops in order, outputs."""

    input_name: str
    input_shape: tuple[int, ...]
    time_axis: int
    window: int
    n_input: int
    ops: list[Op]
    buffers: dict[str, Buffer]
    outputs: list[Output]
    onnx_ops: Counter[str] = field(default_factory=Counter)

    @property
    def step_output_size(self) -> int:
        """Floats written by one ``model_step`` call: every output, in order."""
        return sum(o.size for o in self.outputs)

    @property
    def window_output_size(self) -> int:
        """Floats written by one ``model_window`` call: a seq output for every step, a post output once."""
        return sum(o.size * (self.window if o.phase == "seq" else 1) for o in self.outputs)

    @property
    def weight_count(self) -> int:
        """Float parameters in the program's constants (weights, biases, norms)."""
        return int(sum(c.size for op in self.ops for c in op.consts.values()))

    @property
    def macs_per_step(self) -> int:
        """Multiply-accumulates per time step in the matrix products (the head counted once per step)."""
        total = 0
        for op in self.ops:
            for key, mat in op.consts.items():
                if key.startswith("w") and mat.ndim == 2:
                    total += int(mat.size) * int(op.attrs.get("rows", 1))
        return total

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary: I/O, window, ops by kind, parameters."""
        return {
            "input": {"name": self.input_name, "shape": list(self.input_shape), "time_axis": self.time_axis,
                      "floats_per_step": self.n_input},
            "window": self.window,
            "outputs": [{"name": o.name, "shape": list(o.shape), "floats": o.size, "per": "step" if o.phase == "seq"
                         else "window"} for o in self.outputs],
            "ops": dict(Counter(op.kind for op in self.ops)),
            "onnx_ops": dict(sorted(self.onnx_ops.items())),
            "parameters": self.weight_count,
            "macs_per_step": self.macs_per_step,
        }


#: elementwise unary ops: C expression of the element ``v`` (numeric attributes filled in by the generator)
UNARY: dict[str, str] = {
    "Relu": "(v > 0.0f ? v : 0.0f)",
    "Tanh": "ftanh(v)",
    "Sigmoid": "sigm(v)",
    "Erf": "erff(v)",
    "Exp": "fexp(v)",
    "Log": "logf(v)",
    "Neg": "(-v)",
    "Abs": "fabsf(v)",
    "Sqrt": "sqrtf(v)",
    "Reciprocal": "(1.0f / v)",
    "Softplus": "(v > 20.0f ? v : log1pf(expf(v)))",  # PyTorch's threshold: above 20 softplus(v) == v in float
    "Softsign": "(v / (1.0f + fabsf(v)))",
    "LeakyRelu": "(v >= 0.0f ? v : {alpha} * v)",
    "Elu": "(v > 0.0f ? v : {alpha} * expm1f(v))",
    "Selu": "({gamma} * (v > 0.0f ? v : {alpha} * expm1f(v)))",
    "HardSigmoid": "fmaxf(0.0f, fminf(1.0f, {alpha} * v + {beta}))",
    "HardSwish": "(v * fmaxf(0.0f, fminf(1.0f, v / 6.0f + 0.5f)))",
    "Clip": "fminf(fmaxf(v, {min}), {max})",
    "Gelu": "(0.5f * v * (1.0f + erff(v * 0.707106781186547524f)))",
}

#: unary attributes and their ONNX defaults
UNARY_ATTRS: dict[str, dict[str, float]] = {
    "LeakyRelu": {"alpha": 0.01},
    "Elu": {"alpha": 1.0},
    "Selu": {"alpha": 1.67326319217681884765625, "gamma": 1.05070102214813232421875},
    "HardSigmoid": {"alpha": 0.2, "beta": 0.5},
}

#: elementwise binary ops: C expression of ``{a}`` and ``{b}``
BINARY: dict[str, str] = {
    "Add": "({a} + {b})", "Sub": "({a} - {b})", "Mul": "({a} * {b})", "Div": "({a} / {b})",
    "Max": "fmaxf({a}, {b})", "Min": "fminf({a}, {b})", "Pow": "powf({a}, {b})",
}
