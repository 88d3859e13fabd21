"""TFLite Micro honesty: nothing is reported as fitting a microcontroller unless it ran there correctly.

* An artifact TFLite Micro has no kernels for is refused before it is run, with the
  reason (exit 5): hybrid ``dynamic-int8`` (int8 weights, float activations), float16
  weights, ONNX files.
* A run's outputs are checked: NaN/Inf always, and against a reference (``profile
  --reference``) when one is given, with the default recipe's tolerance for the
  artifact's precision. A failed check is exit 3 after the report is printed.
* Microcontroller budgets (:func:`mcu_budgets`): the flash check reads "ok" only when
  the artifact ran correctly on TFLite Micro ("unverified" otherwise, unless it is over),
  and the RAM check needs an arena measured by such a run ("not-measured" otherwise).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_lstm.errors import InputFileError, UnsupportedModel, ValidationFailed

if TYPE_CHECKING:
    from edge_lstm.profile import ProfileOptions
    from edge_lstm.targets import Target

#: ``profile.run_local``'s shape: (artifact, feed, options, format, outputs path) -> raw run figures.
RunLocal = Callable[[Path, Path, "ProfileOptions", str, Path], dict[str, Any]]

_HINT = ("Microcontrollers run fused float32 or full-integer TFLite: export with --format tflite --precision int8 "
         "(or fp32) --lowering fused.")


def refuse_unrunnable(path: Path, fmt: str) -> None:
    """:class:`UnsupportedModel` for artifacts TFLite Micro has no kernels for, before anything runs."""
    if fmt != "tflite":
        raise UnsupportedModel(f"'{path.name}' is not a TFLite file; TFLite Micro runs only TFLite flatbuffers.",
                               _HINT)
    from edge_lstm.cost_tflite import tflite_cost

    precision = tflite_cost(path.read_bytes()).precision
    if precision == "dynamic-int8":
        raise UnsupportedModel(
            f"'{path.name}' is a dynamic-int8 (hybrid) model: int8 weights with float activations. TFLite Micro has "
            "no hybrid kernels, so it cannot run it (on a microcontroller it fails or returns NaN).", _HINT)
    if precision == "fp16":
        raise UnsupportedModel(
            f"'{path.name}' stores float16 weights; TFLite Micro cannot dequantize float16 (its DEQUANTIZE takes "
            "int8, int16 and uint8 only).", _HINT)


def raise_if_unrunnable(path: Path, error: InputFileError) -> None:
    """Turn a TFLite Micro load failure (a kernel that refuses the model) into exit 5 with the kernel's reason."""
    if "TFLite Micro cannot run" in error.message:
        raise UnsupportedModel(f"'{path.name}' does not run on TFLite Micro: "
                               f"{error.message.split('TFLite Micro cannot run this model: ')[-1]}", _HINT) from error


def outputs_check(raw: dict[str, Any], outputs: Path | None, feed: Path, options: ProfileOptions,
                  artifact: Path, run_reference: RunLocal) -> dict[str, Any]:
    """NaN/Inf in the run's outputs, and the comparison with ``options.reference`` (host runs only).

    ``run_reference`` is ``profile.run_local``, passed in so this module never imports the profiler back.
    """
    non_finite = raw.get("non_finite_outputs")
    check: dict[str, Any] = {"non_finite": non_finite, "reference": None}
    if options.reference and outputs is not None and outputs.is_file():
        if options.streaming:
            check["reference_note"] = "not compared: a streaming run's steps are not the reference's windows"
        else:
            check["reference"] = _compare(Path(options.reference), outputs, feed, options, artifact, run_reference)
    ref_ok = check["reference"] is None or check["reference"]["passed"]
    check["correct"] = None if non_finite is None else bool(non_finite == 0 and ref_ok)
    return check


def _compare(reference: Path, outputs: Path, feed: Path, options: ProfileOptions, artifact: Path,
             run_reference: RunLocal) -> dict[str, Any]:
    from dataclasses import replace

    from edge_lstm import cost as cost_mod
    from edge_lstm.recipes import load_recipe
    from edge_lstm.spec import Precision
    from edge_lstm.validate import compare

    ref_out = outputs.with_name("reference.npz")
    run_reference(reference, feed, replace(options, runtime="auto", runs=1, warmup=0),
              cost_mod.artifact_format(reference), ref_out)
    with np.load(outputs) as got_z, np.load(ref_out) as ref_z:
        got = {k: got_z[k] for k in got_z.files}
        ref = {k: ref_z[k] for k in ref_z.files}
    pairs = [(k, k) for k in ref if k in got] or list(zip(ref, got, strict=False))
    c = cost_mod.cost_of(artifact)
    precision = Precision(c.precision) if c is not None else Precision.FP32
    tol = load_recipe().tolerance(precision, 1)
    metrics = [compare(r, ref[r].astype(np.float32), got[g].astype(np.float32), tol.for_output(r)) for r, g in pairs]
    return {"path": str(reference), "precision": precision.value, "passed": all(m.passed for m in metrics),
            "outputs": [m.to_dict() for m in metrics]}


def enforce_outputs(report: dict[str, Any]) -> None:
    """:class:`ValidationFailed` (exit 3) when a run returned NaN/Inf or disagreed with the reference."""
    rows = []
    for a in report["artifacts"]:
        check = a.get("outputs_check") or {}
        if check.get("non_finite"):
            rows.append(f"{a['artifact']} | {a['runtime']} | {check['non_finite']} NaN/Inf output value(s)")
        ref = check.get("reference")
        if ref and not ref["passed"]:
            why = "; ".join(r for o in ref["outputs"] for r in o["reasons"])
            rows.append(f"{a['artifact']} | {a['runtime']} | differs from {Path(ref['path']).name}: {why}")
    if rows:
        raise ValidationFailed(f"{len(rows)} profiled run(s) computed wrong outputs.",
                               "artifact | runtime | why\n--- | --- | ---\n" + "\n".join(rows),
                               "A run with wrong outputs does not count against any budget; see the report.")


#: what the RAM check compares: the arena in use, as profile measures it (not the smallest arena that works)
ARENA_MEASURE = "TFLite Micro arena in use (recording allocator)"
ARENA_NOTE = ("the arena in use; the smallest arena that allocates can be larger by the allocator's planning "
              "scratch (about 55 B a tensor measured): --firmware measures it (fw/firmware.md)")


def mcu_budgets(entry: dict[str, Any], target: Target, flash: dict[str, Any],
                check: Callable[[str, int, int, str], dict[str, Any]]) -> list[dict[str, Any]]:
    """Flash and RAM checks on a microcontroller target; see the module docstring."""
    verified = entry["runtime"] == "tflm" and (entry.get("outputs_check") or {}).get("correct") is True
    why = _unverified_reason(entry, target)
    if flash["status"] == "ok" and not verified:
        flash = {**flash, "status": "unverified", "note": f"the file would fit the flash, but {why}"}
    if entry.get("arena_bytes") is not None and verified:
        ram = check("ram", entry["arena_bytes"], target.ram_budget_bytes, ARENA_MEASURE)
        if ram.get("status") == "ok":
            ram = {**ram, "note": ARENA_NOTE}
    else:
        ram = {"budget": "ram", "status": "not-measured", "measure": ARENA_MEASURE,
               "note": f"RAM not measured: {why}"}
    checks = [flash, ram]
    if entry["runtime"] not in target.runtimes:
        checks.append({"budget": "runtime", "status": "warn", "measure": entry["runtime"],
                       "note": f"{target.name} runs {', '.join(target.runtimes)}, not {entry['runtime']}"})
    return checks


def _unverified_reason(entry: dict[str, Any], target: Target) -> str:
    if entry["runtime"] != "tflm":
        return (f"{entry['runtime']} does not run on {target.name}: profile the .tflite artifact with "
                "--runtime tflm to run it on TFLite Micro")
    check = entry.get("outputs_check") or {}
    if check.get("non_finite"):
        return f"it returned {check['non_finite']} NaN/Inf value(s) on TFLite Micro"
    if check.get("reference") and not check["reference"]["passed"]:
        return "its outputs on TFLite Micro differ from the reference"
    if check.get("correct") is None:
        return "its outputs on TFLite Micro were not checked"
    return "it has not run correctly on TFLite Micro"
