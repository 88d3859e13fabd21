"""Integer id inputs (token and label ids into an embedding) are found in every form and fed as valid ids.

The zoo's text classifier (vocabulary 200) and RNN-T prediction network (vocabulary 64) are the real cases:
each form is loaded, its id input found with the embedding's row count, and exported; the validation and
calibration ids cover the vocabulary (not only the ids the file's example used) and never leave it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import zoo
from torch import nn

from edge_lstm import feeds
from edge_lstm.errors import DataError, ShapeError, UsageError
from edge_lstm.id_inputs import DEFAULT_IDS
from edge_lstm.load import load
from edge_lstm.pipeline import ExportOptions, export
from edge_lstm.quantize.calibration import random_calibration
from edge_lstm.recipes import load_recipe
from edge_lstm.sources import load_onnx

REPO = Path(__file__).resolve().parents[1]
VOCAB = {"text": 200, "speech_predictor": 64}


class TableLookup(nn.Module):
    """Ids index a weight table directly (``table[ids]``, no ``nn.Embedding``): the graph does not say 'ids'."""

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.randn(12, 8))
        self.lstm = nn.LSTM(8, 16, batch_first=True)
        self.head = nn.Linear(16, 1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        seq, _ = self.lstm(self.table[ids])
        return self.head(seq[:, -1])


def _load(name: str, form: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    path, shapes = zoo.save(name, form, tmp_path)
    return load(path, None if form == "pt2" else shapes, trust_pickle=True), path


@pytest.mark.parametrize("form", zoo.FORMS)
@pytest.mark.parametrize("name", sorted(VOCAB))
def test_an_embedding_input_is_found_as_int64_ids_with_its_vocabulary(name: str, form: str, tmp_path: Path) -> None:
    model, _ = _load(name, form, tmp_path)
    x = model.inputs.inputs[0]
    assert (x.dtype, x.vocab) == ("int64", VOCAB[name])
    assert f"(ids 0-{VOCAB[name] - 1})" in str(x)
    assert model.outputs  # probed with ids: the model ran


def test_validation_and_calibration_ids_cover_the_vocabulary_and_stay_inside(tmp_path: Path) -> None:
    model, _ = _load("text", "torchscript", tmp_path)
    recipe = replace(load_recipe(), random_samples=16)
    vdata = feeds.validation_feeds(model, recipe, None)
    ids = np.stack([s["x"] for s in vdata.samples])
    assert ids.dtype == np.int64 and ids.shape == (16, 1, 16) and vdata.steps == 16
    assert ids.min() >= 0 and ids.max() < 200 and ids.max() >= 150  # beyond the 0..49 the file's example used
    calib = random_calibration(model.inputs, 64, 1).samples["x"]
    assert calib.dtype == np.int64 and calib.max() < 200 and calib.max() >= 150


def test_id_windows_from_a_file_are_checked(tmp_path: Path) -> None:
    model, _ = _load("speech_predictor", "pickle", tmp_path)
    good = tmp_path / "ids.npy"
    np.save(good, np.arange(40 * 10).reshape(40, 10, 1) % 64)
    vdata = feeds.validation_feeds(model, load_recipe(), good)
    assert vdata.samples[0]["x"].dtype == np.int64 and vdata.samples[1]["x"][0, 0] == 10
    for bad in (np.full((4, 10, 1), 64), np.full((4, 10, 1), 2.5)):  # outside the vocabulary; not a whole number
        np.save(good, bad)
        with pytest.raises(DataError, match=r"not ids input 'x' takes \(int64, 0 to 63\)"):
            feeds.validation_feeds(model, load_recipe(), good)


def test_input_dtype_says_it_where_the_graph_cannot(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = tmp_path / "lookup.pt"
    torch.save(TableLookup().eval(), path)
    with pytest.raises(ShapeError, match="rejects input shape"):  # fed as float, table[ids] refuses
        load(path, [(1, 10)], trust_pickle=True)
    model = load(path, [(1, 10)], trust_pickle=True, input_dtypes=["int64"])
    assert (model.inputs.inputs[0].dtype, model.inputs.inputs[0].vocab) == ("int64", None)
    assert int(np.max(feeds.validation_feeds(model, load_recipe(), None).samples[0]["x"])) < DEFAULT_IDS
    recipe = replace(load_recipe().with_overrides(formats=["onnx"]), random_samples=4)
    result = export(path, ExportOptions(output_dir=tmp_path / "out", recipe=recipe, input_shapes=((1, 10),),
                                        trust_pickle=True,
                                        input_dtypes=("int64",)))
    assert result.passed
    with pytest.raises(UsageError, match="2 --input-dtype given"):
        load(path, [(1, 10)], trust_pickle=True, input_dtypes=["int64", "int64"])


def test_an_onnx_file_with_an_embedding_gets_its_vocabulary(tmp_path: Path) -> None:
    path, shapes = zoo.save("text", "torchscript", tmp_path)
    recipe = replace(load_recipe().with_overrides(formats=["onnx"]), random_samples=4)
    export(path, ExportOptions(output_dir=tmp_path / "out", recipe=recipe, input_shapes=tuple(shapes)))
    onnx_model = load_onnx(tmp_path / "out" / "text.fp32.onnx")
    assert (onnx_model.inputs.inputs[0].dtype, onnx_model.inputs.inputs[0].vocab) == ("int64", 200)
    with pytest.raises(UsageError, match="declares as int64"):
        load_onnx(tmp_path / "out" / "text.fp32.onnx", input_dtypes=["float32"])


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "edge_lstm.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=900, check=False)


@pytest.mark.slow
def test_cli_exports_a_text_classifier_to_onnx_and_tflite(tmp_path: Path) -> None:
    path, _ = zoo.save("text", "torchscript", tmp_path)
    proc = _cli("export", str(path), "--input-shape", "1x16", "--format", "onnx", "--format", "tflite",
                "--precision", "fp32", "--precision", "int8", "--calib", "random", "-o", "out", "--json",
                cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["model"]["inputs"][0]["dtype"] == "int64" and report["model"]["inputs"][0]["vocab"] == 200
    tfl = next(a for a in report["artifacts"] if a["file"] == "text.fp32.tflite")
    assert tfl["passed"] and any(v["runtime"] == "litert" for v in tfl["validation"])
    proc = _cli("info", str(path), "--input-shape", "1x16", "--input-dtype", "float32", cwd=tmp_path)
    assert proc.returncode == 2 and "rejects input shape" in proc.stderr
    proc = _cli("info", str(path), "--input-shape", "1x16", "--input-dtype", "int8", "--json", cwd=tmp_path)
    assert proc.returncode == 2 and json.loads(proc.stdout)["error"]["message"] == "Unknown --input-dtype 'int8'."
