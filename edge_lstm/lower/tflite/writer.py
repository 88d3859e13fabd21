"""Build a TFLite flatbuffer with the schema's object API, without TensorFlow.

:class:`ModelWriter` collects tensors, constant buffers and operators of one
subgraph, then :meth:`ModelWriter.finish` packs them into the ``TFL3`` file.
Constant buffers are 16-byte aligned, as the TFLite converter writes them, so
kernels and TFLite Micro can read weights in place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

#: numpy dtype -> TFLite TensorType
_TYPES: dict[np.dtype[Any], int] = {
    np.dtype(np.float32): schema.TensorType.FLOAT32,
    np.dtype(np.float16): schema.TensorType.FLOAT16,
    np.dtype(np.int32): schema.TensorType.INT32,
    np.dtype(np.int64): schema.TensorType.INT64,
    np.dtype(np.int8): schema.TensorType.INT8,
    np.dtype(np.uint8): schema.TensorType.UINT8,
    np.dtype(np.int16): schema.TensorType.INT16,
    np.dtype(np.bool_): schema.TensorType.BOOL,
}

#: BuiltinOperator value -> name, for op counts and error messages
OP_NAMES: dict[int, str] = {
    v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_") and isinstance(v, int)
}

BUFFER_ALIGNMENT = 16


@dataclass(frozen=True)
class TensorRef:
    """A tensor of the subgraph being written: its index, name and static shape."""

    index: int
    name: str
    shape: tuple[int, ...]


class _AlignedBufferT(schema.BufferT):  # type: ignore[misc]
    """A buffer whose data vector starts on a 16-byte boundary."""

    def Pack(self, builder: flatbuffers.Builder) -> int:  # noqa: N802 - the object API's name
        data_off = None
        if self.data is not None and len(self.data):
            raw = self.data.tobytes() if isinstance(self.data, np.ndarray) else bytes(self.data)
            builder.StartVector(1, len(raw), BUFFER_ALIGNMENT)
            builder.head = builder.head - len(raw)
            builder.Bytes[builder.head : builder.head + len(raw)] = raw
            data_off = builder.EndVector()
        schema.BufferStart(builder)
        if data_off is not None:
            schema.BufferAddData(builder, data_off)
        return int(schema.BufferEnd(builder))


class ModelWriter:
    """Collects one subgraph and writes it as a TFLite model."""

    def __init__(self) -> None:
        self.tensors: list[schema.TensorT] = []
        self.buffers: list[schema.BufferT] = [_AlignedBufferT()]  # buffer 0: the empty sentinel
        self.operators: list[schema.OperatorT] = []
        self._opcodes: dict[tuple[int, int], int] = {}
        self._names: set[str] = set()
        self.op_sequence: list[int] = []

    def unique_name(self, hint: str) -> str:
        """``hint`` or ``hint_<n>``: tensor names stay unique within the subgraph."""
        name, n = hint, 1
        while name in self._names:
            name = f"{hint}_{n}"
            n += 1
        return name

    def add_tensor(
        self,
        name: str,
        shape: tuple[int, ...],
        dtype: Any = np.float32,
        data: np.ndarray | None = None,
        variable: bool = False,
    ) -> TensorRef:
        """Add a tensor; ``data`` makes it a constant, ``variable`` a persistent state tensor.

        An empty ``name`` leaves the tensor unnamed, which keeps unrolled models small.
        """
        if name:
            name = self.unique_name(name)
            self._names.add(name)
        t = schema.TensorT()
        t.name = name or None
        t.shape = list(shape)
        t.type = _TYPES[np.dtype(dtype)]
        t.isVariable = variable
        if data is not None:
            buf = _AlignedBufferT()
            buf.data = np.ascontiguousarray(data, dtype=dtype).reshape(-1).view(np.uint8)
            self.buffers.append(buf)
            t.buffer = len(self.buffers) - 1
        self.tensors.append(t)
        return TensorRef(len(self.tensors) - 1, name, tuple(int(d) for d in shape))

    def add_const(self, name: str, array: np.ndarray) -> TensorRef:
        """Add a constant tensor holding ``array`` (its dtype is kept)."""
        arr = np.asarray(array)
        return self.add_tensor(name, tuple(arr.shape), arr.dtype, data=arr)

    def add_op(
        self,
        code: int,
        inputs: list[int],
        outputs: list[int],
        options: Any = None,
        version: int = 1,
    ) -> None:
        """Append an operator; ``options`` is a schema ``*OptionsT`` object; -1 marks an absent input."""
        op = schema.OperatorT()
        op.opcodeIndex = self._opcode(code, version)
        op.inputs = list(inputs)
        op.outputs = list(outputs)
        if options is not None:
            op.builtinOptionsType = getattr(schema.BuiltinOptions, type(options).__name__[:-1])
            op.builtinOptions = options
        self.operators.append(op)
        self.op_sequence.append(code)

    def _opcode(self, code: int, version: int) -> int:
        key = (code, version)
        if key not in self._opcodes:
            self._opcodes[key] = len(self._opcodes)
        return self._opcodes[key]

    def op_counts(self) -> dict[str, int]:
        """How many operators of each builtin kind the subgraph has."""
        counts: dict[str, int] = {}
        for code in self.op_sequence:
            counts[OP_NAMES[code]] = counts.get(OP_NAMES[code], 0) + 1
        return counts

    def finish(self, inputs: list[int], outputs: list[int], description: str = "edge-lstm") -> bytes:
        """Pack the subgraph with its input and output tensor indices into ``TFL3`` bytes."""
        sub = schema.SubGraphT()
        sub.tensors = self.tensors
        sub.operators = self.operators
        sub.inputs = list(inputs)
        sub.outputs = list(outputs)
        sub.name = "main"
        model = schema.ModelT()
        model.version = 3
        model.description = description
        model.subgraphs = [sub]
        model.buffers = self.buffers
        model.operatorCodes = []
        for code, version in sorted(self._opcodes, key=self._opcodes.__getitem__):
            oc = schema.OperatorCodeT()
            oc.builtinCode = code
            oc.deprecatedBuiltinCode = min(code, schema.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
            oc.version = version
            model.operatorCodes.append(oc)
        size = sum(len(b.data) for b in self.buffers if b.data is not None)
        builder = flatbuffers.Builder(size + 4096 + 256 * (len(self.tensors) + len(self.operators)))
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())
