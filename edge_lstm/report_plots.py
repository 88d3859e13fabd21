"""The export report's plots, drawn by matplotlib and inlined as SVG (host side; imported lazily).

Each function takes plain data from ``report.json`` (through
:mod:`edge_lstm.report_facts`) and returns one ``<svg>`` element carrying a
``data-plot`` attribute naming it, so a browser test can find every plot. Only
figures measured in the run or computed from the artifacts are drawn; the
axis labels say which is which.
"""

from __future__ import annotations

import math
import re
from typing import Any

from edge_lstm.train_report import figure, svg

#: windows drawn in the forecast plot (a week of hourly data; the metrics use every window)
SHOWN_WINDOWS = 168
_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]


def warm() -> None:
    """Import the plotting library and its SVG backend ahead of the first plot (most of a second): the export calls
    this while its validation runs in child processes, so the import costs no wall time there."""
    import matplotlib.backends.backend_svg
    import matplotlib.figure  # noqa: F401 - loaded for later, not used here


def _tag(svg_text: str, name: str) -> str:
    """Mark the plot for tests and let it shrink to the page's width (the viewBox keeps its proportions).

    matplotlib's RDF metadata block and the xlink namespace declaration go: inline in HTML the parser maps
    ``xlink:href`` itself, and the page then names no URL but the SVG namespace (nothing that looks fetched).
    """
    svg_text = re.sub(r"\s*<metadata>.*?</metadata>", "", svg_text, count=1, flags=re.S)
    svg_text = svg_text.replace(' xmlns:xlink="http://www.w3.org/1999/xlink"', "", 1)
    return svg_text.replace("<svg ", f'<svg class="plot" data-plot="{name}" ', 1)


def _plain_ticks(ax: Any, which: str) -> None:
    """Log-axis ticks as plain numbers (1,000 rather than 10³); minor ticks labelled only when the axis spans
    less than a decade (otherwise there would be one labelled tick, or a crowd)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.autoscale_view()
    axis = ax.xaxis if which == "x" else ax.yaxis
    lo, hi = sorted(axis.get_view_interval())
    plain = FuncFormatter(lambda v, _pos: f"{v:,.0f}" if v >= 100 else f"{v:.3g}")
    axis.set_major_formatter(plain)
    axis.set_minor_formatter(plain if lo > 0 and hi / lo < 10 else NullFormatter())
    axis.set_tick_params(which="minor", labelsize=7)


def _label(row: dict[str, Any]) -> str:
    host = " (host interpreter)" if row["runtime"] == "tflm" else ""  # no microcontroller latency
    return f"{row['file']} · {row['runtime']}{host}"


def forecast_plot(acc: dict[str, Any]) -> str:
    """Actual values, the float model, persistence and every artifact overlaid; below, each artifact minus float."""
    from matplotlib.figure import Figure

    n = min(SHOWN_WINDOWS, len(acc["actual"]))
    xs = list(range(n))
    fig = Figure(figsize=(10.5, 5.6), dpi=100)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    top.plot(xs, acc["actual"][:n], color="black", lw=1.6, label="actual")
    top.plot(xs, acc["persistence_forecast"][:n], color="#999", lw=1, ls="--",
             label=f"persistence ({acc['persistence_rule']})")
    top.plot(xs, acc["float_forecast"][:n], color="#1f77b4", lw=1.4, label="float model (PyTorch)")
    for i, s in enumerate(acc["artifacts"]):
        color = _PALETTE[(i + 1) % len(_PALETTE)]
        style = "--" if s["streaming"] else "-"
        top.plot(xs, s["forecast"][:n], color=color, lw=0.8, ls=style, alpha=0.8)
        diff = [a - f for a, f in zip(s["forecast"][:n], acc["float_forecast"][:n], strict=False)]
        bottom.plot(xs, diff, color=color, lw=0.9, ls=style, label=f"{s['file']} · {s['runtime']}")
    top.set_ylabel(f"{acc['quantity']}\n({acc['units']})")
    top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    bottom.axhline(0, color="#1f77b4", lw=0.8)
    bottom.set_ylabel(f"artifact − float\n({acc['units']})")
    bottom.set_xlabel(f"validation window (first {n} of {acc['windows']})")
    if acc["artifacts"]:
        bottom.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _tag(svg(fig), "forecast")


def timestep_plot(series: list[dict[str, Any]]) -> str:
    """Max |artifact − float| at each time step of all-steps outputs (log axis), one line per artifact × runtime."""
    fig, ax = figure(10.5, 3.6)
    for i, s in enumerate(series):
        values = [max(v, 1e-12) for v in s["by_timestep"]]
        ax.plot(range(1, len(values) + 1), values, color=_PALETTE[i % len(_PALETTE)], lw=1,
                label=f"{s['file']} · {s['runtime']} · {s['output']}")
    ax.set_yscale("log")
    ax.set_xlabel("time step")
    ax.set_ylabel("max |artifact − float|\n(output units)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    fig.tight_layout()
    return _tag(svg(fig), "timestep")


def tradeoff_plot(rows: list[dict[str, Any]], recommended: dict[str, Any]) -> str:
    """Size against measured p50 latency per artifact × runtime, coloured by the task-metric drop; without
    latencies, size against the drop. The recommended artifact is ringed and named."""
    import matplotlib as mpl

    rows = [r for r in rows if r["size_bytes"] > 0]  # an artifact that was not built has no file to place
    timed = [r for r in rows if r["p50_s"] is not None]
    fig, ax = figure(10.5, 4.8)
    pts = timed or rows
    if not pts:
        ax.text(0.5, 0.5, "no artifact was built", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return _tag(svg(fig), "tradeoff")
    drops = [r["task_drop"] for r in pts if r["task_drop"] is not None]
    span = max([abs(d) for d in drops] + [1e-4]) * 100
    norm = mpl.colors.Normalize(vmin=-span, vmax=span)
    cmap = mpl.colormaps["coolwarm"]
    for r in pts:
        x = r["size_bytes"] / 1024
        y = (r["p50_s"] * 1e6) if timed else (r["task_drop"] or 0.0) * 100
        color = "#bbbbbb" if r["task_drop"] is None else cmap(norm(r["task_drop"] * 100))
        marker = "^" if r["streaming"] else ("x" if not r["passed"] else "o")
        edge = {} if marker == "x" else {"edgecolors": "black"}  # an "x" has no face: its colour is its edge
        ax.scatter([x], [y], s=70, color=color, linewidths=0.6, marker=marker, zorder=3, **edge)
        host = " (host interp.)" if r["runtime"] == "tflm" else ""
        failed = " FAILED" if not r["passed"] else ""
        kind = f"{r['precision']} {r['format']}{' stream' if r['streaming'] else ''}"
        ax.annotate(f"{kind} · {r['runtime']}{host}{failed}",
                    (x, y), xytext=(5, 4), textcoords="offset points", fontsize=7)
        if r["file"] == recommended.get("file") and r["runtime"] == recommended.get("runtime"):
            ax.scatter([x], [y], s=340, facecolors="none", edgecolors="#0a0", linewidths=2.2, zorder=4)
            ax.annotate("recommended", (x, y), xytext=(-10, -18), textcoords="offset points", fontsize=8,
                        color="#070", fontweight="bold")
    ax.set_xscale("log")
    sizes = [r["size_bytes"] / 1024 for r in pts]
    ax.set_xlim(min(sizes) / 1.15, max(sizes) * 1.8)  # room for the labels right of the largest files
    _plain_ticks(ax, "x")
    ax.set_xlabel("file size (KiB, log; computed from the file)")
    if timed:
        ax.set_yscale("log")
        _plain_ticks(ax, "y")
        ax.set_ylabel("p50 latency (µs, log; measured on this host)\n▲ streaming: per step")
    else:
        ax.set_ylabel("task-metric drop vs float (%)\nlatency not measured (no --profile)")
    sm = mpl.cm.ScalarMappable(norm=norm, cmap=cmap)
    bar = fig.colorbar(sm, ax=ax, pad=0.02)
    bar.set_label("task-metric drop vs float (%)" + ("" if drops else ": none (no labelled data)"))
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return _tag(svg(fig), "tradeoff")


def latency_plot(rows: list[dict[str, Any]]) -> str:
    """Every timed run as a box (whiskers p1-p99) per artifact × runtime on a log axis, p50 and p99 in a column."""
    timed = [r for r in rows if r["latencies_s"]]
    fig, ax = figure(10.5, 0.42 * len(timed) + 1.2)
    data = [[v * 1e6 for v in r["latencies_s"]] for r in timed]
    ax.boxplot(data, vert=False, whis=(1, 99), widths=0.6, flierprops={"markersize": 2, "alpha": 0.4},
               medianprops={"color": "#d62728"})
    ax.set_yticks(range(1, len(timed) + 1), [_label(r) + (" (per step)" if r["streaming"] else "") for r in timed],
                  fontsize=8)
    ax.set_xscale("log")
    _plain_ticks(ax, "x")
    ax.set_xlabel("latency per call (µs, log axis; measured on this host)")
    ax.grid(alpha=0.3, which="both", axis="x")
    ax.invert_yaxis()
    for i, r in enumerate(timed, start=1):
        ax.annotate(f"p50 {r['p50_s'] * 1e6:,.0f} · p99 {r['p99_s'] * 1e6:,.0f} µs", (1.01, i),
                    xycoords=("axes fraction", "data"), va="center", fontsize=8)
    lo = min(min(d) for d in data)
    hi = max(max(d) for d in data)
    ax.set_xlim(10 ** math.floor(math.log10(lo)), 10 ** math.ceil(math.log10(hi)))
    fig.tight_layout()
    return _tag(svg(fig), "latency")
