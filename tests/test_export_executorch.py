"""--format executorch: a .pte through ExecuTorch's exporter, validated on ExecuTorch's runtime like the rest.

ExecuTorch decomposes the LSTM per time step, so its export time grows with the window: these tests use tiny
models (hidden 8, one layer, window 6: seconds each); the reference architecture (64 hidden, 2 layers) is a slow
test at window 24 (the full 96-step window takes about 3 minutes to export on this machine kind; README figures).
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("executorch.exir", reason="executorch is not installed (pip install 'edge-lstm[executorch]')")

from models import KINDS, write

from edge_lstm import archs, load
from edge_lstm.cli import main
from edge_lstm.errors import UnsupportedModel
from edge_lstm.export_executorch import export_executorch
from edge_lstm.pipeline import ExportOptions, export
from edge_lstm.recipes import load_recipe
from edge_lstm.runners.executorch import ExecuTorchRunner
from edge_lstm.runners.torch import TorchRunner
from edge_lstm.spec import Precision

TINY = 6


def _ckpt(tmp: Path, cfg: archs.ArchConfig, window: int, name: str) -> Path:
    torch.manual_seed(0)
    module = archs.build("forecaster", cfg).eval()
    path = tmp / f"{name}.pt"
    load.save_checkpoint(path, module, "forecaster", cfg, window,
                         {"mean": [0.0] * cfg.n_features, "std": [1.0] * cfg.n_features}, "forecast")
    return path


def _tiny(kind: str) -> archs.ArchConfig:
    return replace(KINDS[kind], hidden=8, layers=1)


def test_program_runs_by_name_matches_pytorch_and_is_byte_deterministic(tmp_path: Path) -> None:
    model = load.load(_ckpt(tmp_path, _tiny("state_io"), TINY, "state"))
    first, second = export_executorch(model), export_executorch(model)
    assert first.data == second.data  # the same module exports to the same bytes
    assert first.data[4:8] == b"ET12" and "decomposed per time step" in first.notes[0]
    rng = np.random.default_rng(0)
    feed = {t.name: rng.standard_normal(t.concrete(1)).astype(np.float32) for t in model.inputs.inputs}
    with ExecuTorchRunner(first.data) as et, TorchRunner(model) as ref:
        assert et.input_names == model.inputs.names and et.output_names == model.output_names
        got, want = et.infer(feed), ref.infer(feed)
    assert set(got) == set(want) == set(model.output_names) and len(want) == 3  # y and the two states
    for k in want:
        np.testing.assert_allclose(got[k], want[k], atol=1e-6)


def test_int8_is_refused_saying_why(tmp_path: Path) -> None:
    model = load.load(_ckpt(tmp_path, _tiny("stacked"), TINY, "m"))
    with pytest.raises(UnsupportedModel, match=r"aten\.lstm"):
        export_executorch(model, Precision.INT8)


@pytest.mark.parametrize("kind", ["gru", "seq_first"])
def test_export_validates_and_profiles_on_executorch(kind: str, tmp_path: Path) -> None:
    ckpt = _ckpt(tmp_path, _tiny(kind), TINY, kind)
    recipe = load_recipe().with_overrides(formats=["executorch"], precisions=["fp32"])
    profile = kind == "gru"  # one profiled run is enough to prove the path (each costs a fresh process)
    result = export(ckpt, ExportOptions(output_dir=tmp_path / "out", recipe=recipe, profile=profile))
    (art,) = result.artifacts
    assert result.passed and art.filename == f"{kind}.fp32.pte"
    assert [v.runtime for v in art.validations] == ["executorch"] and art.validations[0].passed
    assert (tmp_path / "out" / art.filename).read_bytes() == art.data
    if not profile:
        return
    (row,) = result.report["profile"]["artifacts"]
    assert row["runtime"] == "executorch" and row["format"] == "executorch" and row["latency_s"]["p50"] > 0


@pytest.mark.slow
def test_reference_architecture_validates(tmp_path: Path) -> None:
    ckpt = _ckpt(tmp_path, archs.ArchConfig(hidden=64, layers=2), 24, "reference")
    recipe = load_recipe().with_overrides(formats=["executorch"], precisions=["fp32"])
    result = export(ckpt, ExportOptions(output_dir=tmp_path / "out", recipe=recipe))
    (art,) = result.artifacts
    assert result.passed and art.validations[0].outputs[0].max_abs < 1e-5


def test_cli_refusals_are_json_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = _ckpt(tmp_path, _tiny("stacked"), TINY, "m")
    rc = main(["export", str(ckpt), "-o", str(tmp_path / "a"), "--format", "executorch", "--precision", "int8",
               "--json"])
    err = json.loads(capsys.readouterr().out)["error"]
    assert rc == 2 and err["kind"] == "options" and "aten.lstm" in err["message"] and "tflite" in err["hint"]
    rc = main(["export", str(ckpt), "-o", str(tmp_path / "b"), "--format", "executorch", "--streaming", "--json"])
    err = json.loads(capsys.readouterr().out)["error"]
    assert rc == 2 and "--streaming has no executorch form" in err["message"]
    monkeypatch.setitem(sys.modules, "executorch", None)  # the package as absent as the import system sees it
    rc = main(["export", str(ckpt), "-o", str(tmp_path / "c"), "--format", "executorch", "--json"])
    err = json.loads(capsys.readouterr().out)["error"]
    assert rc == 2 and err["kind"] == "missing-runtime" and "edge-lstm[executorch]" in err["hint"]
    assert not any((tmp_path / d).exists() for d in "abc")


def test_torchscript_is_refused_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """torch.export takes no TorchScript: exit 2 at once, naming what does work, and nothing is written."""
    path, shapes = write("stacked", "torchscript", tmp_path)
    shape = "x".join(str(d) for d in shapes[0])
    rc = main(["export", str(path), "-o", str(tmp_path / "o"), "--input-shape", shape, "--format", "executorch",
               "--format", "onnx", "--json"])
    err = json.loads(capsys.readouterr().out)["error"]
    assert rc == 2 and err["kind"] == "options" and "TorchScript" in err["message"] and ".pt2" in err["hint"]
    assert not (tmp_path / "o").exists()


def test_a_broken_executorch_install_fails_its_artifact_not_the_run(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """executorch found but its exporter failing to import (as after a torch upgrade): the .pte fails with the
    reason, the ONNX artifact is still built and validated, and the exit code is the artifact's (5); with --json
    the error object carries the written report as "result"."""
    ckpt = _ckpt(tmp_path, _tiny("stacked"), TINY, "m")
    monkeypatch.setitem(sys.modules, "executorch.exir", None)
    rc = main(["export", str(ckpt), "-o", str(tmp_path / "o"), "--format", "executorch", "--format", "onnx",
               "--precision", "fp32", "--json"])
    body = json.loads(capsys.readouterr().out)
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert body["error"]["code"] == 5 and body["result"] == report
    by_file = {a["file"]: a for a in report["artifacts"]}
    assert rc == 5 and by_file["m.fp32.onnx"]["passed"] and not by_file["m.fp32.pte"]["passed"]
    assert "does not import" in " ".join(by_file["m.fp32.pte"]["notes"])


def test_the_exporters_own_warnings_stay_off_stderr(tmp_path: Path) -> None:
    import os
    import subprocess

    ckpt = _ckpt(tmp_path, _tiny("stacked"), TINY, "quiet")
    code = ("import sys; from edge_lstm import load; from edge_lstm.export_executorch import export_executorch\n"
            "print(len(export_executorch(load.load(sys.argv[1])).data) > 0)")
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-W", "default", "-c", code, str(ckpt)], capture_output=True, text=True,
                          timeout=600, check=True, env={**os.environ, "PYTHONPATH": str(root)})
    assert done.stdout.strip() == "True"
    for noise in ("FutureWarning", "were assigned during export", "Failed to load", "Enum subclass"):
        assert noise not in done.stderr, done.stderr[-2000:]
