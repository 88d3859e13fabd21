"""TFLite's schema in one place: type codes, operator names, and the object API's parse, pack and edit helpers.

The tables need only the standard library, so the device runner (:mod:`edge_lstm.tflite_read`,
:mod:`edge_lstm.kernels`) reads them too; ``tests/test_tflite_schema.py`` checks them against the schema module
that ships in ai-edge-litert. The helpers below the tables work on that module's object API (``ModelT``); they
import it, and ``flatbuffers``, when called, so they are host-side: the TFLite writer
(:mod:`edge_lstm.lower.tflite.writer`) and the quantizers (:mod:`edge_lstm.quantize.tflite`, ``loops``,
``cell16``, ``ranges``) use them rather than copies of their own.
"""

from __future__ import annotations

from typing import Any

#: TensorType code -> numpy dtype name (the types numpy has, and "string")
TENSOR_TYPES: dict[int, str] = {
    0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "string", 6: "bool", 7: "int16", 9: "int8",
    10: "float64", 12: "uint64", 15: "uint32", 16: "uint16",
}
#: numpy dtype name -> TensorType code
TYPE_CODES: dict[str, int] = {name: code for code, name in TENSOR_TYPES.items()}
FLOAT32, FLOAT16, INT32, UINT8, INT16, INT8 = (TYPE_CODES[n] for n in ("float32", "float16", "int32", "uint8",
                                                                     "int16", "int8"))

#: BuiltinOperator names, by code (the schema numbers them 0, 1, 2, ...)
_OP_NAMES = (
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "DEPTH_TO_SPACE", "DEQUANTIZE",
    "EMBEDDING_LOOKUP", "FLOOR", "FULLY_CONNECTED", "HASHTABLE_LOOKUP", "L2_NORMALIZATION", "L2_POOL_2D",
    "LOCAL_RESPONSE_NORMALIZATION", "LOGISTIC", "LSH_PROJECTION", "LSTM", "MAX_POOL_2D", "MUL", "RELU",
    "RELU_N1_TO_1", "RELU6", "RESHAPE", "RESIZE_BILINEAR", "RNN", "SOFTMAX", "SPACE_TO_DEPTH", "SVDF", "TANH",
    "CONCAT_EMBEDDINGS", "SKIP_GRAM", "CALL", "CUSTOM", "EMBEDDING_LOOKUP_SPARSE", "PAD",
    "UNIDIRECTIONAL_SEQUENCE_RNN", "GATHER", "BATCH_TO_SPACE_ND", "SPACE_TO_BATCH_ND", "TRANSPOSE", "MEAN", "SUB",
    "DIV", "SQUEEZE", "UNIDIRECTIONAL_SEQUENCE_LSTM", "STRIDED_SLICE", "BIDIRECTIONAL_SEQUENCE_RNN", "EXP", "TOPK_V2",
    "SPLIT", "LOG_SOFTMAX", "DELEGATE", "BIDIRECTIONAL_SEQUENCE_LSTM", "CAST", "PRELU", "MAXIMUM", "ARG_MAX",
    "MINIMUM", "LESS", "NEG", "PADV2", "GREATER", "GREATER_EQUAL", "LESS_EQUAL", "SELECT", "SLICE", "SIN",
    "TRANSPOSE_CONV", "SPARSE_TO_DENSE", "TILE", "EXPAND_DIMS", "EQUAL", "NOT_EQUAL", "LOG", "SUM", "SQRT", "RSQRT",
    "SHAPE", "POW", "ARG_MIN", "FAKE_QUANT", "REDUCE_PROD", "REDUCE_MAX", "PACK", "LOGICAL_OR", "ONE_HOT",
    "LOGICAL_AND", "LOGICAL_NOT", "UNPACK", "REDUCE_MIN", "FLOOR_DIV", "REDUCE_ANY", "SQUARE", "ZEROS_LIKE", "FILL",
    "FLOOR_MOD", "RANGE", "RESIZE_NEAREST_NEIGHBOR", "LEAKY_RELU", "SQUARED_DIFFERENCE", "MIRROR_PAD", "ABS",
    "SPLIT_V", "UNIQUE", "CEIL", "REVERSE_V2", "ADD_N", "GATHER_ND", "COS", "WHERE", "RANK", "ELU",
    "REVERSE_SEQUENCE", "MATRIX_DIAG", "QUANTIZE", "MATRIX_SET_DIAG", "ROUND", "HARD_SWISH", "IF", "WHILE",
    "NON_MAX_SUPPRESSION_V4", "NON_MAX_SUPPRESSION_V5", "SCATTER_ND", "SELECT_V2", "DENSIFY", "SEGMENT_SUM",
    "BATCH_MATMUL", "PLACEHOLDER_FOR_GREATER_OP_CODES", "CUMSUM", "CALL_ONCE", "BROADCAST_TO", "RFFT2D", "CONV_3D",
    "IMAG", "REAL", "COMPLEX_ABS", "HASHTABLE", "HASHTABLE_FIND", "HASHTABLE_IMPORT", "HASHTABLE_SIZE", "REDUCE_ALL",
    "CONV_3D_TRANSPOSE", "VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE", "BROADCAST_ARGS", "RANDOM_STANDARD_NORMAL",
    "BUCKETIZE", "RANDOM_UNIFORM", "MULTINOMIAL", "GELU", "DYNAMIC_UPDATE_SLICE", "RELU_0_TO_1",
    "UNSORTED_SEGMENT_PROD", "UNSORTED_SEGMENT_MAX", "UNSORTED_SEGMENT_SUM", "ATAN2", "UNSORTED_SEGMENT_MIN", "SIGN",
    "BITCAST", "BITWISE_XOR", "RIGHT_SHIFT", "STABLEHLO_LOGISTIC", "STABLEHLO_ADD", "STABLEHLO_DIVIDE",
    "STABLEHLO_MULTIPLY", "STABLEHLO_MAXIMUM", "STABLEHLO_RESHAPE", "STABLEHLO_CLAMP", "STABLEHLO_CONCATENATE",
    "STABLEHLO_BROADCAST_IN_DIM", "STABLEHLO_CONVOLUTION", "STABLEHLO_SLICE", "STABLEHLO_CUSTOM_CALL",
    "STABLEHLO_REDUCE", "STABLEHLO_ABS", "STABLEHLO_AND", "STABLEHLO_COSINE", "STABLEHLO_EXPONENTIAL",
    "STABLEHLO_FLOOR", "STABLEHLO_LOG", "STABLEHLO_MINIMUM", "STABLEHLO_NEGATE", "STABLEHLO_OR", "STABLEHLO_POWER",
    "STABLEHLO_REMAINDER", "STABLEHLO_RSQRT", "STABLEHLO_SELECT", "STABLEHLO_SUBTRACT", "STABLEHLO_TANH",
    "STABLEHLO_SCATTER", "STABLEHLO_COMPARE", "STABLEHLO_CONVERT", "STABLEHLO_DYNAMIC_SLICE",
    "STABLEHLO_DYNAMIC_UPDATE_SLICE", "STABLEHLO_PAD", "STABLEHLO_IOTA", "STABLEHLO_DOT_GENERAL",
    "STABLEHLO_REDUCE_WINDOW", "STABLEHLO_SORT", "STABLEHLO_WHILE", "STABLEHLO_GATHER", "STABLEHLO_TRANSPOSE",
    "DILATE", "STABLEHLO_RNG_BIT_GENERATOR", "REDUCE_WINDOW", "STABLEHLO_COMPOSITE", "STABLEHLO_SHIFT_LEFT",
    "STABLEHLO_CBRT", "STABLEHLO_CASE",
)
#: BuiltinOperator code -> name
OPS: dict[int, str] = dict(enumerate(_OP_NAMES))
#: BuiltinOperator name -> code
OP_CODES: dict[str, int] = {name: code for code, name in OPS.items()}
#: the largest code the old ``deprecated_builtin_code`` (an int8) holds; larger codes store this there
PLACEHOLDER_FOR_GREATER_OP_CODES = OP_CODES["PLACEHOLDER_FOR_GREATER_OP_CODES"]


def dtype_name(code: int) -> str:
    """The numpy dtype name of a TensorType code (``tflite-type-<code>`` for one numpy lacks)."""
    return TENSOR_TYPES.get(code, f"tflite-type-{code}")


def type_code(dtype: Any) -> int:
    """The TensorType code of a numpy dtype (anything ``numpy.dtype`` takes); KeyError when TFLite has none."""
    import numpy as np

    return TYPE_CODES[np.dtype(dtype).name]


def op_name(code: int) -> str:
    """The name of a BuiltinOperator code (``BUILTIN_<code>`` for one newer than this table)."""
    return OPS.get(code, f"BUILTIN_{code}")


# ---------------------------------------------------------------- the object API (host-side)


def schema() -> Any:
    """ai-edge-litert's generated schema module (``schema_py_generated``)."""
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def unpack(data: bytes) -> Any:
    """The ``ModelT`` of a ``.tflite`` file."""
    return schema().ModelT.InitFromPackedBuf(bytearray(data), 0)


def pack(model: Any, size_hint: int = 1024) -> bytes:
    """``model`` (a ``ModelT``) as ``TFL3`` bytes; the same model gives the same bytes (``size_hint`` is only the
    builder's first allocation)."""
    import flatbuffers

    builder = flatbuffers.Builder(size_hint)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def builtin(code: Any) -> int:
    """The builtin operator of an ``OperatorCodeT`` (new files keep it in ``builtin_code``, old ones in
    ``deprecated_builtin_code``)."""
    return int(max(code.builtinCode, code.deprecatedBuiltinCode))


def operator_code(builtin_code: int, version: int) -> Any:
    """An ``OperatorCodeT`` for ``builtin_code`` at ``version`` (the deprecated field capped, as TFLite writes it)."""
    oc = schema().OperatorCodeT()
    oc.builtinCode = builtin_code
    oc.deprecatedBuiltinCode = min(builtin_code, PLACEHOLDER_FOR_GREATER_OP_CODES)
    oc.version = version
    return oc


def opcode_index(model: Any, builtin_code: int, version: int) -> int:
    """Index of the operator code (builtin, version) in ``model``, added when missing."""
    for i, code in enumerate(model.operatorCodes):
        if builtin(code) == builtin_code and code.version == version:
            return i
    model.operatorCodes.append(operator_code(builtin_code, version))
    return len(model.operatorCodes) - 1


def op_builtin(model: Any, op: Any) -> int:
    """The builtin operator code of ``op`` (an ``OperatorT`` of ``model``)."""
    return builtin(model.operatorCodes[op.opcodeIndex])


def model_op_name(model: Any, op: Any) -> str:
    """The builtin name of ``op`` (an ``OperatorT`` of ``model``)."""
    return op_name(op_builtin(model, op))


def tensor_name(tensor: Any) -> str:
    """A ``TensorT``'s name as text (the object API keeps it as bytes)."""
    raw = tensor.name
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def is_const(model: Any, tensor: Any) -> bool:
    """True when ``tensor`` has constant data."""
    buf = model.buffers[tensor.buffer] if tensor.buffer > 0 else None
    return buf is not None and buf.data is not None and len(buf.data) > 0


def const_array(model: Any, tensor: Any, dtype: Any) -> Any:
    """The constant data of ``tensor`` as a flat numpy array of ``dtype`` (None when it has none)."""
    import numpy as np

    if not is_const(model, tensor):
        return None
    return np.frombuffer(np.asarray(model.buffers[tensor.buffer].data, np.uint8).tobytes(), dtype)


def set_data(model: Any, tensor: Any, arr: Any) -> None:
    """Give ``tensor`` a new buffer holding ``arr`` (appended to the model's buffers)."""
    import numpy as np

    buf = schema().BufferT()
    buf.data = np.frombuffer(np.ascontiguousarray(arr).tobytes(), dtype=np.uint8)
    model.buffers.append(buf)
    tensor.buffer = len(model.buffers) - 1


def quantization(scale: list[float], zero_point: list[int], dimension: int = 0) -> Any:
    """A ``QuantizationParametersT`` with these scales and zero points."""
    q = schema().QuantizationParametersT()
    q.scale, q.zeroPoint, q.quantizedDimension = list(scale), list(zero_point), dimension
    return q


def copy_quantization(q: Any) -> Any:
    """A copy of the scales, zero points and axis of ``q`` (tensors must not share one object)."""
    return quantization(q.scale, q.zeroPoint, q.quantizedDimension)
