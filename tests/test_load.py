"""Loading model.pt in every supported form, safely, with clear errors."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch
from models import WINDOW, build, write

from edge_lstm.errors import InputFileError, ShapeError
from edge_lstm.load import load, sniff_format


@pytest.mark.parametrize(("form", "expected"), [
    ("checkpoint", "torch-save"), ("torchscript", "torchscript"), ("pt2", "exported-program"), ("pickle", "torch-save"),
])
def test_format_is_detected_by_content(form: str, expected: str, tmp_path: Path) -> None:
    path, _ = write("stacked", form, tmp_path)
    renamed = path.with_name("model.bin")  # the name says nothing
    path.rename(renamed)
    assert sniff_format(renamed) == expected


def test_checkpoint_loads_with_specs_and_normalisation(forecaster_ckpt: Path) -> None:
    m = load(forecaster_ckpt)
    assert m.format == "checkpoint" and m.arch == "forecaster"
    assert m.inputs.inputs[0].shape == ("batch", WINDOW, 1)
    assert m.outputs[0].shape == ("batch", 1)
    assert m.normalization == {"mean": [0.0], "std": [1.0]}
    assert m.summary()["parameters"] == sum(p.numel() for p in build("stacked")[0].parameters())


def test_pt2_carries_its_shapes(tmp_path: Path) -> None:
    path, shapes = write("state_io", "pt2", tmp_path)
    m = load(path)
    assert [t.concrete(1) for t in m.inputs.inputs] == shapes
    assert len(m.outputs) == 3


def test_torchscript_needs_input_shape(tmp_path: Path) -> None:
    path, _ = write("stacked", "torchscript", tmp_path)
    with pytest.raises(ShapeError, match="--input-shape"):
        load(path)
    m = load(path, [(1, WINDOW, 1)])
    assert m.format == "torchscript" and m.outputs[0].concrete(1) == (1, 1)


def test_pickle_is_refused_without_trust(tmp_path: Path) -> None:
    path, _ = write("stacked", "pickle", tmp_path)
    with pytest.raises(InputFileError, match="--trust-pickle") as e:
        load(path, [(1, WINDOW, 1)])
    assert "run code" in e.value.message
    m = load(path, [(1, WINDOW, 1)], trust_pickle=True)
    assert m.format == "pickle"


def test_several_inputs_need_one_shape_each(tmp_path: Path) -> None:
    path, shapes = write("state_io", "torchscript", tmp_path)
    m = load(path, shapes)
    assert len(m.inputs.inputs) == 3 and len(m.outputs) == 3


def test_missing_file() -> None:
    with pytest.raises(InputFileError, match="does not exist"):
        load("/no/such/model.pt")


def test_not_a_model(tmp_path: Path) -> None:
    p = tmp_path / "notes.pt"
    p.write_text("hello")
    with pytest.raises(InputFileError, match="not a PyTorch model"):
        load(p)


def test_truncated_file(forecaster_ckpt: Path, tmp_path: Path) -> None:
    p = tmp_path / "cut.pt"
    p.write_bytes(forecaster_ckpt.read_bytes()[:2000])
    with pytest.raises(InputFileError, match="truncated or corrupted"):
        load(p)


def test_corrupted_member(forecaster_ckpt: Path, tmp_path: Path) -> None:
    p = tmp_path / "bad.pt"
    with zipfile.ZipFile(forecaster_ckpt) as src, zipfile.ZipFile(p, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            dst.writestr(info, b"\x00" * len(data) if info.filename.endswith("data.pkl") else data)
    with pytest.raises(InputFileError):
        load(p)


def test_bare_state_dict_is_explained(tmp_path: Path) -> None:
    p = tmp_path / "sd.pt"
    torch.save(build("stacked")[0].state_dict(), p)
    with pytest.raises(InputFileError, match="state_dict"):
        load(p)


def test_wrong_rank_and_rejected_shape(forecaster_ckpt: Path) -> None:
    with pytest.raises(ShapeError, match="rank"):
        load(forecaster_ckpt, [(1, WINDOW)])
    with pytest.raises(ShapeError, match=r"first LSTM layer \('rnn'\) takes 1 feature\(s\) per time step"):
        load(forecaster_ckpt, [(1, WINDOW, 5)])
    with pytest.raises(ShapeError, match="takes 1 inputs"):
        load(forecaster_ckpt, [(1, WINDOW, 1), (1, 2, 3)])


def test_crc_corrupted_checkpoint_is_refused(forecaster_ckpt: Path, tmp_path: Path) -> None:
    data = bytearray(forecaster_ckpt.read_bytes())
    i = len(data) // 2
    data[i : i + 64] = b"\xff" * 64  # inside a stored tensor: the zip directory stays readable
    p = tmp_path / "flipped.pt"
    p.write_bytes(bytes(data))
    with pytest.raises(InputFileError, match="checksum"):
        load(p)


def test_pt2_with_pickled_parts_needs_trust(tmp_path: Path) -> None:
    path, _ = write("stacked", "pt2", tmp_path)
    evil = tmp_path / "evil.pt2"
    marker = tmp_path / "ran"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(evil, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if "/sample_inputs/" in info.filename:
                import io

                buf = io.BytesIO()
                torch.save(((_Touch(str(marker)),), {}), buf)
                data = buf.getvalue()
            dst.writestr(info, data)
    with pytest.raises(InputFileError, match="pickled parts"):
        load(evil)
    assert not marker.exists()


class _Touch:
    """Unpickling this creates a file: stands in for code hidden in a model archive."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Path.touch, (Path(self.path),))


def test_onnx_file_is_explained(tmp_path: Path, forecaster_ckpt: Path) -> None:
    from edge_lstm import capture

    p = tmp_path / "m.onnx"
    p.write_bytes(capture.to_onnx(load(forecaster_ckpt)).SerializeToString())
    with pytest.raises(InputFileError, match="looks like an ONNX model"):
        load(p)


@pytest.mark.parametrize(("field", "value", "needle"), [
    ("dropout", 5.0, "config.dropout"), ("hidden", "64", "config.hidden"), ("layers", -1, "config.layers"),
])
def test_checkpoint_fields_are_validated_by_name(field: str, value: object, needle: str, forecaster_ckpt: Path,
                                                 tmp_path: Path) -> None:
    obj = torch.load(forecaster_ckpt, weights_only=True)
    obj["config"][field] = value
    p = tmp_path / "bad.pt"
    torch.save(obj, p)
    with pytest.raises(InputFileError, match=needle):
        load(p)


def test_checkpoint_normalisation_is_checked_against_the_model(forecaster_ckpt: Path, tmp_path: Path) -> None:
    obj = torch.load(forecaster_ckpt, weights_only=True)
    p = tmp_path / "bad.pt"
    for norm, needle in (({"mean": [0.0, 1.0], "std": [1.0, 1.0]}, "normalization.mean has 2"),
                         ({"mean": [0.0], "std": [0.0]}, "normalization.std")):
        obj["normalization"] = norm
        torch.save(obj, p)
        with pytest.raises(InputFileError, match=needle):
            load(p)


def test_names_from_files_are_sanitised(forecaster_ckpt: Path, tmp_path: Path) -> None:
    obj = torch.load(forecaster_ckpt, weights_only=True)
    obj["metadata"] = {"name": "../../etc/passwd"}
    p = tmp_path / "named.pt"
    torch.save(obj, p)
    assert load(p).name == "passwd"


def test_duplicated_zero_filled_storage_is_refused(forecaster_ckpt: Path, tmp_path: Path) -> None:
    import warnings

    p = tmp_path / "dup.pt"
    with zipfile.ZipFile(forecaster_ckpt) as src, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(p, "w") as dst:
            for info in src.infolist():
                dst.writestr(info, src.read(info.filename))
            storage = next(i for i in src.infolist() if i.filename.endswith("/data/0"))
            dst.writestr(storage.filename, b"\0" * storage.file_size)
    with pytest.raises(InputFileError, match="twice"):
        load(p)


def test_pt2_guard_code_is_not_run(tmp_path: Path) -> None:
    import json

    path, _ = write("stacked", "pt2", tmp_path)
    marker = tmp_path / "ran"
    evil = tmp_path / "guard.pt2"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(evil, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith("models/model.json"):
                doc = json.loads(data)
                doc["guards_code"] = [f"__import__('builtins').open({str(marker)!r}, 'w')"]
                data = json.dumps(doc).encode()
            dst.writestr(info, data)
    with pytest.raises(InputFileError, match="guard code"):
        load(evil)
    assert not marker.exists()


@pytest.mark.parametrize("form", ["checkpoint", "pickle", "torchscript"])
def test_wrong_feature_count_is_named_for_every_format(form: str, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """`export fc3.pt --input-shape 1x48x5` for a model taking 3 features: the same clear message (first LSTM layer,
    3 features, the --input-shape that fits) for a checkpoint and a pickled module as for TorchScript, exit 2."""
    import json

    from edge_lstm import archs
    from edge_lstm.cli import main
    from edge_lstm.load import save_checkpoint

    torch.manual_seed(0)
    cfg = archs.ArchConfig(n_features=3, hidden=8, layers=1)
    model = archs.build("forecaster", cfg).eval()
    path = tmp_path / "fc3.pt"
    if form == "checkpoint":
        save_checkpoint(path, model, "forecaster", cfg, 48, None, "forecast")
    elif form == "pickle":
        torch.save(model, path)
    else:
        torch.jit.save(torch.jit.trace(model, torch.zeros(1, 48, 3)), str(path))
    for cmd in (["info", str(path)], ["export", str(path), "-o", str(tmp_path / "o")]):
        assert main([*cmd, "--input-shape", "1x48x5", "--trust-pickle", "--json"]) == 2
        e = json.loads(capsys.readouterr().out)["error"]
        assert "first LSTM layer" in e["message"] and "takes 3 feature(s) per time step, the input gives 5" in \
            e["message"] and "input_size" not in e["message"], e
        assert "--input-shape 1x48x3" in e["hint"], e
    assert not (tmp_path / "o").exists()
    if form != "torchscript":  # the Python API too (TorchScript's is checked on the captured graph, at export)
        with pytest.raises(ShapeError, match="takes 3 feature"):
            load(path, [(1, 48, 5)], trust_pickle=True)


def test_a_window_other_than_the_checkpoints_is_noted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`export fc3.pt --input-shape 1x24x3` on a checkpoint recording window 48: allowed, and said in the report and
    the CLI summary; the recorded window itself adds no note."""
    import json

    from edge_lstm import archs
    from edge_lstm.cli import main
    from edge_lstm.load import save_checkpoint

    torch.manual_seed(0)
    cfg = archs.ArchConfig(n_features=3, hidden=8, layers=1)
    path = save_checkpoint(tmp_path / "fc3.pt", archs.build("forecaster", cfg).eval(), "forecaster", cfg, 48, None,
                           "forecast")
    note = "window 24 steps (--input-shape), not the 48 the checkpoint records"
    assert any(note in n for n in load(path, [(1, 24, 3)]).notes)
    assert load(path, [(1, 48, 3)]).notes == [] and load(path).notes == []
    out = tmp_path / "o"
    assert main(["export", str(path), "-o", str(out), "--input-shape", "1x24x3", "--format", "onnx", "--precision",
                 "fp32"]) == 0
    assert note in " ".join(capsys.readouterr().out.split())
    report = json.loads((out / "report.json").read_text())
    assert all(any(note in n for n in a["notes"]) for a in report["artifacts"])
    assert report["validation_data"]["steps"] == 24
