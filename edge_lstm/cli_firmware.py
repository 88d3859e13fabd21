"""CLI command ``firmware``, registered onto the main typer app.

``edge-lstm firmware OUT_DIR_OR_ARTIFACT --target stm32h7 -o fw/`` writes the
TFLite Micro files and the dependency-free C, proves the C on this host and on
an emulated Cortex-M, and checks flash and RAM against the target (exit 3 when a
proof fails, 4 when over budget, 5 when the model has an op the C generator
cannot express). ``--json`` prints the report only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from edge_lstm import jsonio
from edge_lstm.cli_options import JsonOpt

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``firmware`` to ``app``."""
    app.command("firmware")(firmware_command)


def firmware_command(
    source: Annotated[Path, typer.Argument(help="An `edge-lstm export` output directory, or one .onnx / .tflite "
                                                "artifact.", show_default=False)],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output directory (refused if it exists unless "
                                                               "--force).")] = Path("fw"),
    target: Annotated[str | None, typer.Option(help="Device target name or TOML: its Cortex-M core (firmware "
                                                    "table), and flash/RAM budgets (exit 4 when over).")] = None,
    precision: Annotated[list[str] | None, typer.Option(
        "--precision", help="C precision: fp32 and/or int8-weights (repeatable; default both).")] = None,
    prefix: Annotated[str, typer.Option(help="C symbol prefix: <prefix>_step(), <prefix>.h.")] = "model",
    windows: Annotated[int, typer.Option(help="Windows the C is checked on (host); up to 4 of them under qemu.")] = 8,
    no_c: Annotated[bool, typer.Option("--no-c", help="Skip the dependency-free C.")] = False,
    no_tflm: Annotated[bool, typer.Option("--no-tflm", help="Skip the TFLite Micro files.")] = False,
    no_cortex_m: Annotated[bool, typer.Option("--no-cortex-m", help="Skip the Cortex-M build and qemu run.")] = False,
    recipe: Annotated[str, typer.Option(help="Recipe whose tolerances judge the C (fp32; dynamic-int8 for "
                                             "int8-weights).")] = "default",
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output directory.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Firmware files from an export: TFLite Micro C arrays with a measured arena, and dependency-free C proven on
    this host and on an emulated Cortex-M."""
    from edge_lstm import firmware
    from edge_lstm.errors import EdgeLstmError
    from edge_lstm.recipes import load_recipe

    opts = firmware.FirmwareOptions(precisions=tuple(precision) if precision else firmware.FirmwareOptions.precisions,
                                    prefix=prefix, c=not no_c, tflm=not no_tflm, cortex_m=not no_cortex_m,
                                    windows=windows, recipe=load_recipe(recipe))
    from edge_lstm.outputs import shown

    output = shown(output)  # printed as written: a/../c as c
    say = (lambda _m: None) if as_json else (lambda m: err.print(escape(f"· {m}"), soft_wrap=True))
    result = firmware.firmware(source, output, opts, target, force, say, check=False)
    if as_json:
        jsonio.emit(result.report, indent=None)  # a failed check below still carries it, as "result"
    else:
        print_summary(result.report, output)
    try:
        firmware.enforce(result)
    except EdgeLstmError as e:
        e.hint = f"{e.hint or ''}\nReport: {output / 'firmware.md'} and {output / 'firmware.json'}".strip()
        raise


def print_summary(report: dict[str, Any], output: Path) -> None:
    """One line per C precision and TFLite Micro model, with the measured figures and their labels."""
    for e in report["c"]:
        host, cm = e["host"], e["cortex_m"]
        line = f"C {e['precision']:<13} host {'PASS' if host['passed'] else 'FAIL'}"
        m = cm.get("model")
        if cm.get("status") == "ran":
            ins = cm["emulated_instructions"]
            line += (f"; {cm['cpu']} (qemu {cm['qemu_machine']}) {'PASS' if cm['passed'] else 'FAIL'}: flash "
                     f"{m['flash_bytes']:,} B, RAM {m['ram_bytes']:,} B (stack {m['stack_bytes']:,} B), "
                     f"{ins['per_window']:,} emulated instructions per window")
        elif m:
            line += f"; {cm['cpu']} built (not run): flash {m['flash_bytes']:,} B, RAM {m['ram_bytes']:,} B"
        else:
            line += f"; Cortex-M {cm.get('why', 'skipped')}"
        out.print(escape(line), soft_wrap=True)
    for t in report["tflm"]:
        a = t["arena"]
        in_use = a.get("recording_allocator_bytes")
        arena = (f"arena {a['measured_bytes']:,} B (the smallest that allocates and invokes"
                 + (f"; {in_use:,} B in use after allocation, the figure profile shows" if in_use else "")
                 + f"), MODEL_ARENA_SIZE {a['recommended_bytes']:,} B") if a.get("measured_bytes") \
            else "arena not measured"
        out.print(escape(f"TFLite Micro {t['artifact']}: array {t['bytes']:,} B, {arena}"), soft_wrap=True)
    if report["c"] and report["c"][0]["cortex_m"].get("model"):
        out.print(f"[dim]C flash/RAM: {escape(report['c'][0]['cortex_m']['model']['label'])}[/dim]", soft_wrap=True)
    if report["tflm"]:
        out.print(f"[dim]TFLite Micro: {escape(report['tflm'][0]['label_sizes'])}[/dim]", soft_wrap=True)
    for n in report["notes"]:
        out.print(escape(f"note: {n}"), soft_wrap=True)
    out.print(escape(f"Report: {output / 'firmware.md'} and {output / 'firmware.json'}"), soft_wrap=True)
