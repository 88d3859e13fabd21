"""The dependency-free C, compiled with the host C compiler, against PyTorch: every architecture, both precisions."""

from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest

from edge_lstm.errors import UsageError
from edge_lstm.firmware.cgen import generate, quantize_per_channel
from edge_lstm.firmware.graph import build_program
from edge_lstm.firmware.hostc import HOST_FLAGS, HostModel, compile_shared, host_compiler

NAMES = ("demo", "stacked_lstm", "gru", "softmax_classifier", "multi_feature", "rnn_all_steps")


def run_host(case, precision: str) -> tuple[np.ndarray, np.ndarray, object]:
    prog = build_program(case.proto)
    code = generate(prog, precision, source=case.name)
    with HostModel(code.files, "model", prog.n_input, prog.window, prog.step_output_size,
                   prog.window_output_size) as m:
        flat = case.windows.reshape(len(case.windows), -1)
        return np.stack([m.window(w) for w in flat]), np.stack([m.stream(w) for w in flat]), prog


@pytest.mark.parametrize("precision", ["fp32", "int8-weights"])
@pytest.mark.parametrize("name", NAMES)
def test_host_c_matches_pytorch(name: str, precision: str, cases, int8_close) -> None:
    case = cases[name]
    window, stream, _ = run_host(case, precision)
    ref = case.reference()
    # streaming from a reset: a per-step output matches at every step, a last-step output at the last step
    streamed = stream.reshape(len(stream), -1) if case.all_steps else stream[:, -1, :]
    assert window.shape == ref.shape and streamed.shape == ref.shape
    if precision == "fp32":
        np.testing.assert_allclose(window, ref, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(streamed, ref, atol=1e-5, rtol=1e-5)
    else:
        int8_close(window, ref)
        int8_close(streamed, ref)
        assert not np.array_equal(window, run_host(case, "fp32")[0])  # really a different precision
    if name == "softmax_classifier":
        np.testing.assert_allclose(window.sum(axis=1), 1.0, atol=1e-5)
        assert (window.argmax(axis=1) == ref.argmax(axis=1)).all()


def test_demo_program_and_figures(demo) -> None:
    prog = build_program(demo.proto)
    assert prog.window == 96 and prog.n_input == 1 and prog.time_axis == 1
    assert [op.kind for op in prog.ops] == ["lstm", "lstm", "dense"]
    assert [op.phase for op in prog.ops] == ["seq", "seq", "post"]  # the head runs after the last step only
    assert prog.weight_count == sum(p.numel() for p in demo.module.parameters()) - 2 * 4 * 64  # biases b_ih+b_hh merged
    f32, i8 = generate(prog, "fp32"), generate(prog, "int8-weights")
    assert i8.weight_bytes <= 0.30 * f32.weight_bytes


def test_generated_c_is_strict_c99_static_and_deterministic(demo, tmp_path) -> None:
    prog = build_program(demo.proto)
    code = generate(prog, "int8-weights", prefix="temp_model", source="demo.onnx")
    assert code.source == generate(prog, "int8-weights", prefix="temp_model", source="demo.onnx").source
    assert not re.search(r"\b(malloc|calloc|realloc|free)\s*\(", code.source)
    assert "void temp_model_step(const float *x, float *y);" in code.header
    assert "#define TEMP_MODEL_WINDOW 96" in code.header and '#include "temp_model.int8-weights.h"' in code.source
    assert list(code.files) == ["temp_model.int8-weights.h", "temp_model.int8-weights.c"]
    for name, text in code.files.items():
        (tmp_path / name).write_text(text)
    proc = subprocess.run([host_compiler(), "-std=c99", "-pedantic-errors", "-Wall", "-Wextra", "-Werror", "-c",
                           code.source_name], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_header_carries_normalisation(demo) -> None:
    code = generate(build_program(demo.proto), "fp32", normalization={"mean": [52.5], "std": [6.25]})
    assert "#define MODEL_INPUT_MEAN {52.5f}" in code.header and "#define MODEL_INPUT_STD {6.25f}" in code.header


def test_per_channel_quantization_round_trips() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((40, 12)).astype(np.float32) * np.linspace(0.01, 3, 12, dtype=np.float32)
    w[:, 3] = 0.0
    q, s = quantize_per_channel(w)
    assert q.dtype == np.int8 and s.shape == (12,) and np.abs(q).max() == 127
    assert np.all(np.abs(q * s - w) <= s / 2 + 1e-7)  # at most half a step per channel
    assert not q[:, 3].any()


@pytest.mark.parametrize(("prefix", "ok"), [("model", True), ("_m2", True), ("2bad", False), ("a-b", False),
                                            ("x" * 40, False)])
def test_prefix_must_be_a_c_identifier(demo, prefix: str, ok: bool) -> None:
    prog = build_program(demo.proto)
    if ok:
        assert f"void {prefix}_reset(void);" in generate(prog, "fp32", prefix=prefix).header
    else:
        with pytest.raises(UsageError, match="C identifier"):
            generate(prog, "fp32", prefix=prefix)


def test_compiler_errors_are_reported(tmp_path) -> None:
    with pytest.raises(UsageError, match="host C compiler failed"):
        compile_shared({"bad.c": "int f(void) { return }\n"}, tmp_path, HOST_FLAGS)
