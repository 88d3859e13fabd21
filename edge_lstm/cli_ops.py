"""CLI commands ``ops``: which ONNX ops export to which format and precision, from the TFLite op table; and
``formats``: the capability registry (:mod:`edge_lstm.registry`), each runtime available or how to install it.

Registered onto the main typer app like :mod:`edge_lstm.cli_profile`. The data is
:mod:`edge_lstm.lower.tflite.support` (every claim there is checked against the
runtimes by the tests); ``--format``/``--precision``/``--micro`` narrow the list to
the ops a model may contain for that artifact.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edge_lstm import jsonio
from edge_lstm.cli_options import JsonOpt
from edge_lstm.errors import UsageError

out = Console(highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``ops`` and ``formats`` to ``app``."""
    app.command("ops")(ops_command)
    app.command("formats")(formats_command)


def formats_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON only.")] = False,
    recheck: Annotated[bool, typer.Option("--recheck", help="Import every runtime and exporter again instead of "
                                                            "using the results cached for this environment.")] = False,
) -> None:
    """List the formats edge-lstm writes (with their precisions) and the runtimes that run them: available here
    (its package imports, checked in a child process), installed but broken (the import error), or the command
    that installs it."""
    from edge_lstm import import_probe, registry

    errors = import_probe.probe(registry.probe_modules(), recheck=recheck)
    payload = {"formats": [f.to_dict(errors) for f in registry.FORMATS_TABLE],
               "runtimes": [r.to_dict(errors) for r in registry.RUNTIMES_TABLE],
               "lowerings": dict(registry.LOWERINGS_TABLE)}
    if as_json:
        jsonio.emit(payload)
        return
    t = Table(title="formats", title_justify="left")
    for col in ("format", "file", "precisions", "runs on", "exporter"):
        t.add_column(col, overflow="fold")
    for f in registry.FORMATS_TABLE:
        t.add_row(f.name, f.suffix, ", ".join(p.value for p in f.precisions),
                  ", ".join(r.name for r in registry.runtimes_for(f.name)),
                  _exporter(f, f.unusable(errors)))
    out.print(t)
    r_table = Table(title="runtimes", title_justify="left")
    for col in ("runtime", "device side", "status"):
        r_table.add_column(col, overflow="fold")
    for r in registry.RUNTIMES_TABLE:
        r_table.add_row(r.name, "yes" if r.device else "no", escape(r.status(errors)))  # 'edge-lstm[x]' is not markup
    out.print(r_table)
    out.print("TFLite lowerings (--lowering): " + "; ".join(f"{k}: {v}" for k, v in registry.LOWERINGS_TABLE.items()))


def _exporter(f: Any, why: str | None) -> str:
    if why is None:
        return "installed"
    return escape(f"install with {f.install}" if why == "not installed" else f"installed but broken: {why}")


#: the formats whose ops edge-lstm's own tables describe (the others are written by their runtimes' exporters)
OP_FORMATS = ("onnx", "tflite")


def ops_command(
    fmt: Annotated[str | None, typer.Option("--format", help="onnx or tflite: only the ops this format takes "
                                                             "(with --precision).")] = None,
    precision: Annotated[str | None, typer.Option(help="fp32, fp16, dynamic-int8, int8 or int16x8 (with "
                                                       "--format).")] = None,
    micro: Annotated[bool, typer.Option("--micro", help="TFLite Micro: only the ops it has kernels for.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """List the ONNX ops edge-lstm exports, per format and precision, and what each becomes in TFLite."""
    from edge_lstm import registry
    from edge_lstm.lower.tflite.support import table
    from edge_lstm.recipes import parse_precision

    if fmt is not None and fmt not in OP_FORMATS:
        registry.fmt(fmt)  # an unknown name: the error lists the registry's formats
        raise UsageError(f"--format {fmt} has no op table here: {registry.fmt(fmt).description}.",
                         f"The op tables cover {', '.join(OP_FORMATS)}.")
    if micro and fmt not in (None, "tflite"):
        raise UsageError("--micro applies to --format tflite (TFLite Micro runs TFLite files).")
    prec = parse_precision(precision) if precision is not None else None
    if prec is not None and fmt is not None:
        registry.check_precision(fmt, prec)
    entries = [_entry(op, s) for op, s in table().items()]
    if fmt is not None or prec is not None or micro:
        entries = [e for e in entries if _keeps(e, fmt or "tflite", prec, micro)]
    payload = {"ops": entries, "filter": {"format": fmt, "precision": prec.value if prec else None, "micro": micro}}
    if as_json:
        jsonio.emit(payload)
        return
    _print(entries, prec is not None and prec.value == "int16x8")


_BUILTIN = re.compile(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*\b")
#: how the op table's "lowered to" text separates alternative forms ("A or B", "A / B", "A, else B")
_ALTERNATIVES = re.compile(r"\s+or\s+|\s*/\s*|,?\s+else\s+")


def int16x8_forms(lowered_to: str) -> list[str]:
    """The forms of an op's lowering (the op table's "lowered to" text) whose TFLite builtins all have the int16
    kernels the 16x8 quantizer widens (:data:`edge_lstm.quantize.int16x8.INT16_OPS`); a form with no builtin
    (folded, an alias, nothing at inference) counts."""
    from edge_lstm.quantize.int16x8 import INT16_OPS
    from edge_lstm.tflite_schema import OP_CODES

    forms = []
    for alt in _ALTERNATIVES.split(lowered_to):
        builtins = {t for t in _BUILTIN.findall(alt) if t in OP_CODES}
        if builtins <= INT16_OPS and "projection" not in alt:  # the quantizer refuses a projected fused LSTM
            forms.append(alt.strip(" ,"))
    return forms


#: builtins TFLite Micro has no int16 kernel for, measured ("INT16 not supported by gather"): the WHILE loop
#: gathers its step's row, so no loop form runs there at 16x8
_MICRO_NO_INT16 = frozenset({"GATHER", "WHILE"})


def micro_int16x8_forms(forms: list[str]) -> list[str]:
    """The 16x8 forms (:func:`int16x8_forms`) TFLite Micro runs: none with a builtin it has no int16 kernel for."""
    from edge_lstm.tflite_schema import OP_CODES

    return [f for f in forms if not ({t for t in _BUILTIN.findall(f) if t in OP_CODES} & _MICRO_NO_INT16)]


def _entry(op: str, s: Any) -> dict[str, Any]:
    # 16x8 is made from the full-int8 model (the same calibration, then widened): an op needs its int8 form, and
    # a form whose builtins all have int16 kernels; on TFLite Micro, its int8 kernels too (the fused LSTM is the
    # TFLite Micro form, the WHILE loop the LiteRT one: LiteRT's fused LSTM kernel has no 16x8 path)
    forms = int16x8_forms(s.tflite_ops) if s.int8 else []
    return {
        "op": op,
        "tflite": {"fp32": True, "fp16": True, "dynamic-int8": True, "int8": s.int8, "int16x8": bool(forms)},
        "tflite_micro": {"fp32": s.micro, "int8": s.micro_int8,
                         "int16x8": bool(micro_int16x8_forms(forms)) and s.micro_int8},
        "int16x8_forms": forms,
        "onnx": {"fp32": True, "fp16": True, "dynamic-int8": True, "dynamic-int8 weights": s.onnx_dynamic_int8},
        "lowered_to": s.tflite_ops,
        "notes": s.note,
    }


def _keeps(entry: dict[str, Any], fmt: str, prec: Any, micro: bool) -> bool:
    if micro:
        integer = prec is not None and prec.value in ("int8", "int16x8")
        return bool(entry["tflite_micro"][prec.value if integer else "fp32"])
    return bool(entry[fmt].get(prec.value, False)) if prec is not None else True


def _print(entries: list[dict[str, Any]], int16x8: bool = False) -> None:
    t = Table(title=f"{len(entries)} ONNX ops", title_justify="left")
    t.add_column("ONNX op", no_wrap=True)
    cols = ("TFLite int16x8", "Micro int16x8") if int16x8 else ("TFLite", "TFLite int8", "Micro", "Micro int8",
                                                                "ONNX int8 weights")
    for col in cols:
        t.add_column(col, no_wrap=True)
    t.add_column("16x8 form" if int16x8 else "lowered to", overflow="fold")
    yes = {True: "yes", False: "no"}
    for e in entries:
        if int16x8:
            t.add_row(e["op"], yes[e["tflite"]["int16x8"]], yes[e["tflite_micro"]["int16x8"]],
                      "; ".join(e["int16x8_forms"]))
        else:
            t.add_row(e["op"], "yes", yes[e["tflite"]["int8"]], yes[e["tflite_micro"]["fp32"]],
                      yes[e["tflite_micro"]["int8"]], e["onnx"]["dynamic-int8 weights"], e["lowered_to"])
    out.print(t)
    if int16x8:
        out.print("int16x8 is the int8 model widened to int16 activations: an op needs its int8 form and a form "
                  "whose TFLite ops all have int16 kernels. A recurrent layer is the fused op on TFLite Micro "
                  "and the WHILE loop on LiteRT (LiteRT's fused LSTM kernel has no 16x8 path).")
        return
    out.print("TFLite: fp32, fp16 and dynamic-int8; Micro: TFLite Micro at float32. ONNX takes every op PyTorch's "
              "exporter writes at fp32, fp16 and dynamic-int8; its last column says whether dynamic-int8 stores the "
              "op's weights in int8. Notes per op: edge-lstm ops --json.")
