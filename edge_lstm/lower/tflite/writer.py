"""Build a TFLite flatbuffer with the schema's object API, without TensorFlow.

:class:`ModelWriter` collects tensors, constant buffers and operators of the
main subgraph and of any further subgraphs (the condition and body of a
``WHILE`` loop), then :meth:`ModelWriter.finish` packs them into the ``TFL3``
file. Buffers and operator codes belong to the model and are shared by all
subgraphs; identical constants share one buffer.
Constant buffers are 16-byte aligned, as the TFLite converter writes them, so
kernels and TFLite Micro can read weights in place.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from edge_lstm.tflite_schema import OPS, operator_code, pack, type_code

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


class _Subgraph:
    """The tensors and operators of one subgraph."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.tensors: list[schema.TensorT] = []
        self.operators: list[schema.OperatorT] = []
        self.names: set[str] = set()
        self.op_sequence: list[int] = []
        self.inputs: list[int] = []
        self.outputs: list[int] = []


class ModelWriter:
    """Collects the subgraphs of a model and writes them as a TFLite model.

    Tensors and operators go to the *current* subgraph: the main one (index 0)
    unless :meth:`in_subgraph` selects another. :class:`TensorRef` indices are
    per subgraph.
    """

    def __init__(self) -> None:
        self.buffers: list[schema.BufferT] = [_AlignedBufferT()]  # buffer 0: the empty sentinel
        self._buffer_index: dict[tuple[str, bytes], int] = {}
        self._opcodes: dict[tuple[int, int], int] = {}
        self.subgraphs: list[_Subgraph] = [_Subgraph("main")]
        self.current = 0

    # ---- subgraphs ---------------------------------------------------------------------------
    @property
    def _sub(self) -> _Subgraph:
        return self.subgraphs[self.current]

    @property
    def tensors(self) -> list[schema.TensorT]:
        """The current subgraph's tensors."""
        return self._sub.tensors

    @property
    def operators(self) -> list[schema.OperatorT]:
        """The current subgraph's operators."""
        return self._sub.operators

    @property
    def op_sequence(self) -> list[int]:
        """The builtin codes of the current subgraph's operators, in order."""
        return self._sub.op_sequence

    def add_subgraph(self, name: str) -> int:
        """A new, empty subgraph; returns its index (for ``WhileOptions``)."""
        self.subgraphs.append(_Subgraph(name))
        return len(self.subgraphs) - 1

    @contextmanager
    def in_subgraph(self, index: int) -> Iterator[None]:
        """Write tensors and operators to subgraph ``index`` inside the ``with`` block."""
        previous, self.current = self.current, index
        try:
            yield
        finally:
            self.current = previous

    def set_io(self, index: int, inputs: list[int], outputs: list[int]) -> None:
        """Set subgraph ``index``'s input and output tensor indices."""
        self.subgraphs[index].inputs = list(inputs)
        self.subgraphs[index].outputs = list(outputs)

    # ---- tensors and operators ---------------------------------------------------------------
    def unique_name(self, hint: str) -> str:
        """``hint`` or ``hint_<n>``: tensor names stay unique within the subgraph."""
        name, n = hint, 1
        while name in self._sub.names:
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
            self._sub.names.add(name)
        t = schema.TensorT()
        t.name = name or None
        t.shape = list(shape)
        t.type = type_code(dtype)
        t.isVariable = variable
        if data is not None:
            raw = np.ascontiguousarray(data, dtype=dtype).reshape(-1).view(np.uint8)
            key = (str(np.dtype(dtype)), raw.tobytes())
            if key not in self._buffer_index:
                buf = _AlignedBufferT()
                buf.data = raw
                self.buffers.append(buf)
                self._buffer_index[key] = len(self.buffers) - 1
            t.buffer = self._buffer_index[key]
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
        """How many operators of each builtin kind the model has, over all subgraphs."""
        counts: dict[str, int] = {}
        for sub in self.subgraphs:
            for code in sub.op_sequence:
                counts[OPS[code]] = counts.get(OPS[code], 0) + 1
        return counts

    def finish(self, inputs: list[int], outputs: list[int], description: str = "edge-lstm") -> bytes:
        """Pack the model, with the main subgraph's input and output tensor indices, into ``TFL3`` bytes."""
        self.set_io(0, inputs, outputs)
        model = schema.ModelT()
        model.version = 3
        model.description = description
        model.subgraphs = []
        for s in self.subgraphs:
            sub = schema.SubGraphT()
            sub.tensors = s.tensors
            sub.operators = s.operators
            sub.inputs = list(s.inputs)
            sub.outputs = list(s.outputs)
            sub.name = s.name
            model.subgraphs.append(sub)
        model.buffers = self.buffers
        model.operatorCodes = [operator_code(code, version)
                               for code, version in sorted(self._opcodes, key=self._opcodes.__getitem__)]
        size = sum(len(b.data) for b in self.buffers if b.data is not None)
        items = sum(len(s.tensors) + len(s.operators) for s in self.subgraphs)
        return pack(model, size + 4096 + 256 * items)
