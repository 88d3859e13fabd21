"""The measured kernel table of tflite-runtime 2.14 holds on the runtime, and an artifact it lacks a kernel for
(the zoo's DeepAR-like forecaster at full int8: an integer LOG, version 2) is skipped there with that reason.

The runtime comes from ``EDGE_LSTM_TFLRT_PYTHON`` (``make test`` creates ``.venv-tflrt``: numpy<2, no torch).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import zoo

from edge_lstm import kernels
from edge_lstm.pipeline import ExportOptions, export
from edge_lstm.recipes import load_recipe

REPO = Path(__file__).resolve().parents[1]
PYTHON = os.environ.get("EDGE_LSTM_TFLRT_PYTHON")
needs_tflrt = pytest.mark.skipif(not PYTHON, reason="EDGE_LSTM_TFLRT_PYTHON is not set (make test creates .venv-tflrt)")


@needs_tflrt
def test_the_shipped_table_is_what_tflite_runtime_2_14_has(tmp_path: Path) -> None:
    assert PYTHON
    measured = kernels.measure(PYTHON, tmp_path)
    shipped = json.loads((Path(kernels.__file__).parent / "kernel_tables" / "tflite-runtime-2.14.json").read_text())
    assert measured["version"].startswith("2.14") and measured["kernels"] == shipped["kernels"]
    table = kernels.table_for("tflite-runtime", "2.14.0")
    assert table is not None and table[73] == 1 and table[44] >= 1  # LOG only float; the fused LSTM is there


def test_no_table_no_claim() -> None:
    assert kernels.table_for("tflite-runtime", "2.16.1") is None
    assert kernels.missing(kernels.probe_model(73, 2), "tflite-runtime", "2.16.1") == []
    assert kernels.missing(kernels.probe_model(73, 2), "tflite-runtime", "2.14.0") == [
        "LOG version 2 (it has LOG up to version 1)"]
    assert kernels.missing(kernels.probe_model(73, 1), "tflite-runtime", "2.14.0") == []


@pytest.fixture(scope="module")
def deepar_int8(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("deepar")
    path, shapes = zoo.save("deepar", "pickle", tmp)
    recipe = replace(load_recipe().with_overrides(formats=["tflite"], precisions=["fp32", "int8"]), random_samples=4,
                     calibration_samples=48)
    export(path, ExportOptions(output_dir=tmp / "out", recipe=recipe, calib="random", input_shapes=tuple(shapes),
                               trust_pickle=True))
    return tmp / "out", json.loads((tmp / "out" / "report.json").read_text())


def test_the_report_says_which_artifact_tflite_runtime_2_14_cannot_run(deepar_int8: tuple[Path, dict]) -> None:
    _, report = deepar_int8
    notes = {a["file"]: a["notes"] for a in report["artifacts"]}
    want = "not runnable on tflite-runtime 2.14: it has no kernel for LOG version 2 (it has LOG up to version 1)"
    assert any(n.startswith(want) for n in notes["deepar.int8.tflite"])
    assert not any("tflite-runtime" in n for n in notes["deepar.fp32.tflite"])
    assert report["passed"]  # a runtime that lacks a kernel is not the artifact's failure


@needs_tflrt
def test_the_device_runner_refuses_it_with_the_reason(deepar_int8: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = deepar_int8
    assert PYTHON
    np.savez(tmp_path / "feed.npz", x=np.zeros((1, 1, 48, 4), np.float32))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for name, fails in (("deepar.int8.tflite", True), ("deepar.fp32.tflite", False)):
        feed = str(tmp_path / "feed.npz")
        proc = subprocess.run([PYTHON, "-m", "edge_lstm.device", str(out / name), "--inputs", feed,
                               "--runtime", "tflite-runtime", "--runs", "1", "--warmup", "0"],
                              capture_output=True, text=True, env=env, timeout=300, check=False)
        reply = json.loads(proc.stdout.strip().splitlines()[-1])
        if fails:
            assert reply["error"] == "UnsupportedModel", reply
            assert reply["message"].startswith("tflite-runtime 2.14.0 cannot run this model: it has no kernel for "
                                               "LOG version 2 (it has LOG up to version 1).")
        else:
            assert proc.returncode == 0 and reply["runtime"] == "tflite-runtime", proc.stdout + proc.stderr
