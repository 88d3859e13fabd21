"""The support matrix is measured: every claim in edge_lstm.lower.tflite.support holds on the real runtimes.

Each op test model (op_cases.py, and the recurrent kinds of tflite_models.py) is
lowered, quantized to full int8, and run on LiteRT and TFLite Micro; a model must
work exactly where the table says every ONNX op in it does. The TFLite Micro
kernel table (MICRO_MISSING, MICRO_KERNEL_TYPES, MICRO_CASTS) is held to the
installed TFLite Micro one builtin and type (or CAST type pair) at a time, with
the one-op models of micro_kernels.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from micro_kernels import one_op, run
from op_cases import CASES
from test_ops import _capture
from tflite_models import case

from edge_lstm.errors import EdgeLstmError
from edge_lstm.lower.tflite import lower
from edge_lstm.lower.tflite.support import (
    MICRO_CASTS,
    MICRO_KERNEL_TYPES,
    MICRO_MISSING,
    SUPPORT,
    markdown,
    micro_blockers,
    micro_kernel_blocker,
    rows,
    table,
)
from edge_lstm.quantize import quantize_tflite
from edge_lstm.runners.litert import LiteRTRunner
from edge_lstm.spec import Precision

tflm = pytest.importorskip("tflite_micro")


def _onnx_ops(proto, name: str = "") -> set[str]:  # type: ignore[no-untyped-def]
    """The ONNX ops the lowering sees: after shape subgraphs are folded and patterns (GELU, BatchNorm) fused."""
    from edge_lstm.lower.tflite.graph import prepare
    from edge_lstm.lower.tflite.ops_nn import fold_batchnorm

    if name in CASES and CASES[name].claims_as:
        return set(CASES[name].claims_as)
    graph = prepare(proto)
    fold_batchnorm(graph)
    return {n.op_type for n in graph.nodes if not n.op_type.startswith("Edge")} | (
        {"Gemm"} if any(n.op_type.startswith("Edge") for n in graph.nodes) else set())


def _works(data: bytes, samples: list[tuple[dict[str, np.ndarray], np.ndarray]], micro: bool, int8: bool) -> bool:
    """Runs, and close to PyTorch: float to 1e-4 of the output's scale, int8 with cosine >= 0.95 over the samples."""
    from edge_lstm.runners.tflm import TFLMRunner

    refs, gots = [], []
    try:
        with (TFLMRunner(data) if micro else LiteRTRunner(data)) as r:
            for feeds, ref in samples:
                r.reset_state()
                gots.append(np.asarray(next(iter(r.infer(feeds).values()))).reshape(ref.shape).ravel())
                refs.append(ref.ravel())
    except (EdgeLstmError, RuntimeError, ValueError):
        return False
    a, b = np.concatenate(refs).astype(np.float64), np.concatenate(gots).astype(np.float64)
    if int8:
        return bool(a @ b >= 0.95 * np.linalg.norm(a) * np.linalg.norm(b))
    return bool(np.abs(a - b).max() <= 1e-4 * (np.abs(a).max() + 1e-6))


def _int8(data: bytes, names: list[str], shapes: list[tuple[int, ...]]) -> bytes | None:
    rng = np.random.default_rng(0)
    calib = {n: rng.standard_normal((32, *s)).astype(np.float32) for n, s in zip(names, shapes, strict=True)}
    try:
        return quantize_tflite(data, Precision.INT8, calib).data
    except EdgeLstmError:
        return None


def _claims(ops: set[str]) -> dict[str, bool]:
    s = [SUPPORT[op] for op in ops]
    return {"int8": all(x.int8 for x in s), "micro": all(x.micro for x in s),
            "micro_int8": all(x.micro_int8 for x in s) and all(x.int8 for x in s)}


def _measure(proto, names, shapes, samples) -> dict[str, bool]:  # type: ignore[no-untyped-def]
    q8 = _int8(lower(proto, "auto", precision=Precision.INT8).data, names, shapes)
    q8_micro = _int8(lower(proto, "auto", micro=True, precision=Precision.INT8).data, names, shapes)
    # micro_blockers (what the pipeline asks before validating on TFLite Micro) agrees with TFLite Micro itself
    for data, int8 in ((lower(proto, "fused").data, False), (q8, True)):
        if data is not None:
            runs = _works(data, samples, micro=True, int8=int8) or not _works(data, samples, micro=False, int8=int8)
            assert (not micro_blockers(data)) == runs, micro_blockers(data)
    return {
        "int8": q8 is not None and _works(q8, samples, micro=False, int8=True),
        "micro": _works(lower(proto, "auto", micro=True).data, samples, micro=True, int8=False),
        "micro_int8": q8_micro is not None and _works(q8_micro, samples, micro=True, int8=True),
    }


def reference_samples(c, module, names, rng):  # type: ignore[no-untyped-def]
    """Four random feeds of case ``c`` and the module's outputs on each."""
    samples = []
    for _ in range(4):
        feeds = {n: rng.standard_normal(s).astype(np.float32) for n, s in zip(names, c.shapes, strict=True)}
        with torch.no_grad():
            samples.append((feeds, module(*[torch.from_numpy(feeds[n]) for n in names]).numpy()))
    return samples


@pytest.mark.parametrize("name", sorted(CASES))
def test_op_claims_hold(name: str) -> None:
    c = CASES[name]
    module, proto, names = _capture(c)
    samples = reference_samples(c, module, names, np.random.default_rng(1))
    assert _measure(proto, names, list(c.shapes), samples) == _claims(_onnx_ops(proto, name))


@pytest.mark.parametrize("name", ["stacked", "gru", "rnn", "proj_size", "bidirectional"])
def test_recurrent_claims_hold(name: str) -> None:
    c = case(name)
    samples = [(c.feeds(seed), c.reference(c.feeds(seed))["y"]) for seed in range(4)]
    names = c.model.inputs.names
    shapes = [t.concrete(1) for t in c.model.inputs.inputs]
    assert _measure(c.proto, names, shapes, samples) == _claims(_onnx_ops(c.proto))


def test_every_table_op_has_an_entry_and_the_matrix_lists_it() -> None:
    from edge_lstm.lower.tflite.ops import OP_TABLE

    assert set(table()) == {k for k in OP_TABLE if not k.startswith("Edge")}
    assert [r[0] for r in rows()] == sorted(table())
    assert markdown().count("\n") == len(table()) + 1


_SEQUENCE = {"UNIDIRECTIONAL_SEQUENCE_RNN", "BIDIRECTIONAL_SEQUENCE_RNN", "BIDIRECTIONAL_SEQUENCE_LSTM"}
_TYPES = ("float32", "int8", "int16", "int32")
_CAST_TYPES = ("float32", "int8", "int16", "int32", "int64", "uint8", "bool")
_KERNELS = sorted({(op, "float32") for op in MICRO_MISSING & _SEQUENCE}
                  | {(op, t) for op in (MICRO_MISSING - _SEQUENCE) | set(MICRO_KERNEL_TYPES) for t in _TYPES}
                  | {("CAST", f"{a}->{b}") for a in _CAST_TYPES for b in _CAST_TYPES if a != b})


@pytest.mark.parametrize(("op", "types"), _KERNELS, ids=[f"{o}-{t}" for o, t in _KERNELS])
def test_the_micro_kernel_table_agrees_with_tflite_micro(op: str, types: str) -> None:
    """A one-op model runs on TFLite Micro, with LiteRT's output (a quantum of it for integers), exactly when the
    table says TFLite Micro has that kernel; micro_blockers says the same of the file."""
    probe = one_op(op, types)
    src, dst = types.split("->") if "->" in types else (types, types)
    claimed = micro_kernel_blocker(op, [src], [dst]) is None
    got, ref = run(probe.data, probe.feeds, micro=True), run(probe.data, probe.feeds, micro=False)
    if claimed:
        assert not isinstance(got, str), f"the table says TFLite Micro runs {op} at {types}; it says {got}"
        assert not isinstance(ref, str), f"no LiteRT reference for {op} at {types}: {ref}"
        step = 1.0 / 4096 if dst == "int16" else 0.02 if dst == "int8" and op != "CAST" else 0.0
        np.testing.assert_allclose(got.astype(np.float64), ref.astype(np.float64), rtol=1e-5, atol=step + 1e-6)
    else:
        works = not isinstance(got, str) and not isinstance(ref, str) and got.shape == ref.shape and bool(
            np.allclose(got.astype(np.float64), ref.astype(np.float64), rtol=1e-5, atol=0.02))
        assert not works, f"TFLite Micro runs {op} at {types} (and matches LiteRT): the table says it cannot"
    assert (not micro_blockers(probe.data)) == claimed, micro_blockers(probe.data)


def test_micro_casts_name_only_types_tflite_has() -> None:
    """MICRO_CASTS pairs are of distinct types the probe covers, so the test above checks each of them."""
    assert MICRO_CASTS and all(a != b and {a, b} <= set(_CAST_TYPES) for a, b in MICRO_CASTS)
    assert micro_kernel_blocker("CAST", ["int8"], ["int16"]) is None  # the int16 cell's widening
    assert micro_kernel_blocker("CAST", ["int64"], ["float32"]) is not None
