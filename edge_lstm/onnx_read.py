"""The weight bytes of an ONNX file from its protobuf wire format, for devices without the ``onnx`` package.

``profile`` on a device that has only ``onnxruntime`` still splits the file into
weights and graph: the initializers (``ModelProto.graph`` is field 7,
``GraphProto.initializer`` field 5) are found by walking the length-delimited
fields, which needs nothing but the standard library. Everything else about an
ONNX file on such a device comes from ONNX Runtime itself.
"""

from __future__ import annotations

_GRAPH, _INITIALIZER, _NODE = 7, 5, 1


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def _fields(buf: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """(field number, wire type, payload start, payload end) of every field in ``buf[start:end]``."""
    out, pos = [], start
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, nxt = _varint(buf, pos)
        elif wire == 1:
            nxt = pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            nxt = pos + length
        elif wire == 5:
            nxt = pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        out.append((number, wire, pos, nxt))
        pos = nxt
    return out


def initializer_bytes(data: bytes) -> int:
    """Bytes of the main graph's initializers (the weights stored in the file)."""
    graph = next(((s, e) for n, w, s, e in _fields(data, 0, len(data)) if n == _GRAPH and w == 2), None)
    if graph is None:
        return 0
    return sum(e - s for n, w, s, e in _fields(data, *graph) if n == _INITIALIZER and w == 2)
