"""Bundles: the manifest (checked against its JSON Schema), reproducible archives, and tampered or truncated
bundles refused by ``bundle verify`` and ``predict`` with exit code 2."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from predict_helpers import WINDOW, DemoBundle

from edge_lstm import cli
from edge_lstm.bundle_read import manifest_schema, open_bundle
from edge_lstm.errors import InputFileError

ROOT = Path(__file__).resolve().parent.parent


def manifest_of(path: Path) -> dict:
    with zipfile.ZipFile(path) as zf:
        return json.loads(zf.read("manifest.json"))


def test_export_bundle_manifest(demo_bundle: DemoBundle) -> None:
    m = manifest_of(demo_bundle.bundle)
    jsonschema.Draft202012Validator(manifest_schema()).validate(m)  # the schema shipped in the repository
    assert m["format"] == "edge-lstm-bundle" and m["format_version"] == 1 and m["edge_lstm_version"] == "0.1.0"
    assert m["model"]["name"] == "demo" and m["model"]["summary"]["parameters"] > 50_000
    assert m["features"] == {"names": ["temp", "change"], "source": "checkpoint"} and m["window"] == WINDOW
    assert m["forecast"] == {"target": "temp", "target_index": 0, "transform": "delta", "horizon": 1}
    report = json.loads((demo_bundle.export / "report.json").read_text())
    norm = report["model"]["normalization"]
    assert m["normalization"] == {"mean": norm["mean"], "std": norm["std"]}
    arts = {a["file"]: a for a in m["artifacts"]}
    assert set(arts) == {a["file"] for a in report["artifacts"]}
    with zipfile.ZipFile(demo_bundle.bundle) as zf:
        for f in m["files"]:
            data = zf.read(f["name"])
            assert hashlib.sha256(data).hexdigest() == f["sha256"] == arts[f["name"]]["sha256"]
            assert len(data) == f["size"]
    for name in ("demo.stream.fp32.tflite", "demo.stream.int8.tflite"):  # fused: state in variable tensors
        fused = arts[name]["state"]
        assert fused["storage"] == "variable" and "reset_all_variables" in fused["reset"], name
        assert [(t["layer"], t["kind"], t["shape"]) for t in fused["tensors"]] == [
            (0, "h", [1, 64]), (0, "c", [1, 64]), (1, "h", [1, 64]), (1, "c", [1, 64])]
    for name in ("demo.stream.fp32.onnx",):  # explicit state: ONNX
        st = arts[name]["state"]
        assert st["storage"] == "io"
        assert [(t["layer"], t["kind"], t["input"], t["output"]) for t in st["tensors"]] == [
            (0, "h", "h0_0", "h_0"), (0, "c", "c0_0", "c_0"), (1, "h", "h0_1", "h_1"), (1, "c", "c0_1", "c_1")]
        assert {t["node"] for t in st["tensors"]} == {"/rnn/LSTM", "/rnn/LSTM_1"}
    assert arts["demo.fp32.tflite"]["state"]["reset"].endswith("call it before each window")
    win = arts["demo.int8.tflite"]
    assert win["readings"] == {"input": "x", "steps": WINDOW, "time_axis": 1} and win["precision"] == "int8"
    assert win["runtimes"] == ["litert", "tflite-runtime"] and win["lowering"] == "fused"
    v = win["validation"][0]
    assert v["passed"] and v["tolerance"]["min_cosine"] == 0.99 and v["data"].endswith("heldout.csv")
    assert m["checked_against"]["validation_data"]["samples"] == 32


def test_io_quantization_is_in_the_manifest(demo_bundle: DemoBundle, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "int8io"
    assert cli.main(["export", str(demo_bundle.model), "-o", str(out), "--format", "tflite", "--precision", "int8",
                     "--io", "int8", "--calib", str(demo_bundle.train), "--data", str(demo_bundle.heldout),
                     "--bundle"]) == 0
    assert f"Bundle: {out / 'demo.bundle.zip'}" in capsys.readouterr().out  # export says where the bundle is
    art = manifest_of(out / "demo.bundle.zip")["artifacts"][0]
    x, y = art["inputs"][0], art["outputs"][0]
    assert x["dtype"] == y["dtype"] == "int8" and x["quantization"]["scale"] > 0 and y["quantization"]["scale"] > 0
    from edge_lstm.predict import Predictor

    with Predictor.from_bundle(out / "demo.bundle.zip") as p:
        out_y = p.predict_series(demo_bundle.series)[WINDOW - 1 :, 0]
    assert np.corrcoef(out_y, demo_bundle.reference)[0, 1] > 0.99  # int8 in and out, dequantized by the predictor


def test_bundles_are_reproducible(demo_bundle: DemoBundle, tmp_path: Path) -> None:
    a, b = tmp_path / "a.zip", tmp_path / "b.zip"
    assert cli.main(["bundle", str(demo_bundle.export), "-o", str(a)]) == 0
    copy = tmp_path / "copy"
    shutil.copytree(demo_bundle.export, copy)
    for f in copy.iterdir():  # other times and permissions on the inputs
        os.utime(f, (1e9, 1e9))
        f.chmod(0o600)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TZ": "Asia/Tokyo", "OMP_NUM_THREADS": "1"}
    p = subprocess.run(["sh", "-c", f'umask 077; "{sys.executable}" -m edge_lstm.entry bundle "{copy}" -o "{b}"'],
                       env=env, cwd=tmp_path, capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr
    assert a.read_bytes() == b.read_bytes() == demo_bundle.bundle.read_bytes()  # and equal to export --bundle's
    with zipfile.ZipFile(a) as zf:
        infos = zf.infolist()
    names = [i.filename for i in infos]
    assert names[0] == "manifest.json" and names[1:] == sorted(names[1:])
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)} and {i.external_attr >> 16 for i in infos} == {
        0o100644}
    assert cli.main(["bundle", str(demo_bundle.export), "-o", str(a)]) == 2  # exists: --force to replace
    assert cli.main(["bundle", str(demo_bundle.export), "-o", str(a), "--force"]) == 0


def test_artifact_selection(demo_bundle: DemoBundle, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "two.zip"
    assert cli.main(["bundle", "create", str(demo_bundle.export), "--artifact", "demo.stream.int8.tflite",
                     "--artifact", "demo.fp32.onnx", "-o", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [a["file"] for a in summary["artifacts"]] == ["demo.stream.int8.tflite", "demo.fp32.onnx"]
    assert summary["valid"] and summary["bytes"] == out.stat().st_size
    assert cli.main(["bundle", str(demo_bundle.export), "--artifact", "demo.fp16.onnx", "-o", str(out), "--force"]) == 2
    assert "no artifact 'demo.fp16.onnx'" in capsys.readouterr().err
    failed = tmp_path / "failed"
    shutil.copytree(demo_bundle.export, failed)
    report = json.loads((failed / "report.json").read_text())
    report["artifacts"][0]["passed"] = False
    (failed / "report.json").write_text(json.dumps(report))
    assert cli.main(["bundle", str(failed), "--artifact", report["artifacts"][0]["file"], "-o",
                     str(tmp_path / "f.zip")]) == 2
    assert "did not pass validation" in capsys.readouterr().err
    assert cli.main(["bundle", str(failed), "-o", str(tmp_path / "f.zip")]) == 0  # by default: those that passed
    assert report["artifacts"][0]["file"] not in [a["file"] for a in manifest_of(tmp_path / "f.zip")["artifacts"]]
    changed = tmp_path / "changed"
    shutil.copytree(demo_bundle.export, changed)
    with (changed / "demo.fp32.onnx").open("ab") as f:
        f.write(b"\0")
    assert cli.main(["bundle", str(changed), "-o", str(tmp_path / "c.zip")]) == 2
    assert "changed since it was exported" in capsys.readouterr().err
    assert cli.main(["bundle", str(tmp_path), "-o", str(tmp_path / "n.zip")]) == 2
    assert "not an edge-lstm export: it has no report.json" in capsys.readouterr().err
    assert not (tmp_path / "c.zip").exists() and not (tmp_path / "n.zip").exists()


def _rewrite(src: Path, dst: Path, edit: dict[str, bytes | None], add: dict[str, bytes] | None = None) -> Path:
    """A copy of ``src`` with members replaced (valid zip checksums: a deliberate edit, not a broken copy)."""
    with zipfile.ZipFile(src) as zf:
        items = [(i.filename, zf.read(i.filename)) for i in zf.infolist()]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in items:
            new = edit.get(name, data)
            if new is not None:
                zf.writestr(name, new)
        for name, data in (add or {}).items():
            zf.writestr(name, data)
    dst.write_bytes(buf.getvalue())
    return dst


def _tampered(b: DemoBundle, tmp_path: Path, case: str) -> Path:
    src = b.bundle
    m = manifest_of(src)
    art = "demo.stream.fp32.tflite"
    with zipfile.ZipFile(src) as zf:
        data = bytearray(zf.read(art))
    data[len(data) // 2] ^= 0x01
    cases = {
        "artifact-edited": lambda: _rewrite(src, tmp_path / "t.zip", {art: bytes(data)}),
        "bit-flip": lambda: _flip(src, tmp_path / "t.zip", art),
        "truncated": lambda: _truncate(src, tmp_path / "t.zip"),
        "extra-member": lambda: _rewrite(src, tmp_path / "t.zip", {}, {"run.sh": b"#!/bin/sh\n"}),
        "missing-member": lambda: _rewrite(src, tmp_path / "t.zip", {art: None}),
        "bad-manifest": lambda: _rewrite(src, tmp_path / "t.zip", {"manifest.json": json.dumps(
            {**m, "window": -3}).encode()}),
        "newer-format": lambda: _rewrite(src, tmp_path / "t.zip", {"manifest.json": json.dumps(
            {**m, "format_version": 9}).encode()}),
        "not-json": lambda: _rewrite(src, tmp_path / "t.zip", {"manifest.json": b'{"format": NaN}'}),
        "no-manifest": lambda: _rewrite(src, tmp_path / "t.zip", {"manifest.json": None}),
    }
    return cases[case]()


def _flip(src: Path, dst: Path, name: str) -> Path:
    raw = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as zf:
        info = zf.getinfo(name)
    raw[info.header_offset + 30 + len(name) + info.file_size // 2] ^= 0x01  # inside the stored member's data
    dst.write_bytes(bytes(raw))
    return dst


def _truncate(src: Path, dst: Path) -> Path:
    dst.write_bytes(src.read_bytes()[: src.stat().st_size * 2 // 3])
    return dst


@pytest.mark.parametrize(("case", "message"), [
    ("artifact-edited", "was tampered with or damaged: 'demo.stream.fp32.tflite' has sha256"),
    ("bit-flip", "the checksum of its member 'demo.stream.fp32.tflite' does not match"),
    ("truncated", "is a truncated or corrupted zip archive"),
    ("extra-member", "holds file(s) its manifest does not list: run.sh"),
    ("missing-member", "lacks file(s) its manifest lists: demo.stream.fp32.tflite"),
    ("bad-manifest", "manifest.json is invalid: window = -3"),
    ("newer-format", "has manifest format 9; edge-lstm 0.1.0 reads format 1 and older"),
    ("not-json", "manifest.json is not valid JSON"),
    ("no-manifest", "has no manifest.json: it is not an edge-lstm bundle"),
])
def test_tampered_bundles_exit_2(demo_bundle: DemoBundle, tmp_path: Path, case: str, message: str) -> None:
    bad = _tampered(demo_bundle, tmp_path, case)
    with pytest.raises(InputFileError) as e:
        open_bundle(bad)
    assert message in e.value.message
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for args in (["bundle", "verify", str(bad)], ["predict", str(bad), str(demo_bundle.heldout), "--streaming"]):
        p = subprocess.run([sys.executable, "-m", "edge_lstm.entry", *args], capture_output=True, text=True, env=env,
                           timeout=300, check=False)
        assert p.returncode == 2, (args, p.stderr)
        assert message in " ".join(p.stderr.split()) and "Traceback" not in p.stderr, p.stderr


def test_verify_ok_and_json(demo_bundle: DemoBundle, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bundle", "verify", str(demo_bundle.bundle)]) == 0
    assert "OK (format 1" in capsys.readouterr().out
    assert cli.main(["bundle", "verify", str(demo_bundle.bundle), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["valid"] and s["window"] == WINDOW and all(a["validated"] for a in s["artifacts"])
    assert cli.main(["bundle", "verify", str(demo_bundle.export), "--json"]) == 2
    err = json.loads(capsys.readouterr().out)["error"]
    assert err["code"] == 2 and "is a directory, not a bundle" in err["message"]


ZOO_CASES = [("explicit_state", "torchscript"), ("time_major", "torchscript"), ("gru_layernorm", "pt2"),
             ("multi_horizon", "torchscript"), ("plain_rnn", "torchscript")]


@pytest.mark.parametrize(("name", "form"), ZOO_CASES)
def test_zoo_networks_bundle_and_predict(name: str, form: str, tmp_path: Path) -> None:
    """User-shaped networks (no checkpoint: positional features, no normalisation, the raw output) through
    export --streaming --bundle and the predictor, against the module itself."""
    import torch
    import zoo

    from edge_lstm.predict import Predictor

    path, shapes = zoo.save(name, form, tmp_path)
    out = tmp_path / "out"
    assert cli.main(["export", str(path), "-o", str(out), "--format", "onnx", "--format", "tflite", "--precision",
                     "fp32", "--streaming", "--bundle", *zoo.shape_args(shapes), "--json"]) == 0
    bundle = next(out.glob("*.bundle.zip"))
    m = open_bundle(bundle).manifest
    x_shape = shapes[0]
    seq_first = name == "time_major"
    window, n = (x_shape[0], x_shape[2]) if seq_first else (x_shape[1], x_shape[2])
    assert m["window"] == window and m["features"] == {"names": [f"x{i}" for i in range(n)], "source": "positional"}
    assert m["normalization"] is None and m["forecast"] is None
    series = np.random.default_rng(1).standard_normal((window + 20, n))
    module = zoo.build(name)

    def torch_window(end: int) -> np.ndarray:
        w = torch.from_numpy(series[end - window + 1 : end + 1].astype(np.float32))
        w = w[:, None, :] if seq_first else w[None]
        extra = [torch.zeros(s) for s in shapes[1:]]  # explicit state starts at zero
        with torch.no_grad():
            y = module(w, *extra)
        return (y[0] if isinstance(y, tuple) else y).numpy().reshape(-1)

    expected = np.stack([torch_window(e) for e in range(window - 1, len(series))])
    for art in m["artifacts"]:
        with Predictor.from_bundle(bundle, artifact=art["file"]) as p:
            got = p.predict_series(series)[window - 1 :]
        assert p.horizon == expected.shape[1]
        if art["streaming"]:  # the first full window starts from zero state, exactly as the window model does
            np.testing.assert_allclose(got[0], expected[0], rtol=1e-4, atol=1e-5, err_msg=art["file"])
            assert art["state"]["storage"] in ("variable", "io") and art["state"]["tensors"]
        else:
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5, err_msg=art["file"])


def test_feature_names_from_csv_header_or_option(demo_bundle: DemoBundle, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A model without stored column names takes them from the export's --data header, or from --features."""
    bare = tmp_path / "bare"
    shutil.copytree(demo_bundle.export, bare)
    report = json.loads((bare / "report.json").read_text())
    del report["model"]["normalization"]["columns"]
    (bare / "report.json").write_text(json.dumps(report))
    assert cli.main(["bundle", str(bare), "-o", str(tmp_path / "h.zip")]) == 0
    assert manifest_of(tmp_path / "h.zip")["features"] == {"names": ["temp", "change"], "source": "csv-header"}
    assert cli.main(["bundle", str(bare), "-o", str(tmp_path / "o.zip"), "--features", "t,dt"]) == 0
    assert manifest_of(tmp_path / "o.zip")["features"] == {"names": ["t", "dt"], "source": "option"}
    assert cli.main(["bundle", str(bare), "-o", str(tmp_path / "x.zip"), "--features", "t"]) == 2
    assert "--features names 1 feature(s); the model takes 2" in capsys.readouterr().err


@pytest.mark.parametrize(("name", "what"), [("demo.fp32.tflite", "is a TFLite model (a TFL3 flatbuffer)"),
                                            ("demo.fp32.onnx", "is an ONNX model (a protobuf)"),
                                            ("model", "is a PyTorch model"),
                                            ("heldout", "is not a zip archive")])
def test_a_model_file_is_named_not_called_corrupted(demo_bundle: DemoBundle, name: str, what: str) -> None:
    """`predict model.tflite data.csv`: the file is said to be a model (from its first bytes), not a corrupt zip."""
    path = {"model": demo_bundle.model, "heldout": demo_bundle.heldout}.get(name, demo_bundle.export / name)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for args in (["predict", str(path), str(demo_bundle.heldout), "--json"], ["bundle", "verify", str(path)]):
        p = subprocess.run([sys.executable, "-m", "edge_lstm.entry", *args], capture_output=True, text=True, env=env,
                           timeout=300, check=False)
        assert p.returncode == 2, p.stderr
        text = " ".join(p.stderr.split())
        assert what in text and "not an edge-lstm bundle" in text and "corrupted" not in text, text
        assert "edge-lstm export --bundle" in text
        if "--json" in args:
            err = json.loads(p.stdout)["error"]
            assert err["code"] == 2 and what in err["message"] and ".bundle.zip" in err["hint"]
