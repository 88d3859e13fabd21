"""``edge-lstm info`` on exported .tflite files: the lowering form read from the ops, the state map of streaming
artifacts, and a parameter count that says what it counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_lstm.cli import main


@pytest.fixture(scope="module")
def exported(forecaster_ckpt: Path, temps_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The stacked test forecaster exported fused and as a loop, fp32 and dynamic int8, window and streaming."""
    out = {}
    for lowering in ("fused", "loop"):
        d = tmp_path_factory.mktemp(lowering) / "out"
        assert main(["export", str(forecaster_ckpt), "-o", str(d), "--format", "tflite", "--lowering", lowering,
                     "--precision", "fp32", "--precision", "dynamic-int8", "--streaming", "--data",
                     str(temps_csv)]) == 0
        report = json.loads((d / "report.json").read_text())
        out.update({f"{lowering}/{a['file'].split('.', 1)[1]}": d / a["file"] for a in report["artifacts"]})
    return out


def _info(path: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    capsys.readouterr()
    assert main(["info", str(path), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_info_names_the_lowering_form_and_labels_the_parameter_count(exported: dict[str, Path],
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    forms = {key: _info(p, capsys) for key, p in exported.items()}
    assert forms["fused/fp32.tflite"]["lowering"] == "fused"
    assert forms["loop/fp32.tflite"]["lowering"] == "loop"
    assert forms["loop/dynamic-int8.tflite"]["lowering"] == "wavefront"  # a stacked pair in int8: one cell
    assert forms["loop/stream.fp32.tflite"]["lowering"] == "one-step"
    counts = {k: v["parameters"] for k, v in forms.items()}
    assert counts["loop/dynamic-int8.tflite"] > counts["fused/fp32.tflite"]  # zero blocks stored: said so
    assert all("zero blocks" in v["parameters_counted"] for v in forms.values())
    assert main(["info", str(exported["loop/dynamic-int8.tflite"])]) == 0
    text = capsys.readouterr().out
    assert "wavefront lowering" in text and "stored weight values, as this lowering lays them out" in text


def test_info_shows_the_state_map_of_streaming_artifacts(exported: dict[str, Path],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    io = _info(exported["loop/stream.fp32.tflite"], capsys)["state"]
    assert io["storage"] == "io" and [t["input"] for t in io["tensors"]][:2] == ["h0_0", "c0_0"]
    assert [t["output"] for t in io["tensors"]][:2] == ["h_0", "c_0"]
    variable = _info(exported["fused/stream.fp32.tflite"], capsys)["state"]
    assert variable["storage"] == "variable" and {t["kind"] for t in variable["tensors"]} == {"h", "c"}
    assert "reset_all_variables" in variable["reset"]
    assert main(["info", str(exported["loop/stream.fp32.tflite"])]) == 0
    assert "state (io): layer 0 h: h0_0 -> h_0" in capsys.readouterr().out
