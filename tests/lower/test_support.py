"""The support matrix is measured: every claim in edge_lstm.lower.tflite.support holds on the real runtimes.

Each op test model (op_cases.py, and the recurrent kinds of tflite_models.py) is
lowered, quantized to full int8, and run on LiteRT and TFLite Micro; a model must
work exactly where the table says every ONNX op in it does.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from op_cases import CASES
from test_ops import _capture
from tflite_models import case

from edge_lstm.errors import EdgeLstmError
from edge_lstm.lower.tflite import lower
from edge_lstm.lower.tflite.support import SUPPORT, markdown, micro_blockers, rows, table
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
