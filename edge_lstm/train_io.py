"""Writing what ``edge-lstm train`` made: the checkpoint, ``<name>.train.json`` and ``<name>.train.html``.

All three are staged in a temporary directory beside the checkpoint and renamed
into place at the end, so a failed run leaves nothing behind; existing files are
replaced only with ``force``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_lstm.errors import OutputExistsError, UsageError

if TYPE_CHECKING:
    from edge_lstm.train import TrainResult


def output_paths(checkpoint: Path) -> dict[str, Path]:
    """The checkpoint and the log and report written beside it (``model.pt`` -> ``model.train.json``)."""
    stem = checkpoint.name[: -len(checkpoint.suffix)] if checkpoint.suffix else checkpoint.name
    return {"checkpoint": checkpoint, "log": checkpoint.with_name(f"{stem}.train.json"),
            "report": checkpoint.with_name(f"{stem}.train.html")}


def check_outputs(checkpoint: Path, force: bool) -> None:
    """Refuse existing outputs without ``force``, directories in their place, and unwritable parents."""
    for path in output_paths(checkpoint).values():
        if path.is_dir():
            raise OutputExistsError(f"Output '{path}' is a directory.", "Pass a file name such as -o model.pt.")
        if path.exists() and not force:
            raise OutputExistsError(f"Output '{path}' already exists.",
                                    "Pass --force to replace it, or choose another -o.")
    parent = checkpoint.resolve().parent
    if not parent.is_dir():
        raise UsageError(f"Cannot write '{checkpoint}': the directory '{parent}' does not exist.")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"Cannot write '{checkpoint}': the directory '{parent}' is not writable.")


def checkpoint_bytes(result: TrainResult, name: str) -> bytes:
    """The edge-lstm checkpoint of ``result`` as bytes that depend only on its contents.

    ``save_checkpoint`` is the one writer of the checkpoint layout, but torch
    names the archive inside the file after the (random) temporary file it saves
    through, so the bytes would differ from run to run; loading the payload back
    and serialising it to memory gives a fixed archive name. Pickle also writes a
    value twice or once depending on whether two equal strings are one object, so
    the plain-data parts go through JSON first: equal contents, equal bytes.
    """
    import torch

    from edge_lstm.load import save_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        path = save_checkpoint(Path(tmp) / "model.pt", result.model, result.arch, result.arch_config,
                               result.config.data.window, result.prepared.normalization(),
                               "classify" if result.prepared.task == "classify" else "forecast",
                               checkpoint_metadata(result, name))
        payload = torch.load(path, weights_only=True)
    payload = {k: v if k == "state_dict" else json.loads(json.dumps(v)) for k, v in payload.items()}
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


def checkpoint_metadata(result: TrainResult, name: str) -> dict[str, Any]:
    """What the checkpoint records about its training (no timestamps: the bytes must repeat)."""
    d = result.config.data
    log = result.log
    return {
        "name": name, "data": log["data"]["file"], "data_sha256": log["data"]["sha256"],
        "trained_by": "edge-lstm train", "training": log["config"], "features": result.prepared.features,
        "target_column": d.target_column, "label_column": d.label_column, "classes": result.prepared.classes,
        "horizon": d.horizon, "split_rows": log["data"]["split_rows"], "season": log["data"]["season"],
        "best_epoch": log["best_epoch"], "test": _test_summary(log["test"]),
    }


def _test_summary(test: dict[str, Any]) -> dict[str, Any]:
    keep = ("model", "persistence", "seasonal_naive", "majority_class", "previous_window")
    out = {}
    for k in keep:
        if k in test:
            out[k] = {m: v for m, v in test[k].items() if m in ("mae", "rmse", "accuracy", "macro_f1")}
    return out


def log_json(result: TrainResult, checkpoint: bytes, name: str) -> bytes:
    """``<name>.train.json``: the full training log, with the checkpoint's hash."""
    payload = {"tool": "edge-lstm train", "checkpoint": name,
               "checkpoint_sha256": hashlib.sha256(checkpoint).hexdigest(), **result.log}
    return (json.dumps(payload, indent=2) + "\n").encode()


def write_outputs(result: TrainResult, checkpoint: str | Path, force: bool = False) -> dict[str, Path]:
    """Write the checkpoint, its log and its report atomically; return their paths."""
    from edge_lstm.train_report import render_training

    checkpoint = Path(checkpoint)
    check_outputs(checkpoint, force)
    paths = output_paths(checkpoint)
    name = paths["log"].name[: -len(".train.json")]
    ckpt = checkpoint_bytes(result, name)
    files = {"checkpoint": ckpt, "log": log_json(result, ckpt, checkpoint.name),
             "report": render_training(result.log, checkpoint.name).encode()}
    from edge_lstm.outputs import write_files_atomic

    # each beside its destination, then every rename; files this run created are removed again when one fails
    write_files_atomic({paths[key]: data for key, data in files.items()}, force=force)
    return paths
