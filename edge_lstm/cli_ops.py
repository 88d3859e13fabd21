"""CLI commands ``ops``: which ONNX ops export to which format and precision, from the TFLite op table; and
``formats``: the capability registry (:mod:`edge_lstm.registry`), each runtime available or how to install it.

Registered onto the main typer app like :mod:`edge_lstm.cli_profile`. The data is
:mod:`edge_lstm.lower.tflite.support` (every claim there is checked against the
runtimes by the tests); ``--format``/``--precision``/``--micro`` narrow the list to
the ops a model may contain for that artifact.
"""

from __future__ import annotations

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
    precision: Annotated[str | None, typer.Option(help="fp32, fp16, dynamic-int8 or int8 (with --format).")] = None,
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
    _print(entries)


def _entry(op: str, s: Any) -> dict[str, Any]:
    return {
        "op": op,
        "tflite": {"fp32": True, "fp16": True, "dynamic-int8": True, "int8": s.int8},
        "tflite_micro": {"fp32": s.micro, "int8": s.micro_int8},
        "onnx": {"fp32": True, "fp16": True, "dynamic-int8": True, "dynamic-int8 weights": s.onnx_dynamic_int8},
        "lowered_to": s.tflite_ops,
        "notes": s.note,
    }


def _keeps(entry: dict[str, Any], fmt: str, prec: Any, micro: bool) -> bool:
    if micro:
        return bool(entry["tflite_micro"]["int8" if prec is not None and prec.value == "int8" else "fp32"])
    return bool(entry[fmt].get(prec.value, False)) if prec is not None else True


def _print(entries: list[dict[str, Any]]) -> None:
    t = Table(title=f"{len(entries)} ONNX ops", title_justify="left")
    t.add_column("ONNX op", no_wrap=True)
    for col in ("TFLite", "TFLite int8", "Micro", "Micro int8", "ONNX int8 weights"):
        t.add_column(col, no_wrap=True)
    t.add_column("lowered to", overflow="fold")
    yes = {True: "yes", False: "no"}
    for e in entries:
        t.add_row(e["op"], "yes", yes[e["tflite"]["int8"]], yes[e["tflite_micro"]["fp32"]],
                  yes[e["tflite_micro"]["int8"]], e["onnx"]["dynamic-int8 weights"], e["lowered_to"])
    out.print(t)
    out.print("TFLite: fp32, fp16 and dynamic-int8; Micro: TFLite Micro at float32. ONNX takes every op PyTorch's "
              "exporter writes at fp32, fp16 and dynamic-int8; its last column says whether dynamic-int8 stores the "
              "op's weights in int8. Notes per op: edge-lstm ops --json.")
