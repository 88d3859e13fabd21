"""ONNX made elsewhere is an export input: PyTorch's dynamo exporter, an opset-13 file; `info` on artifacts."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import zoo

from edge_lstm.cli import main
from edge_lstm.errors import InputFileError, ShapeError
from edge_lstm.pipeline import ExportOptions, export
from edge_lstm.recipes import load_recipe
from edge_lstm.sources import OnnxModel, load_onnx


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The zoo's multi-horizon forecaster written by torch's dynamo exporter and by the opset-13 exporter."""
    d = tmp_path_factory.mktemp("onnx-src")
    module, args = zoo.build("multi_horizon"), zoo.ZOO["multi_horizon"].example()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, dynamo=True, verbose=False).save(str(d / "dynamo.onnx"))
        torch.onnx.export(module, args, str(d / "op13.onnx"), opset_version=13, dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
        torch.onnx.export(module, args, str(d / "seqdyn.onnx"), opset_version=17, dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "batch", 1: "seq"}, "y": {0: "batch"}})
    return {p.stem: p for p in d.glob("*.onnx")}


@pytest.mark.parametrize("kind", ["dynamo", "op13"])
def test_foreign_onnx_exports_at_every_precision_and_streams(kind: str, onnx_files: dict[str, Path],
                                                             tmp_path: Path) -> None:
    src = onnx_files[kind]
    recipe = load_recipe().with_overrides(formats=["onnx", "tflite"],
                                          precisions=["fp32", "fp16", "dynamic-int8", "int8"])
    res = export(src, ExportOptions(output_dir=tmp_path / "out", recipe=recipe, streaming=True, calib="random"))
    assert isinstance(res.model, OnnxModel) and res.passed, [a.describe_failure() for a in res.artifacts]
    files = {a.filename for a in res.artifacts}
    assert {f"{kind}.{p}.tflite" for p in ("fp32", "fp16", "dynamic-int8", "int8")} <= files
    assert {f"{kind}.stream.{p}.tflite" for p in ("fp32", "fp16", "dynamic-int8", "int8")} <= files
    runtimes = {(a.filename, v.runtime) for a in res.artifacts for v in a.validations}
    assert (f"{kind}.stream.fp32.tflite", "tflm") in runtimes and (f"{kind}.fp32.onnx", "onnxruntime") in runtimes
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert rep["model"]["format"] == "onnx" and rep["model"]["opset"] == (20 if kind == "dynamo" else 13)
    assert any("opset" in n for n in rep["model"]["notes"])
    converted = onnx.load(str(tmp_path / "out" / f"{kind}.fp32.onnx"))
    assert converted.opset_import[0].version == 17


def test_a_dynamic_window_needs_input_shape(onnx_files: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ShapeError, match="dynamic axis 'seq' at axis 1") as e:
        load_onnx(onnx_files["seqdyn"])
    assert "--input-shape" in (e.value.hint or "")
    model = load_onnx(onnx_files["seqdyn"], [(1, 48, 1)])
    assert model.inputs.inputs[0].shape == ("batch", 48, 1)
    res = export(onnx_files["seqdyn"], ExportOptions(output_dir=tmp_path / "o", recipe=load_recipe().with_overrides(
        formats=["tflite"]), input_shapes=((1, 48, 1),)))
    assert res.passed


def test_reference_is_the_source_file_on_onnx_runtime(onnx_files: dict[str, Path], tmp_path: Path) -> None:
    res = export(onnx_files["op13"], ExportOptions(output_dir=tmp_path / "out"))
    v = res.artifacts[0].validations[0]
    assert v.runtime == "onnxruntime" and v.outputs[0].max_abs == 0.0  # the converted file computes the same


def test_onnx_with_a_wrong_feature_size_is_exit_2_naming_what_it_expects(onnx_files: dict[str, Path],
                                                                         tmp_path: Path) -> None:
    with pytest.raises(ShapeError) as e:
        export(onnx_files["seqdyn"], ExportOptions(output_dir=tmp_path / "o", input_shapes=((1, 48, 7),)))
    assert "has size 1 at axis 2" in e.value.message and "--input-shape gives 7" in e.value.message


def test_external_data_outside_the_model_directory_is_refused(onnx_files: dict[str, Path], tmp_path: Path) -> None:
    proto = onnx.load(str(onnx_files["op13"]))
    onnx.save(proto, str(tmp_path / "ext.onnx"), save_as_external_data=True, location="ext.onnx.data",
              size_threshold=0)
    assert load_onnx(tmp_path / "ext.onnx").proto.graph.initializer[0].raw_data
    bad = onnx.load(str(tmp_path / "ext.onnx"), load_external_data=False)
    for t in bad.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../outside.data"
    (tmp_path / "bad.onnx").write_bytes(bad.SerializeToString())
    with pytest.raises(InputFileError, match="outside the model's directory"):
        load_onnx(tmp_path / "bad.onnx")
    for command in ("info", "profile"):  # every command that opens the file refuses it the same way
        assert main([command, str(tmp_path / "bad.onnx"), "--json"]) == 2


@pytest.fixture(scope="module")
def exported(onnx_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("exported") / "out"
    recipe = load_recipe().with_overrides(formats=["onnx", "tflite"], precisions=["fp32", "int8"], lowering="fused")
    export(onnx_files["op13"], ExportOptions(output_dir=out, recipe=recipe, streaming=True, calib="random"))
    return out


@pytest.mark.parametrize("name", ["fp32.tflite", "int8.tflite", "stream.fp32.onnx", "fp32.onnx"])
def test_info_reads_onnx_and_tflite_artifacts(name: str, exported: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = exported
    assert main(["info", str(out / f"op13.{name}"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parameters"] > 30_000 and info["size"]["file_bytes"] == (out / f"op13.{name}").stat().st_size
    assert info["inputs"][0]["name"] == "x" and info["outputs"][0]["name"] == "y" and info["ops"]
    assert info["precision"] == name.split(".")[-2]
    if name.endswith(".tflite"):
        assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in info["ops"]
    if name.startswith("stream"):
        assert [s["input"] for s in info["streaming"]["states"]] == ["h0_0", "c0_0", "h0_1", "c0_1"]
    assert main(["info", str(out / f"op13.{name}")]) == 0
    human = capsys.readouterr().out
    assert "parameters:" in human and "ops:" in human and "inputs:" in human


def test_info_and_export_refuse_the_same_wrong_feature_size(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = zoo.save("multi_horizon", "torchscript", tmp_path)
    for cmd in (["info", str(path)], ["export", str(path), "-o", str(tmp_path / "o")]):
        assert main([*cmd, "--input-shape", "1x48x7"]) == 2
        err = capsys.readouterr().err
        assert "takes 1 feature(s) per time step, the input gives 7" in err and "--input-shape 1x48x1" in err
        assert "ONNXRuntimeError" not in err
    assert not (tmp_path / "o").exists()
    np.testing.assert_equal(main(["info", str(path), "--input-shape", "1x48x1"]), 0)
