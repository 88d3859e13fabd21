"""What edge-lstm can do, as data: formats, their precisions, the TFLite lowerings, and the runtimes.

Every place that needs one of these facts reads it here: recipes and targets
(their schemas and error messages), the pipeline (which builder makes a format),
validation and the device runner (which runner runs a format), and the CLI's help
texts. Adding a runtime is one runner module (a :class:`edge_lstm.runners.base.Runner`
subclass) plus one :class:`Runtime` entry in :data:`RUNTIMES`; adding a format is
one builder plus one :class:`Format` entry.

A runtime whose package is not installed is *unavailable*, with the command that
installs it (Polygraphy's ``MissingTool`` idea): :meth:`Runtime.available` asks
:func:`importlib.util.find_spec` and never imports the package, and
:meth:`Runtime.require` raises :class:`RuntimeUnavailable` (a usage error, exit 2)
rather than letting an ``ImportError`` through.

This module imports only the standard library and :mod:`edge_lstm.spec`: the
device-side runner reads it (Python 3.9+).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edge_lstm.errors import RuntimeUnavailable, UsageError
from edge_lstm.spec import Precision

__all__ = ["FORMATS", "LOWERINGS", "RUNTIMES", "SUPPORTED", "Format", "Runtime", "RuntimeUnavailable"]


def installed(module: str) -> bool:
    """True when the top-level package of ``module`` is installed; found, not imported (``find_spec`` of a
    submodule would import its parent package)."""
    try:
        return importlib.util.find_spec(module.split(".")[0]) is not None
    except (ImportError, ValueError):
        return False


def probe_modules() -> list[str]:
    """The modules of every runtime and exporter that are installed (found), to import-check them."""
    mods = [m for f in FORMATS_TABLE for m in f.build_modules] + [m for r in RUNTIMES_TABLE for m in r.modules]
    return [m for m in dict.fromkeys(mods) if installed(m)]


def _unusable(modules: tuple[str, ...], errors: Mapping[str, str | None], every: bool) -> str | None:
    """None when the modules import (``every`` one, else at least one); else ``not installed`` or the import
    error of the first one found that failed."""
    reasons = [_reason(m, errors) for m in modules]
    if every:
        return next((r for r in reasons if r is not None), None)
    if any(r is None for r in reasons):
        return None
    return next((r for r in reasons if r != "not installed"), "not installed")


def _reason(module: str, errors: Mapping[str, str | None]) -> str | None:
    if not installed(module):
        return "not installed"
    err = errors.get(module)
    return None if err is None else f"import {module} failed: {err}"


@dataclass(frozen=True)
class Format:
    """One artifact format edge-lstm writes."""

    name: str
    suffix: str
    precisions: tuple[Precision, ...]
    description: str
    #: modules the exporter needs (found with find_spec), the pip packages and extra that provide them
    build_modules: tuple[str, ...] = ()
    install: str = ""
    #: the file's identifier (bytes at offset 4 of a flatbuffer), to tell an artifact's format by content
    identifier: bytes = b""
    #: True when ``--lowering`` applies (the recurrent layers are lowered by edge-lstm itself)
    lowered: bool = False
    #: the other format whose artifacts this one is converted from (``ort`` from ``onnx``), if any
    converts: str | None = None
    #: why the precisions left out are left out (shown when one is asked for)
    why_not: str = ""

    def buildable(self) -> bool:
        """True when every module the exporter needs is installed."""
        return all(installed(m) for m in self.build_modules)

    def unusable(self, errors: Mapping[str, str | None]) -> str | None:
        """Why the exporter cannot run here, given :func:`edge_lstm.import_probe.probe`'s ``errors`` (None: it can)."""
        return _unusable(self.build_modules, errors, every=True)

    def require(self) -> None:
        """Raise :class:`RuntimeUnavailable` when the exporter's package is absent."""
        if not self.buildable():
            missing = [m for m in self.build_modules if not installed(m)]
            raise RuntimeUnavailable(f"--format {self.name} needs {', '.join(missing)}, which is not installed.",
                                 f"Install it with: {self.install}.")

    def to_dict(self, errors: Mapping[str, str | None] | None = None) -> dict[str, Any]:
        """JSON-ready form (``edge-lstm formats --json``); with ``errors`` (the import probe's), ``buildable``
        means the exporter's modules import, and ``why_not`` says why they do not."""
        why = self.unusable(errors) if errors is not None else (None if self.buildable() else "not installed")
        return {"name": self.name, "suffix": self.suffix, "precisions": [p.value for p in self.precisions],
                "lowered": self.lowered, "converts": self.converts, "description": self.description,
                "buildable": why is None, "why_not": why, "install": self.install or None,
                "runtimes": [r.name for r in runtimes_for(self.name)]}


@dataclass(frozen=True)
class Runtime:
    """One runtime: the runner class that drives it, what it needs, what it runs."""

    name: str
    #: "module:Class" of its Runner, imported only when the runtime is used
    runner: str
    #: importable modules that provide it, tried in order (the first installed one is used)
    modules: tuple[str, ...]
    #: pip packages, and the command that installs them
    packages: tuple[str, ...]
    install: str
    formats: tuple[str, ...]
    #: True when it runs on a device with numpy and this one package (shipped in the device zipapp)
    device: bool
    description: str = ""

    def available(self) -> bool:
        """True when one of its modules is installed (nothing is imported)."""
        return any(installed(m) for m in self.modules)

    def status(self, errors: Mapping[str, str | None] | None = None) -> str:
        """``available``, ``unavailable, install with ...``, or (given the import probe's ``errors``)
        ``installed but broken: <the import error>``."""
        why = self.unusable(errors) if errors is not None else (None if self.available() else "not installed")
        if why is None:
            return "available"
        if why == "not installed":
            return f"unavailable, install with {self.install}"
        return f"installed but broken: {why}"

    def unusable(self, errors: Mapping[str, str | None]) -> str | None:
        """Why the runtime cannot run here, given :func:`edge_lstm.import_probe.probe`'s ``errors`` (None: it can)."""
        return _unusable(self.modules, errors, every=False)

    def require(self) -> None:
        """Raise :class:`RuntimeUnavailable` (with the install hint) when the runtime is not installed."""
        if not self.available():
            raise RuntimeUnavailable(f"Runtime '{self.name}' is not installed (it needs {' or '.join(self.packages)}).",
                                 f"Install it with: {self.install}.")

    def runner_class(self) -> Any:
        """The Runner subclass (its module imported now; the runtime itself is imported when a model loads)."""
        module, _, cls = self.runner.partition(":")
        return getattr(importlib.import_module(module), cls)

    def to_dict(self, errors: Mapping[str, str | None] | None = None) -> dict[str, Any]:
        """JSON-ready form (``edge-lstm formats --json``); with ``errors`` (the import probe's), ``available``
        means one of its modules imports, and ``why_not`` says why none does."""
        why = self.unusable(errors) if errors is not None else (None if self.available() else "not installed")
        return {"name": self.name, "runner": self.runner, "packages": list(self.packages), "install": self.install,
                "formats": list(self.formats), "device": self.device, "available": why is None, "why_not": why,
                "status": self.status(errors), "description": self.description}


_FLOAT_AND_DYNAMIC = (Precision.FP32, Precision.FP16, Precision.DYNAMIC_INT8)

#: the formats, in the order the CLI lists them
FORMATS_TABLE: tuple[Format, ...] = (
    Format("onnx", ".onnx", _FLOAT_AND_DYNAMIC, "ONNX graph with LSTM/GRU ops (ONNX Runtime)",
           ("onnx",), "pip install 'edge-lstm[export]'",
           why_not="ONNX Runtime's static quantizer has no LSTM entry, so there is no full-integer ONNX"),
    Format("tflite", ".tflite", (*_FLOAT_AND_DYNAMIC, Precision.INT8, Precision.INT16X8),
           "TFLite flatbuffer written by edge-lstm (LiteRT, tflite-runtime, TFLite Micro)",
           ("onnx", "flatbuffers"), "pip install 'edge-lstm[export]'", identifier=b"TFL3", lowered=True),
    Format("executorch", ".pte", (Precision.FP32,),
           "ExecuTorch program, XNNPACK-delegated (torch.export, the LSTM decomposed per time step)",
           ("executorch.exir", "torch"), "pip install 'edge-lstm[executorch]'", identifier=b"ET12",
           why_not="XNNPACK's 8-bit quantizer annotates linear and convolution ops, not the recurrent cell "
                   "torch.export keeps as one aten.lstm op, so an int8 program would leave the LSTM in float"),
    Format("ort", ".ort", (Precision.FP32, Precision.DYNAMIC_INT8),
           "ONNX Runtime Mobile flatbuffer, converted from the ONNX artifact of the same precision",
           ("onnxruntime.tools.convert_onnx_models_to_ort", "onnx", "flatbuffers"), "pip install 'edge-lstm[ort]'",
           identifier=b"ORTM", converts="onnx",
           why_not="it is converted from the ONNX artifact, and ONNX has no full-integer LSTM; an fp16 ONNX "
                   "artifact is no fp16 .ort either: the converter folds its float16 weights' Casts into float32 "
                   "weights (measured: the .ort held float32 initializers only, larger than the fp32 .ort)"),
)

#: the runtimes; ``tflite-runtime`` and ``litert`` share one runner (the same interpreter API)
RUNTIMES_TABLE: tuple[Runtime, ...] = (
    Runtime("onnxruntime", "edge_lstm.runners.onnxrt:OnnxRuntimeRunner", ("onnxruntime",), ("onnxruntime",),
            "pip install onnxruntime", ("onnx", "ort"), True, "ONNX Runtime, CPU execution provider"),
    Runtime("litert", "edge_lstm.runners.litert:LiteRTRunner", ("ai_edge_litert.interpreter",
                                                                 "tflite_runtime.interpreter"),
            ("ai-edge-litert", "tflite-runtime"), "pip install ai-edge-litert", ("tflite",), True,
            "LiteRT's interpreter with XNNPACK (tflite-runtime where that is what is installed)"),
    Runtime("tflite-runtime", "edge_lstm.runners.litert:LiteRTRunner", ("tflite_runtime.interpreter",),
            ("tflite-runtime",), "pip install tflite-runtime (numpy<2)", ("tflite",), True,
            "tflite-runtime 2.14, what Raspberry Pi images ship"),
    Runtime("tflm", "edge_lstm.runners.tflm:TFLMRunner", ("tflite_micro",), ("tflite-micro",),
            "pip install 'edge-lstm[micro]'", ("tflite",), False,
            "TFLite Micro's host interpreter (the microcontroller runtime, run on this host)"),
    Runtime("executorch", "edge_lstm.runners.executorch:ExecuTorchRunner", ("executorch.runtime",),
            ("executorch",), "pip install 'edge-lstm[executorch]'", ("executorch",), False,
            "ExecuTorch's runtime with the XNNPACK delegate (its Python bindings need torch)"),
    Runtime("torch", "edge_lstm.runners.torch:TorchRunner", ("torch",), ("torch",),
            "pip install 'edge-lstm[export]'", (), False, "PyTorch eager: the reference, host side only"),
)

FORMATS: tuple[str, ...] = tuple(f.name for f in FORMATS_TABLE)
RUNTIMES: tuple[str, ...] = tuple(r.name for r in RUNTIMES_TABLE)
#: which precisions each format can hold
SUPPORTED: dict[str, tuple[Precision, ...]] = {f.name: f.precisions for f in FORMATS_TABLE}
#: TFLite lowerings: "auto" picks fused or loop (see ``edge_lstm.lower.tflite.auto``), "fused" is one TFLite LSTM
#: op per layer, "loop" a WHILE loop over time steps, "unrolled" every time step written out (only when asked)
LOWERINGS_TABLE: dict[str, str] = {
    "auto": "fused or loop, by target and precision",
    "fused": "one TFLite LSTM op per layer",
    "loop": "a WHILE loop over time steps",
    "unrolled": "every time step written out",
}
LOWERINGS: tuple[str, ...] = tuple(LOWERINGS_TABLE)
#: precisions whose arithmetic is integer with 8-bit weights (a target's int8 throughput applies: an estimate, and
#: for int16x8 an optimistic one, since 16-bit activations halve the SIMD lanes of 8-bit kernels)
INTEGER_PRECISIONS: frozenset[Precision] = frozenset({Precision.DYNAMIC_INT8, Precision.INT8, Precision.INT16X8})
#: what each precision means, for the --precision help
PRECISION_HELP: dict[Precision, str] = {
    Precision.FP32: "float32", Precision.FP16: "float16 weights", Precision.DYNAMIC_INT8: "int8 weights, float "
    "activations", Precision.INT8: "full integer, calibrated", Precision.INT16X8: "TFLite: int16 activations, int8 "
    "weights, calibrated; for TFLite Micro",
}


def integer_math(precision: Precision | str) -> bool:
    """True when ``precision`` computes in integers with 8-bit weights (dynamic-int8, int8, int16x8)."""
    return Precision(precision) in INTEGER_PRECISIONS


def fmt(name: str) -> Format:
    """The format called ``name``; :class:`UsageError` listing the accepted ones otherwise."""
    for f in FORMATS_TABLE:
        if f.name == name:
            return f
    raise UsageError(f"Unknown format '{name}'.", f"Accepted: {', '.join(FORMATS)}.")


def runtime(name: str) -> Runtime:
    """The runtime called ``name``; :class:`UsageError` listing the known ones otherwise."""
    for r in RUNTIMES_TABLE:
        if r.name == name:
            return r
    raise UsageError(f"Unknown runtime '{name}'.", f"Known runtimes: auto, {', '.join(RUNTIMES)}.")


def runtimes_for(format_name: str) -> list[Runtime]:
    """The runtimes that run ``format_name``, in table order."""
    return [r for r in RUNTIMES_TABLE if format_name in r.formats]


def format_of_bytes(head: bytes) -> str | None:
    """The format whose identifier the file's first bytes carry (ONNX, a protobuf, has none: None)."""
    for f in FORMATS_TABLE:
        if f.identifier and head[4:4 + len(f.identifier)] == f.identifier:
            return f.name
    return None


def format_of_suffix(suffix: str) -> str | None:
    """The format written with file suffix ``suffix`` (".pte" -> "executorch"), or None."""
    return next((f.name for f in FORMATS_TABLE if f.suffix == suffix.lower()), None)


def precisions_text(name: str) -> str:
    """``fp32, fp16, ...`` for one format."""
    return ", ".join(p.value for p in fmt(name).precisions)


def check_precision(format_name: str, precision: Precision | str) -> None:
    """Raise :class:`UsageError` when ``format_name`` cannot hold ``precision``, saying why and where it can."""
    f = fmt(format_name)
    precision = Precision(precision)
    if precision in f.precisions:
        return
    able = [g.name for g in FORMATS_TABLE if precision in g.precisions]
    raise UsageError(f"Format {f.name} has no precision {precision.value}"
                     + (f": {f.why_not}." if f.why_not else "."),
                     f"{f.name} holds {precisions_text(f.name)}; {precision.value} is available for "
                     f"{', '.join(able) or 'no format'}.")


def help_formats() -> str:
    """The --format help text."""
    return "One of " + ", ".join(f"{f.name} ({precisions_text(f.name)})" for f in FORMATS_TABLE) + "; repeatable."


def help_precisions() -> str:
    """The --precision help text."""
    return ", ".join(f"{p.value} ({PRECISION_HELP[p]})" for p in Precision) + \
        " (repeatable; each format holds the ones it can)."


def help_lowerings() -> str:
    """The --lowering help text."""
    return "TFLite LSTM lowering: " + "; ".join(f"{k} ({v})" for k, v in LOWERINGS_TABLE.items()) + "."


def help_runtimes() -> str:
    """The --runtime help text."""
    return "auto | " + " | ".join(RUNTIMES) + " (auto: by the file's format)."
