"""CLI commands ``profile`` and ``targets list|show``, registered onto the main typer app.

The commands raise :class:`~edge_lstm.errors.EdgeLstmError` subclasses; the
main CLI maps them to exit codes (2 usage, 4 over budget, 6 remote failure).
``--json`` prints machine JSON only.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from edge_lstm import jsonio, registry
from edge_lstm.cli_options import ForceOpt, JsonOpt, ShapeOpt, TrustOpt
from edge_lstm.errors import EdgeLstmError
from edge_lstm.reports import ProfileReport

#: a pipe or a log gets the 100 columns the tables are laid out for (rich would cut them at 80); a terminal or
#: COLUMNS keeps its own width
out = Console(highlight=False, width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 100)


def register(app: typer.Typer) -> None:
    """Add ``profile`` and the ``targets`` group to ``app``."""
    app.command("profile")(profile_command)
    targets_app = typer.Typer(help="Device targets: CPU, memory, runtimes and estimated throughput.",
                              no_args_is_help=True)
    targets_app.command("list")(targets_list)
    targets_app.command("show")(targets_show)
    app.add_typer(targets_app, name="targets")


def profile_command(
    artifacts: Annotated[list[Path], typer.Argument(help="Artifacts to profile ("
                                                          + ", ".join(f.suffix for f in registry.FORMATS_TABLE)
                                                          + "; a model.pt for the PyTorch reference).",
                                                          show_default=False)],
    runtime: Annotated[str, typer.Option(help=registry.help_runtimes())] = "auto",
    threads: Annotated[int, typer.Option(help="Intra-op threads.")] = 1,
    runs: Annotated[int, typer.Option(help="Measured runs per artifact.")] = 200,
    warmup: Annotated[int, typer.Option(help="Untimed runs before measuring.")] = 20,
    streaming: Annotated[bool, typer.Option("--streaming", help="Calls are consecutive steps of a streaming "
                                                                "model: no state reset between them.")] = False,
    no_xnnpack: Annotated[bool, typer.Option("--no-xnnpack", help="LiteRT without the XNNPACK delegate.")] = False,
    target: Annotated[str | None, typer.Option(help="Target name or .toml path: check budgets (exit 4 when "
                                                    "over) and add latency estimates.")] = None,
    remote: Annotated[str | None, typer.Option(help="Run on a device over ssh: user@host, an ssh config "
                                                    "alias or ssh://user@host:port.")] = None,
    remote_python: Annotated[str, typer.Option(help="Python on the device.")] = "python3",
    remote_dir: Annotated[str | None, typer.Option(help="Existing directory on the device to work in "
                                                        "(default: a fresh mktemp -d, removed afterwards).")] = None,
    ssh_config: Annotated[Path | None, typer.Option(help="ssh config file (-F); default: your own.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds allowed per artifact.")] = 600.0,
    compare: Annotated[Path | None, typer.Option(help="A previous profile report.json: show the changes.")] = None,
    output: Annotated[Path | None, typer.Option(
        help="Write the JSON report here, and its HTML page beside it (report.html for report.json, "
             "else NAME.html).")] = None,
    force: ForceOpt = False,
    export_report: Annotated[Path | None, typer.Option(help="An export report.json whose errors go into the "
                                                            "HTML table.")] = None,
    input_shape: ShapeOpt = None,
    trust_pickle: TrustOpt = False,
    reference: Annotated[Path | None, typer.Option(
        help="A reference (model.pt, or the float .onnx/.tflite) run on the same inputs: each artifact's outputs "
             "are compared with it (exit 3 when they differ).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Measure latency, memory, size and compute of each artifact, here or on a device.

    Outputs are checked for NaN/Inf (and against --reference): a run with wrong outputs is exit 3, and on a
    microcontroller target no budget reads "ok" unless the artifact ran correctly on TFLite Micro.
    """
    from edge_lstm import profile as prof
    from edge_lstm.remote import RemoteConfig
    from edge_lstm.spec import parse_shape

    options = prof.ProfileOptions(runtime=runtime, threads=threads, runs=runs, warmup=warmup,
                                  streaming=streaming, xnnpack=not no_xnnpack, timeout_s=timeout,
                                  input_shapes=tuple(parse_shape(s) for s in input_shape or ()),
                                  trust_pickle=trust_pickle, reference=str(reference) if reference else None)
    if output:
        from edge_lstm.outputs import shown

        output = shown(output)  # printed as written: a/../c as c
        _check_outputs(output, force)  # before the (possibly long) measurement
    tgt = None
    if target:  # targets read TOML (tomllib, Python 3.11+): imported only when asked for
        from edge_lstm.targets import load_target

        tgt = load_target(target)
    previous = prof.load_report(compare) if compare else None
    rcfg = None
    if remote is not None:  # an empty --remote is refused by RemoteConfig, never taken as 'local'
        rcfg = RemoteConfig(remote, python=remote_python, remote_dir=remote_dir,
                            ssh_config=str(ssh_config) if ssh_config else None)
    report = prof.profile_report(list(artifacts), options, tgt, rcfg)
    if previous is not None:
        report.compare = prof.compare(report.to_dict(), previous)
    if output:
        _write_outputs(report, output, export_report, force)
    if as_json:
        jsonio.emit(report.to_dict(), indent=None)
    else:
        print_report(report)
    _enforce_outputs(report, output, as_json)
    prof.enforce_budgets(report)


def _enforce_outputs(report: ProfileReport, output: Path | None, as_json: bool) -> None:
    """Exit 3 on a run with wrong outputs, the hint naming where its report really is: ``--output``'s files, the
    ``"result"`` of the JSON error, or only the table printed above (no report was written)."""
    from edge_lstm.errors import ValidationFailed
    from edge_lstm.tflm_check import enforce_outputs

    try:
        enforce_outputs(report.to_dict())
    except ValidationFailed as e:
        if output is not None:
            where = f"the report with every run is {output} (and {_html_path(output)})"
        elif as_json:
            where = "the report with every run is the \"result\" of this JSON error; --output also writes it"
        else:
            where = "no report was written (the table above lists every run); pass --output report.json to keep one"
        e.hint = f"A run with wrong outputs does not count against any budget; {where}."
        raise


def _html_path(output: Path) -> Path:
    """The HTML report beside the JSON one: ``report.html`` for ``report.json``, else ``<name>.html``."""
    return output.with_name("report.html") if output.name == "report.json" else output.with_suffix(".html")


def _check_outputs(output: Path, force: bool) -> None:
    """Refuse to replace an existing JSON or HTML report without ``--force``."""
    from edge_lstm.errors import OutputExistsError

    for path in (output, _html_path(output)):
        if path.exists() and not force:
            raise OutputExistsError(f"Output '{path}' already exists.",
                                    "Pass --force to replace it, or choose another --output.")


def _write_outputs(report: ProfileReport, output: Path, export_report: Path | None, force: bool = False) -> None:
    """The JSON report and the HTML beside it, all or nothing (a full disk leaves neither)."""
    from edge_lstm import profile as prof
    from edge_lstm.outputs import add_to_marker, io_error, write_files_atomic
    from edge_lstm.report_html import render

    _check_outputs(output, force)
    exp = prof.load_export_report(export_report) if export_report else None
    made = [p for p in (output.parent, *output.parent.parents) if not p.exists()]
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        write_files_atomic({output: (jsonio.dumps(report.to_dict(), indent=2) + "\n").encode(),
                            _html_path(output): render(report, exp).encode("utf-8")})
        add_to_marker(output.parent, [output.name, _html_path(output).name])
    except (OSError, EdgeLstmError) as e:
        for d in made:  # directories made for this report: removed again, innermost first
            with contextlib.suppress(OSError):
                d.rmdir()
        raise e if isinstance(e, EdgeLstmError) else io_error(e, output) from e


def _us(v: float | None) -> str:
    """Microseconds to 0.1; under 0.05 µs (a tiny model's estimate) is "<0.1", never a 0.0 that reads as free."""
    if v is None:
        return "–"
    return "<0.1" if 0 < v * 1e6 < 0.05 else f"{v * 1e6:,.1f}"


#: what profile's arena figure is (the runner's arena_used_bytes), beside what firmware measures
ARENA_IN_USE = ("TFLite Micro's recording allocator after allocating the tensors (planned tensor buffers, "
                "persistent structures, variables) in an ample arena. The arena must be larger while the "
                "allocator plans tensor memory (a temporary scratch for every tensor): edge-lstm firmware "
                "measures the smallest arena that allocates and invokes, which can be the larger figure.")


def _kib(v: int | None) -> str:
    return "–" if v is None else f"{v / 1024:,.1f}"


def print_report(report: ProfileReport | dict[str, Any]) -> None:
    """Rich tables: latency, memory and size per artifact; estimates and budgets; comparisons."""
    report = ProfileReport.of(report)
    dev, emulated = report.device, report.emulated
    where = (f"{report.where}: {dev.get('machine')}, {dev.get('os')}, Python {dev.get('python')}" if dev
             else report.where)
    tag = " EMULATED" if emulated else ""  # emulated time and memory measure qemu-user, not the device
    t = Table(title=f"Profile ({where}){' - EMULATED: not device latency' if emulated else ''}", title_justify="left")
    for col in ("artifact", "runtime", "load ms", f"first µs{tag}", f"p50 µs{tag}", f"p99 µs{tag}",
                f"per sample µs{tag}", f"peak RSS KiB{tag}", "arena in use KiB", "file KiB"):
        t.add_column(col, justify="left" if col in ("artifact", "runtime") else "right")
    for a in report.artifacts:
        lat = a["latency_s"]
        t.add_row(a["artifact"], a["runtime"], f"{a['load_s'] * 1e3:,.1f}", _us(a["first_s"]),
                  _us(lat.get("p50")), _us(lat.get("p99")), _us(a["per_sample_s"]),
                  _kib(a["memory"]["peak_rss_bytes"]), _kib(a["arena_bytes"]), _kib(a["size"]["file_bytes"]))
    out.print(t)
    for a in report.artifacts:
        c, size, lat = a.get("cost") or {}, a["size"], a["latency_s"]
        macs = f"{c['macs']:,} MACs ({c['macs_per_step']:,} per step), {c['params']:,} params, " if c else ""
        out.print(f"[dim]{a['artifact']}: {a['runtime']} {a['runtime_version']}, {a['threads']} thread(s), "
                  f"{lat.get('runs', 0)} runs (std {_us(lat.get('std'))} µs, p90 {_us(lat.get('p90'))} µs); "
                  f"{macs}{_split(size)}[/dim]")
    if report.artifacts:
        out.print(f"[dim]memory: {report.artifacts[0]['memory']['method']}[/dim]")
    if any(a.get("arena_bytes") is not None for a in report.artifacts):
        out.print(f"[dim]arena in use: {ARENA_IN_USE}[/dim]")
    if report.target:
        _print_target_checks(report, report.target)
    if report.compare:
        _print_compare(report.compare)


def _print_target_checks(report: ProfileReport, tg: dict[str, Any]) -> None:
    t = Table(title=f"Target {tg['name']}: {tg['display_name']}", title_justify="left")
    measured = "EMULATED p50 µs" if report.emulated else f"measured p50 µs ({report.where})"
    for col in ("artifact", measured, "ESTIMATE µs on target", "flash", "RAM", "runs there"):
        t.add_column(col)
    notes = []
    for a in report.artifacts:
        checks = {c["budget"]: c for c in a.get("budget") or []}
        est = a.get("estimate")
        notes += [f"{a['artifact']}: {c['note']}" for c in checks.values() if c.get("note")]
        t.add_row(a["artifact"], _us(a["latency_s"].get("p50")), f"~{_us(est['latency_s'])} (estimate)" if est
                  else "–", _budget_cell(checks.get("flash")), _budget_cell(checks.get("ram")),
                  _runs_there_cell(a["runtime"], checks.get("runtime")))
    out.print(t)
    for n in notes:
        out.print(f"note: {n}")
    out.print(f"[dim]{tg['throughput_method']}[/dim]")


def _runs_there_cell(runtime: str, c: dict[str, Any] | None) -> str:
    """Whether the target runs the artifact: yes on its runtime, another runtime of it does, or not at all."""
    if c is None:
        return f"yes ({runtime})"
    if c["status"] == "not-runnable":
        return "[red]NOT RUNNABLE[/red] (see the note)"
    return f"not on {runtime}; another row's runtime is"


def _budget_cell(c: dict[str, Any] | None) -> str:
    if c is None or c["status"] == "skipped":
        return "–"
    if c["status"] == "not-measured":
        return "not measured"
    if c["status"] == "unverified":
        return f"unverified ({c['used_bytes'] / c['budget_bytes']:.1%} of {_bytes(c['budget_bytes'])})"
    pct = c["used_bytes"] / c["budget_bytes"]
    if c["status"] == "over":
        return f"[red]OVER by {_bytes(c['over_bytes'])}[/red] ({pct:.0%})"
    return f"ok ({pct:.1%} of {_bytes(c['budget_bytes'])})"


def _print_compare(rows: list[dict[str, Any]]) -> None:
    t = Table(title="Change against the previous report", title_justify="left")
    for col in ("artifact", "runtime", "p50", "peak RSS", "file size"):
        t.add_column(col)
    for r in rows:
        if r["previous"] is None:
            t.add_row(r["artifact"], r["runtime"], "new", "", "")
            continue
        t.add_row(r["artifact"], r["runtime"], _delta(r["p50_s"], 1e6, "µs"),
                  _delta(r["peak_rss_bytes"], 1 / 1024, "KiB"), _delta(r["file_bytes"], 1 / 1024, "KiB"))
    out.print(t)


def _delta(d: dict[str, Any], scale: float, unit: str) -> str:
    if d["change"] is None:
        return "–"
    ratio = f" ({d['ratio'] - 1:+.1%})" if d["ratio"] is not None else ""
    return f"{d['old'] * scale:,.1f} → {d['new'] * scale:,.1f} {unit}{ratio}"


def targets_list(
    as_json: JsonOpt = False,
) -> None:
    """List the built-in device targets."""
    from edge_lstm.targets import list_targets

    targets = list_targets()
    if as_json:
        jsonio.emit([t.to_dict() for t in targets], indent=None)
        return
    t = Table(title="Device targets (throughput figures are estimates)", title_justify="left")
    for col in ("name", "device", "cores × clock", "RAM", "flash", "runtimes", "lowering", "precision",
                "est. fp32 MAC/s"):
        t.add_column(col)
    for tg in targets:
        t.add_row(tg.name, tg.display_name, f"{tg.cores} × {tg.clock_hz / 1e9:.2f} GHz", _bytes(tg.ram_bytes),
                  _bytes(tg.flash_bytes), ", ".join(tg.runtimes), tg.preferred_lowering, tg.preferred_precision,
                  f"~{tg.fp32_macs_per_s:.2g}")
    out.print(t)


def targets_show(
    name: Annotated[str, typer.Argument(help="Target name or path of a target .toml.", show_default=False)],
    as_json: JsonOpt = False,
) -> None:
    """Show one target with the sources of its figures."""
    from edge_lstm.targets import load_target

    tg = load_target(name)
    if as_json:
        jsonio.emit(tg.to_dict(), indent=None)
        return
    t = Table(title=f"{tg.name}: {tg.display_name}", show_header=False, title_justify="left")
    t.add_column("field")
    t.add_column("value")
    rows = [("kind", tg.kind), ("CPU", f"{tg.cpu} ({tg.arch})"), ("cores", str(tg.cores)),
            ("clock", f"{tg.clock_hz / 1e6:,.0f} MHz"), ("RAM", f"{_bytes(tg.ram_bytes)} "
                                                             f"(model budget {_bytes(tg.ram_budget_bytes)})"),
            ("flash", f"{_bytes(tg.flash_bytes)} (model budget {_bytes(tg.flash_budget_bytes)})"),
            ("runtimes", ", ".join(tg.runtimes)), ("preferred lowering", tg.preferred_lowering),
            ("preferred precision", tg.preferred_precision),
            ("throughput (ESTIMATE)", f"fp32 ~{tg.fp32_macs_per_s:.3g} MAC/s, int8 ~{tg.int8_macs_per_s:.3g} MAC/s"),
            ("how estimated", tg.throughput_method)]
    rows += [(f"source: {k}", v) for k, v in tg.sources]
    for k, v in rows:
        t.add_row(k, v)
    out.print(t)


def _bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:,.3g} {unit}"
    return f"{n} B"


def _split(size: dict[str, Any]) -> str:
    """``W B weights + G B graph``, or the file size where the format's weights are not told apart (.ort, .pte)."""
    if size.get("weights_bytes") is None:
        return f"{size['file_bytes']:,} B (weights not split from the program for this format)"
    return f"{size['weights_bytes']:,} B weights + {size['graph_bytes']:,} B graph"
