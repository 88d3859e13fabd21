"""Prove artifacts on a device: run each on the device's own runtimes and judge it against PyTorch there too.

``export --prove-on arm64`` uses the emulated aarch64 device
(:mod:`edge_lstm.emulate`: started for the export, built first if needed, or
the one already running); ``--prove-on pi@raspberrypi.local`` (any ``--remote``
spec) a real device. Every artifact that runs once per window is copied there
with the same validation windows the host used, run by the device runner on
each runtime the device has for its format (TFLite: ai-edge-litert and
tflite-runtime; ONNX: onnxruntime), and its outputs come back and are judged
against the PyTorch reference with the precision's tolerance: one more runtime
row per artifact, named by what the device reported, e.g.
``tflite-runtime (aarch64, emulated)``. Each row also says how far the
device's outputs are from the same runtime family's on this host. Nothing is
timed: emulated timings mean nothing.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_lstm import feeds as feeds_mod
from edge_lstm import progress, registry
from edge_lstm.errors import MissingRuntimeError, RemoteError
from edge_lstm.remote import RemoteConfig
from edge_lstm.validate import ArtifactValidation, compare

if TYPE_CHECKING:
    from edge_lstm.artifact import Artifact
    from edge_lstm.load import LoadedModel
    from edge_lstm.recipes import Recipe

Progress = Callable[[str], None]
#: format -> device runtimes tried, in order
RUNTIMES = {f: tuple(r.name for r in registry.runtimes_for(f) if r.device) for f in registry.FORMATS}


def is_emulated(spec: str) -> bool:
    """True when ``--prove-on`` names an emulated architecture (``arm64``) rather than a device."""
    from edge_lstm.emulate.host import ARCHES

    return spec in ARCHES


def check(spec: str, python: str, ssh_config: str | None = None) -> None:
    """Fail early, before the export's work: root and host tools for emulation, a well-formed remote spec."""
    if is_emulated(spec):
        from edge_lstm.emulate import host

        host.require_root(f"--prove-on {spec} (the emulated device)")
        host.require_tools()
    else:
        RemoteConfig(spec, python=python, ssh_config=ssh_config)


@contextlib.contextmanager
def device(spec: str, python: str = "python3", ssh_config: str | None = None,
           say: Progress = lambda _m: None) -> Iterator[tuple[str, Callable[[str], RemoteConfig]]]:
    """(``spec``, runtime -> :class:`RemoteConfig`) for the device ``spec`` names, for the duration of a block."""
    if is_emulated(spec):
        from edge_lstm import emulate

        with emulate.session(spec, say=say) as dev:
            yield spec, lambda runtime: dev.remote_config(runtime, timeout_s=60)
    else:
        cfg = RemoteConfig(spec, python=python, ssh_config=ssh_config)
        yield spec, lambda _runtime: cfg


def prove(on: contextlib.AbstractContextManager[tuple[str, Callable[[str], RemoteConfig]]],
          artifacts: list[Artifact], model: LoadedModel, recipe: Recipe, vdata: feeds_mod.ValidationData,
          reference: dict[str, np.ndarray], say: Progress) -> dict[str, Any]:
    """Add a device row to every window artifact's validations (``on`` is :func:`device`); the summary for
    ``report.json``."""
    with on as (spec, config_for), tempfile.TemporaryDirectory(prefix="edge-lstm-prove-") as tmp:
        summary: dict[str, Any] = {"device": spec, "reported": None, "runs": [], "not_proven": []}
        with progress.task(say, f"proving on {spec}", len(artifacts), "artifact") as count:
            for art in artifacts:
                count.item(f"proving {art.filename} on {spec}")
                _prove_or_skip(art, spec, config_for, Path(tmp), (model, recipe, vdata, reference), summary, say)
    return summary


def _prove_or_skip(art: Artifact, spec: str, config_for: Callable[[str], RemoteConfig], tmp: Path,
                   job: tuple[LoadedModel, Recipe, feeds_mod.ValidationData, dict[str, np.ndarray]],
                   summary: dict[str, Any], say: Progress) -> None:
    """Prove one artifact, or say why a streaming one is not proven on the device."""
    if art.streaming:
        note = (f"not proven on {spec}: a streaming artifact is validated step by step with its state "
                "carried, which the device runner does not do")
        art.notes.append(note)
        summary["not_proven"].append({"file": art.filename, "why": note})
        return
    _prove_one(art, config_for, tmp, *job, summary, say)


def _prove_one(art: Artifact, config_for: Callable[[str], RemoteConfig], tmp: Path, model: LoadedModel,
               recipe: Recipe, vdata: feeds_mod.ValidationData, reference: dict[str, np.ndarray],
               summary: dict[str, Any], say: Progress) -> None:
    from edge_lstm.outputs import write_into
    from edge_lstm.remote import run_remote

    if not RUNTIMES.get(art.format):
        note = (f"not proven on {summary['device']}: no device-side runtime runs {art.format} (its runtime's "
                "Python bindings need torch)")
        art.notes.append(note)
        summary["not_proven"].append({"file": art.filename, "why": note})
        return
    path = write_into(tmp, art.filename, art.data)
    feed = _write_feed(path, art.format, vdata, tmp / "feed.npz")
    host_outs = _host_outputs(art, vdata)
    done: set[str] = set()
    missing: list[str] = []
    for runtime in RUNTIMES[art.format]:
        cfg = config_for(runtime)
        say(f"proving {art.filename} on {cfg.host} ({runtime})")
        out_path = tmp / "outputs.npz"
        try:
            raw = run_remote(cfg, path, feed, ["--runtime", runtime, "--threads", "1"], outputs=out_path)
        except MissingRuntimeError as e:
            missing.append(f"{runtime} ({e.message})")
            continue
        except RemoteError as e:  # that runtime's release lacks a kernel the artifact uses: skipped, with the reason
            if " cannot run this model: it has no kernel for " not in e.message:
                raise
            reason = e.message.split(": ", 1)[-1].split("\nHint")[0]
            art.notes.append(f"not proven on {summary['device']} with {runtime}: {' '.join(reason.split())}")
            done.add(runtime)
            continue
        if raw["runtime"] in done:  # litert fell back to the device's tflite-runtime: already proven
            continue
        done.add(raw["runtime"])
        dev = raw.get("device") or {}
        summary["reported"] = summary["reported"] or dev
        label = f"{raw['runtime']} ({dev.get('machine', '?')}{', emulated' if dev.get('emulated') else ''})"
        with np.load(out_path) as z:
            outs = {k: np.asarray(z[k], dtype=np.float32) for k in z.files}
        v = feeds_mod.judge(art.filename, label, model, recipe, art.precision, vdata, reference, outs)
        v.notes.append(f"run on {cfg.host} by {raw['version']} (Python {raw.get('python')})")
        summary["runs"].append(_versus_host(v, art, raw, outs, host_outs, recipe, vdata.steps))
        art.validations.append(v)
    if not done:
        raise RemoteError(f"'{art.filename}' could not be proven on {summary['device']}: no runtime for "
                          f"{art.format} there: {'; '.join(missing)}.",
                          "Install one on the device (pip install ai-edge-litert, tflite-runtime or onnxruntime), "
                          "pass --prove-python with a Python that has it, or drop that format.")
    if missing:
        art.notes.append(f"not proven on {summary['device']} with {', '.join(m.split(' ')[0] for m in missing)}: "
                         "not installed there")


def _write_feed(path: Path, fmt: str, vdata: feeds_mod.ValidationData, dest: Path) -> Path:
    """The validation windows as the device runner reads them: one array per input, a leading sample axis."""
    from edge_lstm.profile import input_specs

    names = [name for name, _, _ in input_specs(path, fmt)]
    missing = [n for n in names if n not in vdata.samples[0]]
    if missing:
        raise RemoteError(f"The validation feed has no input {missing} for '{path.name}'.")
    from edge_lstm.outputs import atomic_file

    with atomic_file(dest) as f:
        np.savez(f, **{n: np.stack([s[n] for s in vdata.samples]) for n in names})  # type: ignore[arg-type]
    return dest


def _host_outputs(art: Artifact, vdata: feeds_mod.ValidationData) -> tuple[str, dict[str, np.ndarray]]:
    """The same artifact on this host's runtime of the same family, for the device-versus-host comparison."""
    import platform

    from edge_lstm.runners.base import Runner

    runner: Runner
    if art.format == "onnx":
        from edge_lstm.runners.onnxrt import OnnxRuntimeRunner

        runner = OnnxRuntimeRunner(art.data)
    else:
        from edge_lstm.runners.litert import LiteRTRunner

        runner = LiteRTRunner(art.data)
    outs = feeds_mod.run_all(runner, vdata.samples)
    return f"{runner.runtime} ({platform.machine()}, this host)", outs


def _versus_host(v: ArtifactValidation, art: Artifact, raw: dict[str, Any], outs: dict[str, np.ndarray],
                 host: tuple[str, dict[str, np.ndarray]], recipe: Recipe, steps: int) -> dict[str, Any]:
    """One run's summary: verdict against PyTorch, and the device's outputs against this host's."""
    host_label, host_outs = host
    tol = recipe.tolerance(art.precision, steps)
    diffs = [compare(n, host_outs[n], outs[n], tol.for_output(n)) for n in host_outs if n in outs]
    same = bool(diffs) and all(d.passed for d in diffs)
    worst = max((d.max_abs for d in diffs), default=float("inf"))
    v.notes.append(f"{'within' if same else 'OUTSIDE'} the {art.precision.value} tolerance of {host_label}: "
                   f"max |device - host| {worst:.3g}")
    return {"file": art.filename, "runtime": v.runtime, "runtime_version": raw["version"], "passed": v.passed,
            "versus_host": {"runtime": host_label, "max_abs": worst, "within_tolerance": same,
                            "outputs": [d.to_dict() for d in diffs]}}
