"""A self-contained ``report.html``: latency distributions (inline SVG) and the size/error/latency table.

No scripts, stylesheets or fonts are fetched: the file opens offline. Errors
come from an export report (``report.json`` of ``edge-lstm export``) when one
is given, matched to profiled artifacts by file name.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

from edge_lstm.reports import TOOL, ExportReport, Json, ProfileReport

_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child,th:first-child{text-align:left}
th{background:#f3f3f3}.est{color:#8a5a00}.over{color:#b00;font-weight:bold}figure{display:inline-block;margin:1em}
figcaption{font-size:90%}svg text{font-size:10px;fill:#333}svg.plot{max-width:100%;height:auto}"""


def _esc(v: Any) -> str:
    return html.escape(str(v))


def _us(v: float | None) -> str:
    """Microseconds to 0.1; under 0.05 µs (a tiny model's estimate) is "<0.1", never a 0.0 that reads as free."""
    if v is None:
        return "–"
    return "&lt;0.1" if 0 < v * 1e6 < 0.05 else f"{v * 1e6:,.1f}"


def _kb(v: int | None) -> str:
    return "–" if v is None else f"{v / 1024:,.1f}"


def _mark_label(x: float, text: str, right: float, y: int) -> str:
    """A marker label that stays inside the plot: right-aligned when it would run past the edge."""
    if x + 2 + 6.5 * len(text) > right:
        return f'<text x="{x - 2:.1f}" y="{y}" text-anchor="end">{text}</text>'
    return f'<text x="{x + 2:.1f}" y="{y}">{text}</text>'


def latency_svg(samples_s: list[float], width: int = 360, height: int = 140, bins: int = 30) -> str:
    """A histogram of latencies in µs with p50 and p99 marked, as an inline ``<svg>``."""
    if not samples_s:
        return "<p>no samples</p>"
    us = np.asarray(samples_s) * 1e6
    lo, hi = float(us.min()), float(np.percentile(us, 99.5))
    hi = hi if hi > lo else lo + 1.0
    counts, edges = np.histogram(np.clip(us, lo, hi), bins=bins, range=(lo, hi))
    pad, plot_w, plot_h = 30, width - 40, height - 35
    bw = plot_w / bins
    peak = max(int(counts.max()), 1)
    bars = "".join(
        f'<rect x="{pad + i * bw:.1f}" y="{10 + plot_h * (1 - c / peak):.1f}" width="{max(bw - 1, 1):.1f}" '
        f'height="{plot_h * c / peak:.1f}" fill="#4a78b5"/>' for i, c in enumerate(counts)
    )
    marks = ""
    for name, q, color in (("p50", 50, "#0a0"), ("p99", 99, "#c00")):
        v = float(np.percentile(us, q))
        x = pad + plot_w * (min(v, hi) - lo) / (hi - lo)
        marks += (f'<line x1="{x:.1f}" x2="{x:.1f}" y1="10" y2="{10 + plot_h}" stroke="{color}" '
                  f'stroke-dasharray="3,2"/>' + _mark_label(x, f"{name} {v:,.0f}", pad + plot_w, 20 + 12 * (q > 50)))
    axis = (f'<text x="{pad}" y="{height - 8}">{lo:,.0f} µs</text>'
            f'<text x="{pad + plot_w - 50}" y="{height - 8}">{edges[-1]:,.0f} µs</text>'
            f'<text x="2" y="18">{peak}</text>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'role="img" aria-label="latency histogram">{bars}{marks}{axis}</svg>')


def _errors(export_report: ExportReport | None) -> dict[str, str]:
    """Worst max-abs error per artifact file name from an export report."""
    out: dict[str, str] = {}
    for a in export_report.artifacts if export_report else []:
        worst = [float(o["max_abs"]) for v in a.validation for o in v.outputs if o.get("max_abs") is not None]
        if worst:
            out[Path(a.file).name] = f"{max(worst):.3g}"
    return out


def _row(a: dict[str, Any], errors: dict[str, str]) -> str:
    lat, mem, size = a["latency_s"], a["memory"], a["size"]
    est = a.get("estimate")
    statuses = {c.get("status") for c in a.get("budget") or []}
    verdict = ("ok" if statuses <= {"ok", "warn"} else "not measured / unverified") if statuses else "–"
    cells = [
        _esc(a["artifact"]), _esc(a["runtime"]), _esc(a["where"] + (" (EMULATED)" if a.get("emulated") else "")),
        f"{size['file_bytes']:,}",
        *("–" if size.get(k) is None else f"{size[k]:,}" for k in ("weights_bytes", "graph_bytes")),
        _esc(errors.get(a["artifact"], "–")),
        _us(lat.get("p50")), _us(lat.get("p99")), _us(a.get("per_sample_s")),
        _kb(mem.get("peak_rss_bytes")), _kb(a.get("arena_bytes")),
        f'<span class="est">{_us(est["latency_s"])}</span>' if est else "–",
        '<span class="over">over</span>' if "over" in statuses else
        '<span class="over">not runnable on the target</span>' if "not-runnable" in statuses else verdict,
    ]
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def _log_latencies(report: ProfileReport) -> str | None:
    """Every artifact's timed runs on one log axis (matplotlib, where it is installed: the host install has it; a
    device with only numpy and a runtime gets the plain histograms above)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return None
    from edge_lstm.report_plots import latency_plot

    rows = [{"file": a["artifact"], "runtime": a["runtime"], "latencies_s": a["latencies_s"],
             "p50_s": a["latency_s"].get("p50"), "p99_s": a["latency_s"].get("p99"),
             "streaming": a.get("per_sample_s") is not None} for a in report.artifacts if a.get("latencies_s")]
    if not rows:
        return None
    return (f"<figure>{latency_plot(rows)}<figcaption>Every timed call per artifact "
            f"({', '.join(sorted({str(a['threads']) for a in report.artifacts}))} thread(s)); box p25-p75, "
            "whiskers p1-p99, red line p50.</figcaption></figure>")


def render(report: ProfileReport | Json, export_report: ExportReport | Json | None = None) -> str:
    """The HTML document for a profile report (and, optionally, the export report's errors)."""
    report = ProfileReport.of(report)
    errors = _errors(ExportReport.of(export_report) if export_report is not None else None)
    target = report.target
    head = ["artifact", "runtime", "where", "file B", "weights B", "graph B", "max abs err", "p50 µs", "p99 µs",
            "per sample µs", "peak RSS KiB", "arena in use KiB",
            "estimate µs" + (f" ({target['name']})" if target else ""), "budget"]
    rows = "".join(_row(a, errors) for a in report.artifacts)
    figures = _log_latencies(report) or "".join(
        f"<figure>{latency_svg(a['latencies_s'])}<figcaption>{_esc(a['artifact'])} · {_esc(a['runtime'])} · "
        f"{a['latency_s'].get('runs', 0)} runs, {a['threads']} thread(s)</figcaption></figure>"
        for a in report.artifacts
    )
    method = report.artifacts[0]["memory"]["method"] if report.artifacts else ""
    notes = [f"Latencies measured on {_esc(report.where)}; memory: {_esc(method)}."]
    if report.emulated:
        notes.append("<strong>EMULATED</strong>: timings and memory come from qemu-user on this host, not from a "
                     "device; they are no device latency and are not used for budgets.")
    if target:
        notes.append(f'<span class="est">Estimates</span> are MACs divided by the estimated throughput of '
                     f"{_esc(target['display_name'])}, not measurements ({_esc(target['throughput_method'])}).")
    return (
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>edge-lstm profile</title>"
        f"<style>{_CSS}</style></head><body><h1>edge-lstm profile</h1>"
        f"<p>{_esc(TOOL)} {_esc(report.tool_version)}, {_esc(report.created)}; "
        f"host {_esc(report.host['machine'])}, {report.host['cpu_count']} CPUs.</p>"
        "<h2>Size, error and latency</h2><table><tr>" + "".join(f"<th>{_esc(h)}</th>" for h in head) + "</tr>"
        f"{rows}</table>" + "".join(f"<p>{n}</p>" for n in notes)
        + f"<h2>Latency distribution</h2>{figures}</body></html>\n"
    )


def write_html(report: ProfileReport | Json, path: str | Path,
               export_report: ExportReport | Json | None = None) -> Path:
    """Write ``report.html`` atomically (temp file, then rename); :class:`UsageError` when it cannot be written."""
    from edge_lstm.profile import write_file

    out = Path(path)
    write_file(out, render(report, export_report).encode("utf-8"))
    return out
