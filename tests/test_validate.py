"""Metrics and the tolerance rule."""

from __future__ import annotations

import numpy as np
import pytest

from edge_lstm.errors import ValidationFailed
from edge_lstm.spec import Precision, Tolerance
from edge_lstm.validate import ArtifactValidation, compare, forecast_task, raise_on_failures


def test_identical_outputs_pass_with_perfect_metrics() -> None:
    ref = np.linspace(-1, 1, 50, dtype=np.float32).reshape(5, 10)
    m = compare("y", ref, ref.copy(), Tolerance())
    assert m.passed and m.max_abs == 0 and m.cosine == pytest.approx(1.0) and m.psnr == float("inf")


def test_element_fails_only_when_over_both_tolerances() -> None:
    ref = np.array([1000.0, 0.001, 1.0])
    got = ref + np.array([1e-3, 2e-5, 0.0])  # 1e-3 abs on 1000 is within rtol; 2e-5 on 0.001 is over both
    m = compare("y", ref, got, Tolerance(atol=1e-5, rtol=1e-5 * 10))
    assert m.failing_elements == 1 and not m.passed
    assert "1/3 elements exceed" in m.reasons[0]


def test_nan_is_caught() -> None:
    ref = np.ones(4)
    got = np.array([1.0, np.nan, 1.0, np.inf])
    m = compare("y", ref, got, Tolerance(atol=1.0, rtol=1.0))
    assert m.non_finite == 2 and not m.passed


def test_aggregate_gates_for_quantized() -> None:
    rng = np.random.default_rng(0)
    ref = rng.standard_normal(1000)
    tol = Tolerance(elementwise=False, min_cosine=0.99, max_rel_l2=0.15, min_psnr=25)
    assert compare("y", ref, ref + 0.01 * rng.standard_normal(1000), tol).passed
    bad = compare("y", ref, ref + 0.5 * rng.standard_normal(1000), tol)
    assert not bad.passed and any("cosine" in r for r in bad.reasons)


def test_error_by_timestep() -> None:
    ref = np.zeros((2, 1, 4, 3))
    got = ref.copy()
    got[:, :, 3] = 0.5
    m = compare("y", ref, got, Tolerance(), time_axis=2)
    assert m.by_timestep == [0.0, 0.0, 0.0, 0.5]


def test_forecast_task_and_drop_gate() -> None:
    target = np.array([1.0, 2.0, 3.0])
    t = forecast_task(np.array([1.1, 2.1, 3.1]), np.array([1.2, 2.2, 3.2]), target)
    assert t.reference == pytest.approx(0.1) and t.artifact == pytest.approx(0.2) and t.drop == pytest.approx(1.0)
    v = ArtifactValidation("a.tflite", "litert", Tolerance(max_task_drop=0.03), [], 3, "x", task=t)
    with pytest.raises(ValidationFailed) as e:
        raise_on_failures([v])
    assert e.value.exit_code == 3 and "task mae" in e.value.table


def test_all_failures_in_one_table() -> None:
    ref = np.ones(3)
    tol = Tolerance()
    a = ArtifactValidation("a.onnx", "onnxruntime", tol, [compare("y", ref, ref + 1, tol)], 1, "x")
    b = ArtifactValidation("b.tflite", "litert", tol, [compare("h", ref, ref * 2, tol)], 1, "x")
    with pytest.raises(ValidationFailed) as e:
        raise_on_failures([a, b])
    assert "a.onnx | onnxruntime | y" in e.value.table and "b.tflite | litert | h" in e.value.table


def test_nan_in_the_reference_fails() -> None:
    m = compare("y", np.array([np.nan, 1.0]), np.array([0.0, 1.0]), Tolerance())
    assert not m.passed and "reference itself" in m.reasons[0] and m.failing_elements == 1


def test_failure_count_is_per_artifact_not_per_runtime() -> None:
    ref = np.ones(3)
    tol = Tolerance()
    runs = [ArtifactValidation("a.tflite", rt, tol, [compare("y", ref, ref + 1, tol)], 1, "x")
            for rt in ("litert", "tflm")]
    ok = ArtifactValidation("b.onnx", "onnxruntime", tol, [compare("y", ref, ref, tol)], 1, "x")
    with pytest.raises(ValidationFailed, match="1 of 2 artifact"):
        raise_on_failures([*runs, ok])


def test_fp16_tolerance_scales_with_the_output_magnitude() -> None:
    """An output in the tens, stored through float16 (11 significant bits): its error near zero is ~1e-2."""
    from edge_lstm.recipes import load_recipe

    rng = np.random.default_rng(0)
    ref = (rng.standard_normal((64, 256)) * 8.0).astype(np.float32)
    got = ref + np.float32(20.0 * 2.0 ** -11) * rng.uniform(-1, 1, ref.shape).astype(np.float32)
    plain = compare("y", ref, got, Tolerance(atol=1e-3, rtol=1e-3))
    assert not plain.passed and "elements exceed atol 0.001" in plain.reasons[0]
    tol = load_recipe().tolerances[Precision.FP16]
    assert tol.magnitude is not None
    scaled = compare("y", ref, got, tol)
    assert scaled.passed and scaled.atol == pytest.approx(tol.magnitude * np.abs(ref).max())
    # a real error still fails: a tenth of the peak off
    bad = got.copy()
    bad[0, 0] += 0.1 * np.abs(ref).max()
    worse = compare("y", ref, bad, tol)
    assert not worse.passed and "of the output's peak" in worse.reasons[0]
    # small outputs keep the plain atol
    assert Tolerance(atol=1e-3, magnitude=2e-3).atol_for(0.1) == 1e-3


def test_a_failed_full_int8_artifact_names_int16x8_and_others_do_not() -> None:
    ref = np.ones(3)
    tol = Tolerance()
    bad = ArtifactValidation("m.int8.tflite", "tflm", tol, [compare("y", ref, ref + 1, tol)], 1, "x")
    with pytest.raises(ValidationFailed) as e:
        raise_on_failures([bad], frozenset({"m.int8.tflite"}))
    assert "--precision int16x8" in e.value.advice and "--precision int16x8" in (e.value.hint or "")
    with pytest.raises(ValidationFailed) as e:
        raise_on_failures([bad], frozenset({"other.int8.tflite"}))
    assert e.value.advice == "" and "int16x8" not in (e.value.hint or "")
