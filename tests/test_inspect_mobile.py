"""``edge-lstm info`` on ``.pte`` and ``.ort`` files: read from the bytes, checked against the runtimes' own loaders."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from edge_lstm import archs, load, sources
from edge_lstm.cli import main
from edge_lstm.inspect_artifact import describe

STATE_IO = archs.ArchConfig(hidden=8, layers=1, state_io=True)


def _model(tmp: Path, cfg: archs.ArchConfig) -> load.LoadedModel:
    torch.manual_seed(0)
    path = tmp / "m.pt"
    load.save_checkpoint(path, archs.build("forecaster", cfg).eval(), "forecaster", cfg, 6,
                         {"mean": [0.0], "std": [1.0]}, "forecast")
    return load.load(path)


def _specs(runner_inputs: list[object]) -> list[dict[str, object]]:
    return [{"name": t.name, "shape": list(t.shape), "dtype": str(t.dtype)} for t in runner_inputs]  # type: ignore


def _cli_info(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[dict[str, object], str]:
    assert main(["info", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert main(["info", str(path)]) == 0
    return doc, capsys.readouterr().out


def test_info_describes_an_executorch_program_as_its_runtime_loads_it(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("executorch.exir", reason="executorch is not installed (pip install 'edge-lstm[executorch]')")
    from edge_lstm.export_executorch import export_executorch
    from edge_lstm.runners.executorch import ExecuTorchRunner

    model = _model(tmp_path, STATE_IO)
    pte = tmp_path / "m.fp32.pte"
    pte.write_bytes(export_executorch(model).data)
    doc, text = _cli_info(pte, capsys)
    with ExecuTorchRunner(pte) as et:
        want_in, want_out = _specs(et.inputs), _specs(et.outputs)
    assert doc["inputs"] == want_in and doc["outputs"] == want_out and len(want_out) == 3  # y and two states
    assert [t["name"] for t in want_in] == model.inputs.names  # the names come from the constant I/O method
    assert doc["format"] == "executorch" and doc["methods"] == ["edge_lstm_io", "forward"]
    assert doc["sha256"] == hashlib.sha256(pte.read_bytes()).hexdigest()
    assert doc["size"]["file_bytes"] == pte.stat().st_size  # type: ignore[index]
    assert doc["delegates"]["XnnpackBackend"] >= 1  # type: ignore[index]
    assert "ExecuTorch program" in text and "XnnpackBackend" in text and "x: float32[1x6x1]" in text


def test_info_describes_an_ort_model_as_onnx_runtime_loads_it(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("onnxruntime.tools.convert_onnx_models_to_ort", reason="onnxruntime's ORT converter is absent")
    from edge_lstm.export_ort import to_ort
    from edge_lstm.runners.onnxrt import OnnxRuntimeRunner

    model = _model(tmp_path, archs.ArchConfig(hidden=8, layers=2))
    ort = tmp_path / "m.fp32.ort"
    ort.write_bytes(to_ort(sources.graph_of(model).SerializeToString()))
    doc, text = _cli_info(ort, capsys)
    with OnnxRuntimeRunner(ort) as rt:
        want_in, want_out = _specs(rt.inputs), _specs(rt.outputs)
    got_in = [{**t, "shape": [d if isinstance(d, int) else -1 for d in t["shape"]]} for t in doc["inputs"]]
    assert [t["name"] for t in doc["inputs"]] == [t["name"] for t in want_in] == model.inputs.names
    assert [t["dtype"] for t in got_in] == [t["dtype"] for t in want_in]
    assert [t["shape"][1:] for t in got_in] == [t["shape"][1:] for t in want_in]  # the batch axis is symbolic
    assert [t["name"] for t in doc["outputs"]] == [t["name"] for t in want_out]
    assert doc["format"] == "ort" and doc["ops"]["LSTM"] == 2 and doc["opset"]["ai.onnx"] >= 14  # type: ignore
    params = sum(p.numel() for p in model.module.parameters())  # type: ignore[union-attr]
    assert doc["parameters"] == params
    assert "ONNX Runtime format" in text and "LSTM x2" in text


@pytest.mark.parametrize("suffix,ident", [(".pte", b"ET12"), (".ort", b"ORTM")])
def test_a_truncated_pte_or_ort_is_a_clear_input_error(suffix: str, ident: bytes, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(b"\xf0\xff\x00\x00" + ident + b"\x00" * 8)
    assert main(["info", str(bad), "--json"]) == 2
    err = json.loads(capsys.readouterr().out)["error"]
    assert "truncated or corrupted" in err["message"] and str(bad) in err["message"]
    with pytest.raises(Exception, match="truncated or corrupted"):
        describe(bad)
