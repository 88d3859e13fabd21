"""A read-only TFLite flatbuffer reader that needs only numpy and the standard library.

``profile`` and the device runner read an artifact's inputs, tensors and
operators on devices that have ``tflite-runtime`` and nothing else: neither the
``flatbuffers`` package nor the generated TFLite schema module (which ships in
``ai-edge-litert`` and ``tflite-micro``, not in ``tflite-runtime``) is there. The
few tables we read are decoded here by hand, by their field numbers in TFLite's
``schema.fbs``: model (operator codes, subgraphs, description, buffers),
operator code, subgraph, tensor (with quantization), operator (with the
``time_major`` flag of sequence ops) and buffer. ``tests/test_tflite_read.py``
checks every field against the schema module.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from edge_lstm import tflite_schema
from edge_lstm.errors import InputFileError
from edge_lstm.tflite_schema import OPS, dtype_name

#: TensorType codes -> numpy dtype names (:data:`edge_lstm.tflite_schema.TENSOR_TYPES`)
DTYPES = tflite_schema.TENSOR_TYPES

#: BuiltinOptions union members whose table has a time_major flag: union type -> (field number, default)
_TIME_MAJOR = {71: (3, False), 69: (4, True), 31: (0, False), 70: (0, False)}
#: BuiltinOptions union code of WhileOptions (cond_subgraph_index, body_subgraph_index)
_WHILE_OPTIONS = 93


@dataclass
class Tensor:
    """One tensor: shape, TensorType code, buffer index, name, quantization, variable flag."""

    shape: list[int]
    type: int
    buffer: int
    name: str
    scale: list[float] = field(default_factory=list)
    zero_point: list[int] = field(default_factory=list)
    is_variable: bool = False


@dataclass
class Operator:
    """One operator: opcode index, input and output tensor indices (-1 for absent), time_major when it has one."""

    opcode_index: int
    inputs: list[int]
    outputs: list[int]
    time_major: bool = False
    subgraphs: tuple[int, ...] = ()  #: a WHILE's (cond, body) subgraph indices


@dataclass
class Subgraph:
    """Tensors, inputs, outputs and operators of one subgraph."""

    tensors: list[Tensor]
    inputs: list[int]
    outputs: list[int]
    operators: list[Operator]


@dataclass
class OperatorCode:
    """The builtin operator (and version) an operator's opcode index refers to."""

    builtin: int
    version: int


@dataclass
class Model:
    """The parts of a TFLite model edge-lstm reads."""

    operator_codes: list[OperatorCode]
    subgraphs: list[Subgraph]
    buffer_sizes: list[int]  #: bytes of constant data per buffer (0: no data)
    description: str


class _Table:
    """A flatbuffer table at ``pos`` in ``buf``: fields by number, read through the vtable."""

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf, self.pos = buf, pos
        self.vt = pos - struct.unpack_from("<i", buf, pos)[0]
        self.vt_len = struct.unpack_from("<H", buf, self.vt)[0]

    def _field(self, n: int) -> int:
        off = 4 + 2 * n
        if off >= self.vt_len:
            return 0
        return int(struct.unpack_from("<H", self.buf, self.vt + off)[0])

    def scalar(self, n: int, fmt: str, default: int | float | bool = 0) -> int | float | bool:
        o = self._field(n)
        return struct.unpack_from("<" + fmt, self.buf, self.pos + o)[0] if o else default

    def _target(self, n: int) -> int | None:
        o = self._field(n)
        if not o:
            return None
        at = self.pos + o
        return at + struct.unpack_from("<I", self.buf, at)[0]

    def table(self, n: int) -> _Table | None:
        at = self._target(n)
        return None if at is None else _Table(self.buf, at)

    def string(self, n: int) -> str:
        at = self._target(n)
        if at is None:
            return ""
        length = struct.unpack_from("<I", self.buf, at)[0]
        return self.buf[at + 4: at + 4 + length].decode("utf-8", errors="replace")

    def vector_len(self, n: int) -> int:
        at = self._target(n)
        return 0 if at is None else int(struct.unpack_from("<I", self.buf, at)[0])

    def scalars(self, n: int, fmt: str) -> list[int | float]:
        at = self._target(n)
        if at is None:
            return []
        length = struct.unpack_from("<I", self.buf, at)[0]
        return list(struct.unpack_from(f"<{length}{fmt}", self.buf, at + 4))

    def tables(self, n: int) -> list[_Table]:
        at = self._target(n)
        if at is None:
            return []
        length = struct.unpack_from("<I", self.buf, at)[0]
        out = []
        for k in range(length):
            slot = at + 4 + 4 * k
            out.append(_Table(self.buf, slot + struct.unpack_from("<I", self.buf, slot)[0]))
        return out


def read(data: bytes) -> Model:
    """Decode ``data``; :class:`InputFileError` when it is not a readable TFLite flatbuffer."""
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise InputFileError("Not a TFLite flatbuffer (no 'TFL3' identifier).")
    try:
        root = _Table(data, struct.unpack_from("<I", data, 0)[0])
        codes = [OperatorCode(max(int(c.scalar(3, "i")), int(c.scalar(0, "b"))), int(c.scalar(2, "i", 1)))
                 for c in root.tables(1)]
        subgraphs = [_subgraph(s) for s in root.tables(2)]
        sizes = [b.vector_len(0) or int(b.scalar(2, "Q")) for b in root.tables(4)]
        return Model(codes, subgraphs, sizes, root.string(3))
    except (struct.error, IndexError, UnicodeError) as e:
        raise InputFileError(f"The TFLite flatbuffer is truncated or corrupted ({e}).") from e


def _subgraph(s: _Table) -> Subgraph:
    tensors = []
    for t in s.tables(0):
        q = t.table(4)
        tensors.append(Tensor(
            [int(d) for d in t.scalars(0, "i")], int(t.scalar(1, "b")), int(t.scalar(2, "I")), t.string(3),
            [float(v) for v in q.scalars(2, "f")] if q else [], [int(v) for v in q.scalars(3, "q")] if q else [],
            bool(t.scalar(5, "?", False)),
        ))
    ops = []
    for o in s.tables(3):
        kind = int(o.scalar(3, "B"))
        time_major = False
        if kind in _TIME_MAJOR:
            opts = o.table(4)
            fld, default = _TIME_MAJOR[kind]
            time_major = bool(opts.scalar(fld, "?", default)) if opts else default
        called: tuple[int, ...] = ()
        while_opts = o.table(4) if kind == _WHILE_OPTIONS else None
        if while_opts is not None:
            called = (int(while_opts.scalar(0, "i")), int(while_opts.scalar(1, "i")))
        ops.append(Operator(int(o.scalar(0, "I")), [int(i) for i in o.scalars(1, "i")],
                            [int(i) for i in o.scalars(2, "i")], time_major, called))
    return Subgraph(tensors, [int(i) for i in s.scalars(1, "i")], [int(i) for i in s.scalars(2, "i")], ops)


def op_name(model: Model, op: Operator) -> str:
    """The operator's builtin name (``BUILTIN_<code>`` for a code newer than :data:`OPS`)."""
    return tflite_schema.op_name(model.operator_codes[op.opcode_index].builtin)


__all__ = ["DTYPES", "OPS", "Model", "Operator", "OperatorCode", "Subgraph", "Tensor", "dtype_name", "op_name",
           "read"]
