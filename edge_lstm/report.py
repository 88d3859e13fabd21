"""Reports: ``report.json`` for machines, ``report.md`` for people.

``report.json`` holds the tool version, the model summary, the validation data,
and one entry per artifact with path, format, precision, lowering, size,
sha256, validation metrics per runtime and pass/fail.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_lstm import __version__
from edge_lstm.reports import (
    SCHEMA_VERSION,
    ArtifactEntry,
    ExportReport,
    Json,
    ProfileReport,
    ValidationDataInfo,
    ValidationEntry,
)

if TYPE_CHECKING:
    import numpy as np

    from edge_lstm.artifact import Artifact
    from edge_lstm.feeds import ValidationData
    from edge_lstm.load import LoadedModel
    from edge_lstm.reports import ModelCost

__all__ = ["SCHEMA_VERSION", "build_report", "render_markdown", "write_reports"]


def build_report(model: LoadedModel, vdata: ValidationData, artifacts: list[Artifact], cost: ModelCost | None,
                 *, recipe: str, out_dir: Path, units: str | None = None,
                 reference: dict[str, np.ndarray] | None = None) -> ExportReport:
    """The export's report. ``cost`` is the float model's, computed once from the captured graph
    (:func:`edge_lstm.cost.model_cost`); ``reference`` the float model's outputs on the validation data, when the
    caller has them (the accuracy section needs them); ``out_dir`` is where the artifacts are published."""
    from edge_lstm.accuracy import accuracy_section
    from edge_lstm.report_facts import held_out

    accuracy = accuracy_section(model, vdata, reference, artifacts, units) if reference else None
    source = Path(vdata.source)
    held = held_out(model.metadata, vdata.source, not vdata.source.startswith("random (") and source.is_file())
    return ExportReport(
        tool_version=__version__,
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        model=model.summary(),
        cost=cost,
        recipe=recipe,
        validation_data=ValidationDataInfo(source=vdata.source, samples=len(vdata.samples), steps=vdata.steps,
                                           labelled=vdata.targets is not None, held_out=held),
        artifacts=[a.entry(out_dir) for a in artifacts],
        accuracy=accuracy,
    )


def write_reports(report: ExportReport, directory: Path, html: bool = True) -> None:
    """Write ``report.json``, ``report.md`` and (unless ``html`` is False) ``report.html`` into ``directory``."""
    from edge_lstm.jsonio import dumps
    from edge_lstm.outputs import write_into

    write_into(directory, "report.json", (dumps(report.to_dict(), indent=2) + "\n").encode())
    write_into(directory, "report.md", render_markdown(report).encode())
    if html:
        from edge_lstm.report_page import write_export_html

        write_export_html(report, directory / "report.html")


def _fmt(v: Any, spec: str = ".3g") -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def render_markdown(report: ExportReport | Json) -> str:
    """A human-readable report: model, artifacts, precision table, per-output metrics."""
    from edge_lstm.report_facts import data_words

    r = ExportReport.of(report)
    m, vd, cost = r.model, r.validation_data, r.cost
    lines = [
        f"# edge-lstm export report: {r.name}",
        "",
        f"- tool: edge-lstm {r.tool_version}, {r.created}",
        f"- model: {m['format']}, {m['parameters']:,} parameters"
        + (f", {cost.macs_per_inference:,} MACs per inference" if cost and cost.macs_per_inference else ""),
        f"- inputs: {', '.join(_spec(t) for t in m['inputs'])}; outputs: {', '.join(_spec(t) for t in m['outputs'])}",
        f"- validation data: {data_words(vd)}, {vd.samples} windows of {vd.steps} steps",
        f"- verdict: **{'PASS' if r.passed else 'FAIL'}**",
        *_not_runnable(r),
        _recommended(r),
        *_proved_on(r.proved_on),
        "",
        "## Artifacts",
        "",
        "| file | format | precision | lowering | size (bytes) | ratio to float | runtime | max abs err | "
        "rel L2 | cosine | task metric (float → artifact, drop) | result |",
        "| --- | --- | --- | --- | ---: | ---: | --- | ---: | ---: | ---: | --- | --- |",
    ]
    floats = {(a.format, a.streaming): a.size_bytes for a in r.artifacts if a.precision == "fp32"}
    units = (r.accuracy or {}).get("units")
    for a in r.artifacts:
        base = floats.get((a.format, a.streaming))
        ratio = f"{a.size_bytes / base:.2f}" if base else "–"
        unvalidated = ValidationEntry(runtime="–", passed=a.passed, samples=0, data="", tolerance={})
        for v in a.validation or [unvalidated]:
            worst = max(v.outputs, key=lambda o: o["max_abs"] or 0.0) if v.outputs else {}
            t = v.task
            unit = f" {units}" if units and t and t["metric"] == "mae" else ""
            task = f"{t['metric']} {t['reference']:.4g} → {t['artifact']:.4g}{unit} ({t['drop']:+.2%})" if t else "–"
            lines.append(
                f"| {a.file} | {a.format} | {a.precision} | {a.lowering or '–'} | {a.size_bytes:,} | "
                f"{ratio} | {v.runtime} | {_fmt(worst.get('max_abs'))} | {_fmt(worst.get('rel_l2'))} | "
                f"{_fmt(worst.get('cosine'), '.6f')} | {task} | {'pass' if v.passed else '**FAIL**'} |"
            )
    lines += _accuracy(r.accuracy, vd)
    if r.accuracy is None and r.validation_data.labelled and r.model.get("task") != "forecast":
        lines += ["", "No task metric: the validation data has actual values, but this model file does not say it "
                  "is a forecaster (an edge-lstm checkpoint carries its task and normalisation; a TorchScript, "
                  "`.pt2` or ONNX file does not), so forecasts are not compared with them and the gates on the "
                  "task metric do not apply."]
    lines += ["", "## Per-output metrics", "",
              "Each row is judged by its gate (the last column): float artifacts element by element, quantized ones "
              "by aggregate gates, where the elements outside atol/rtol are shown for information only.", ""]
    lines += _per_output(r.artifacts)
    lines += _lowering_choice(r)
    if r.profile:
        lines += ["", "## Profile (measured on this host)", "", *_profile_rows(r.profile)]
    notes = [(a.file, n) for a in r.artifacts for n in a.notes]
    if notes:
        lines += ["", "## Notes", ""] + [f"- `{f}`: {n}" for f, n in notes]
    if r.not_built:
        lines += ["", "## Not built", ""] + [f"- {n['format']} {n['precision']}: {n['why']}" for n in r.not_built]
    return "\n".join(lines) + "\n"


def _lowering_choice(report: ExportReport) -> list[str]:
    """The candidates ``--lowering auto`` weighed for the target: size, validation, p50 timed here, and why."""
    from edge_lstm.report_facts import lowering_method, lowering_rows

    method = lowering_method(report)
    if method is None:
        return []
    lines = ["", "## Lowering choice", "", method, "",
             "| artifact | candidate | size (bytes) | validated | p50 µs (timed here) | chosen | why |",
             "| --- | --- | ---: | --- | ---: | --- | --- |"]
    for row in lowering_rows(report):
        p50 = f"{_us(row['p50_s'])} ({row['runs']} runs)" if row["p50_s"] is not None else "not timed"
        lines.append(f"| {row['file']} | {row['lowering']} | {row['size_bytes']:,} | {row['validated']} | {p50} | "
                     f"{'**yes**' if row['chosen'] else 'no'} | {row['why'] or '–'} |")
    return lines


def _not_runnable(report: ExportReport) -> list[str]:
    """One line per artifact that passed validation only on runtimes the --target does not run."""
    from edge_lstm.report_facts import not_runnable

    out = []
    for a in report.artifacts:
        cannot = not_runnable(report.profile, a.file)
        if cannot:
            out.append(f"- `{a.file}`: **{cannot}**")
    return out


def _recommended(report: ExportReport) -> str:
    from edge_lstm.report_facts import recommend

    rec = recommend(report)
    if rec["file"] is None:
        return f"- recommended for {rec['target']}: none ({rec['rule']})"
    return f"- recommended for {rec['target']}: `{rec['file']}` on {rec['runtime']} (rule: {rec['rule']})"


def _proved_on(proof: Json | None) -> list[str]:
    """The device the artifacts were also validated on (``--prove-on``), as it reported itself."""
    if not proof:
        return []
    d = proof.get("reported") or {}
    emulated = "; EMULATED under qemu-user: outputs prove correctness, nothing is timed" if d.get("emulated") else ""
    return [f"- also validated on {proof['device']} ({d.get('machine')}, {d.get('os')}, Python {d.get('python')}, "
            f"numpy {d.get('numpy')}{emulated}): the rows whose runtime names {d.get('machine')}"]


def _per_output(artifacts: list[ArtifactEntry]) -> list[str]:
    from edge_lstm.report_facts import elements_text, gate_text

    rows = ["| file | runtime | output | max abs | mean abs | p99 abs | max rel | RMSE | rel L2 | cosine | PSNR dB "
            "| NaN/Inf | elements outside atol/rtol | result | gate |",
            "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    for a in artifacts:
        for v in a.validation:
            for o in v.outputs:
                result = "pass" if o["passed"] else f"**FAIL**: {'; '.join(o['reasons'])}"
                rows.append(
                    f"| {a.file} | {v.runtime} | {o['name']} | {_fmt(o['max_abs'])} | {_fmt(o['mean_abs'])} | "
                    f"{_fmt(o['p99_abs'])} | {_fmt(o['max_rel'])} | {_fmt(o['rmse'])} | {_fmt(o['rel_l2'])} | "
                    f"{_fmt(o['cosine'], '.6f')} | {_fmt(o['psnr'], '.1f')} | {o['non_finite']} | "
                    f"{elements_text(o, v.tolerance)} | {result} | {gate_text(v.tolerance)} |"
                )
    return rows


def _accuracy(acc: dict[str, Any] | None, vd: ValidationDataInfo) -> list[str]:
    """Forecast errors in the data's units, the float model beside the persistence baseline."""
    if not acc:
        return []
    from edge_lstm.report_facts import data_words

    u = acc["units"]
    gain = 1 - acc["float"]["mae"] / acc["persistence"]["mae"] if acc["persistence"]["mae"] > 0 else None
    lines = ["", "## Accuracy against the actual values", "",
             f"Forecast of {acc['quantity']} on {acc['windows']} windows of {data_words(vd)}, in {u}"
             + ("" if acc["units_given"] else " (pass --units to name them)") + ".", "",
             f"| forecaster | runtime | MAE ({u}) | RMSE ({u}) |", "| --- | --- | ---: | ---: |",
             f"| float model (PyTorch) | – | {acc['float']['mae']:.4g} | {acc['float']['rmse']:.4g} |",
             f"| persistence ({acc['persistence_rule']}) | – | {acc['persistence']['mae']:.4g} | "
             f"{acc['persistence']['rmse']:.4g} |"]
    lines += [f"| {s['file']} | {s['runtime']} | {s['mae']:.4g} | {s['rmse']:.4g} |" for s in acc["artifacts"]]
    if gain is not None:
        from edge_lstm.report_facts import versus

        lines += ["", versus(gain).strip()]
    return lines


def _us(v: float | None) -> str:
    """Microseconds to 0.1; under 0.05 µs (a tiny model's estimate) is "<0.1", never a 0.0 that reads as free."""
    if v is None:
        return "–"
    return "<0.1" if 0 < v * 1e6 < 0.05 else f"{v * 1e6:,.1f}"


def _profile_rows(prof: ProfileReport) -> list[str]:
    target = prof.target
    rows = ["| file | runtime | p50 µs | p90 µs | p99 µs | per sample µs | peak memory over baseline | "
            "TFLM arena in use | weights / graph bytes |"
            + (f" estimate on {target['name']} µs | budgets |" if target else ""),
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |" + (" ---: | --- |" if target else "")]
    for a in prof.artifacts:
        lat, mem, size = a["latency_s"], a.get("memory") or {}, a.get("size") or {}
        peak = mem.get("peak_rss_bytes")
        row = (f"| {a['artifact']} | {a['runtime']} {a.get('runtime_version', '')} | {_us(lat['p50'])} | "
               f"{_us(lat['p90'])} | {_us(lat['p99'])} | {_us(a.get('per_sample_s'))} | "
               f"{'–' if peak is None else f'{peak / 2**20:.1f} MiB'} | {_fmt(a.get('arena_bytes'))} | "
               + " / ".join("–" if size.get(k) is None else f"{size[k]:,}" for k in ("weights_bytes", "graph_bytes"))
               + " |")
        if target:
            est = a.get("estimate") or {}
            budgets = ", ".join(f"{b['budget']} {b['status']}" for b in a.get("budget") or [])
            row += f" {_us(est.get('latency_s'))} (estimate) | {budgets or '–'} |"
        rows.append(row)
    method = next((a["memory"]["method"] for a in prof.artifacts if a.get("memory")), None)
    if method:
        rows += ["", f"Memory: {method}"]
    return rows


def _spec(t: dict[str, Any]) -> str:
    return f"{t['name']} [{'x'.join(str(d) for d in t['shape'])}]"
