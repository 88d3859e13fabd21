"""End-to-end export through the Python API: artifacts, reports, atomic outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from models import write

from edge_lstm.errors import DataError, OutputExistsError, UsageError, ValidationFailed
from edge_lstm.pipeline import ExportOptions, export
from edge_lstm.recipes import load_recipe


def test_export_onnx_with_real_data(forecaster_ckpt: Path, temps_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = export(forecaster_ckpt, ExportOptions(output_dir=out, data=temps_csv, streaming=True))
    assert res.passed
    names = sorted(p.name for p in out.iterdir() if p.name != ".edge-lstm-output.json")
    assert names == ["report.html", "report.json", "report.md", "stacked.fp32.onnx", "stacked.stream.fp32.onnx"]
    marker = json.loads((out / ".edge-lstm-output.json").read_text())  # what --force may replace later
    assert marker["tool"] == "edge-lstm" and marker["files"] == names
    rep = json.loads((out / "report.json").read_text())
    assert rep["tool"]["name"] == "edge-lstm" and rep["passed"]
    assert rep["validation_data"]["source"] == str(temps_csv) and rep["validation_data"]["labelled"]
    art = rep["artifacts"][0]
    assert art["size_bytes"] == (out / "stacked.fp32.onnx").stat().st_size and len(art["sha256"]) == 64
    v = art["validation"][0]
    assert v["runtime"] == "onnxruntime" and v["samples"] == 128 and v["task"]["metric"] == "mae"
    for key in ("max_abs", "mean_abs", "p99_abs", "max_rel", "rmse", "rel_l2", "cosine", "psnr", "non_finite"):
        assert key in v["outputs"][0]
    assert rep["model"]["macs_per_inference"] > 0
    assert "| stacked.fp32.onnx |" in (out / "report.md").read_text()


def test_existing_output_needs_force(forecaster_ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    export(forecaster_ckpt, ExportOptions(output_dir=out))
    first = (out / "report.json").stat().st_ino
    with pytest.raises(OutputExistsError):
        export(forecaster_ckpt, ExportOptions(output_dir=out))
    assert (out / "report.json").stat().st_ino == first
    export(forecaster_ckpt, ExportOptions(output_dir=out, force=True))
    assert (out / "report.json").stat().st_ino != first  # a new file, published by rename


def test_force_never_replaces_other_files(forecaster_ckpt: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    mine = tmp_path / "project"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="not an edge-lstm export"):
        export(forecaster_ckpt, ExportOptions(output_dir=mine, force=True))
    assert (mine / "keep.txt").read_text() == "mine"
    monkeypatch.chdir(mine)
    with pytest.raises(UsageError, match="current, home or root"):
        export(forecaster_ckpt, ExportOptions(output_dir=Path("."), force=True))
    assert (mine / "keep.txt").read_text() == "mine"


def test_failed_run_leaves_nothing(forecaster_ckpt: Path, tmp_path: Path) -> None:
    bad = tmp_path / "nan.csv"
    bad.write_text("temp\n" + "\n".join(["1.0"] * 30 + ["nan"]) + "\n")
    with pytest.raises(DataError):
        export(forecaster_ckpt, ExportOptions(output_dir=tmp_path / "out", data=bad))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.csv"]  # no output, no staging directory


def test_tolerance_failure_is_reported_and_exit_3(forecaster_ckpt: Path, tmp_path: Path) -> None:
    strict = tmp_path / "strict.toml"
    strict.write_text('inherit = "default"\nname = "strict"\n[tolerance.fp32]\natol = 0.0\nrtol = 0.0\n')
    out = tmp_path / "out"
    with pytest.raises(ValidationFailed) as e:
        export(forecaster_ckpt, ExportOptions(output_dir=out, recipe=load_recipe(strict)))
    assert e.value.exit_code == 3 and "stacked.fp32.onnx | onnxruntime | y" in e.value.table
    rep = json.loads((out / "report.json").read_text())
    assert rep["passed"] is False  # the evidence is kept for the user to read


def test_unwritable_output(forecaster_ckpt: Path) -> None:
    with pytest.raises(UsageError, match="Cannot write"):
        export(forecaster_ckpt, ExportOptions(output_dir=Path("/proc/edge-lstm-out")))


@pytest.mark.parametrize("kind", ["state_io", "gru_state_io_seq_first", "all_steps", "proj_size"])
def test_other_kinds_end_to_end(kind: str, tmp_path: Path) -> None:
    path, _ = write(kind, "checkpoint", tmp_path)
    res = export(path, ExportOptions(output_dir=tmp_path / "out", streaming=True))
    assert res.passed and len(res.artifacts) == 2


def test_export_profile_into_report_and_html(forecaster_ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = export(forecaster_ckpt, ExportOptions(output_dir=out, profile=True, streaming=True))
    prof = res.report["profile"]
    assert [a["artifact"] for a in prof["artifacts"]] == ["stacked.fp32.onnx", "stacked.stream.fp32.onnx"]
    for a in prof["artifacts"]:
        assert a["path"] == str(out / a["artifact"])  # the published file, not the staging copy
        assert a["latency_s"]["runs"] == 100 and 0 < a["latency_s"]["p50"] <= a["latency_s"]["p99"]
        assert len(a["latencies_s"]) == 100 and a["memory"]["method"]
    assert "## Profile (measured on this host)" in (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "stacked.fp32.onnx" in html and "<script" not in html


def test_export_over_a_device_budget_is_exit_4(forecaster_ckpt: Path, tmp_path: Path) -> None:
    from edge_lstm.errors import BudgetExceeded
    from edge_lstm.resources import data_dir

    tiny = tmp_path / "tiny.toml"
    text = (data_dir("targets") / "nrf52840.toml").read_text()
    tiny.write_text(text.replace("flash_budget_bytes = 655_360", "flash_budget_bytes = 10_000"))
    out = tmp_path / "out"
    with pytest.raises(BudgetExceeded, match="flash") as e:
        export(forecaster_ckpt, ExportOptions(output_dir=out, target=str(tiny)))
    assert e.value.exit_code == 4
    rep = json.loads((out / "report.json").read_text())
    assert rep["profile"]["target"]["name"] == "nrf52840"


@pytest.mark.parametrize("form", ["torchscript", "pt2", "pickle"])
@pytest.mark.parametrize("kind", ["seq_first", "all_steps", "gru_state_io_seq_first"])
def test_every_form_exports_through_the_pipeline(kind: str, form: str, tmp_path: Path) -> None:
    from models import KINDS

    from edge_lstm import archs

    path, shapes = write(kind, form, tmp_path)
    opts = ExportOptions(output_dir=tmp_path / "out", input_shapes=tuple(shapes) if form != "pt2" else (),
                         trust_pickle=True)
    res = export(path, opts)
    assert res.passed
    if KINDS[kind].all_steps:
        assert res.report["artifacts"][0]["validation"][0]["outputs"][0]["by_timestep"] is not None
    assert archs.input_shapes(KINDS[kind], 12)[0] == tuple(res.model.inputs.inputs[0].concrete(1))


def test_streaming_state_io_model_on_tflite(tmp_path: Path) -> None:
    path, _ = write("state_io", "checkpoint", tmp_path)
    recipe = load_recipe().with_overrides(formats=["tflite"])
    res = export(path, ExportOptions(output_dir=tmp_path / "out", recipe=recipe, streaming=True))
    stream = next(a for a in res.artifacts if a.streaming)
    assert res.passed and stream.lowering == "loop" and any("state as input" in n for n in stream.notes)


def test_streaming_pt2_streams_like_a_checkpoint(tmp_path: Path) -> None:
    # issue 9 item 6: a torch.export program used to be refused ("fixed to the window length"); the one-step
    # model is now derived from the captured graph, so .pt2 files stream and are proven step by step
    path, _ = write("state_io", "pt2", tmp_path)
    res = export(path, ExportOptions(output_dir=tmp_path / "out", streaming=True))
    stream = next(a for a in res.artifacts if a.streaming)
    assert res.passed and stream.validations and all(v.passed for v in stream.validations)


def test_export_options_take_keywords_only(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        ExportOptions(tmp_path / "out")  # type: ignore[misc]
    opts = ExportOptions(output_dir=tmp_path / "out", streaming=True)
    assert opts.streaming and opts.recipe.name == load_recipe().name and not opts.force


def test_labelled_data_without_a_task_says_why_there_is_no_task_metric(tmp_path: Path) -> None:
    """A .pt2 carries no task: real data with actual values is still used, and report.md says why no MAE."""
    path, _ = write("stacked", "pt2", tmp_path)
    rows = "\n".join(f"{(i * 7) % 11 / 10:.2f}" for i in range(60))
    (tmp_path / "data.csv").write_text("temp\n" + rows + "\n")
    recipe = load_recipe().with_overrides(formats=["onnx"], precisions=["fp32"])
    res = export(path, ExportOptions(output_dir=tmp_path / "o", recipe=recipe, data=tmp_path / "data.csv"))
    assert res.report["validation_data"]["labelled"] and res.report["accuracy"] is None
    assert "No task metric" in (tmp_path / "o" / "report.md").read_text()
