"""--format ort: ONNX Runtime Mobile's .ort flatbuffer, converted from the ONNX artifact and validated on ONNX
Runtime, which loads .ort files directly.

ONNX Runtime's serializer does not write the same bytes twice (it orders its tables differently from one
session to the next, even with graph optimisations off), so what is tested as deterministic is what the file
computes: two conversions give bit-identical outputs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime.tools.convert_onnx_models_to_ort",
                    reason="onnxruntime's ORT converter is not installed (pip install 'edge-lstm[ort]')")

from models import WINDOW, write

from edge_lstm import archs, load, sources
from edge_lstm.cli import main
from edge_lstm.errors import OptionsError
from edge_lstm.export_ort import to_ort
from edge_lstm.pipeline import ExportOptions, export
from edge_lstm.recipes import load_recipe
from edge_lstm.runners.onnxrt import OnnxRuntimeRunner


@pytest.fixture(scope="module")
def reference_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference forecaster's shape: LSTM(1->64, 2 layers) + Linear(64->1), window 96."""
    torch.manual_seed(0)
    cfg = archs.ArchConfig(hidden=64, layers=2)
    path = tmp_path_factory.mktemp("ref") / "reference.pt"
    load.save_checkpoint(path, archs.build("forecaster", cfg).eval(), "forecaster", cfg, 96,
                         {"mean": [0.0], "std": [1.0]}, "forecast")
    return path


def test_conversion_computes_what_the_onnx_does(reference_ckpt: Path) -> None:
    proto = sources.graph_of(load.load(reference_ckpt))
    onnx_bytes = proto.SerializeToString()
    first, second = to_ort(onnx_bytes), to_ort(onnx_bytes)
    assert first[4:8] == second[4:8] == b"ORTM"
    x = np.random.default_rng(0).standard_normal((1, 96, 1)).astype(np.float32)
    with OnnxRuntimeRunner(first) as a, OnnxRuntimeRunner(second) as b, OnnxRuntimeRunner(onnx_bytes) as o:
        ya, yb, yo = a.infer({"x": x})["y"], b.infer({"x": x})["y"], o.infer({"x": x})["y"]
    assert np.array_equal(ya, yb)  # the bytes may differ between conversions; the arithmetic does not
    np.testing.assert_allclose(ya, yo, atol=1e-6)


def test_reference_forecaster_validates_at_every_onnx_precision(reference_ckpt: Path, tmp_path: Path) -> None:
    recipe = load_recipe().with_overrides(formats=["ort"], precisions=["fp32", "dynamic-int8"])
    result = export(reference_ckpt, ExportOptions(output_dir=tmp_path / "out", recipe=recipe, profile=True))
    assert result.passed
    assert [a.filename for a in result.artifacts] == [f"reference.{p}.ort" for p in ("fp32", "dynamic-int8")]
    for art in result.artifacts:
        assert [v.runtime for v in art.validations] == ["onnxruntime"] and art.validations[0].passed
        assert "converted from the" in art.notes[-1] and (tmp_path / "out" / art.filename).is_file()
    rows = result.report["profile"]["artifacts"]
    assert [r["format"] for r in rows] == ["ort"] * 2 and all(r["latency_s"]["p50"] > 0 for r in rows)


def test_fp16_ort_is_refused_with_the_reason(forecaster_ckpt: Path, tmp_path: Path) -> None:
    """The converter folds an fp16 ONNX file's weight Casts into float32 weights: an "fp16" .ort would be float32."""
    recipe = load_recipe().with_overrides(formats=["ort"], precisions=["fp16"])
    with pytest.raises(OptionsError, match="float16 weights' Casts into float32"):
        export(forecaster_ckpt, ExportOptions(output_dir=tmp_path / "out", recipe=recipe))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["gru", "state_io"])
def test_other_models_validate_whole_window_and_streaming(kind: str, tmp_path: Path) -> None:
    ckpt, _ = write(kind, "checkpoint", tmp_path)
    recipe = load_recipe().with_overrides(formats=["ort"], precisions=["fp32", "dynamic-int8"])
    result = export(ckpt, ExportOptions(output_dir=tmp_path / "out", recipe=recipe, streaming=True))
    assert result.passed and len(result.artifacts) == 4
    assert {a.streaming for a in result.artifacts} == {False, True}
    assert all(a.validations and a.validations[0].passed for a in result.artifacts)
    stream = next(a for a in result.artifacts if a.streaming)
    assert stream.filename == f"{kind}.stream.fp32.ort" and stream.validations[0].outputs[0].elements >= WINDOW


def test_cli_export_and_missing_converter(forecaster_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    rc = main(["export", str(forecaster_ckpt), "-o", str(tmp_path / "a"), "--format", "ort", "--precision", "fp32",
               "--json"])
    rep = json.loads(capsys.readouterr().out)
    assert rc == 0 and [a["file"] for a in rep["artifacts"]] == ["stacked.fp32.ort"]
    rc = main(["info", str(tmp_path / "a" / "stacked.fp32.ort"), "--json"])
    described = json.loads(capsys.readouterr().out)
    assert rc == 0 and described["format"] == "ort" and described["ops"]["LSTM"] >= 1
    rc = main(["export", str(forecaster_ckpt), "-o", str(tmp_path / "b"), "--format", "ort", "--precision", "int8",
               "--json"])
    err = json.loads(capsys.readouterr().out)["error"]
    assert rc == 2 and err["kind"] == "options" and "full-integer" in err["message"]
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    rc = main(["export", str(forecaster_ckpt), "-o", str(tmp_path / "c"), "--format", "ort", "--json"])
    err = json.loads(capsys.readouterr().out)["error"]
    assert rc == 2 and err["kind"] == "missing-runtime" and "edge-lstm[ort]" in err["hint"]


def test_profile_takes_ort_by_content_and_refuses_broken_files(forecaster_ckpt: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """An .ort renamed .onnx still runs (ONNX Runtime is told the format); a truncated one, or a runtime that does
    not run the format, is exit 2 with the reason, never an internal error."""
    data = to_ort(sources.graph_of(load.load(forecaster_ckpt)).SerializeToString())
    (tmp_path / "renamed.onnx").write_bytes(data)
    (tmp_path / "cut.ort").write_bytes(data[: len(data) // 2])
    (tmp_path / "m.ort").write_bytes(data)
    rc = main(["profile", str(tmp_path / "renamed.onnx"), "--runs", "2", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["artifacts"][0]["format"] == "ort" and out["artifacts"][0]["per_sample_basis"].endswith(
        f"/ {WINDOW} time steps (amortised)")
    assert out["artifacts"][0]["size"]["weights_bytes"] is None  # not split for this format, and not pretended
    rc = main(["profile", str(tmp_path / "cut.ort"), "--json"])
    err = json.loads(capsys.readouterr().out)["error"]
    assert rc == 2 and err["code"] == 2 and "cannot load it" in err["message"]
    rc = main(["profile", str(tmp_path / "m.ort"), "--runtime", "litert", "--json"])
    err = json.loads(capsys.readouterr().out)["error"]
    assert rc == 2 and "--runtime litert runs tflite files only" in err["message"] and "onnxruntime" in err["hint"]


def test_a_precision_one_format_cannot_hold_is_reported_not_built(forecaster_ckpt: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """fp16 is asked for two formats and ort cannot hold it: onnx's is built, ort's is listed with the reason."""
    rc = main(["export", str(forecaster_ckpt), "-o", str(tmp_path / "o"), "--format", "onnx", "--format", "ort",
               "--precision", "fp32", "--precision", "fp16"])
    shown = capsys.readouterr().out
    assert rc == 0 and "Not built: ort fp16" in " ".join(shown.split())
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert [(n["format"], n["precision"]) for n in report["not_built"]] == [("ort", "fp16")]
    assert "float16 weights' Casts" in report["not_built"][0]["why"]
    assert {a["file"].split(".", 1)[1] for a in report["artifacts"]} == {"fp32.onnx", "fp16.onnx", "fp32.ort"}
    assert "## Not built" in (tmp_path / "o" / "report.md").read_text()
