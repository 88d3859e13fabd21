"""What the firmware is built from: an export directory, an ``.onnx`` or a ``.tflite`` artifact.

From an ``edge-lstm export`` directory, ``report.json`` names the artifacts: the
float32 window ONNX (the graph the C generator reads) and the fused float32 and
int8 TFLite files (the ones TFLite Micro runs). Every file is checked against the
sha256 the report recorded, and names from the report never become paths
outside the directory.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_lstm.errors import InputFileError


@dataclass
class TfliteInput:
    """One ``.tflite`` for the TFLite Micro path."""

    filename: str
    data: bytes
    precision: str
    streaming: bool
    lowered_here: bool = False  # lowered by the firmware command from the ONNX (no TFLite in the source)


@dataclass
class FirmwareSource:
    """The graph and artifacts the firmware files are generated from."""

    name: str
    origin: str
    onnx: bytes | None = None
    onnx_name: str | None = None
    tflites: list[TfliteInput] = field(default_factory=list)
    normalization: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # TFLite files of the source that TFLite Micro does not take

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description."""
        return {"name": self.name, "origin": self.origin, "onnx": self.onnx_name,
                "onnx_sha256": hashlib.sha256(self.onnx).hexdigest() if self.onnx else None,
                "tflite": [{"file": t.filename, "precision": t.precision, "streaming": t.streaming,
                            "lowered_here": t.lowered_here, "sha256": hashlib.sha256(t.data).hexdigest()}
                           for t in self.tflites]}


def from_path(path: Path) -> FirmwareSource:
    """Read an export directory, an ``.onnx`` or a ``.tflite``; :class:`InputFileError` for anything else."""
    if path.is_dir():
        return _from_export(path)
    if not path.is_file():
        raise InputFileError(f"'{path}' does not exist.", "Pass an edge-lstm export directory, an .onnx or a .tflite.")
    data = _read(path)
    stem = path.name.split(".")[0] or "model"
    if data[4:8] == b"TFL3":
        return FirmwareSource(stem, f"TFLite artifact {path.name}", tflites=[
            TfliteInput(path.name, data, _precision_of(path.name), ".stream." in path.name)],
            notes=["a .tflite gives only the TFLite Micro files: the dependency-free C is generated from the ONNX "
                   "(pass the export directory or the .fp32.onnx)"])
    if path.suffix == ".onnx":
        _check_onnx(data, path)
        return FirmwareSource(stem, f"ONNX artifact {path.name}", onnx=data, onnx_name=path.name)
    raise InputFileError(f"'{path}' is neither an edge-lstm export directory, an .onnx nor a .tflite file.",
                         "Pass the directory `edge-lstm export` wrote (it holds report.json), or one artifact.")


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise InputFileError(f"Cannot read '{path}': {e.strerror}.") from e


def _check_onnx(data: bytes, path: Path) -> None:
    import onnx

    try:
        onnx.load_from_string(data)
    except Exception as e:  # protobuf raises DecodeError and friends
        raise InputFileError(f"'{path}' is not a readable ONNX model: {e}.") from e


def _precision_of(filename: str) -> str:
    parts = filename.split(".")
    return next((p for p in parts if p in ("fp32", "fp16", "dynamic-int8", "int8", "int16x8")), "fp32")


def _from_export(directory: Path) -> FirmwareSource:
    report_path = directory / "report.json"
    if not report_path.is_file():
        raise InputFileError(f"'{directory}' is not an edge-lstm export directory (no report.json).",
                             "Pass the directory `edge-lstm export` wrote, or one .onnx/.tflite artifact.")
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputFileError(f"Cannot read '{report_path}': {e}.") from e
    entries = report.get("artifacts") if isinstance(report, dict) else None
    if not isinstance(entries, list):
        raise InputFileError(f"'{report_path}' is not an edge-lstm export report (no 'artifacts' list).")
    model = report.get("model") if isinstance(report.get("model"), dict) else {}
    src = FirmwareSource(str(model.get("name") or directory.name), f"export directory {directory}",
                         normalization=model.get("normalization") if isinstance(model.get("normalization"), dict)
                         else None)
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        kind = (entry.get("format"), entry.get("precision"), entry.get("lowering"), bool(entry.get("streaming")))
        if kind[:2] == ("onnx", "fp32") and not kind[3] and src.onnx is None:
            src.onnx, src.onnx_name = _artifact(directory, entry), str(entry["file"])
        elif kind[0] == "tflite" and kind[1] in ("fp32", "int8", "int16x8") and kind[2] == "fused":
            src.tflites.append(TfliteInput(str(entry["file"]), _artifact(directory, entry), str(kind[1]), kind[3]))
        elif kind[0] == "tflite":
            src.skipped.append(str(entry.get("file")))
            src.notes.append(f"{entry.get('file')} is not used for TFLite Micro: it is a {kind[1]} "
                             f"{kind[2] or 'unknown'}-lowered artifact, and TFLite Micro takes the fused float32, "
                             "int8 and int16x8 forms (export with --lowering fused, or a microcontroller --target, "
                             "for them)")
    if src.onnx is None:
        src.notes.append("the export holds no float32 window ONNX, so no dependency-free C: export with "
                         "--format onnx as well")
    return src


def _artifact(directory: Path, entry: dict[str, Any]) -> bytes:
    """An artifact's bytes, by a plain file name inside ``directory``, matching the report's sha256."""
    name = entry.get("file")
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        raise InputFileError(f"The export report names an artifact {name!r}, which is not a plain file name.",
                             "Use the report.json that `edge-lstm export` wrote, unmodified.")
    path = directory / name
    if path.is_symlink() or not path.is_file():
        raise InputFileError(f"The export report lists '{name}', but '{path}' is missing (or a symlink).",
                             "Pass a complete export directory.")
    data = _read(path)
    want = entry.get("sha256")
    if isinstance(want, str) and hashlib.sha256(data).hexdigest() != want:
        raise InputFileError(f"'{path}' does not match the sha256 in report.json: it changed after the export.",
                             "Export again, or pass the artifact file itself.")
    return data
