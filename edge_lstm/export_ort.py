"""``--format ort``: ONNX Runtime Mobile's ``.ort`` flatbuffer, converted from an ONNX artifact.

ONNX Runtime's own converter (``onnxruntime.tools.convert_onnx_models_to_ort``,
called through its Python API) loads the ONNX model, applies the graph
optimisations that hold on every CPU (the fixed style; the x86-only NCHWc layout
transform is left out, so the file runs on ARM too) and saves the optimised graph
in the ORT format, which ONNX Runtime -- the full package and the mobile builds --
loads directly. The conversion runs in a temporary directory; only the bytes of
the ``.ort`` file leave it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path

from edge_lstm.errors import UnsupportedModel


def to_ort(onnx_bytes: bytes) -> bytes:
    """The ``.ort`` form of an ONNX model; :class:`UnsupportedModel` when the converter refuses it."""
    from edge_lstm import registry

    registry.fmt("ort").require()
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    log = logging.getLogger("ort_format_model.utils")  # the converter logs each file it writes at INFO
    level = log.level
    with tempfile.TemporaryDirectory(prefix="edge-lstm-ort-") as tmp:
        src, out = Path(tmp) / "model.onnx", Path(tmp) / "out"
        src.write_bytes(onnx_bytes)
        log.setLevel(logging.WARNING)
        try:
            with contextlib.redirect_stdout(io.StringIO()) as said:  # the converter prints progress lines
                written = convert_onnx_models_to_ort(src, output_dir=out, optimization_styles=[OptimizationStyle.Fixed],
                                                     target_platform="arm")
        except Exception as e:
            raise UnsupportedModel(f"ONNX Runtime's ORT converter refused the model: {' '.join(str(e).split())[:400]}",
                                   "Check that ONNX Runtime runs the .onnx artifact.") from e
        finally:
            log.setLevel(level)
        files = [Path(p) for p in (written or [])] or sorted(out.glob("*.ort"))
        if not files:
            raise UnsupportedModel("ONNX Runtime's ORT converter wrote no .ort file: "
                                   + " ".join(said.getvalue().split())[-300:])
        return files[0].read_bytes()
