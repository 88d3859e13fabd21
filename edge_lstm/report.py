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

if TYPE_CHECKING:
    import numpy as np
    import onnx

    from edge_lstm.feeds import ValidationData
    from edge_lstm.load import LoadedModel
    from edge_lstm.pipeline import Artifact, ExportOptions

SCHEMA_VERSION = 1


def build_report(model: LoadedModel, options: ExportOptions, vdata: ValidationData,
                 artifacts: list[Artifact], proto: onnx.ModelProto | None = None,
                 reference: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """The report as a JSON-ready dict; ``proto`` is the captured graph and ``reference`` the float model's
    outputs on the validation data, when the caller has them (the accuracy section needs the latter)."""
    from edge_lstm.accuracy import accuracy_section

    summary = model.summary()
    summary.update(cost_summary(model, proto))
    accuracy = accuracy_section(model, vdata, reference, artifacts, options.units) if reference else None
    return {
        "schema": SCHEMA_VERSION,
        "tool": {"name": "edge-lstm", "version": __version__},
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "model": summary,
        "recipe": options.recipe.name,
        "validation_data": {"source": vdata.source, "samples": len(vdata.samples), "steps": vdata.steps,
                            "labelled": vdata.targets is not None},
        "artifacts": [a.to_dict(options.output_dir) for a in artifacts],
        "passed": all(a.passed for a in artifacts),
        "accuracy": accuracy,
    }


def cost_summary(model: LoadedModel, proto: onnx.ModelProto | None = None) -> dict[str, Any]:
    """MACs per inference and per time step and float weight bytes, from the captured graph (captured here if
    not given)."""
    from edge_lstm import capture, cost

    c = cost.onnx_cost(proto if proto is not None else capture.to_onnx(model))
    layers = [{"name": x.name, "op": x.op, "params": x.params, "macs": x.macs, "recurrent": x.recurrent}
              for x in c.layers if x.macs]  # the layers that compute; shape constants are no layer
    return {"macs_per_inference": c.macs, "macs_per_step": c.macs_per_step, "weight_bytes_fp32": c.params * 4,
            "layer_costs": layers}


def write_reports(report: dict[str, Any], directory: Path, html: bool = True) -> None:
    """Write ``report.json``, ``report.md`` and (unless ``html`` is False) ``report.html`` into ``directory``."""
    from edge_lstm.jsonio import dumps
    from edge_lstm.outputs import write_into

    write_into(directory, "report.json", (dumps(report, indent=2) + "\n").encode())
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


def render_markdown(report: dict[str, Any]) -> str:
    """A human-readable report: model, artifacts, precision table, per-output metrics."""
    m = report["model"]
    vd = report["validation_data"]
    lines = [
        f"# edge-lstm export report: {m['name']}",
        "",
        f"- tool: edge-lstm {report['tool']['version']}, {report['created']}",
        f"- model: {m['format']}, {m['parameters']:,} parameters"
        + (f", {m['macs_per_inference']:,} MACs per inference" if m.get("macs_per_inference") else ""),
        f"- inputs: {', '.join(_spec(t) for t in m['inputs'])}; outputs: {', '.join(_spec(t) for t in m['outputs'])}",
        f"- validation data: {vd['source']}, {vd['samples']} windows of {vd['steps']} steps",
        f"- verdict: **{'PASS' if report['passed'] else 'FAIL'}**",
        _recommended(report),
        *_proved_on(report.get("proved_on")),
        "",
        "## Artifacts",
        "",
        "| file | format | precision | lowering | size (bytes) | ratio to float | runtime | max abs err | "
        "rel L2 | cosine | task metric (float → artifact, drop) | result |",
        "| --- | --- | --- | --- | ---: | ---: | --- | ---: | ---: | ---: | --- | --- |",
    ]
    floats = {(a["format"], a["streaming"]): a["size_bytes"] for a in report["artifacts"] if a["precision"] == "fp32"}
    units = (report.get("accuracy") or {}).get("units")
    for a in report["artifacts"]:
        base = floats.get((a["format"], a["streaming"]))
        ratio = f"{a['size_bytes'] / base:.2f}" if base else "–"
        for v in a["validation"] or [{"runtime": "–", "outputs": [], "task": None, "passed": a["passed"]}]:
            worst = max(v["outputs"], key=lambda o: o["max_abs"] or 0.0) if v["outputs"] else {}
            t = v.get("task")
            unit = f" {units}" if units and t and t["metric"] == "mae" else ""
            task = f"{t['metric']} {t['reference']:.4g} → {t['artifact']:.4g}{unit} ({t['drop']:+.2%})" if t else "–"
            lines.append(
                f"| {a['file']} | {a['format']} | {a['precision']} | {a['lowering'] or '–'} | {a['size_bytes']:,} | "
                f"{ratio} | {v['runtime']} | {_fmt(worst.get('max_abs'))} | {_fmt(worst.get('rel_l2'))} | "
                f"{_fmt(worst.get('cosine'), '.6f')} | {task} | {'pass' if v['passed'] else '**FAIL**'} |"
            )
    lines += _accuracy(report.get("accuracy"))
    lines += ["", "## Per-output metrics", "",
              "Each row is judged by its gate (the last column): float artifacts element by element, quantized ones "
              "by aggregate gates, where the elements outside atol/rtol are shown for information only.", ""]
    lines += _per_output(report)
    if report.get("profile"):
        lines += ["", "## Profile (measured on this host)", "", *_profile_rows(report["profile"])]
    notes = [(a["file"], n) for a in report["artifacts"] for n in a["notes"]]
    if notes:
        lines += ["", "## Notes", ""] + [f"- `{f}`: {n}" for f, n in notes]
    return "\n".join(lines) + "\n"


def _recommended(report: dict[str, Any]) -> str:
    from edge_lstm.report_facts import recommend

    rec = recommend(report)
    if rec["file"] is None:
        return f"- recommended for {rec['target']}: none ({rec['rule']})"
    return f"- recommended for {rec['target']}: `{rec['file']}` on {rec['runtime']} (rule: {rec['rule']})"


def _proved_on(proof: dict[str, Any] | None) -> list[str]:
    """The device the artifacts were also validated on (``--prove-on``), as it reported itself."""
    if not proof:
        return []
    d = proof.get("reported") or {}
    emulated = "; EMULATED under qemu-user: outputs prove correctness, nothing is timed" if d.get("emulated") else ""
    return [f"- also validated on {proof['device']} ({d.get('machine')}, {d.get('os')}, Python {d.get('python')}, "
            f"numpy {d.get('numpy')}{emulated}): the rows whose runtime names {d.get('machine')}"]


def _per_output(report: dict[str, Any]) -> list[str]:
    from edge_lstm.report_facts import elements_text, gate_text

    rows = ["| file | runtime | output | max abs | mean abs | p99 abs | max rel | RMSE | rel L2 | cosine | PSNR dB "
            "| NaN/Inf | elements outside atol/rtol | result | gate |",
            "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    for a in report["artifacts"]:
        for v in a["validation"]:
            for o in v["outputs"]:
                result = "pass" if o["passed"] else f"**FAIL**: {'; '.join(o['reasons'])}"
                rows.append(
                    f"| {a['file']} | {v['runtime']} | {o['name']} | {_fmt(o['max_abs'])} | {_fmt(o['mean_abs'])} | "
                    f"{_fmt(o['p99_abs'])} | {_fmt(o['max_rel'])} | {_fmt(o['rmse'])} | {_fmt(o['rel_l2'])} | "
                    f"{_fmt(o['cosine'], '.6f')} | {_fmt(o['psnr'], '.1f')} | {o['non_finite']} | "
                    f"{elements_text(o, v['tolerance'])} | {result} | {gate_text(v['tolerance'])} |"
                )
    return rows


def _accuracy(acc: dict[str, Any] | None) -> list[str]:
    """Forecast errors in the data's units, the float model beside the persistence baseline."""
    if not acc:
        return []
    u = acc["units"]
    gain = 1 - acc["float"]["mae"] / acc["persistence"]["mae"] if acc["persistence"]["mae"] > 0 else None
    lines = ["", "## Accuracy against the actual values", "",
             f"Forecast of {acc['quantity']} on {acc['windows']} held-out windows ({acc['data']}), in {u}"
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
    return "–" if v is None else f"{v * 1e6:,.1f}"


def _profile_rows(prof: dict[str, Any]) -> list[str]:
    target = prof.get("target")
    rows = ["| file | runtime | p50 µs | p90 µs | p99 µs | per sample µs | peak memory over baseline | TFLM arena | "
            "weights / graph bytes |" + (f" estimate on {target['name']} µs | budgets |" if target else ""),
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |" + (" ---: | --- |" if target else "")]
    for a in prof["artifacts"]:
        lat, mem, size = a["latency_s"], a.get("memory") or {}, a.get("size") or {}
        peak = mem.get("peak_rss_bytes")
        row = (f"| {a['artifact']} | {a['runtime']} {a.get('runtime_version', '')} | {_us(lat['p50'])} | "
               f"{_us(lat['p90'])} | {_us(lat['p99'])} | {_us(a.get('per_sample_s'))} | "
               f"{'–' if peak is None else f'{peak / 2**20:.1f} MiB'} | {_fmt(a.get('arena_bytes'))} | "
               f"{size.get('weights_bytes', 0):,} / {size.get('graph_bytes', 0):,} |")
        if target:
            est = a.get("estimate") or {}
            budgets = ", ".join(f"{b['budget']} {b['status']}" for b in a.get("budget") or [])
            row += f" {_us(est.get('latency_s'))} (estimate) | {budgets or '–'} |"
        rows.append(row)
    method = next((a["memory"]["method"] for a in prof["artifacts"] if a.get("memory")), None)
    if method:
        rows += ["", f"Memory: {method}"]
    return rows


def _spec(t: dict[str, Any]) -> str:
    return f"{t['name']} [{'x'.join(str(d) for d in t['shape'])}]"
