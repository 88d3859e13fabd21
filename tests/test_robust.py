"""No crash, ever, and TFLite Micro honesty: real runtimes, real crashing and NaN-producing artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import flatbuffers
import numpy as np
import onnx
import pytest
import zoo
from ai_edge_litert import schema_py_generated as schema
from onnx import TensorProto, helper, numpy_helper

from edge_lstm import preflight, produce
from edge_lstm.artifact import Artifact
from edge_lstm.cli import main
from edge_lstm.errors import UnsupportedModel
from edge_lstm.lower.tflite import lower
from edge_lstm.pipeline import ExportOptions, export
from edge_lstm.recipes import load_recipe
from edge_lstm.spec import Precision


def _pack(model: object) -> bytes:
    b = flatbuffers.Builder(1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")  # type: ignore[attr-defined]
    return bytes(b.Output())


def crashing_tflite(good: bytes) -> bytes:
    """``good`` with its first fully-connected op reading tensor 2**26: TFLite Micro dies of SIGSEGV on it."""
    m = schema.ModelT.InitFromPackedBuf(good, 0)
    g = m.subgraphs[0]
    for op in g.operators:
        if m.operatorCodes[op.opcodeIndex].builtinCode == schema.BuiltinOperator.FULLY_CONNECTED:
            op.inputs = [op.inputs[0], 2**26, op.inputs[2]]
            return _pack(m)
    raise AssertionError("no FULLY_CONNECTED op")


@pytest.fixture(scope="module")
def forecaster(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[int, ...]]]:
    return zoo.save("multi_horizon", "torchscript", tmp_path_factory.mktemp("m"))


def _fused(path: Path, shapes: list[tuple[int, ...]]) -> bytes:
    from edge_lstm import capture
    from edge_lstm.load import load

    return lower(capture.to_onnx(load(path, shapes)), "fused").data


def test_a_runtime_that_dies_is_reported_not_fatal(forecaster: tuple[Path, list[tuple[int, ...]]]) -> None:
    bad = crashing_tflite(_fused(*forecaster))
    feed = {"x": np.zeros((1, 48, 1), np.float32)}
    got = preflight.check(bad, ".tflite", feed, ["tflm", "litert"])
    assert got["tflm"] == "killed by SIGSEGV (signal 11)"
    assert got["litert"] is not None and str(2**26) in got["litert"]  # LiteRT refuses it with its own message
    assert preflight.check(_fused(*forecaster), ".tflite", feed, ["tflm", "litert"]) == {"tflm": None, "litert": None}


def test_one_child_checks_many_artifacts_and_a_crash_is_pinned_on_its_own(
        forecaster: tuple[Path, list[tuple[int, ...]]]) -> None:
    good = _fused(*forecaster)
    feed = {"x": np.zeros((1, 48, 1), np.float32)}
    jobs = [preflight.Job(good, ".tflite", feed, ["litert", "tflm"]),
            preflight.Job(crashing_tflite(good), ".tflite", feed, ["tflm", "litert"]),
            preflight.Job(good, ".tflite", feed, ["tflm"])]
    first, bad, after = preflight.check_many(jobs)
    assert first == {"litert": None, "tflm": None}
    assert bad["tflm"] == "killed by SIGSEGV (signal 11)"  # dies alone too: blamed
    assert bad["litert"] is not None and str(2**26) in bad["litert"]  # checked after the crash, in a new child
    assert after == {"tflm": None}  # the pair after the crash ran in a fresh child


def test_children_run_every_window_side_by_side_and_return_what_this_process_computes(
        forecaster: tuple[Path, list[tuple[int, ...]]], tmp_path: Path) -> None:
    """Validation runs in the children (TFLite Micro's pairs in one, the others in another, side by side): each
    output stacked over the windows equals an in-process run of the same runtime bit for bit, and a crashing
    artifact among them is blamed alone, the others' outputs still handed back."""
    from edge_lstm import feeds
    from edge_lstm.device import make_runner

    good = _fused(*forecaster)
    rng = np.random.default_rng(0)
    samples = [{"x": rng.standard_normal((1, 48, 1)).astype(np.float32)} for _ in range(5)]
    jobs = [preflight.Job(good, ".tflite", samples[0], ["litert", "tflm"], samples),
            preflight.Job(crashing_tflite(good), ".tflite", samples[0], ["tflm"], samples),
            preflight.Job(good, ".tflite", samples[0], ["tflm"], samples)]
    warmed = []
    first, bad, after = preflight.run_many(jobs, meanwhile=lambda: warmed.append(1))
    assert warmed == [1]
    assert first.why == {"litert": None, "tflm": None} and after.why == {"tflm": None}
    assert bad.why["tflm"] == "killed by SIGSEGV (signal 11)" and not bad.outputs
    for rt in ("litert", "tflm"):
        (tmp_path / "model.tflite").write_bytes(good)
        here = feeds.run_all(make_runner(tmp_path / "model.tflite", rt), samples)
        assert set(first.outputs[rt]) == set(here)
        for name, got in first.outputs[rt].items():
            assert got.shape == (5, *here[name].shape[1:]) and np.array_equal(got, here[name])
    for name, got in after.outputs["tflm"].items():
        assert np.array_equal(got, first.outputs["tflm"][name])


def test_one_crashing_artifact_is_exit_5_and_loses_nothing_else(
        forecaster: tuple[Path, list[tuple[int, ...]]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, shapes = forecaster
    bad = crashing_tflite(_fused(path, shapes))
    real = produce.whole_window

    def with_a_crashing_one(*args, **kwargs):  # the real builder, plus one crafted file
        return [*real(*args, **kwargs), Artifact("multi_horizon.broken.tflite", "tflite", Precision.FP32,
                                                 "fused", False, bad)]

    monkeypatch.setattr(produce, "whole_window", with_a_crashing_one)
    recipe = load_recipe().with_overrides(formats=["onnx", "tflite"], lowering="fused")
    with pytest.raises(UnsupportedModel) as e:
        export(path, ExportOptions(output_dir=tmp_path / "out", recipe=recipe, input_shapes=tuple(shapes)))
    msg = e.value.message
    assert e.value.exit_code == 5 and "1 of 3 artifact(s) could not be built or run" in msg
    assert "multi_horizon.broken.tflite (tflite, fp32, fused lowering) crashed or failed on tflm: killed by SIGSEGV" \
        in msg
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    by_file = {a["file"]: a for a in rep["artifacts"]}
    assert by_file["multi_horizon.fp32.onnx"]["passed"] and by_file["multi_horizon.fp32.tflite"]["passed"]
    broken = by_file["multi_horizon.broken.tflite"]
    assert not broken["passed"] and {f["runtime"] for f in broken["failures"]} == {"litert", "tflm"}
    assert (tmp_path / "out" / "multi_horizon.fp32.tflite").is_file()


def _nan_tflite() -> bytes:
    """y = sqrt(x - 100) on N(0, 1) inputs: NaN everywhere, on every runtime (TFLite Micro saturates Inf, not NaN)."""
    graph = helper.make_graph(
        [helper.make_node("Sub", ["x", "hundred"], ["d"]), helper.make_node("Sqrt", ["d"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(np.full((1, 4), 100.0, np.float32), "hundred")])
    return lower(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), "fused").data


def _profile_json(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    code = main(["profile", *args, "--runs", "3", "--warmup", "1", "--json"])
    out = capsys.readouterr().out
    doc = json.loads(out[out.index("{"):]) if "{" in out else {}
    return code, doc.get("result", doc)  # a failure's error object carries the report it failed on


def test_tflm_nan_outputs_never_fit_a_microcontroller(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "nan.tflite"
    p.write_bytes(_nan_tflite())
    code, rep = _profile_json([str(p), "--runtime", "tflm", "--target", "nrf52840"], capsys)
    assert code == 3
    a = rep["artifacts"][0]
    assert a["outputs_check"]["non_finite"] == 4 * 8 and a["outputs_check"]["correct"] is False
    assert {c["budget"]: c["status"] for c in a["budget"]} == {"flash": "unverified", "ram": "not-measured"}
    assert "NaN/Inf" in a["budget"][1]["note"]


def test_tflm_refuses_hybrid_and_fp16_with_the_reason(forecaster: tuple[Path, list[tuple[int, ...]]], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from edge_lstm.quantize import quantize_tflite

    fused = _fused(*forecaster)
    for prec, why in ((Precision.DYNAMIC_INT8, "no hybrid kernels"), (Precision.FP16, "cannot dequantize float16")):
        p = tmp_path / f"m.{prec.value}.tflite"
        p.write_bytes(quantize_tflite(fused, prec).data)
        assert main(["profile", str(p), "--runtime", "tflm", "--target", "nrf52840"]) == 5
        assert why in capsys.readouterr().err


def test_tflm_against_a_reference_and_budgets_only_when_verified(
        forecaster: tuple[Path, list[tuple[int, ...]]], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, shapes = forecaster
    fp32 = tmp_path / "m.fp32.tflite"
    fp32.write_bytes(_fused(path, shapes))
    code, rep = _profile_json([str(fp32), "--runtime", "tflm", "--target", "nrf52840", "--reference", str(fp32)],
                              capsys)
    a = rep["artifacts"][0]
    assert code == 0 and a["outputs_check"]["reference"]["passed"] and a["arena_bytes"] > 1000
    assert {c["budget"]: c["status"] for c in a["budget"]} == {"flash": "ok", "ram": "ok"}
    code, rep = _profile_json([str(fp32), "--runtime", "litert", "--target", "nrf52840"], capsys)
    assert code == 0
    assert {c["budget"]: c["status"] for c in rep["artifacts"][0]["budget"]} == {
        "flash": "unverified", "ram": "not-measured", "runtime": "warn"}
    assert main(["profile", str(fp32), "--runtime", "litert", "--target", "nrf52840", "--runs", "2"]) == 0
    human = capsys.readouterr().out
    assert "not measured" in human and "unverified" in human


def test_export_for_a_microcontroller_measures_the_arena_on_tflm(
        forecaster: tuple[Path, list[tuple[int, ...]]], tmp_path: Path) -> None:
    path, shapes = forecaster
    recipe = load_recipe().with_overrides(formats=["onnx", "tflite"], precisions=["fp32", "dynamic-int8"])
    # the .onnx files and the hybrid .tflite cannot run on TFLite Micro: each says so in its notes and its runtime
    # row; the fp32 .tflite runs there, is measured on TFLite Micro and recommended, so the export passes
    res = export(path, ExportOptions(output_dir=tmp_path / "out", recipe=recipe, input_shapes=tuple(shapes),
                                     target="stm32h7"))
    report = res.report
    notes = {a["file"]: " ".join(a["notes"]) for a in report["artifacts"]}
    assert "not runnable on stm32h7: validated on litert only" in notes["multi_horizon.dynamic-int8.tflite"]
    assert "not runnable" not in notes["multi_horizon.fp32.tflite"]
    assert report["recommendation"]["file"] == "multi_horizon.fp32.tflite"
    prof = {a["artifact"]: a for a in report["profile"]["artifacts"]}
    tfl = prof["multi_horizon.fp32.tflite"]
    assert tfl["runtime"] == "tflm" and tfl["arena_bytes"] and tfl["outputs_check"]["validated_on_tflm"]
    assert {c["budget"]: c["status"] for c in tfl["budget"]} == {"flash": "ok", "ram": "ok"}
    ram = next(c for c in tfl["budget"] if c["budget"] == "ram")
    assert "in use" in ram["measure"] and "--firmware measures" in ram["note"]  # not the smallest working arena
    hybrid = prof["multi_horizon.dynamic-int8.tflite"]
    assert hybrid["runtime"] == "litert"
    assert {c["budget"]: c["status"] for c in hybrid["budget"]} == {"flash": "unverified", "ram": "not-measured",
                                                                    "runtime": "not-runnable"}
    html = (tmp_path / "out" / "report.html").read_text()
    assert "not measured / unverified" in html
    _ = onnx
