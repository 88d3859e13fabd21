"""The numpy-only TFLite reader agrees, field by field, with the flatc schema module that ships in ai-edge-litert."""

from __future__ import annotations

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema
from tflite_models import case

from edge_lstm import tflite_read
from edge_lstm.errors import InputFileError
from edge_lstm.lower.tflite import lower
from edge_lstm.quantize import quantize_tflite
from edge_lstm.spec import Precision


def _artifacts() -> dict[str, bytes]:
    fused = lower(case("stacked").proto, "fused").data
    return {
        "fused": fused, "loop": lower(case("gru").proto, "loop").data,
        "bidirectional": lower(case("bidirectional").proto, "fused").data,
        "int8": quantize_tflite(fused, Precision.INT8,
                                np.random.default_rng(0).standard_normal((20, 12, 3)).astype(np.float32)).data,
        "streaming": lower(capture_step("stacked"), "fused", streaming=True).data,
    }


def capture_step(name: str):
    from edge_lstm import capture

    c = case(name)
    return capture.streaming_model(c.model, c.proto).proto


@pytest.mark.parametrize("kind", ["fused", "loop", "bidirectional", "int8", "streaming"])
def test_every_field_matches_the_schema_module(kind: str) -> None:
    data = _artifacts()[kind]
    mine = tflite_read.read(data)
    ref = schema.ModelT.InitFromPackedBuf(data, 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    assert mine.description == (ref.description or b"").decode()
    assert [(c.builtin, c.version) for c in mine.operator_codes] == [
        (max(c.builtinCode, c.deprecatedBuiltinCode), c.version) for c in ref.operatorCodes]
    assert mine.buffer_sizes == [len(b.data) if b.data is not None else 0 for b in ref.buffers]
    assert len(mine.subgraphs) == len(ref.subgraphs)
    for sub, rsub in zip(mine.subgraphs, ref.subgraphs, strict=True):
        assert sub.inputs == list(rsub.inputs) and sub.outputs == list(rsub.outputs)
        for t, rt in zip(sub.tensors, rsub.tensors, strict=True):
            shape = list(rt.shape) if rt.shape is not None else []
            assert (t.shape, t.type, t.buffer, t.name, t.is_variable) == (
                shape, rt.type, rt.buffer, (rt.name or b"").decode(), rt.isVariable)
            q = rt.quantization
            assert t.scale == (list(q.scale) if q is not None and q.scale is not None else [])
            assert t.zero_point == (list(q.zeroPoint) if q is not None and q.zeroPoint is not None else [])
        for op, rop in zip(sub.operators, rsub.operators, strict=True):
            assert op.opcode_index == rop.opcodeIndex and op.inputs == list(rop.inputs)
            assert op.outputs == list(rop.outputs)
            assert op.time_major == bool(getattr(rop.builtinOptions, "timeMajor", False))
            code = mine.operator_codes[op.opcode_index].builtin
            assert tflite_read.op_name(mine, op) == tflite_read.OPS.get(code, f"BUILTIN_{code}")
    for code, name in tflite_read.OPS.items():  # the name table is the schema's
        assert names[code] == name


def test_a_truncated_or_foreign_file_is_an_input_error() -> None:
    data = _artifacts()["fused"]
    with pytest.raises(InputFileError, match="truncated or corrupted"):
        tflite_read.read(data[: len(data) // 3])
    with pytest.raises(InputFileError, match="TFL3"):
        tflite_read.read(b"\x08\x07 not a flatbuffer")
