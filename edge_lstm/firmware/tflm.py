"""TFLite Micro firmware files: the model as a 16-byte-aligned C array, its measured arena, an invoke loop.

``model_data.c`` holds the ``.tflite`` flatbuffer byte for byte; ``model_data.h``
declares it with its length, the tensor arena size measured on TFLite Micro's
host interpreter (with the margin stated), the input and output tensors (shape,
type, scale and zero point) and the indices of the variable tensors that carry
the recurrent state between ``Invoke()`` calls. ``main.cc`` is a minimal
invoke loop: one call per reading for a streaming model (reset on demand), a
sliding window otherwise.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edge_lstm import __version__
from edge_lstm.errors import UsageError
from edge_lstm.firmware.clit import cfloat, comment
from edge_lstm.firmware.tflm_text import main_cc

ARENA_MARGIN = 0.10  # added to the measured arena, then rounded up to 16 bytes
#: why the smallest working arena exceeds the recording allocator's total (what ``profile`` reports)
ARENA_IN_USE_NOTE = ("The recording allocator's total (what edge-lstm profile shows as the arena in use) counts the "
                     "arena once tensors are allocated; while it plans their memory the allocator also needs a "
                     "temporary scratch in the arena (bookkeeping for every tensor), so the smallest arena that "
                     "works can be larger, by as much as that scratch exceeds the planned tensor buffers.")
#: the op registration methods of tflite::MicroMutableOpResolver (tensorflow/lite/micro/micro_mutable_op_resolver.h)
TFLM_RESOLVER = (
    "Abs", "Add", "AddN", "ArgMax", "ArgMin", "AssignVariable", "AveragePool2D", "BatchMatMul", "BatchToSpaceNd",
    "BroadcastArgs", "BroadcastTo", "CallOnce", "Cast", "Ceil", "CircularBuffer", "Concatenation", "Conv2D", "Cos",
    "CumSum", "DepthToSpace", "DepthwiseConv2D", "Dequantize", "DetectionPostprocess", "Div", "Elu", "Equal", "Exp",
    "ExpandDims", "Fill", "Floor", "FloorDiv", "FloorMod", "FullyConnected", "Gather", "GatherNd", "Greater",
    "GreaterEqual", "HardSwish", "If", "L2Normalization", "L2Pool2D", "LeakyRelu", "Less", "LessEqual", "Log",
    "LogicalAnd", "LogicalNot", "LogicalOr", "Logistic", "LogSoftmax", "Maximum", "MaxPool2D", "MirrorPad", "Mean",
    "Minimum", "Mul", "Neg", "NotEqual", "Pack", "Pad", "PadV2", "Prelu", "Quantize", "ReadVariable", "ReduceAll",
    "ReduceMax", "ReduceMin", "Relu", "Relu6", "Reshape", "ResizeBilinear", "ResizeNearestNeighbor", "ReverseV2",
    "Round", "Rsqrt", "SelectV2", "Shape", "Sin", "Slice", "Softmax", "SpaceToBatchNd", "SpaceToDepth", "Split",
    "SplitV", "Squeeze", "Sqrt", "Square", "SquaredDifference", "StridedSlice", "Sub", "Sum", "Svdf", "Tanh",
    "TransposeConv", "Transpose", "Unpack", "UnidirectionalSequenceLSTM", "VarHandle", "While", "ZerosLike",
)


@dataclass
class TensorInfo:
    """One input or output tensor of the flatbuffer."""

    name: str
    tensor: int
    shape: list[int]
    dtype: str
    scale: float = 0.0
    zero_point: int = 0

    @property
    def elements(self) -> int:
        """Number of elements."""
        return int(np.prod(self.shape)) if self.shape else 1


@dataclass
class TflmModel:
    """What the header and the example need to know about one ``.tflite`` file."""

    artifact: str
    data: bytes
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    state_tensors: list[int]
    ops: list[str]
    arena: dict[str, Any] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        """Time steps per ``Invoke()``: the first input's elements over its last (feature) axis."""
        x = self.inputs[0]
        return x.elements // max(x.shape[-1], 1) if x.shape else 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (without the bytes)."""
        return {"artifact": self.artifact, "bytes": len(self.data), "sha256": hashlib.sha256(self.data).hexdigest(),
                "inputs": [asdict(t) for t in self.inputs], "outputs": [asdict(t) for t in self.outputs],
                "state_tensors": self.state_tensors, "ops": self.ops, "steps_per_invoke": self.steps,
                "streaming": self.steps == 1, "arena": self.arena}


def describe(artifact: str, data: bytes) -> TflmModel:
    """Read tensors, variable (state) tensors and ops from the flatbuffer's first subgraph."""
    from edge_lstm.tflite_read import dtype_name, op_name, read

    model = read(data)
    sub = model.subgraphs[0]

    def info(i: int) -> TensorInfo:
        t = sub.tensors[i]
        return TensorInfo(t.name, int(i), [int(d) for d in t.shape], dtype_name(t.type),
                          float(t.scale[0]) if t.scale else 0.0, int(t.zero_point[0]) if t.zero_point else 0)

    ops = sorted({op_name(model, op) for op in sub.operators})
    states = [i for i, t in enumerate(sub.tensors) if t.is_variable]
    return TflmModel(artifact, data, [info(i) for i in sub.inputs], [info(i) for i in sub.outputs], states, ops)


_PROBE = """
import sys
import numpy as np
from tflite_micro.python.tflite_micro import runtime
data = open(sys.argv[1], "rb").read()
it = runtime.Interpreter.from_bytes(data, arena_size=int(sys.argv[2]))
for _ in range(2):
    for i in range(64):
        try:
            d = it.get_input_details(i)
        except Exception:
            break
        it.set_input(np.zeros(d["shape"], d["dtype"]), i)
    it.invoke()
print("edge-lstm-arena-ok")
"""


def measure_arena(data: bytes, timeout: float = 120.0) -> dict[str, Any]:
    """The smallest arena with which TFLite Micro's host interpreter allocates and runs ``data``, and the size to use.

    The recording allocator's total is only a starting point: on a streaming
    (variable-tensor) model it reported less than allocation needs. Each size is
    therefore tried in a fresh process (a too-small arena can crash the
    interpreter rather than fail cleanly): allocate, then invoke twice. The
    result is the smallest multiple of 16 bytes that works, with 16 bytes less
    failing.
    """
    import tempfile
    from pathlib import Path

    from edge_lstm.outputs import write_into
    from edge_lstm.runners.tflm import TFLMRunner

    runner = TFLMRunner(data)
    recorded = runner.arena_used_bytes()
    runner.deactivate()
    with tempfile.TemporaryDirectory(prefix="edge-lstm-arena-") as tmp:
        path = write_into(Path(tmp), "model.tflite", data)
        low, high, probes = _bracket(path, int(recorded or 4096), 10 * len(data) + 65536, timeout)
        while high - low > 16:
            mid = (low + high) // 32 * 16
            probes += 1
            low, high = (low, mid) if _probe(path, mid, timeout) else (mid, high)
    recommended = int(math.ceil(high * (1 + ARENA_MARGIN) / 16) * 16)
    return {
        "measured_bytes": int(high), "recommended_bytes": recommended, "margin": ARENA_MARGIN,
        "recording_allocator_bytes": recorded, "probes": probes,
        "method": f"TFLite Micro host interpreter (tflite-micro, 64-bit x86-64 build, reference kernels): the "
                  f"smallest arena (16-byte steps) that allocates and invokes, each size tried in a fresh process; "
                  f"{high - 16} bytes fail",
        "note": f"MODEL_ARENA_SIZE = measured + {ARENA_MARGIN:.0%}, rounded up to 16 bytes. {ARENA_IN_USE_NOTE} "
                "A 32-bit Cortex-M "
                "stores smaller pointers in the arena's bookkeeping and usually needs less; optimized kernels "
                "(e.g. CMSIS-NN) can ask for scratch the reference kernels do not: check "
                "interpreter.arena_used_bytes() on the device.",
    }


def _bracket(path: Any, start: int, limit: int, timeout: float) -> tuple[int, int, int]:
    """(a size that fails, a size that works, probes used), both multiples of 16, around ``start``."""
    start = max(32, (start + 15) // 16 * 16)
    if _probe(path, start, timeout):
        high, low, probes = start, start - 16, 2
        while low > 0 and _probe(path, low, timeout):
            high, low, probes = low, low // 2 // 16 * 16, probes + 1
        return low, high, probes
    low, high, probes = start, start * 2, 2
    while not _probe(path, high, timeout):
        if high >= limit:
            raise UsageError(f"TFLite Micro's host interpreter could not run the model even with a {high:,}-byte "
                             "arena.", "Check that the .tflite uses only ops TFLite Micro has (a fused lowering).")
        low, high, probes = high, min(limit, high * 2), probes + 1
    return low, high, probes


def _probe(path: Any, size: int, timeout: float) -> bool:
    import subprocess
    import sys

    try:
        proc = subprocess.run([sys.executable, "-c", _PROBE, str(path), str(size)], capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode == 0 and "edge-lstm-arena-ok" in proc.stdout


def file_names(stem: str) -> tuple[str, str, str]:
    """``<stem>.model_data.h``, ``<stem>.model_data.c`` and ``<stem>.main.cc``: one output directory holds several."""
    return f"{stem}.model_data.h", f"{stem}.model_data.c", f"{stem}.main.cc"


def model_data_c(m: TflmModel, stem: str = "model") -> dict[str, str]:
    """``<stem>.model_data.h`` and ``<stem>.model_data.c`` (name -> text)."""
    header_name, source_name, _ = file_names(stem)
    digest = hashlib.sha256(m.data).hexdigest()
    src = comment(m.artifact)
    rows = [", ".join(f"0x{b:02x}" for b in m.data[i:i + 12]) for i in range(0, len(m.data), 12)]
    source = "\n".join([
        f"/* {source_name}: generated by edge-lstm {__version__} from {src} ({len(m.data)} bytes, sha256 {digest});",
        " * do not edit. The flatbuffer is read in place, so it must be 16-byte aligned. */",
        f'#include "{header_name}"', "",
        "#if defined(__GNUC__) || defined(__clang__)", "#define EDGE_LSTM_ALIGN16 __attribute__((aligned(16)))",
        "#elif defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L", "#define EDGE_LSTM_ALIGN16 _Alignas(16)",
        "#elif defined(_MSC_VER)", "#define EDGE_LSTM_ALIGN16 __declspec(align(16))", "#else",
        '#error "edge-lstm: cannot align the model array to 16 bytes with this compiler"', "#endif", "",
        f"EDGE_LSTM_ALIGN16 const unsigned char g_model_data[{len(m.data)}] = {{",
        ",\n".join(f"  {r}" for r in rows), "};",
        f"const unsigned int g_model_data_len = {len(m.data)}u;", "",
    ])
    return {header_name: _header(m, src, digest, header_name), source_name: source}


def _header(m: TflmModel, src: str, digest: str, name: str) -> str:
    arena = m.arena
    guard = "".join(ch if ch.isalnum() else "_" for ch in name.upper()) + "_"
    lines = [f"/* {name}: generated by edge-lstm {__version__} from {src}; do not edit. */",
             f"#ifndef {guard}", f"#define {guard}", "", "#ifdef __cplusplus", 'extern "C" {', "#endif",
             f"/* the .tflite flatbuffer ({len(m.data)} bytes, sha256 {digest[:16]}...), 16-byte aligned */",
             "extern const unsigned char g_model_data[];", "extern const unsigned int g_model_data_len;",
             "#ifdef __cplusplus", "}", "#endif", ""]
    if arena.get("measured_bytes"):
        lines += [f"/* Tensor arena: {arena['measured_bytes']} bytes measured on TFLite Micro's host interpreter",
                  " * (x86-64, reference kernels: the smallest arena that allocates and invokes; 16 bytes less fail),",
                  f" * plus {arena['margin']:.0%}, rounded up to 16 bytes. A 32-bit core usually needs less; optimized",
                  " * kernels (CMSIS-NN) may need more scratch: check interpreter.arena_used_bytes() on the device. */",
                  f"#define MODEL_ARENA_MEASURED_BYTES {arena['measured_bytes']}",
                  f"#define MODEL_ARENA_SIZE {arena['recommended_bytes']}", ""]
    else:
        lines += ["/* The arena was not measured (the tflite-micro package was not installed): define MODEL_ARENA_SIZE",
                  " * yourself, from interpreter.arena_used_bytes() on the device. */", "#ifndef MODEL_ARENA_SIZE",
                  '#error "MODEL_ARENA_SIZE was not measured: define it before including this header"', "#endif",
                  ""]
    kind = "streaming: one reading per call" if m.steps == 1 else "a window"
    lines += [f"/* time steps per Invoke(): {m.steps} ({kind}) */", f"#define MODEL_STEPS_PER_INVOKE {m.steps}"]
    for kind, tensors in (("INPUT", m.inputs), ("OUTPUT", m.outputs)):
        lines.append(f"#define MODEL_NUM_{kind}S {len(tensors)}")
        for i, t in enumerate(tensors):
            p = f"MODEL_{kind}{i}"
            quant = t.dtype in ("int8", "int16", "uint8") and t.scale > 0
            lines += [f"/* {kind.lower()} {i}: '{comment(t.name)}' {t.dtype}[{'x'.join(map(str, t.shape))}]"
                      + ("; q = round(x / scale) + zero_point, x = (q - zero_point) * scale */" if quant else " */"),
                      f"#define {p}_TENSOR {t.tensor}", f"#define {p}_ELEMENTS {t.elements}",
                      f"#define {p}_IS_INT8 {int(t.dtype == 'int8')}",
                      f"#define {p}_SCALE {cfloat(t.scale)}", f"#define {p}_ZERO_POINT {t.zero_point}"]
    states = ", ".join(map(str, m.state_tensors))
    lines += ["", "/* Recurrent state: variable tensors that keep their values across Invoke(). Zero them with",
              " * interpreter.ResetVariableTensor(index) for each (or interpreter.Reset()) to start a new stream. */",
              f"#define MODEL_NUM_STATE_TENSORS {len(m.state_tensors)}",
              f"#define MODEL_STATE_TENSORS {{{states}}}" if m.state_tensors else "#define MODEL_STATE_TENSORS {-1}",
              f"/* ops: {', '.join(m.ops)} */", "", f"#endif /* {guard} */", ""]
    return "\n".join(lines)


def resolver_calls(ops: list[str]) -> list[str]:
    """``resolver.AddX();`` for each op (TFLite Micro's method names), or a comment for an op it lacks."""
    by_key = {name.lower(): name for name in TFLM_RESOLVER}
    calls = []
    for op in ops:
        name = by_key.get(op.replace("_", "").lower())
        calls.append(f"  resolver.Add{name}();" if name else f"  // TFLite Micro has no kernel for {op}")
    return calls


def example_main(m: TflmModel, normalization: dict[str, Any] | None = None, stem: str = "model") -> str:
    """``<stem>.main.cc``: set up the interpreter and run the invoke loop (streaming, or a sliding window)."""
    header_name, source_name, _ = file_names(stem)
    return main_cc(m, resolver_calls(m.ops), normalization, header_name, source_name)
