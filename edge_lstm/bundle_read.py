"""Open and verify a ``model.bundle.zip`` on the device: numpy, jsonschema and the standard library only.

A bundle is refused (:class:`~edge_lstm.errors.InputFileError`, exit code 2)
before any artifact in it is used when:

- the archive is truncated, corrupted or unsafe (:func:`edge_lstm.archive.open_zip`:
  member names, sizes, overlaps, CRCs);
- ``manifest.json`` is missing, is not strict JSON, or fails the manifest's JSON
  Schema (``schemas/bundle-manifest.schema.json``, shipped in the wheel);
- the manifest's ``format_version`` is newer than this edge-lstm reads;
- the archive holds a member the manifest does not list, or lacks one it lists;
- any member's size or sha256 differs from the manifest's (a tampered or
  half-copied file whose zip checksum was recomputed).

The hashes prove the files are the ones the manifest describes; they do not
prove who wrote the manifest (that needs a signature, which bundles do not carry).

This module runs on Python 3.9 (the device side's oldest).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_lstm import schema
from edge_lstm.archive import SafeZip, open_zip
from edge_lstm.errors import InputFileError
from edge_lstm.jsonio import loads_strict

MANIFEST = "manifest.json"
#: the newest manifest format this edge-lstm reads (and the one it writes)
FORMAT_VERSION = 1
MAX_MANIFEST_BYTES = 4 << 20
_HINT = "Copy the bundle again from where it was made (`edge-lstm bundle verify` checks a copy), or make it anew " \
        "with `edge-lstm bundle OUT_DIR`."


def manifest_schema() -> dict[str, Any]:
    """The manifest's JSON Schema (``schemas/bundle-manifest.schema.json``)."""
    from edge_lstm.resources import data_dir

    path = data_dir("schemas") / "bundle-manifest.schema.json"
    return dict(json.loads(path.read_text(encoding="utf-8")))


@dataclass
class Bundle:
    """A verified bundle: its manifest and the bytes of every file it lists."""

    path: str
    manifest: dict[str, Any]
    files: dict[str, bytes]

    @property
    def artifacts(self) -> list[dict[str, Any]]:
        """The manifest's artifact entries, in bundle order."""
        return list(self.manifest["artifacts"])

    def artifact(self, name: str) -> dict[str, Any]:
        """The artifact entry called ``name`` (its file name)."""
        for a in self.manifest["artifacts"]:
            if a["file"] == name:
                return dict(a)
        names = ", ".join(a["file"] for a in self.manifest["artifacts"])
        raise InputFileError(f"{self.path} has no artifact '{name}'; it holds: {names}.",
                             "Pick one of those with --artifact, or leave --artifact out.")

    def data(self, name: str) -> bytes:
        """The verified bytes of the file ``name``."""
        return self.files[name]

    def summary(self) -> dict[str, Any]:
        """What ``bundle verify`` reports: the bundle, its model and its artifacts."""
        return _summary(self)


def _summary(b: Bundle) -> dict[str, Any]:
    m = b.manifest
    arts = []
    for a in m["artifacts"]:
        entry = {k: a[k] for k in ("file", "format", "precision", "lowering", "streaming", "size_bytes", "sha256",
                                   "runtimes")}
        entry["validated"] = all(v["passed"] for v in a["validation"]) and bool(a["validation"])
        entry["state"] = a["state"]["storage"]
        arts.append(entry)
    return {"bundle": b.path, "valid": True, "format_version": m["format_version"],
            "edge_lstm_version": m["edge_lstm_version"], "model": m["model"]["name"], "task": m["task"],
            "window": m["window"], "features": m["features"]["names"], "forecast": m["forecast"],
            "artifacts": arts, "files": len(b.files)}


def open_bundle(path: str | Path) -> Bundle:
    """Open ``path`` and verify it completely (see the module docstring); the verified :class:`Bundle`."""
    where = f"Bundle '{path}'"
    p = Path(path)
    if p.is_dir():
        raise InputFileError(f"{where} is a directory, not a bundle.",
                             "Pass the .bundle.zip that `edge-lstm bundle` wrote (a directory is an export: "
                             "bundle it with `edge-lstm bundle OUT_DIR -o model.bundle.zip`).")
    if not p.is_file():
        raise InputFileError(f"{where} does not exist.", "Check the path; `edge-lstm bundle OUT_DIR` makes one.")
    _refuse_non_zip(p, where)
    with open_zip(p, where) as zf:
        manifest = _read_manifest(zf, where)
        files = _read_files(zf, manifest, where)
    _check_consistency(manifest, where)
    return Bundle(str(path), manifest, files)


_WANT = ("Pass the .bundle.zip that `edge-lstm export --bundle` (or `edge-lstm bundle OUT_DIR`) wrote; predict and "
         "bundle verify take a bundle, not a model file.")


def _refuse_non_zip(p: Path, where: str) -> None:
    """A file that is not a zip archive at all: say what it is (from its first bytes) rather than "corrupted"."""
    try:
        with p.open("rb") as f:
            head = f.read(8)
    except OSError:
        return  # open_zip reports it
    if head[:2] == b"PK":
        return
    if head[4:8] == b"TFL3":
        what = "a TFLite model (a TFL3 flatbuffer)"
    elif head[:1] == b"\x08":
        what = "an ONNX model (a protobuf)"
    elif head[:1] == b"\x80":
        what = "a PyTorch model (a torch.save pickle)"
    else:
        what = "empty" if not head else "not a zip archive (unrecognised content)"
        raise InputFileError(f"{where} is {what}, so not an edge-lstm bundle.", _WANT)
    raise InputFileError(f"{where} is {what}, not an edge-lstm bundle.", _WANT)


def _read_manifest(zf: SafeZip, where: str) -> dict[str, Any]:
    if MANIFEST not in zf and any(n.endswith(("/data.pkl", "/constants.pkl")) for n in zf.names):
        raise InputFileError(f"{where} is a PyTorch model (a torch.save or TorchScript archive), not an edge-lstm "
                             "bundle.", _WANT)
    if MANIFEST not in zf:
        raise InputFileError(f"{where} has no {MANIFEST}: it is not an edge-lstm bundle (members: "
                             f"{', '.join(zf.names[:6]) or 'none'}).", _HINT)
    raw = zf.read(MANIFEST, MAX_MANIFEST_BYTES)
    try:
        manifest = loads_strict(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise InputFileError(f"{where}: {MANIFEST} is not valid JSON ({e}).", _HINT) from e
    if not isinstance(manifest, dict):
        raise InputFileError(f"{where}: {MANIFEST} is not a JSON object.", _HINT)
    version = manifest.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        from edge_lstm import __version__

        raise InputFileError(f"{where} has manifest format {version}; edge-lstm {__version__} reads format "
                             f"{FORMAT_VERSION} and older.", "Upgrade edge-lstm on this device: "
                             "pip install --upgrade edge-lstm.")
    schema.check(manifest, manifest_schema(), schema.file_error(f"{where}: {MANIFEST} is invalid", _HINT))
    return manifest


def _read_files(zf: SafeZip, manifest: dict[str, Any], where: str) -> dict[str, bytes]:
    listed = {f["name"]: f for f in manifest["files"]}
    if len(listed) != len(manifest["files"]):
        raise InputFileError(f"{where}: {MANIFEST} lists a file twice.", _HINT)
    members = set(zf.names) - {MANIFEST}
    extra, missing = sorted(members - set(listed)), sorted(set(listed) - members)
    if extra:
        raise InputFileError(f"{where} holds file(s) its manifest does not list: {', '.join(extra[:5])}; a bundle "
                             "holds exactly what its manifest lists.", _HINT)
    if missing:
        raise InputFileError(f"{where} lacks file(s) its manifest lists: {', '.join(missing[:5])} (truncated or "
                             "edited).", _HINT)
    files = {}
    for name, entry in sorted(listed.items()):
        data = zf.read(name, int(entry["size"]))
        digest = hashlib.sha256(data).hexdigest()
        if len(data) != entry["size"] or digest != entry["sha256"]:
            raise InputFileError(f"{where} was tampered with or damaged: '{name}' has sha256 {digest[:16]}... and "
                                 f"{len(data):,} bytes, the manifest says {entry['sha256'][:16]}... and "
                                 f"{entry['size']:,} bytes.", _HINT)
        files[name] = data
    return files


def _check_consistency(m: dict[str, Any], where: str) -> None:
    """What the schema cannot say: lengths that must agree, artifacts that must be listed files."""
    n = len(m["features"]["names"])
    norm = m["normalization"]
    if norm is not None and not len(norm["mean"]) == len(norm["std"]) == n:
        raise InputFileError(f"{where}: the normalization has {len(norm['mean'])} mean(s) and {len(norm['std'])} "
                             f"std(s) for {n} feature(s).", _HINT)
    fc = m["forecast"]
    if fc is not None and fc["target_index"] >= n:
        raise InputFileError(f"{where}: forecast.target_index = {fc['target_index']} is out of range for {n} "
                             "feature(s).", _HINT)
    hashes = {f["name"]: f["sha256"] for f in m["files"]}
    for a in m["artifacts"]:
        if hashes.get(a["file"]) != a["sha256"]:
            raise InputFileError(f"{where}: artifact '{a['file']}' is not a listed file with the same sha256.", _HINT)
        names_in = {t["name"] for t in a["inputs"]}
        names_out = {t["name"] for t in a["outputs"]}
        if a["readings"]["input"] not in names_in or a["forecast_output"]["output"] not in names_out:
            raise InputFileError(f"{where}: artifact '{a['file']}' names a readings input or forecast output it "
                                 "does not have.", _HINT)
        if a["readings"]["steps"] != (1 if a["streaming"] else m["window"]):
            raise InputFileError(f"{where}: artifact '{a['file']}' takes {a['readings']['steps']} step(s) per call; "
                                 f"expected {1 if a['streaming'] else m['window']}.", _HINT)
