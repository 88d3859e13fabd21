"""The ``edge-lstm`` command line: a thin typer wrapper over the Python API.

Exit codes are set in one place (:func:`main`): 0 success; 2 bad invocation or
unreadable input; 3 a validation tolerance failed; 4 over a device budget;
5 the model uses something that cannot be exported; 6 a remote device run
failed; 7 the emulated device could not be built, started or stopped; 1 only
for internal bugs. A user error prints one message, never a
traceback, unless ``--debug``: then the traceback is printed on stderr first, and the
message, the JSON error and the exit code are the same as without it.
"""

from __future__ import annotations

import contextlib
import errno
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from edge_lstm import __version__, jsonio, registry
from edge_lstm.cli_options import DtypeOpt, JsonOpt, ShapeOpt, TrustOpt
from edge_lstm.errors import EdgeLstmError, UsageError, ValidationFailed
from edge_lstm.outputs import closed_pipe_exit

if TYPE_CHECKING:
    from edge_lstm.reports import ExportReport

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Take LSTM models trained in PyTorch to edge devices: export, quantize, validate, profile.")
err = Console(stderr=True)
out = Console()


def emit(payload: Any, as_json: bool, human: str | None = None) -> None:
    """Print ``payload`` as strict JSON for machines (:mod:`edge_lstm.jsonio`), or ``human`` text for people."""
    if as_json:
        jsonio.emit(payload)
    elif human is not None:
        out.print(human, highlight=False, markup=False, soft_wrap=True)


def _version(value: bool) -> None:
    if value:
        print(f"edge-lstm {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """edge-lstm: export, quantize, validate and profile PyTorch LSTM models for edge devices."""
    # --debug is declared here for --help and parsing; main() reads it from argv before typer runs, so that
    # errors raised while parsing show their traceback too.




def _shapes(items: list[str] | None) -> list[tuple[int, ...]]:
    from edge_lstm.spec import parse_shape

    return [parse_shape(s) for s in items or []]


def _dtypes(items: list[str] | None) -> tuple[str, ...]:
    from edge_lstm.id_inputs import parse_dtype

    return tuple(parse_dtype(s) for s in items or [])


@app.command()
def info(
    model: Annotated[Path, typer.Argument(help="model.pt (checkpoint, TorchScript, .pt2, pickled module), or an "
                                               ".onnx, .tflite, .pte or .ort file.")],
    input_shape: ShapeOpt = None,
    input_dtype: DtypeOpt = None,
    trust_pickle: TrustOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Show what a model or artifact holds: format, layers or ops, parameters, MACs, sizes, inputs and outputs.

    The input shapes are checked against the model's layers as ``export`` checks them.
    """
    kind = _artifact_kind(model)
    if kind in ("tflite", "executorch", "ort") or (kind == "onnx" and not input_shape and not input_dtype):
        from edge_lstm.inspect_artifact import describe, render

        if input_shape or input_dtype:
            raise UsageError(f"--input-shape and --input-dtype do not apply to a {registry.fmt(kind).suffix} file: "
                             "it carries its own inputs.", "Drop --input-shape and --input-dtype.")
        described = describe(model)
        emit(described, as_json, render(described))
        return
    from edge_lstm.cost import model_cost, refuse_unknown
    from edge_lstm.pipeline import prepare
    from edge_lstm.sources import open_model

    shapes, dtypes = _shapes(input_shape) or None, _dtypes(input_dtype)  # a bad option is named first
    if kind is None:
        refuse_unknown(model)  # neither an artifact nor a PyTorch file: say so, as profile does
    loaded = open_model(model, shapes, trust_pickle, dtypes)
    proto, _step = prepare(loaded, streaming=False)
    summary = {**loaded.summary(), **model_cost(proto).to_dict()}
    lines = [
        f"{loaded.name} ({summary['format']}{', ' + summary['arch'] if summary['arch'] else ''})",
        f"parameters: {summary['parameters']:,}",
        f"MACs per inference: {summary['macs_per_inference']:,} ({summary['macs_per_step']:,} per time step)",
        "inputs:  " + ", ".join(str(t) for t in loaded.inputs.inputs),
        "outputs: " + ", ".join(str(t) for t in loaded.outputs),
        "layers:",
        *[f"  {line}" for line in summary["layers"]],
    ]
    emit(summary, as_json, "\n".join(lines))


def _artifact_kind(path: Path) -> str | None:
    """The registry format ``path`` holds (by content), else None (a PyTorch file, or load() says why).

    Reads the header only, so ``info`` on an artifact imports neither torch nor onnx (device installs).
    """
    try:
        with path.open("rb") as f:
            head = f.read(8)
    except OSError:
        return None
    known = registry.format_of_bytes(head)  # tflite, executorch, ort: their flatbuffer identifiers
    if known is not None:
        return known
    return "onnx" if head[:1] == b"\x08" and path.is_file() else None


@app.command()
def export(
    model: Annotated[Path, typer.Argument(help="model.pt: checkpoint, TorchScript, .pt2, or pickled module.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output directory (created; refused if it exists "
                                         "unless --force).")] = Path("out"),
    fmt: Annotated[list[str] | None, typer.Option("--format", help=registry.help_formats())] = None,
    precision: Annotated[list[str] | None, typer.Option("--precision", help=registry.help_precisions())] = None,
    lowering: Annotated[str | None, typer.Option("--lowering", help=registry.help_lowerings())] = None,
    streaming: Annotated[bool, typer.Option("--streaming", help="Also export a one-step streaming model.")] = False,
    data: Annotated[Path | None, typer.Option("--data", help="CSV/NPY series (or NPY windows) to validate on; "
                                              "seeded random data when omitted.")] = None,
    calib: Annotated[str | None, typer.Option("--calib", help="CSV/NPY for int8/int16x8 calibration, "
                                              "or 'random'.")] = None,
    io: Annotated[str, typer.Option("--io", help="int8 TFLite I/O: float or int8.")] = "float",
    recipe: Annotated[str, typer.Option("--recipe", help="Bundled recipe name or a TOML path.")] = "default",
    input_shape: ShapeOpt = None,
    input_dtype: DtypeOpt = None,
    trust_pickle: TrustOpt = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output directory.")] = False,
    profile: Annotated[bool, typer.Option("--profile", help="Measure latency, memory and size of every artifact "
                                          "into the report (and report.html).")] = False,
    target: Annotated[str | None, typer.Option("--target", help="Device target name or TOML: latency estimate and "
                                               "flash/RAM budgets (exit 4 when over); implies --profile.")] = None,
    firmware: Annotated[bool, typer.Option("--firmware", help="Also write fw/: TFLite Micro C arrays and "
                                           "dependency-free C, proven on this host and an emulated Cortex-M "
                                           "(fw/firmware.md).")] = False,
    prove_on: Annotated[str | None, typer.Option("--prove-on", help="Also validate every artifact on a device's "
                                                 "runtimes: arm64 (the emulated device; needs root) or a --remote "
                                                 "spec such as pi@raspberrypi.local.")] = None,
    prove_python: Annotated[str, typer.Option(help="Python on the --prove-on device.")] = "python3",
    ssh_config: Annotated[Path | None, typer.Option(help="ssh config file (-F) for --prove-on; default: "
                                                    "your own.")] = None,
    bundle: Annotated[bool, typer.Option("--bundle", help="Also write OUT/<name>.bundle.zip: the artifacts that "
                                         "passed, with their manifest, for `edge-lstm predict` on a device.")] = False,
    units: Annotated[str | None, typer.Option("--units", help="Units of the forecast target (e.g. °F), shown beside "
                                              "every forecast error; default: the checkpoint's metadata.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Export MODEL to ONNX/TFLite, quantize as asked, and validate every artifact against PyTorch."""
    from edge_lstm.outputs import shown
    from edge_lstm.pipeline import ExportOptions
    from edge_lstm.pipeline import export as run_export
    from edge_lstm.recipes import load_recipe

    output = shown(output)  # every message and path printed names it as written: a/../c as c
    rec = load_recipe(recipe).with_overrides(formats=fmt, precisions=precision, lowering=lowering)
    opts = ExportOptions(output_dir=output, recipe=rec, streaming=streaming, data=data, calib=calib, io=io,
                         input_shapes=tuple(_shapes(input_shape)), trust_pickle=trust_pickle, force=force,
                         profile=profile, target=target, prove_on=prove_on, prove_python=prove_python,
                         ssh_config=str(ssh_config) if ssh_config else None, firmware=firmware, bundle=bundle,
                         units=units, input_dtypes=_dtypes(input_dtype))
    if "tflite" in rec.formats:  # the quantizer's interpreters would print LiteRT's delegate line: see the function
        from edge_lstm.runners.quiet import settle_litert_log

        settle_litert_log()
    with _progress(as_json) as say:
        try:
            result = run_export(model, opts, say)
        except EdgeLstmError as e:
            if e.exit_code in (3, 4, 5) and (output / "report.json").exists():  # the others were written
                advice = e.advice if isinstance(e, ValidationFailed) else ""
                e.hint = f"Report with every metric: {output / 'report.md'}" + (
                    f" and {output / 'report.html'}" if (output / "report.html").exists() else "") + (
                    f". {advice}" if advice else "")
                written = jsonio.loads_strict((output / "report.json").read_text())
                if as_json:  # the error object carries the report as "result"
                    jsonio.emit(written)
                else:  # the table shows what failed beside what passed
                    emit(None, False, _export_summary(written, output))
            raise
    summary = _export_summary(result.export_report, output)
    if bundle and not as_json:
        from edge_lstm.bundle import default_name

        made = output / default_name(output)
        if made.is_file():  # written when at least one artifact passed
            summary += f"\nBundle: {made} (for `edge-lstm predict` on a device; `edge-lstm bundle verify` checks it)"
    emit(result.report, as_json, summary)


def _export_summary(report: ExportReport | dict[str, Any], output: Path) -> str:
    from edge_lstm.cli_summary import export_summary

    return export_summary(report, output)


def _progress(quiet: bool) -> Any:
    """Progress on stderr for long work: bars with counts, one line per step off a terminal, silent with --json."""
    from edge_lstm.cli_progress import progress_for

    return progress_for(quiet, err)


from edge_lstm import (  # noqa: E402 - register on the app defined above
    cli_bundle,
    cli_device,
    cli_firmware,
    cli_ops,
    cli_profile,
    cli_train,
    cli_tune,
)

cli_profile.register(app)
cli_ops.register(app)
cli_device.register(app)
cli_train.register(app)
cli_tune.register(app)
cli_firmware.register(app)
cli_bundle.register(app)


_DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS)
#: an OSError naming a path the user gave: unusable input, exit 2 (not a bug)
_PATH_ERRORS = (errno.ENAMETOOLONG, errno.ELOOP, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR,
                errno.ENOENT)


def _wants_json(args: list[str]) -> bool:
    return "--json" in (args[: args.index("--")] if "--" in args else args)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; map every failure to its exit code and one message (and, with --json, one JSON object)."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    as_json = _wants_json(args)
    rc: Any = None
    try:
        with jsonio.json_stdout() if as_json else _nothing():
            rc = app(args=args, standalone_mode=False)
    except EdgeLstmError as e:
        _trace(e, debug)
        return _fail(e, as_json)
    except typer.Exit as e:
        return int(e.exit_code or 0)
    except (typer.Abort, KeyboardInterrupt):
        return _aborted(as_json)
    except BrokenPipeError:  # `edge-lstm ... --json | head`: the reader has gone; stop quietly, as Unix tools do
        return closed_pipe_exit()
    except SystemExit as e:  # typer turns a broken pipe inside a command (stdout or stderr) into SystemExit(1)
        if isinstance(e.__context__, BrokenPipeError):
            return closed_pipe_exit()
        raise
    except OSError as e:
        _trace(e, debug)
        if e.errno in _PATH_ERRORS and e.filename:
            return _fail(UsageError(f"Cannot use '{e.filename}': {e.strerror}.", "Check the path."), as_json)
        if e.errno not in _DISK_ERRORS:
            return _internal(e, debug, as_json)
        from edge_lstm.outputs import io_error

        return _fail(io_error(e), as_json)
    except MemoryError as e:
        _trace(e, debug)
        return _fail(UsageError("Ran out of memory: the input (or a size it declares) is too large for this "
                                "machine.", "Check --input-shape and the sizes of the data and model files."), as_json)
    except Exception as e:
        if hasattr(e, "show") and hasattr(e, "exit_code"):  # typer's (vendored click) usage errors
            e.show()
            if as_json:
                fmt = getattr(e, "format_message", None)
                jsonio.emit_error(2, "usage", str(fmt() if callable(fmt) else e),
                                  "Run edge-lstm COMMAND --help for the accepted options.")
            return 2
        return _internal(e, debug, as_json)
    if rc == 130:  # typer turns Ctrl-C into Exit(130) and, outside standalone mode, returns it
        return _aborted(as_json)
    return int(rc) if isinstance(rc, int) else 0


def _aborted(as_json: bool) -> int:
    err.print("aborted")
    if as_json:
        jsonio.emit_error(130, "aborted", "Interrupted.", None)
    return 130


@contextlib.contextmanager
def _nothing() -> Any:
    yield


def _fail(e: EdgeLstmError, as_json: bool) -> int:
    from rich.text import Text

    err.print(Text("error: ", style="red") + Text(e.render()), soft_wrap=True)
    if as_json:
        jsonio.emit_failure(e)
    return e.exit_code


def _trace(e: BaseException, debug: bool) -> None:
    """With ``--debug``, the traceback on stderr, before the same message and exit code as without it."""
    if debug:
        import traceback

        sys.stderr.flush()
        traceback.print_exception(type(e), e, e.__traceback__, file=sys.stderr)
        sys.stderr.flush()


def _internal(e: BaseException, debug: bool, as_json: bool) -> int:
    _trace(e, debug)
    from rich.text import Text

    ask = ("Report this bug with the traceback above." if debug else
           "Run again with --debug (before the command: edge-lstm --debug ...) and report this bug.")
    err.print(Text("internal error: ", style="red") + Text(f"{type(e).__name__}: {e}\n{ask}"), soft_wrap=True)
    if as_json:
        jsonio.emit_error(1, "internal", f"{type(e).__name__}: {e}", ask)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
