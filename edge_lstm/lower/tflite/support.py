"""What each ONNX op of the table can become, per format and precision: the data behind ``edge-lstm ops`` and the
README's support matrix.

Every op in :data:`edge_lstm.lower.tflite.ops.OP_TABLE` has an entry; an op
missing here is a bug the tests catch. The claims are measured, not assumed:
``tests/lower/test_support.py`` lowers each op's test model, quantizes it to full
int8 where this table says it can be, and runs it on TFLite Micro where it says
it runs, and fails when a claim and the runtime disagree.

Columns: ``tflite`` (fp32, fp16 and dynamic-int8 TFLite lower every op in the
table; dynamic-int8 quantizes the weights of fully-connected, convolution and
recurrent ops and keeps the rest float), ``int8`` (TFLite's integer quantizer
has a kernel for what the op lowers to), ``micro`` and ``micro_int8`` (TFLite
Micro has the kernels at float32 and at int8), ``onnx_dynamic_int8`` (ONNX
Runtime's dynamic quantization: the op's weights become int8, stay float, or
the op has none: "–").
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_lstm.spec import Precision


@dataclass(frozen=True)
class OpSupport:
    """One ONNX op: what it lowers to and where it runs."""

    tflite_ops: str  #: what the TFLite lowering writes for it
    int8: bool = True  #: full int8 (TFLite's integer quantizer)
    micro: bool = True  #: TFLite Micro at float32
    micro_int8: bool = True  #: TFLite Micro at int8
    onnx_dynamic_int8: str = "–"  #: "int8", "float", or "–" (no weights)
    note: str = ""


_WEIGHTS_FLOAT = "float"
SUPPORT: dict[str, OpSupport] = {
    # recurrent layers
    "LSTM": OpSupport("UNIDIRECTIONAL_SEQUENCE_LSTM (fused) or a WHILE loop (loop)", onnx_dynamic_int8="int8",
                      note="bidirectional: two unidirectional ops; initial state as input or cell state as output: "
                           "the loop"),
    "GRU": OpSupport("a WHILE loop (TFLite has no fused GRU)", onnx_dynamic_int8="int8",
                     note="ONNX dynamic-int8: a Scan of int8 products (ONNX Runtime has no quantized GRU op)"),
    "RNN": OpSupport("UNIDIRECTIONAL_SEQUENCE_RNN (fused) or a WHILE loop", onnx_dynamic_int8="int8",
                     note="int8 and TFLite Micro: the loop (no integer or Micro sequence-RNN kernel); ONNX "
                          "dynamic-int8: a Scan of int8 products"),
    "Scan": OpSupport("UNIDIRECTIONAL_SEQUENCE_LSTM with projection, or a WHILE loop", onnx_dynamic_int8="int8",
                      note="only the Scan a proj_size LSTM is captured as"),
    # dense and convolution layers
    "Gemm": OpSupport("FULLY_CONNECTED", onnx_dynamic_int8=_WEIGHTS_FLOAT),
    "MatMul": OpSupport("FULLY_CONNECTED (constant weight) or BATCH_MATMUL", onnx_dynamic_int8=_WEIGHTS_FLOAT),
    "Conv": OpSupport("CONV_2D / DEPTHWISE_CONV_2D (1-D as H = 1)", onnx_dynamic_int8=_WEIGHTS_FLOAT,
                      note="group 1 or depthwise"),
    "ConvTranspose": OpSupport("TRANSPOSE_CONV (+ STRIDED_SLICE for pads)", onnx_dynamic_int8=_WEIGHTS_FLOAT,
                               note="1-D and 2-D, group 1, no output_padding"),
    "BatchNormalization": OpSupport("folded into the op before it, else MUL + ADD"),
    "LayerNormalization": OpSupport("MEAN, SUB, MUL, ADD, RSQRT"),
    # pooling and reductions
    "MaxPool": OpSupport("MAX_POOL_2D"),
    "AveragePool": OpSupport("AVERAGE_POOL_2D"),
    "GlobalAveragePool": OpSupport("MEAN"),
    "ReduceMean": OpSupport("MEAN"),
    "ReduceSum": OpSupport("SUM"),
    "ReduceMax": OpSupport("REDUCE_MAX"),
    "ReduceMin": OpSupport("REDUCE_MIN"),
    "ArgMax": OpSupport("ARG_MAX"),
    # activations
    "Relu": OpSupport("RELU"),
    "LeakyRelu": OpSupport("LEAKY_RELU"),
    "Tanh": OpSupport("TANH"),
    "Sigmoid": OpSupport("LOGISTIC"),
    "Gelu": OpSupport("GELU", micro=False, micro_int8=False),
    "Softmax": OpSupport("SOFTMAX (TRANSPOSE around it for a non-last axis)"),
    "Clip": OpSupport("RELU6 / RELU_N1_TO_1 / RELU, else MAXIMUM + MINIMUM", note="PyTorch's ReLU6 is Clip(0, 6)"),
    "HardSigmoid": OpSupport("MUL, ADD, MINIMUM, MAXIMUM"),
    "HardSwish": OpSupport("HARD_SWISH"),
    "Softplus": OpSupport("ABS, SUB, EXP, ADD, LOG, RELU, ADD", micro_int8=False,
                          note="relu(x) + log(1 + exp(-|x|)); TFLite Micro has no integer EXP"),
    "Exp": OpSupport("EXP", micro_int8=False),
    "Log": OpSupport("LOG", micro_int8=False),
    "Sqrt": OpSupport("SQRT", micro_int8=False),
    "Pow": OpSupport("MUL (x^2), SQRT (x^0.5), else POW", int8=False, micro=False, micro_int8=False,
                     note="x^2 and x^0.5 everywhere"),
    # elementwise arithmetic
    "Add": OpSupport("ADD"),
    "Sub": OpSupport("SUB"),
    "Mul": OpSupport("MUL"),
    "Div": OpSupport("DIV", int8=False, micro_int8=False),
    "Neg": OpSupport("NEG", int8=False, micro_int8=False),
    "Abs": OpSupport("ABS"),
    "Floor": OpSupport("FLOOR", int8=False, micro_int8=False),
    "Ceil": OpSupport("CEIL", int8=False, micro_int8=False),
    "Reciprocal": OpSupport("DIV", int8=False, micro_int8=False),
    "Max": OpSupport("MAXIMUM"),
    "Min": OpSupport("MINIMUM"),
    "Sum": OpSupport("ADD"),
    "Greater": OpSupport("GREATER"),
    "Less": OpSupport("LESS"),
    "Equal": OpSupport("EQUAL"),
    "Where": OpSupport("SELECT_V2", int8=False, micro_int8=False),
    "Cast": OpSupport("CAST", int8=False, micro_int8=False),
    # shape and data movement
    "Identity": OpSupport("nothing (an alias)"),
    "Dropout": OpSupport("nothing (inference)"),
    "Reshape": OpSupport("RESHAPE"),
    "Squeeze": OpSupport("RESHAPE"),
    "Unsqueeze": OpSupport("RESHAPE"),
    "Flatten": OpSupport("RESHAPE"),
    "Transpose": OpSupport("TRANSPOSE (a RESHAPE when only unit axes move)"),
    "Slice": OpSupport("STRIDED_SLICE", note="constant bounds"),
    "Gather": OpSupport("STRIDED_SLICE (one index) or GATHER",
                        note="an embedding is a GATHER; TFLite Micro's takes int32 positions, not int64 token ids"),
    "Concat": OpSupport("CONCATENATION"),
    "Split": OpSupport("SPLIT or STRIDED_SLICE"),
    "Expand": OpSupport("BROADCAST_TO"),
    "Tile": OpSupport("TILE", micro=False, micro_int8=False),
    "Pad": OpSupport("PAD / PADV2 / MIRROR_PAD", note="constant and reflect modes"),
}


def table() -> dict[str, OpSupport]:
    """Every ONNX op the TFLite lowering takes, with its support (the op table's keys, internal ops excluded)."""
    from edge_lstm.lower.tflite.ops import OP_TABLE

    return {op: SUPPORT[op] for op in sorted(k for k in OP_TABLE if not k.startswith("Edge"))}


def supported(op: str, fmt: str, precision: Precision | str, micro: bool = False) -> bool:
    """Whether ``op`` exports to ``fmt`` at ``precision`` (on TFLite Micro when ``micro``)."""
    precision = Precision(precision)
    entry = table().get(op)
    if fmt == "onnx":  # PyTorch's exporter writes the op; ONNX Runtime runs every precision edge-lstm writes
        return precision is not Precision.INT8
    if entry is None:
        return False
    if micro:
        return entry.micro_int8 if precision is Precision.INT8 else entry.micro and precision is Precision.FP32
    return entry.int8 if precision is Precision.INT8 else True


COLUMNS = ("TFLite fp32 / fp16 / dynamic-int8", "TFLite int8", "TFLite Micro fp32", "TFLite Micro int8",
           "ONNX dynamic-int8 weights", "lowered to", "notes")


def rows() -> list[list[str]]:
    """The support matrix, one row per ONNX op."""
    yes = {True: "yes", False: "no"}
    return [[op, "yes", yes[s.int8], yes[s.micro], yes[s.micro_int8], s.onnx_dynamic_int8, s.tflite_ops, s.note]
            for op, s in table().items()]


def markdown() -> str:
    """The matrix as the README's Markdown table."""
    head = "| ONNX op | " + " | ".join(COLUMNS) + " |"
    rule = "|" + " --- |" * (len(COLUMNS) + 1)
    return "\n".join([head, rule, *("| " + " | ".join(r) + " |" for r in rows())])


#: TFLite builtins TFLite Micro has no kernel for, at any type (measured: tests/lower/test_support.py runs a
#: one-op model of each on it)
MICRO_MISSING = frozenset({"POW", "TILE", "GELU", "UNIDIRECTIONAL_SEQUENCE_RNN", "BIDIRECTIONAL_SEQUENCE_RNN",
                           "BIDIRECTIONAL_SEQUENCE_LSTM"})
_FLOAT_ONLY = frozenset({"float32"})
#: builtins whose TFLite Micro kernel takes only some types: op -> the output types it computes (measured as above;
#: an op not listed here or in MICRO_MISSING is taken at every type the models edge-lstm writes give it)
MICRO_KERNEL_TYPES: dict[str, frozenset[str]] = {
    "EXP": _FLOAT_ONLY, "LOG": _FLOAT_ONLY, "SQRT": _FLOAT_ONLY, "NEG": _FLOAT_ONLY, "FLOOR": _FLOAT_ONLY,
    "CEIL": _FLOAT_ONLY,
    "DIV": frozenset({"float32", "int32", "int8"}),  # no int16
    "SELECT_V2": frozenset({"float32", "int8", "int16"}),  # no int32
}
_CAST_TYPES = ("float32", "int8", "int16", "int32", "bool")
#: the (from, to) type pairs TFLite Micro's CAST converts: any two of float32, int8, int16, int32 and bool (no int64,
#: no uint8; measured as above)
MICRO_CASTS = frozenset((a, b) for a in _CAST_TYPES for b in _CAST_TYPES if a != b)


def micro_kernel_blocker(name: str, types_in: list[str], types_out: list[str]) -> str | None:
    """Why TFLite Micro has no kernel for builtin ``name`` reading ``types_in`` and writing ``types_out`` (None when
    it has one, as far as :data:`MICRO_MISSING`, :data:`MICRO_KERNEL_TYPES` and :data:`MICRO_CASTS` go)."""
    if name in MICRO_MISSING:
        return f"no {name} kernel"
    if name == "CAST" and types_in and types_out and (types_in[0], types_out[0]) not in MICRO_CASTS:
        return f"its CAST kernel does not convert {types_in[0]} to {types_out[0]}"
    if name in MICRO_KERNEL_TYPES and types_out and types_out[0] not in MICRO_KERNEL_TYPES[name]:
        return f"no {types_out[0]} {name} kernel"
    return None


def micro_blockers(data: bytes) -> list[str]:
    """Why TFLite Micro cannot run this TFLite file (empty when it can, as far as its kernels go).

    Reads the file with the numpy-only reader. Hybrid (int8 weights, float
    activations) and float16-weight models are reported too; every other op is
    held to the kernels TFLite Micro has for its tensor types
    (:func:`micro_kernel_blocker`).
    """
    from edge_lstm.cost_tflite import tflite_cost
    from edge_lstm.tflite_read import dtype_name, op_name, read

    model = read(data)
    precision = tflite_cost(data).precision
    if precision in ("dynamic-int8", "fp16"):
        return [f"{precision} weights: TFLite Micro has no hybrid kernels and cannot dequantize float16"]
    reasons: list[str] = []
    for g in model.subgraphs:
        for op in g.operators:
            name = op_name(model, op)
            why = micro_kernel_blocker(name, [dtype_name(g.tensors[i].type) for i in op.inputs if i >= 0],
                                       [dtype_name(g.tensors[i].type) for i in op.outputs if i >= 0])
            if why:
                reasons.append(why)
            elif name == "UNIDIRECTIONAL_SEQUENCE_LSTM" and len(op.inputs) > 16 and op.inputs[16] >= 0:
                reasons.append("its LSTM kernel has no projection (proj_size)")
            elif name == "GATHER" and len(op.inputs) > 1 and dtype_name(g.tensors[op.inputs[1]].type) == "int64":
                reasons.append("its GATHER kernel takes int32 positions, not int64 (token ids)")
    return sorted(set(reasons))
