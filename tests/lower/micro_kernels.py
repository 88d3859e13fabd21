"""One-op TFLite models for the TFLite builtins the support table says TFLite Micro lacks, per dtype.

Each :func:`one_op` model holds a single operator at one dtype (or, for
``CAST``, one (from, to) pair) with random inputs; :func:`run` runs it on a
runtime and says whether it ran and what it returned, so
``tests/lower/test_support.py`` can hold ``MICRO_MISSING``,
``MICRO_MISSING_TYPES`` and ``MICRO_CASTS`` to what the installed TFLite Micro
does, against LiteRT (or numpy, where LiteRT has no kernel either).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from edge_lstm.lower.tflite.writer import ModelWriter
from edge_lstm.tflite_schema import OP_CODES, quantization

#: (scale, zero point) of each integer dtype's quantized tensors: int8 asymmetric, int16 symmetric (TFLite's rule)
_QUANT = {"int8": (0.02, 3), "int16": (1.0 / 4096, 0)}
_UNARY = ("EXP", "LOG", "SQRT", "NEG", "FLOOR", "CEIL", "GELU")
_POSITIVE = ("LOG", "SQRT")  # inputs in (0.1, 2.5): in their domain


@dataclass(frozen=True)
class Probe:
    """A one-op model and its feeds."""

    op: str
    dtype: str  # the op's dtype ("float32", "int8", "int16"), or "from->to" for CAST
    data: bytes
    feeds: dict[str, np.ndarray]


def _values(rng: np.random.Generator, op: str, shape: tuple[int, ...]) -> np.ndarray:
    if op in _POSITIVE or op in ("DIV", "POW"):
        return rng.uniform(0.1, 2.5, shape).astype(np.float32)
    return rng.uniform(-2.5, 2.5, shape).astype(np.float32)


def _as(x: np.ndarray, dtype: str) -> np.ndarray:
    """``x`` (float) in ``dtype``: quantized for a quantized integer dtype, rounded for int32."""
    if dtype in _QUANT:
        scale, zp = _QUANT[dtype]
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale) + zp, info.min, info.max).astype(dtype)
    if dtype == "int32":
        return np.round(x * 10).astype(np.int32)
    return x.astype(dtype)


def one_op(op: str, dtype: str, seed: int = 0) -> Probe:
    """A model of the single operator ``op`` at ``dtype`` (``"int8->int16"`` for a ``CAST``)."""
    rng = np.random.default_rng(seed)
    w = ModelWriter()
    shape = (2, 8)

    def tensor(name: str, dt: str, shp: tuple[int, ...] = shape, data: np.ndarray | None = None,
               quantized: bool = True) -> int:
        ref = w.add_tensor(name, shp, np.dtype(dt), data=data)
        if quantized and dt in _QUANT:
            scale, zp = _QUANT[dt]
            w.tensors[ref.index].quantization = quantization([scale], [zp])
        return ref.index

    feeds: dict[str, np.ndarray] = {}
    ins: list[int] = []

    def feed(name: str, dt: str, x: np.ndarray, quantized: bool = True) -> int:
        i = tensor(name, dt, tuple(x.shape), quantized=quantized)
        feeds[name] = _as(x, dt) if quantized or dt not in _QUANT else np.round(x * 20).astype(dt)
        ins.append(i)
        return i

    code = OP_CODES[op]
    options: Any = None
    if op == "CAST":
        src, dst = dtype.split("->")
        # a CAST converts values, not quantized reals: its integer tensors carry no scale
        values = rng.uniform(size=shape) > 0.5 if src == "bool" else _values(rng, op, shape)
        x = feed("x", src, values, quantized=False)
        y = tensor("y", dst, quantized=False)
        w.add_op(code, [x], [y])
    elif op in _UNARY:
        x = feed("x", dtype, _values(rng, op, shape))
        y = tensor("y", dtype)
        if op == "GELU":
            options = schema.GeluOptionsT()
        w.add_op(code, [x], [y], options)
    elif op in ("DIV", "POW"):
        a = feed("a", dtype, _values(rng, op, shape))
        b = feed("b", dtype, _values(rng, op, shape))
        y = tensor("y", dtype)
        w.add_op(code, [a, b], [y], schema.DivOptionsT() if op == "DIV" else schema.PowOptionsT())
    elif op == "SELECT_V2":
        c = feed("c", "bool", rng.uniform(size=shape) > 0.5)
        a = feed("a", dtype, _values(rng, op, shape))
        b = feed("b", dtype, _values(rng, op, shape))
        y = tensor("y", dtype)
        w.add_op(code, [c, a, b], [y], schema.SelectV2OptionsT())
    elif op == "TILE":
        x = feed("x", dtype, _values(rng, op, shape))
        m = tensor("multiples", "int32", (2,), data=np.array([1, 3], np.int32))
        y = tensor("y", dtype, (2, 24))
        w.add_op(code, [x, m], [y], schema.TileOptionsT())
    elif op in ("UNIDIRECTIONAL_SEQUENCE_RNN", "BIDIRECTIONAL_SEQUENCE_RNN", "BIDIRECTIONAL_SEQUENCE_LSTM"):
        return _sequence(op, dtype, rng)
    else:
        raise ValueError(f"no one-op model for {op}")
    return Probe(op, dtype, w.finish(ins, [y]), feeds)


def _sequence(op: str, dtype: str, rng: np.random.Generator) -> Probe:
    """A float sequence op, batch 1, 3 steps, 4 features, 5 units: weights, biases and zero states."""
    if dtype != "float32":
        raise ValueError(f"the one-op {op} model is float32 only")
    w = ModelWriter()
    steps, feat, units = 3, 4, 5

    def const(name: str, shape: tuple[int, ...]) -> int:
        return w.add_const(name, rng.uniform(-0.5, 0.5, shape).astype(np.float32)).index

    def state(name: str) -> int:
        return w.add_tensor(name, (1, units), np.float32, variable=True).index

    x = w.add_tensor("x", (1, steps, feat), np.float32).index
    feeds = {"x": rng.uniform(-1, 1, (1, steps, feat)).astype(np.float32)}
    if op == "UNIDIRECTIONAL_SEQUENCE_RNN":
        ins = [x, const("w", (units, feat)), const("r", (units, units)), const("b", (units,)), state("h")]
        y = w.add_tensor("y", (1, steps, units), np.float32).index
        opts = schema.SequenceRNNOptionsT()
        opts.fusedActivationFunction = schema.ActivationFunctionType.TANH
        w.add_op(OP_CODES[op], ins, [y], opts)
        return Probe(op, dtype, w.finish([x], [y]), feeds)
    if op == "BIDIRECTIONAL_SEQUENCE_RNN":
        fw = [const("fw_w", (units, feat)), const("fw_r", (units, units)), const("fw_b", (units,)), state("fw_h")]
        bw = [const("bw_w", (units, feat)), const("bw_r", (units, units)), const("bw_b", (units,)), state("bw_h")]
        ins = [x, *fw, *bw, -1, -1, -1]
        y = w.add_tensor("y", (1, steps, 2 * units), np.float32).index
        bopts = schema.BidirectionalSequenceRNNOptionsT()
        bopts.fusedActivationFunction = schema.ActivationFunctionType.TANH
        bopts.mergeOutputs = True
        w.add_op(OP_CODES[op], ins, [y], bopts)
        return Probe(op, dtype, w.finish([x], [y]), feeds)
    # BIDIRECTIONAL_SEQUENCE_LSTM: 48 inputs (per direction 4 input and 4 recurrent weights, no peepholes,
    # 4 biases, no projection, then both states, aux input and aux weights absent)
    def direction(p: str) -> list[int]:
        wi = [const(f"{p}_wx{g}", (units, feat)) for g in "ifco"]
        wr = [const(f"{p}_wh{g}", (units, units)) for g in "ifco"]
        b = [const(f"{p}_b{g}", (units,)) for g in "ifco"]
        return [*wi, *wr, -1, -1, -1, *b, -1, -1]

    fw_d, bw_d = direction("fw"), direction("bw")
    ins = [x, *fw_d, *bw_d, state("fw_h"), state("fw_c"), state("bw_h"), state("bw_c"), -1, *([-1] * 8)]
    y = w.add_tensor("y", (1, steps, 2 * units), np.float32).index
    lopts = schema.BidirectionalSequenceLSTMOptionsT()
    lopts.fusedActivationFunction = schema.ActivationFunctionType.TANH
    lopts.mergeOutputs = True
    lopts.timeMajor = False  # the schema's default for this op is time-major
    w.add_op(OP_CODES[op], ins, [y], lopts)
    return Probe(op, dtype, w.finish([x], [y]), feeds)


def run(data: bytes, feeds: dict[str, np.ndarray], micro: bool) -> np.ndarray | str:
    """The model's output on TFLite Micro (``micro``) or LiteRT, or the runtime's refusal as a string."""
    from edge_lstm.errors import EdgeLstmError
    from edge_lstm.runners.litert import LiteRTRunner
    from edge_lstm.runners.tflm import TFLMRunner

    try:
        with (TFLMRunner(data) if micro else LiteRTRunner(data)) as r:
            return np.asarray(next(iter(r.infer(feeds).values())))
    except (EdgeLstmError, RuntimeError, ValueError) as e:
        return f"{type(e).__name__}: {e}"
