"""``report.html`` of ``edge-lstm export``: one self-contained page that answers "can I ship this, and which artifact?".

Sections, in reading order: the verdict per artifact and the recommendation; the
rows of artifact × runtime; the model; accuracy against the actual values and the
persistence baseline; the size / latency / accuracy trade-off; latency
distributions; the target's budgets. Plots come from :mod:`edge_lstm.report_plots`
(matplotlib, inline SVG); nothing is fetched when the page opens, it fits a
1280-pixel window without sideways scrolling, and it prints (the print stylesheet
drops the colours that cost ink and keeps figures whole on a page).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_lstm import report_facts as facts
from edge_lstm.reports import ExportReport, Json
from edge_lstm.train_report import esc

CSS = """*{box-sizing:border-box}body{font-family:system-ui,sans-serif;margin:0 auto;padding:1.2em 1.6em;color:#222;
max-width:1240px;line-height:1.4}h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.2em;margin-top:1.6em;
border-bottom:1px solid #ddd}table{border-collapse:collapse;margin:.6em 0;width:100%;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top;overflow-wrap:break-word}
td code{overflow-wrap:anywhere}
td.n,th.n{text-align:right;white-space:nowrap}th{background:#f3f3f3}.passed{color:#06702a;font-weight:bold}
.failed{color:#b00;font-weight:bold}.over{color:#b35c00;font-weight:bold}.est{color:#8a5a00;font-style:italic}
.box{border:1px solid #ccc;border-left:5px solid #06702a;padding:.6em 1em;margin:.8em 0;background:#f7fbf8}
.box.bad{border-left-color:#b00;background:#fdf5f5}ul{margin:.2em 0;padding-left:1.3em}small{color:#555}
figure{margin:.8em 0;page-break-inside:avoid;break-inside:avoid}figcaption{font-size:90%;color:#444}
svg.plot{max-width:100%;height:auto;display:block}
td:first-child{min-width:13em}td ul{font-size:12px}
@media print{body{max-width:none;padding:0;font-size:11px}h2{page-break-after:avoid}.box{background:none}
table{font-size:10px}tr{page-break-inside:avoid}}"""


def _us(v: float | None) -> str:
    return "–" if v is None else f"{v * 1e6:,.1f}"


def _table(head: list[str], rows: list[list[str]], numeric: set[int] | None = None) -> str:
    """An HTML table whose cells are already escaped HTML; ``numeric`` columns align right."""
    num = numeric or set()
    th = "".join(f'<th{" class=n" if i in num else ""}>{esc(h)}</th>' for i, h in enumerate(head))
    body = "".join("<tr>" + "".join(f'<td{" class=n" if i in num else ""}>{c}</td>' for i, c in enumerate(r))
                   + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _status(status: str) -> str:
    css = {"passed": "passed", "failed": "failed", "over budget": "over", "not runnable": "over"}[status]
    return f'<span class="{css}">{esc(status)}</span>'


def _verdicts(report: ExportReport) -> str:
    prof = report.profile
    rows = []
    for a in report.artifacts:
        v = facts.verdict(a, prof)
        why = "".join(f"<li>{esc(w)}</li>" for w in v["why"] + v["unverified"])
        runtimes = ", ".join(f"{esc(x.runtime)} {'✓' if x.passed else '✗'}" for x in a.validation) or "–"
        notes = "".join(f"<li>{esc(n)}</li>" for n in a.notes  # failures and the lowering have their columns
                        if not n.startswith(("FAILED: ", "lowering: ")))
        lowering = esc(a.lowering or "–") + (f"<br><small>{esc(a.lowering_reason)}</small>"
                                              if a.lowering_reason else "")
        rows.append([f"<code>{esc(a.file)}</code>", _status(v["status"]) + (f"<ul>{why}</ul>" if why else ""),
                     esc(a.precision), esc(a.format) + (" (streaming)" if a.streaming else ""), lowering,
                     f"{a.size_bytes:,}", runtimes, f"<ul>{notes}</ul>" if notes else "–"])
    return _table(["artifact", "verdict", "precision", "format", "lowering", "size (B)", "validated on", "notes"],
                  rows, {5})


def _recommendation(rec: dict[str, Any]) -> str:
    if rec["file"] is None:
        return (f'<div class="box bad" id="recommendation"><b>No artifact to recommend</b> for '
                f'{esc(rec["target"])}: {esc(rec["rule"])}.</div>')
    return (f'<div class="box" id="recommendation"><b>Recommended for {esc(rec["target"])}:</b> '
            f'<code>{esc(rec["file"])}</code> on {esc(rec["runtime"])}.<br><small>Rule: {esc(rec["rule"])} '
            f'({rec["candidates"]} candidate row(s)).</small></div>')


def _runtime_table(report: ExportReport, rows: list[dict[str, Any]], units: str) -> str:
    tols = {(a.file, v.runtime): v for a in report.artifacts for v in a.validation}
    out = []
    for r in rows:
        v = tols.get((r["file"], r["runtime"]))
        worst = max((o["max_abs"] for o in (v.outputs if v else [])), default=None)
        t = r["task"]
        task = (f"{t['metric']} {t['reference']:.4g} → {t['artifact']:.4g} {esc(units) if t['metric'] == 'mae' else ''}"
                if t else "–")
        out.append([f"<code>{esc(r['file'])}</code>", esc(r["runtime"]),
                    ("pass" if v.passed else '<span class="failed">FAIL</span>') if v else "not validated",
                    esc(facts.gate_text(v.tolerance)) if v else "–", "–" if worst is None else f"{worst:.3g}",
                    task, "–" if r["task_drop"] is None else f"{r['task_drop']:+.2%}",
                    _us(r["p50_s"]) if r["p50_s"] is not None else "not measured", _us(r["p99_s"]),
                    f'<span class="est">{_us(r["estimate_s"])} (estimate)</span>' if r["estimate_s"] else "–"])
    return _table(["artifact", "runtime", "result", "gate", "max abs err", "task metric (float → artifact)",
                   "drop", "p50 µs", "p99 µs", "target µs"], out, {4, 6, 7, 8})


def _lowering(report: ExportReport) -> str:
    """The candidates ``--lowering auto`` weighed for the target (nothing when no target settled a lowering)."""
    method = facts.lowering_method(report)
    if method is None:
        return ""
    out = [[f"<code>{esc(r['file'])}</code>", esc(r["lowering"]), f"{r['size_bytes']:,}", esc(r["validated"]),
            f"{_us(r['p50_s'])} <small>({r['runs']} runs)</small>" if r["p50_s"] is not None else "not timed",
            '<span class="passed">chosen</span>' if r["chosen"] else "–", esc(r["why"] or "–")]
           for r in facts.lowering_rows(report)]
    return ("<h2 id=\"lowering\">Lowering choice</h2>" + f"<p>{esc(method)}</p>"
            + _table(["artifact", "candidate", "size (B)", "validated", "p50 µs (timed here)", "chosen", "why"],
                     out, {2, 4}))


def _model(report: ExportReport) -> str:
    m, cost = report.model, report.cost
    facts_rows = [["name", esc(m["name"])], ["format", esc(m["format"]) + (f" ({esc(m['arch'])})" if m.get("arch")
                                                                         else "")],
                  ["parameters", f"{m['parameters']:,}"],
                  ["MACs per inference", f"{cost.macs_per_inference if cost else 0:,} (computed from the graph)"],
                  ["MACs per time step", f"{cost.macs_per_step if cost else 0:,} (what a streaming step costs)"],
                  ["float32 weight bytes", f"{cost.weight_bytes_fp32 if cost else 0:,}"],
                  ["inputs", esc(", ".join(f"{t['name']} [{'x'.join(map(str, t['shape']))}]" for t in m["inputs"]))],
                  ["outputs", esc(", ".join(f"{t['name']} [{'x'.join(map(str, t['shape']))}]" for t in m["outputs"]))],
                  ["layers (PyTorch)", "<br>".join(esc(line) for line in m["layers"]) or "–"]]
    body = _table(["model", "value"], facts_rows)
    layers = cost.layer_costs if cost else ()
    if layers:
        body += "<h3>Per layer (from the captured ONNX graph)</h3>" + _table(
            ["node", "op", "parameters", "MACs per inference", "recurrent"],
            [[esc(c.name), esc(c.op), f"{c.params:,}", f"{c.macs:,}", "yes" if c.recurrent else ""]
             for c in layers], {2, 3})
    return body


def _accuracy(report: ExportReport) -> str:
    from edge_lstm import report_plots as plots

    acc = report.accuracy
    parts = []
    if acc:
        u = esc(acc["units"]) + ("" if acc["units_given"] else " <small>(pass --units to name them)</small>")
        rows = [["float model (PyTorch)", "–", f"{acc['float']['mae']:.4g}", f"{acc['float']['rmse']:.4g}"],
                [f"persistence ({esc(acc['persistence_rule'])})", "–", f"{acc['persistence']['mae']:.4g}",
                 f"{acc['persistence']['rmse']:.4g}"]]
        rows += [[f"<code>{esc(s['file'])}</code>", esc(s["runtime"]), f"{s['mae']:.4g}", f"{s['rmse']:.4g}"]
                 for s in acc["artifacts"]]
        gain = 1 - acc["float"]["mae"] / acc["persistence"]["mae"] if acc["persistence"]["mae"] > 0 else None
        ho = report.validation_data.held_out
        parts.append(f"<p>Forecast of {esc(acc['quantity'])} on {acc['windows']} windows of "
                     f"<code>{esc(acc['data'])}</code>" + (f" ({esc(ho['text'])})" if ho else "")
                     + f"; MAE and RMSE in {u}."
                     + facts.versus(gain)
                     + "</p>")
        parts.append(_table(["forecaster", "runtime", f"MAE ({acc['units']})", f"RMSE ({acc['units']})"], rows,
                            {2, 3}))
        parts.append(f"<figure>{plots.forecast_plot(acc)}<figcaption>Forecast against actual, float model and every "
                     "artifact overlaid (top); each artifact minus the float model (bottom).</figcaption></figure>")
    else:
        parts.append("<p>No forecast against actual values: the validation data has no next values (random data, "
                     "windows, or a classifier). Pass <code>--data series.csv</code> with real held-out rows.</p>")
    steps = [{"file": a.file, "runtime": v.runtime, "output": o["name"], "by_timestep": o["by_timestep"]}
             for a in report.artifacts for v in a.validation for o in v.outputs if o.get("by_timestep")]
    if steps:
        parts.append(f"<figure>{plots.timestep_plot(steps)}<figcaption>Error by time step of the all-steps outputs: "
                     "the largest |artifact − float| over the validation windows at each step.</figcaption></figure>")
    else:
        parts.append("<p>No error by time step: the model's outputs are not per time step.</p>")
    return "".join(parts)


def _tradeoff(rows: list[dict[str, Any]], rec: dict[str, Any]) -> str:
    from edge_lstm import report_plots as plots

    return (f"<figure>{plots.tradeoff_plot(rows, rec)}<figcaption>One point per artifact × runtime: size computed "
            "from the file, p50 latency measured in this run (● whole window, ▲ streaming step, × failed), colour "
            f"the task-metric drop against the float model (grey: no task metric). Ringed: the recommendation "
            f"({esc(rec['rule'])}).</figcaption></figure>")


def _latency(rows: list[dict[str, Any]], report: ExportReport) -> str:
    from edge_lstm import report_plots as plots

    prof = report.profile
    if prof is None or not any(r["latencies_s"] for r in rows):
        return "<p>Latency not measured: export with <code>--profile</code> (or <code>--target</code>).</p>"
    runs = next((p["latency_s"].get("runs") for p in prof.artifacts), "?")
    return (f"<figure>{plots.latency_plot(rows)}<figcaption>Every timed call ({runs} per artifact after warm-up, one "
            f"process each, on {esc(prof.where)}); box p25-p75, whiskers p1-p99, red line p50."
            + (" TFLite Micro rows time its host interpreter (reference kernels on this CPU), not a microcontroller."
               if any(r["runtime"] == "tflm" and r["latencies_s"] for r in rows) else "")
            + "</figcaption></figure>")


def _budgets(report: ExportReport) -> str:
    prof = report.profile
    target = prof.target if prof else None
    if not target:
        return "<p>No <code>--target</code> given: no device budgets were checked.</p>"
    rows = [[f"<code>{esc(b['artifact'])}</code>", esc(b["runtime"]), esc(b["budget"]), esc(b["figure"]),
             f'<span class="est">{esc(b["basis"])}</span>' if b["basis"] != "measured" else esc(b["basis"]),
             _status("over budget") if b["status"] == "over" else esc(b["status"]), esc(b["note"])]
            for b in facts.budget_rows(prof)]
    return (f"<p>{esc(target['display_name'])}: flash budget {target['flash_budget_bytes']:,} B, RAM budget "
            f"{target['ram_budget_bytes']:,} B. Each figure says whether it was measured, estimated or not measured."
            "</p>" + _table(["artifact", "runtime", "budget", "figure", "basis", "status", "note"], rows))


def render_export(report: ExportReport | Json) -> str:
    """The HTML document for an export report (``report.json`` of ``edge-lstm export``)."""
    report = ExportReport.of(report)
    rows = facts.runtime_rows(report)
    rec = facts.recommend(report)
    units = (report.accuracy or {}).get("units", "")
    vd = report.validation_data
    verdict = "all artifacts passed" if report.passed else "some artifacts FAILED (see below)"
    return (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>edge-lstm export report: {esc(report.name)}</title><style>{CSS}</style></head><body>"
        f"<h1>edge-lstm export report: {esc(report.name)}</h1>"
        f"<p>edge-lstm {esc(report.tool_version)}, {esc(report.created)}; validated on "
        f"<code>{esc(vd.source)}</code> ({vd.samples} windows of {vd.steps} steps"
        + (f"; {esc(vd.held_out['text'])}" if vd.held_out else "") + "); recipe "
        f"{esc(report.recipe)}. <b class=\"{'passed' if report.passed else 'failed'}\">{verdict}</b>.</p>"
        + _recommendation(rec)
        + "<h2 id=\"verdicts\">Verdict per artifact</h2>" + _verdicts(report)
        + "<h2 id=\"runtimes\">Per runtime</h2>" + _runtime_table(report, rows, units)
        + _lowering(report)
        + "<h2 id=\"model\">Model</h2>" + _model(report)
        + "<h2 id=\"accuracy\">Accuracy</h2>" + _accuracy(report)
        + "<h2 id=\"tradeoff\">Trade-off: size, latency, accuracy</h2>" + _tradeoff(rows, rec)
        + "<h2 id=\"latency\">Latency distributions</h2>" + _latency(rows, report)
        + "<h2 id=\"budgets\">Target budgets</h2>" + _budgets(report)
        + "</body></html>\n"
    )


def expected_plots(report: ExportReport | Json) -> list[str]:
    """The ``data-plot`` names the page for ``report`` holds (what the browser test checks)."""
    report = ExportReport.of(report)
    names = ["forecast"] if report.accuracy else []
    if any(o.get("by_timestep") for a in report.artifacts for v in a.validation for o in v.outputs):
        names.append("timestep")
    names.append("tradeoff")
    if any(p.get("latencies_s") for p in (report.profile.artifacts if report.profile else [])):
        names.append("latency")
    return names


def write_export_html(report: ExportReport | Json, path: Path) -> None:
    """Write the page for ``report`` at ``path`` (inside a staged output directory)."""
    from edge_lstm.outputs import write_into

    write_into(path.parent, path.name, render_export(report).encode("utf-8"))
