"""The TFLite schema tables agree with the schema module that ships in ai-edge-litert; parse and pack round-trip."""

from __future__ import annotations

import numpy as np
import pytest
from tflite_models import case

from edge_lstm import tflite_read, tflite_schema
from edge_lstm.lower.tflite import lower

schema = pytest.importorskip("ai_edge_litert.schema_py_generated")


def _enum(cls: type) -> dict[int, str]:
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


def test_op_names_are_the_schemas() -> None:
    ops = _enum(schema.BuiltinOperator)
    assert {code: ops[code] for code in tflite_schema.OPS} == tflite_schema.OPS
    assert set(tflite_schema.OPS) >= {c for c in ops if c <= max(tflite_schema.OPS)}
    assert tflite_schema.OP_CODES["UNIDIRECTIONAL_SEQUENCE_LSTM"] == schema.BuiltinOperator.UNIDIRECTIONAL_SEQUENCE_LSTM
    assert tflite_schema.op_name(10_000) == "BUILTIN_10000"
    assert tflite_schema.PLACEHOLDER_FOR_GREATER_OP_CODES == schema.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES


def test_type_codes_are_the_schemas_and_numpys() -> None:
    types = _enum(schema.TensorType)
    for code, name in tflite_schema.TENSOR_TYPES.items():
        assert types[code] == name.upper()
        if name != "string":  # numpy has no string type of that name
            assert np.dtype(name).name == name
            assert tflite_schema.type_code(np.dtype(name)) == code
    assert tflite_schema.type_code(np.bool_) == schema.TensorType.BOOL
    assert (tflite_schema.FLOAT32, tflite_schema.INT8, tflite_schema.INT16) == (
        schema.TensorType.FLOAT32, schema.TensorType.INT8, schema.TensorType.INT16)
    assert tflite_schema.dtype_name(schema.TensorType.COMPLEX64) == f"tflite-type-{schema.TensorType.COMPLEX64}"
    with pytest.raises(KeyError):
        tflite_schema.type_code(np.complex64)
    assert tflite_read.DTYPES is tflite_schema.TENSOR_TYPES and tflite_read.OPS is tflite_schema.OPS


def test_unpack_and_pack_round_trip_deterministically() -> None:
    data = lower(case("gru").proto, "loop").data
    model = tflite_schema.unpack(data)
    packed = tflite_schema.pack(model)
    assert packed == tflite_schema.pack(tflite_schema.unpack(data))  # same model, same bytes
    assert packed == tflite_schema.pack(model, size_hint=len(data) * 4)  # the hint is only an allocation
    assert tflite_read.read(packed) == tflite_read.read(data)
    assert packed[4:8] == b"TFL3"


def test_opcode_index_finds_or_adds_one_code() -> None:
    model = tflite_schema.unpack(lower(case("stacked").proto, "fused").data)
    codes = len(model.operatorCodes)
    lstm = tflite_schema.OP_CODES["UNIDIRECTIONAL_SEQUENCE_LSTM"]
    found = tflite_schema.opcode_index(model, lstm, 1)
    assert len(model.operatorCodes) == codes and tflite_schema.builtin(model.operatorCodes[found]) == lstm
    added = tflite_schema.opcode_index(model, lstm, 2)
    assert added == codes and tflite_schema.opcode_index(model, lstm, 2) == added
    big = tflite_schema.operator_code(tflite_schema.OP_CODES["GELU"], 1)
    assert (big.deprecatedBuiltinCode, tflite_schema.builtin(big)) == (127, tflite_schema.OP_CODES["GELU"])
    op = next(o for o in model.subgraphs[0].operators if tflite_schema.op_builtin(model, o) == lstm)
    assert tflite_schema.model_op_name(model, op) == "UNIDIRECTIONAL_SEQUENCE_LSTM"


def test_constants_and_quantization_parameters() -> None:
    model = tflite_schema.unpack(lower(case("stacked").proto, "fused").data)
    graph = model.subgraphs[0]
    weight = next(t for t in graph.tensors if tflite_schema.is_const(model, t) and len(t.shape) == 2)
    arr = tflite_schema.const_array(model, weight, np.float32)
    assert arr.size == int(np.prod(weight.shape)) and np.isfinite(arr).all()
    tflite_schema.set_data(model, weight, (arr * 2).astype(np.float32))
    assert weight.buffer == len(model.buffers) - 1
    assert np.array_equal(tflite_schema.const_array(model, weight, np.float32), arr * 2)
    state = next(t for t in graph.tensors if t.isVariable)
    assert not tflite_schema.is_const(model, state) and tflite_schema.const_array(model, state, np.float32) is None
    q = tflite_schema.quantization([0.5], [3])
    c = tflite_schema.copy_quantization(q)
    assert c is not q and (list(c.scale), list(c.zeroPoint), c.quantizedDimension) == ([0.5], [3], 0)
