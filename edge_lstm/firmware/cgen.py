"""Write a :class:`~edge_lstm.firmware.program.Program` as dependency-free C99: ``model.<precision>.{h,c}``.

Two precisions: ``fp32`` (float32 weights) and ``int8-weights`` (int8 weights with
one float scale per output channel, float32 activations: about a quarter of
the weight bytes). The code has static buffers only (no malloc), needs only
``<math.h>`` and ``<string.h>``, and offers a streaming API
(``model_reset``/``model_step``) and a window API (``model_window``).

Matrices are stored input-major (``w[k][n]``), so the inner loop of the
matrix-vector product runs over contiguous outputs: compilers vectorise it
without reordering any sum (no ``-ffast-math`` needed), and each output's sum
still runs over the inputs in order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from edge_lstm.errors import UsageError
from edge_lstm.firmware import cgen_text
from edge_lstm.firmware.clit import c_array, cfloat, comment
from edge_lstm.firmware.program import BINARY, UNARY, Op, Program

PRECISIONS = ("fp32", "int8-weights")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,30}$")


@dataclass(frozen=True)
class CSource:
    """The generated files for one precision: ``<prefix>.<precision>.h`` and ``.c``."""

    precision: str
    prefix: str
    header: str
    source: str
    weight_bytes: int  # bytes of constant data (weights, scales, biases)

    @property
    def header_name(self) -> str:
        """``model.fp32.h``: both precisions sit side by side in one output directory."""
        return f"{self.prefix}.{self.precision}.h"

    @property
    def source_name(self) -> str:
        """``model.fp32.c``."""
        return f"{self.prefix}.{self.precision}.c"

    @property
    def files(self) -> dict[str, str]:
        """File name -> text."""
        return {self.header_name: self.header, self.source_name: self.source}


def check_prefix(prefix: str) -> str:
    """A C identifier for the public symbols (``<prefix>_step``); :class:`UsageError` otherwise."""
    if not _IDENT.match(prefix):
        raise UsageError(f"--prefix '{prefix}' is not a C identifier.",
                         "Use letters, digits and underscores, starting with a letter (at most 31 characters).")
    return prefix


def quantize_per_channel(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output channel (column of an input-major ``[k][n]`` matrix): ``w ≈ q * scale``."""
    peak = np.max(np.abs(w), axis=0)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
    return q, scale


class _Emitter:
    def __init__(self, prog: Program, precision: str, prefix: str) -> None:
        self.p, self.precision, self.prefix = prog, precision, prefix
        self.q = precision == "int8-weights"
        self.consts: list[str] = []
        self.const_bytes = 0
        self.max_n = 1

    def const(self, op_index: int, key: str, arr: np.ndarray) -> tuple[str, str]:
        """Declare a constant; return (data name, scale name or "0")."""
        name = f"k{op_index}_{key}"
        if self.q and key.startswith("w") and arr.ndim == 2:
            q, s = quantize_per_channel(arr)
            self.consts += [c_array("int8_t", name, q, 24), c_array("float", f"{name}_s", s, 8)]
            self.const_bytes += q.size + 4 * s.size
            self.max_n = max(self.max_n, arr.shape[1])
            return name, f"{name}_s"
        self.consts.append(c_array("float", name, arr.astype(np.float32), 8))
        self.const_bytes += 4 * arr.size
        return name, "0"

    def buf(self, name: str) -> str:
        return "x" if name == "x" else name

    def op(self, i: int, op: Op) -> list[str]:
        a = op.attrs
        c = {k: self.const(i, k, v) for k, v in op.consts.items()}
        src = self.buf(op.ins[0]) if op.ins else ""
        head = f"  /* {op.kind}: ONNX node {comment(op.node)} */"
        if op.kind == "lstm":
            return [head, f"  lstm({src}, {op.out}, {a['c']}, {a['input']}, {a['hidden']}, {c['wx'][0]}, "
                          f"{c['wx'][1]}, {c['wh'][0]}, {c['wh'][1]}, {c['b'][0]}, {a['gx']});"]
        if op.kind == "gru":
            return [head, f"  gru({src}, {op.out}, {a['input']}, {a['hidden']}, {c['wx'][0]}, {c['wx'][1]}, "
                          f"{c['wh'][0]}, {c['wh'][1]}, {c['bx'][0]}, {c['bh'][0]}, {a['gx']}, {a['gh']}, "
                          f"{a['lbr']});"]
        if op.kind == "rnn":
            return [head, f"  rnn({src}, {op.out}, {a['input']}, {a['hidden']}, {c['wx'][0]}, {c['wx'][1]}, "
                          f"{c['wh'][0]}, {c['wh'][1]}, {c['b'][0]}, {a['gx']}, {int(a['act'] == 'Relu')});"]
        if op.kind == "dense":
            bias = c["b"][0] if "b" in c else "0"
            return [head, f"  dense({src}, {op.out}, {a['rows']}, {a['k']}, {a['n']}, {c['w'][0]}, {c['w'][1]}, "
                          f"{bias});"]
        if op.kind == "layernorm":
            return [head, f"  layernorm({src}, {op.out}, {a['rows']}, {a['d']}, {c['gamma'][0]}, {c['beta'][0]}, "
                          f"{cfloat(a['eps'])});"]
        if op.kind == "softmax":
            return [head, f"  softmax({src}, {op.out}, {a['rows']}, {a['d']}, {int(a['log'])});"]
        if op.kind == "copy":
            lines, off = [head], 0
            for name, size in zip(op.ins, a["sizes"], strict=True):
                lines.append(f"  memcpy({op.out} + {off}, {self.buf(name)}, {size} * sizeof(float));")
                off += size
            return lines
        return [head, *self._elementwise(op, c)]

    def _elementwise(self, op: Op, c: dict[str, tuple[str, str]]) -> list[str]:
        a = op.attrs
        if op.kind == "unary":
            expr = UNARY[a["fn"]].format(**{k: cfloat(v) for k, v in a.items() if isinstance(v, float)})
            return [f"  for (j = 0; j < {a['n']}; j++) {{ const float v = {self.buf(op.ins[0])}[j]; "
                    f"{op.out}[j] = {expr}; }}"]
        if len(op.ins) == 2:
            lhs = f"{self.buf(op.ins[0])}[{'0' if a['a_scalar'] else 'j'}]"
            rhs = f"{self.buf(op.ins[1])}[{'0' if a['b_scalar'] else 'j'}]"
        else:
            var = f"{self.buf(op.ins[0])}[j]"
            other = cfloat(a["scalar"]) if "scalar" in a else f"{c['c'][0]}[j]"
            lhs, rhs = (other, var) if a["const_first"] else (var, other)
        expr = BINARY[a["fn"]].format(a=lhs, b=rhs)
        return [f"  for (j = 0; j < {a['n']}; j++) {op.out}[j] = {expr};"]


def generate(prog: Program, precision: str = "fp32", prefix: str = "model", source: str = "",
             normalization: dict[str, list[float]] | None = None) -> CSource:
    """``<prefix>.<precision>.h`` and ``.c`` for ``prog`` at ``precision`` (``fp32`` or ``int8-weights``)."""
    if precision not in PRECISIONS:
        raise UsageError(f"Unknown C precision '{precision}'.", f"Accepted: {', '.join(PRECISIONS)}.")
    check_prefix(prefix)
    em = _Emitter(prog, precision, prefix)
    seq = [line for i, op in enumerate(prog.ops) if op.phase == "seq" for line in em.op(i, op)]
    post = [line for i, op in enumerate(prog.ops) if op.phase == "post" for line in em.op(i, op)]
    header = cgen_text.header(prog, precision, prefix, source, normalization)
    body = cgen_text.source(prog, em.q, prefix, precision, source, em.consts, seq, post, em.max_n)
    return CSource(precision, prefix, header, body, em.const_bytes)
