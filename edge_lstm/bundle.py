"""Bundles: an export's artifacts with everything a device needs to run them, in one reproducible zip.

``edge-lstm bundle OUT_DIR -o model.bundle.zip`` (and ``export --bundle``) read an
export directory (its ``report.json`` and artifact files) and write an archive of
the chosen artifacts with ``manifest.json``: the format version, the edge-lstm
version, the model's name and summary, the feature names (the checkpoint's
``normalization.columns``, else the header of the export's ``--data`` CSV, else
``--features``), the window, the forecast target, horizon and transform, the
normalisation, and per artifact its input and output tensors (dtypes, integer
scale and zero point), which input takes the readings and which output is the
forecast, the state map of streaming artifacts (which tensors hold h and c of
which layer, their shapes, how to reset them), precision, lowering, size,
sha256, and the validation and profile summaries. The manifest follows
``schemas/bundle-manifest.schema.json`` and is checked against it before the
archive is written.

The archive is reproducible: the same export gives the same bytes on any machine
(members stored, not deflated, so no zlib version can change them; fixed
timestamps, permissions and order; the manifest written with sorted keys and no
creation time). :mod:`edge_lstm.bundle_read` opens and verifies bundles.

Only numpy, edge-lstm's own TFLite reader and, for ONNX artifacts, ONNX Runtime
are needed: no torch, no onnx package.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

from edge_lstm import __version__, registry, schema
from edge_lstm.bundle_read import FORMAT_VERSION, MANIFEST, manifest_schema
from edge_lstm.bundle_state import io_specs, state_map
from edge_lstm.data import is_number
from edge_lstm.errors import InputFileError, UsageError
from edge_lstm.jsonio import clean, loads_strict
from edge_lstm.outputs import check_filename, safe_name

#: every member's timestamp: the earliest a zip can hold, so nothing about the build time leaks in
ZIP_TIME = (1980, 1, 1, 0, 0, 0)
#: the formats a bundle holds (what edge_lstm.predict runs) -> their device runtimes, from the registry
_RUNTIMES = {f: [r.name for r in registry.runtimes_for(f) if r.device] for f in ("onnx", "tflite")}
_VALIDATION_KEYS = ("max_abs", "mean_abs", "p99_abs", "rel_l2", "cosine", "psnr", "passed", "reasons")


def read_report(out_dir: Path) -> dict[str, Any]:
    """An export directory's ``report.json``; :class:`InputFileError` when it is not an export."""
    path = out_dir / "report.json"
    if not out_dir.is_dir():
        raise InputFileError(f"'{out_dir}' is not a directory.", "Pass the output directory of `edge-lstm export`.")
    if not path.is_file():
        raise InputFileError(f"'{out_dir}' is not an edge-lstm export: it has no report.json.",
                             "Pass the -o directory of `edge-lstm export`, or export with --bundle.")
    try:
        report = loads_strict(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise InputFileError(f"'{path}' cannot be read as JSON: {e}.", "Export again.") from e
    if not isinstance(report, dict) or not isinstance(report.get("artifacts"), list) or "model" not in report:
        raise InputFileError(f"'{path}' is not an edge-lstm export report.", "Export again.")
    return report


def select(report: dict[str, Any], names: list[str] | None) -> list[dict[str, Any]]:
    """The report entries to bundle: ``names`` in the order given, else every artifact that passed."""
    entries = {a.get("file"): a for a in report["artifacts"]}
    if names:
        chosen = []
        for n in names:
            if n not in entries:
                raise UsageError(f"The export has no artifact '{n}'.",
                                 f"Its artifacts: {', '.join(str(k) for k in entries)}.")
            a = entries[n]
            if a.get("format") not in _RUNTIMES:
                raise UsageError(f"Artifact '{n}' is {a.get('format')}: a bundle holds what `edge-lstm predict` runs "
                                 f"({', '.join(_RUNTIMES)}).", "Bundle an ONNX or TFLite artifact.")
            if not a.get("passed") or not a.get("sha256"):
                raise UsageError(f"Artifact '{n}' did not pass validation (or was not built), so it is not bundled.",
                                 "Bundle artifacts that passed; report.md says why this one failed.")
            if _micro_only(a):
                raise UsageError(f"Artifact '{n}' runs only on TFLite Micro (a fused 16x8 LSTM), which `predict` "
                                 "does not run, so it is not bundled.", "Use `edge-lstm firmware`, or bundle the "
                                 "loop lowering's int16x8 artifact (it runs on LiteRT).")
            chosen.append(a)
        if len({a["file"] for a in chosen}) != len(chosen):
            raise UsageError("An --artifact is named twice.")
        return chosen
    chosen = [a for a in report["artifacts"] if a.get("passed") and a.get("sha256") and a.get("format") in _RUNTIMES
              and not _micro_only(a)]
    if not chosen:
        raise UsageError("No artifact of this export passed validation, so there is nothing to bundle.",
                         "See report.md in the export directory for why each one failed.")
    return chosen


def _micro_only(entry: dict[str, Any]) -> bool:
    """True for a TFLite artifact validated on TFLite Micro alone (LiteRT's kernels refuse it: a fused 16x8 LSTM):
    no runtime `predict` uses runs it."""
    runtimes = {v.get("runtime") for v in entry.get("validation") or []}
    return entry.get("format") == "tflite" and runtimes == {"tflm"}


def build(out_dir: Path, names: list[str] | None = None, features: list[str] | None = None) -> bytes:
    """The bundle of ``out_dir``'s artifacts ``names`` (default: every one that passed) as zip bytes."""
    report = read_report(out_dir)
    files: dict[str, bytes] = {}
    arts = []
    chosen = select(report, names)
    plans = _onnx_plans(out_dir, report)
    for entry in chosen:
        name = check_filename(str(entry["file"]))
        try:
            data = (out_dir / name).read_bytes()
        except OSError as e:
            raise InputFileError(f"Cannot read artifact '{out_dir / name}': {e.strerror or e}.",
                                 "Export again; the directory is incomplete.") from e
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise InputFileError(f"'{out_dir / name}' changed since it was exported and validated (its sha256 is not "
                                 "the report's).", "Export again, so what is bundled is what was validated.")
        files[name] = data
        arts.append(_artifact(entry, data, report, plans))
    manifest = _manifest(report, arts, files, features, out_dir)
    schema.check(manifest, manifest_schema(), lambda s: UsageError(f"The bundle manifest would be invalid: {s}.",
                                                                   "This is a bug in edge-lstm; please report it."))
    return archive(manifest, files)


def archive(manifest: dict[str, Any], files: dict[str, bytes]) -> bytes:
    """A reproducible zip: manifest.json first, then the files by name; stored, fixed time and permissions."""
    buf = io.BytesIO()
    body = (json.dumps(clean(manifest), indent=2, sort_keys=True, allow_nan=False) + "\n").encode()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in [(MANIFEST, body), *sorted(files.items())]:
            info = zipfile.ZipInfo(name, ZIP_TIME)
            info.compress_type = zipfile.ZIP_STORED
            info.create_system = 3  # Unix, whatever the host: the attributes below mean the same everywhere
            info.external_attr = (0o100644 & 0xFFFF) << 16
            zf.writestr(info, data)
    return buf.getvalue()


def _manifest(report: dict[str, Any], arts: list[dict[str, Any]], files: dict[str, bytes],
              features: list[str] | None, out_dir: Path) -> dict[str, Any]:
    model = report["model"]
    norm = model.get("normalization") or None
    window, n_features = window_and_features(model)
    names, source = _feature_names(model, report, features, n_features, out_dir)
    summary = {k: v for k, v in model.items() if k != "normalization"}
    return {
        "format": "edge-lstm-bundle", "format_version": FORMAT_VERSION, "edge_lstm_version": __version__,
        "model": {"name": str(model.get("name") or "model")[:128], "summary": summary},
        "task": model.get("task") if model.get("task") in ("forecast", "classify") else "unknown",
        "window": window,
        "features": {"names": names, "source": source},
        "normalization": {"mean": list(norm["mean"]), "std": list(norm["std"])} if norm else None,
        "forecast": _forecast(model, names, arts),
        "artifacts": arts,
        "checked_against": _checked_against(report),
        "files": [{"name": n, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()}
                  for n, d in sorted(files.items())],
    }


def window_and_features(model: dict[str, Any]) -> tuple[int, int]:
    """(time steps, features) of the model's first input, as ``edge_lstm.feeds.x_spec`` reads it (the batch axis
    is the dynamic one; a static (T, 1, F) input is time-major)."""
    shape = list(model["inputs"][0]["shape"])
    if len(shape) != 3:
        total = 1
        for d in shape[1:] if shape and isinstance(shape[0], str) else shape:
            total *= d if isinstance(d, int) else 1
        return 1, total
    marked = [a for a, d in enumerate(shape) if isinstance(d, str)]
    seq_first = marked[0] == 1 if marked else (shape[0] != 1 and shape[1] == 1)
    t = shape[0] if seq_first else shape[1]
    return int(t if isinstance(t, int) else 1), int(shape[2])


def _feature_names(model: dict[str, Any], report: dict[str, Any], given: list[str] | None, n: int,
                   out_dir: Path) -> tuple[list[str], str]:
    if given:
        if len(given) != n:
            raise UsageError(f"--features names {len(given)} feature(s); the model takes {n}.",
                             "Name every input feature, in the model's order.")
        return list(given), "option"
    cols = (model.get("normalization") or {}).get("columns")
    if cols and len(cols) == n:
        return [str(c) for c in cols], "checkpoint"
    header = _csv_header(report, n, out_dir)
    if header:
        return header, "csv-header"
    return [f"x{i}" for i in range(n)], "positional"


def _csv_header(report: dict[str, Any], n: int, out_dir: Path) -> list[str] | None:
    """The numeric columns' names in the header of the CSV the export validated on, when it is still there."""
    source = str((report.get("validation_data") or {}).get("source") or "")
    if not source.lower().endswith(".csv"):
        return None
    for path in (Path(source), out_dir.parent / source):
        try:
            with path.open(newline="", encoding="utf-8") as f:
                rows = [r for _, r in zip(range(3), csv.reader(f), strict=False)]
        except (OSError, UnicodeDecodeError, csv.Error):
            continue
        if len(rows) < 2:
            return None
        numeric = [j for j, cell in enumerate(rows[1]) if is_number(cell)]
        names = [rows[0][j].strip() for j in numeric if j < len(rows[0])]
        if len(names) == n and all(names) and not any(is_number(h) for h in names):
            return names
        return None
    return None



def _forecast(model: dict[str, Any], names: list[str], arts: list[dict[str, Any]]) -> dict[str, Any] | None:
    if model.get("task") != "forecast":
        return None
    norm = model.get("normalization") or {}
    ti = norm.get("target_index", 0)
    ti = int(ti[0] if isinstance(ti, list) else ti)
    return {"target": names[ti] if ti < len(names) else f"x{ti}", "target_index": ti,
            "transform": "delta" if norm.get("target") == "delta" else "level",
            "horizon": int(arts[0]["forecast_output"]["values"])}


def _checked_against(report: dict[str, Any]) -> dict[str, Any]:
    target = (report.get("profile") or {}).get("target")
    proof = report.get("proved_on")
    model = report["model"]
    ref = ("PyTorch (the checkpoint)" if model.get("format") != "onnx"
           else "ONNX Runtime on the source ONNX file")
    return {"reference": f"{ref}: {model.get('format')}", "validation_data": report.get("validation_data") or {},
            "target": {k: target[k] for k in ("name", "kind", "cpu") if k in target} if target else None,
            "proved_on": {"device": proof.get("device"), "reported": proof.get("reported")} if proof else None}


def _artifact(entry: dict[str, Any], data: bytes, report: dict[str, Any],
              plans: dict[tuple[str, ...], dict[str, Any]]) -> dict[str, Any]:
    fmt = str(entry["format"])
    inputs, outputs = io_specs(fmt, data)
    window, _n = window_and_features(report["model"])
    streaming = bool(entry["streaming"])
    state = state_map(fmt, data, inputs, outputs, streaming, plans)
    roles(inputs, outputs, state)
    x = next(t for t in inputs if t["role"] == "readings")
    y = next(t for t in outputs if t["role"] == "forecast")
    model_out = report["model"]["outputs"][0]
    all_steps = bool((report["model"].get("config") or {}).get("all_steps")) or (
        len(model_out["shape"]) == 3 and window in model_out["shape"][1:])
    y_time = _time_axis(y["shape"], 1 if streaming else window) if all_steps else None
    values = _count(y["shape"]) // (1 if y_time is None else max(1, _dim(y["shape"][y_time])))
    return {
        "file": entry["file"], "format": fmt, "precision": entry["precision"], "lowering": entry.get("lowering"),
        "streaming": streaming, "runtimes": list(_RUNTIMES[fmt]), "size_bytes": len(data),
        "sha256": entry["sha256"], "inputs": inputs, "outputs": outputs,
        "readings": {"input": x["name"], "steps": 1 if streaming else window,
                     "time_axis": _time_axis(x["shape"], 1 if streaming else window)},
        "forecast_output": {"output": y["name"], "values": values, "time_axis": y_time},
        "state": state,
        "validation": [_validation(v) for v in entry.get("validation") or []],
        "profile": _profile(report, str(entry["file"])),
        "notes": [str(n) for n in entry.get("notes") or []],
    }


def roles(inputs: list[dict[str, Any]], outputs: list[dict[str, Any]], state: dict[str, Any]) -> None:
    """Mark each tensor: the readings input (the first that is not state), the forecast output, state, other."""
    ins = {t["input"] for t in state["tensors"] if t["input"]}
    outs = {t["output"] for t in state["tensors"] if t["output"]}
    for group, carried, first in ((inputs, ins, "readings"), (outputs, outs, "forecast")):
        taken = False
        for t in group:
            if t["name"] in carried:
                t["role"] = "state"
            elif not taken:
                t["role"], taken = first, True
            else:
                t["role"] = "other"
        if not taken:
            raise UsageError(f"The artifact has no {first} tensor apart from its state tensors.")


def _dim(d: Any) -> int:
    return d if isinstance(d, int) and d > 0 else 1


def _count(shape: list[Any]) -> int:
    n = 1
    for d in shape:
        n *= _dim(d)
    return n


def _time_axis(shape: list[Any], steps: int) -> int | None:
    """The axis of ``shape`` that is ``steps`` long after the batch (axis 1 when batch-first and both are 1)."""
    if len(shape) < 2:
        return None
    if steps == 1:
        return 1 if len(shape) >= 3 else None
    hits = [a for a, d in enumerate(shape) if d == steps]
    return hits[0] if hits else None


def _validation(v: dict[str, Any]) -> dict[str, Any]:
    return {"runtime": v.get("runtime"), "passed": bool(v.get("passed")), "samples": v.get("samples"),
            "data": v.get("data"), "tolerance": v.get("tolerance"),
            "outputs": [{k: o.get(k) for k in ("name", *_VALIDATION_KEYS)} for o in v.get("outputs") or []],
            "task": v.get("task")}


def _profile(report: dict[str, Any], file: str) -> list[dict[str, Any]]:
    out = []
    for p in (report.get("profile") or {}).get("artifacts") or []:
        if p.get("artifact") != file:
            continue
        lat = p.get("latency_s") or {}
        out.append({"runtime": p.get("runtime"), "runtime_version": p.get("runtime_version"),
                    "where": p.get("where"), "timing": p.get("timing"),
                    "latency_s": {k: lat.get(k) for k in ("p50", "p90", "p99", "mean", "runs") if k in lat},
                    "per_sample_s": p.get("per_sample_s"),
                    "peak_rss_bytes": (p.get("memory") or {}).get("peak_rss_bytes"),
                    "arena_bytes": p.get("arena_bytes"), "size": p.get("size"),
                    "budget": p.get("budget"), "estimate": p.get("estimate")})
    return out


def _onnx_plans(out_dir: Path, report: dict[str, Any]) -> dict[tuple[str, ...], dict[str, Any]]:
    """The streaming plans stored in the export's one-step ONNX files, keyed by their state input names: the
    TFLite one-step models of the same export share those names, and so their state map."""
    plans: dict[tuple[str, ...], dict[str, Any]] = {}
    for a in report["artifacts"]:
        if a.get("format") != "onnx" or not a.get("streaming") or not a.get("sha256"):
            continue
        try:
            data = (out_dir / check_filename(str(a["file"]))).read_bytes()
        except (OSError, UsageError):
            continue
        from edge_lstm.bundle_state import onnx_plan

        plan = onnx_plan(data)
        if plan:
            plans[tuple(s["input"] for s in plan["states"])] = plan
    return plans


def write(out_dir: Path, output: Path, names: list[str] | None = None, features: list[str] | None = None,
          force: bool = False) -> dict[str, Any]:
    """Build the bundle of ``out_dir`` and write it to ``output`` atomically; what ``bundle`` reports."""
    from edge_lstm.bundle_read import open_bundle
    from edge_lstm.outputs import resolve_output, write_bytes_atomic

    target = resolve_output(output)
    if target.exists() and not force:
        from edge_lstm.errors import OutputExistsError

        raise OutputExistsError(f"'{output}' already exists.", "Pass --force to replace it, or choose another -o.")
    if target.is_dir():
        raise UsageError(f"'{output}' is a directory.", "Pass a file name such as -o model.bundle.zip.")
    data = build(out_dir, names, features)
    if not target.parent.is_dir():
        raise UsageError(f"Cannot write '{output}': the directory '{target.parent}' does not exist.")
    write_bytes_atomic(target, data)
    summary = open_bundle(target).summary()
    summary["bytes"] = len(data)
    summary["sha256"] = hashlib.sha256(data).hexdigest()
    if not names:
        summary["left_out"] = left_out(read_report(out_dir))
    return summary


def left_out(report: dict[str, Any]) -> list[dict[str, str]]:
    """The artifacts that passed validation but that a default bundle leaves out, and why (predict cannot run them)."""
    out = []
    for a in report["artifacts"]:
        if not (a.get("passed") and a.get("sha256")):
            continue
        if a.get("format") not in _RUNTIMES:
            out.append({"file": str(a.get("file")), "why": f"{a.get('format')}: no device-side runtime of "
                                                           "`edge-lstm predict` runs it"})
        elif _micro_only(a):
            out.append({"file": str(a.get("file")), "why": "runs on TFLite Micro only (use `edge-lstm firmware`)"})
    return out


def default_name(out_dir: Path) -> str:
    """``<model>.bundle.zip`` for the export in ``out_dir`` (the model name made safe for a file name)."""
    return f"{safe_name(read_report(out_dir)['model'].get('name'))}.bundle.zip"
