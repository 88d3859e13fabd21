"""CLI commands ``bundle`` (make one from an export), ``bundle verify`` and ``predict``, registered onto a typer app.

``predict`` and ``bundle verify`` are the device side: they run with numpy,
jsonschema and one runtime, on Python 3.9+ (:mod:`edge_lstm.entry` serves them
there). Typer reads the annotations at run time: on Python 3.9 it cannot see ``Annotated``
options through string annotations, so this module does not use ``from __future__
import annotations``, its annotations are real 3.9 objects (``Optional``, ``List``;
no ``X | None``), and the device commands' options default to ``""`` rather than
None.
"""

import sys
from pathlib import Path
from typing import Annotated, Any, List, Optional  # noqa: UP035 - typer evaluates the annotations on Python 3.9

import typer
from typer.core import TyperGroup

from edge_lstm import jsonio
from edge_lstm.cli_options import JsonOpt


class _BundleGroup(TyperGroup):
    """``bundle OUT_DIR ...`` runs ``bundle create OUT_DIR ...``; ``bundle verify FILE`` verifies."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["create", *args]
        return list(super().parse_args(ctx, args))


def register(app: typer.Typer, device_only: bool = False) -> None:
    """Add ``predict`` and the ``bundle`` group (``bundle create`` only on a host install) to ``app``."""
    app.command("predict")(predict_command)
    group = typer.Typer(cls=_BundleGroup, no_args_is_help=True,
                        help="Bundles: `bundle OUT_DIR -o model.bundle.zip` packs an export for devices; "
                             "`bundle verify model.bundle.zip` checks one.")
    if not device_only:
        group.command("create")(bundle_create)
    group.command("verify")(bundle_verify)
    app.add_typer(group, name="bundle")


def _print(text: str) -> None:
    print(text, flush=True)


def bundle_create(
    out_dir: Annotated[Path, typer.Argument(help="The output directory of `edge-lstm export`.")],
    artifact: Annotated[Optional[List[str]], typer.Option(  # noqa: UP006, UP045
        "--artifact", help="An artifact file to include (repeatable, in the order given; the first that fits is the "
                           "one `predict` runs). Default: every artifact that passed validation.")] = None,
    output: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        "-o", "--output", help="The bundle to write (default: <model>.bundle.zip here).")] = None,
    features: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="Feature names, comma-separated, in the model's input order (default: from the checkpoint, else the "
             "header of the export's --data CSV).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing bundle file.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Pack an export's artifacts with a manifest (features, normalisation, state map, hashes) into a bundle."""
    from edge_lstm import bundle

    names = [f.strip() for f in features.split(",")] if features else None
    from edge_lstm.outputs import shown

    target = shown(output or Path(bundle.default_name(out_dir)))  # printed as written: a/../c as c
    summary = bundle.write(out_dir, target, list(artifact or []) or None, names, force)
    if as_json:
        jsonio.emit(summary)
        return
    lines = [f"Wrote {target} ({summary['bytes']:,} bytes, sha256 {summary['sha256'][:16]}...): model "
             f"{summary['model']}, window {summary['window']}, features {', '.join(summary['features'])}"]
    lines += [_artifact_line(a) for a in summary["artifacts"]]
    lines += [f"  left out: {a['file']}: {a['why']}" for a in summary.get("left_out", [])]
    _print("\n".join(lines))


def _artifact_line(a: dict[str, Any]) -> str:
    mode = "streaming" if a["streaming"] else "window"
    state = f", state {a['state']}" if a["state"] != "none" else ""
    return (f"  {a['file']:<32} {a['size_bytes']:>9,} B  {a['format']} {a['precision']} {mode}{state}; runs on "
            f"{', '.join(a['runtimes'])}")


def bundle_verify(
    bundle_path: Annotated[Path, typer.Argument(metavar="BUNDLE", help="A model.bundle.zip.")],
    as_json: JsonOpt = False,
) -> None:
    """Check a bundle: the archive, the manifest against its JSON Schema, and every file's sha256 (exit 2 if not)."""
    from edge_lstm.bundle_read import open_bundle

    summary = open_bundle(bundle_path).summary()
    if as_json:
        jsonio.emit(summary)
        return
    _print("\n".join([f"{bundle_path}: OK (format {summary['format_version']}, made by edge-lstm "
                      f"{summary['edge_lstm_version']}; {summary['files']} file(s), every sha256 matches): model "
                      f"{summary['model']}, window {summary['window']}, features {', '.join(summary['features'])}",
                      *[_artifact_line(a) for a in summary["artifacts"]]]))


def predict_command(
    bundle_path: Annotated[Path, typer.Argument(metavar="BUNDLE", help="A model.bundle.zip.")],
    readings: Annotated[str, typer.Argument(help="A CSV of readings, or - to read standard input line by line.")],
    streaming: Annotated[bool, typer.Option("--streaming", help="Feed one reading per call to a streaming "
                                            "artifact (default: a window artifact, the last WINDOW readings per "
                                            "forecast).")] = False,
    output: Annotated[Optional[str], typer.Option(  # noqa: UP045
        "-o", "--output", help="Write the forecasts here (default: standard output).")] = None,
    runtime: Annotated[str, typer.Option(help="auto | litert | tflite-runtime | onnxruntime.")] = "auto",
    artifact: Annotated[Optional[str], typer.Option(help="Run this artifact of the bundle.")] = None,  # noqa: UP045
    precision: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="Run an artifact of this precision (fp32, fp16, dynamic-int8, int8, int16x8).")] = None,
    warmup: Annotated[str, typer.Option(help="Forecast from the N-th reading on (a streaming model then has a "
                                        "shorter history; a window model repeats the first reading), or 'window': "
                                        "only once a full window was seen.")] = "window",
    on_nan: Annotated[str, typer.Option(help="A NaN or missing value: refuse (exit 2), skip the reading, or reset "
                                        "(start the window over).")] = "refuse",
    on_gap: Annotated[str, typer.Option(help="A gap in the timestamps: refuse (exit 2), reset, or ignore.")] = "refuse",
    columns: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="Column names of a headerless feed, comma-separated.")] = None,
    timestamp_column: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="The timestamp column (default: one named time, timestamp, date, datetime or ts).")] = None,
    threads: Annotated[int, typer.Option(help="Runtime threads.")] = 1,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing -o file.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Forecast from readings with a bundle: normalised, one reading at a time, in the data's units."""
    from edge_lstm.outputs import shown
    from edge_lstm.predict_run import PredictRequest, run

    if output and output != "-":
        output = str(shown(output))  # printed as written: a/../c as c
    req = PredictRequest(bundle_path, readings, streaming, output or None, runtime, artifact or None, precision or None,
                         warmup, on_nan, on_gap, [c.strip() for c in columns.split(",")] if columns else None,
                         timestamp_column or None, threads, force, as_json)
    summary = run(req)
    if as_json:
        jsonio.emit(summary)
    else:
        print(summary["message"], file=sys.stderr, flush=True)
