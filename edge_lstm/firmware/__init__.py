"""Microcontroller firmware from the model, proven before any board is touched.

Two paths, both from artifacts ``edge-lstm export`` wrote:

- **TFLite Micro** (:mod:`~edge_lstm.firmware.tflm`): the fused ``.tflite`` as a
  16-byte-aligned C array, the tensor arena measured on TFLite Micro's host
  interpreter, I/O quantization constants, the state tensors, and an invoke loop.
- **Dependency-free C** (:mod:`~edge_lstm.firmware.graph`, :mod:`~edge_lstm.firmware.cgen`):
  C99 generated from the captured ONNX graph (float32 weights, or int8 weights
  with per-channel scales), static buffers only, a streaming and a window API;
  compiled with the host C compiler and checked against the reference, then
  cross-compiled for the target's Cortex-M (:mod:`~edge_lstm.firmware.cortexm`),
  measured from the ELF and run in qemu.

:func:`firmware` is what ``edge-lstm firmware`` runs; :func:`export_firmware` is
what ``edge-lstm export --firmware`` runs inside the export's staging directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_lstm.firmware.build import FirmwareOptions, FirmwareResult, Progress, enforce, enforce_report, write_firmware
from edge_lstm.firmware.checks import Reference
from edge_lstm.firmware.source import FirmwareSource, TfliteInput, from_path

if TYPE_CHECKING:
    from edge_lstm.load import LoadedModel

__all__ = ["FirmwareOptions", "FirmwareResult", "enforce", "enforce_report", "export_firmware", "firmware",
           "write_firmware"]


def firmware(source: str | Path, output_dir: str | Path, options: FirmwareOptions | None = None,
             target: str | None = None, force: bool = False, progress: Progress | None = None,
             check: bool = True) -> FirmwareResult:
    """Build the firmware files from ``source`` (an export directory, ``.onnx`` or ``.tflite``) into ``output_dir``.

    The directory is staged and published atomically, then (with ``check``) proofs and budgets are
    enforced: :class:`~edge_lstm.errors.ValidationFailed` (exit 3) or
    :class:`~edge_lstm.errors.BudgetExceeded` (exit 4) after the report is written. Without ``check`` the
    caller calls :func:`enforce` itself (the CLI prints the report first).
    """
    from edge_lstm.outputs import check_destination, staged_dir
    from edge_lstm.targets import load_target

    out = Path(output_dir)
    check_destination(out, force)
    opts = options or FirmwareOptions()
    tgt = load_target(target) if target else None
    src = from_path(Path(source))
    with staged_dir(out, force) as stage:
        result = write_firmware(src, stage, opts, tgt, progress)
    if check:
        enforce(result)
    return result


def export_firmware(out: Path, model: LoadedModel, proto: Any, artifacts: list[Any], target: Any,
                    checked: tuple[Any, dict[str, np.ndarray]], progress: Progress | None = None,
                    options: FirmwareOptions | None = None) -> FirmwareResult:
    """The firmware of an export, into ``out`` (``fw/`` inside the export's staging directory).

    ``artifacts`` are the export's (the fused float32 and int8 TFLite ones feed
    TFLite Micro); ``checked`` is the export's validation data and PyTorch
    reference outputs, so the generated C is proven against PyTorch on the same
    windows. The caller calls :func:`enforce` after publishing.
    """
    vdata, reference = checked
    opts = options or FirmwareOptions()
    tflites = [TfliteInput(a.filename, a.data, a.precision.value, a.streaming) for a in artifacts
               if a.format == "tflite" and a.lowering == "fused" and a.precision.value in ("fp32", "int8", "int16x8")]
    src = FirmwareSource(model.name, "this export", proto.SerializeToString(), f"{model.name}.fp32.onnx", tflites,
                         model.normalization)
    ref = None
    x = model.inputs.inputs[0].name
    if len(model.inputs.inputs) == 1 and vdata.samples and reference:
        n = min(opts.windows, len(vdata.samples))
        who = "ONNX Runtime on the source ONNX" if model.format == "onnx" else "PyTorch"
        ref = Reference(np.stack([s[x] for s in vdata.samples[:n]]).astype(np.float32),
                        {k: v[:n] for k, v in reference.items()},
                        f"{n} validation windows ({vdata.source}), reference {who}")
    return write_firmware(src, out, opts, target, progress, ref)
