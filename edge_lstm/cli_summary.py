"""The summary ``edge-lstm export`` prints last: one table of artifact × runtime that fits 100 columns, with units.

Rendered by rich into plain text at a fixed width, so it reads the same in a
terminal, a CI log or a pipe; long file names fold inside their column rather
than widening the table. Notes follow, wrapped to the same width.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from edge_lstm import report_facts as facts
from edge_lstm.reports import ExportReport, Json

#: the widest line the summary prints
WIDTH = 100


def _us(v: float | None) -> str:
    """Microseconds, whole; under half a microsecond (a tiny model's estimate) is "<1", never a 0 that reads as free."""
    if v is None:
        return "–"
    return "<1" if 0 < v * 1e6 < 0.5 else f"{v * 1e6:,.0f}"


def _grid(head: list[str], rows: list[list[str]], numeric: set[int]) -> list[str]:
    """Columns two spaces apart, each as wide as its widest cell; the first column folds when the table would
    pass :data:`WIDTH` (a long file name takes two lines rather than widening every line)."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(head)]
    widths[0] = max(12, min(widths[0], WIDTH - sum(widths[1:]) - 2 * (len(head) - 1)))

    def line(cells: list[str]) -> list[str]:
        first = textwrap.wrap(cells[0], widths[0], break_on_hyphens=False) or [""]
        first = [chunk for part in first for chunk in textwrap.wrap(part, widths[0], break_long_words=True)]
        out = []
        for k, chunk in enumerate(first):
            rest = [(c.rjust(w) if i + 1 in numeric else c.ljust(w)) if k == 0 else " " * w
                    for i, (c, w) in enumerate(zip(cells[1:], widths[1:], strict=True))]
            out.append("  ".join([chunk.ljust(widths[0]), *rest]).rstrip())
        return out

    return [*line(head), "-" * min(WIDTH, sum(widths) + 2 * (len(head) - 1)), *[x for r in rows for x in line(r)]]


def table_text(report: ExportReport | Json) -> str:
    """The artifact × runtime table as text no wider than :data:`WIDTH`, with its legend."""
    report = ExportReport.of(report)
    acc = report.accuracy or {}
    unit = acc.get("units") if acc.get("units_given") else None
    metric = next((v.task["metric"] for a in report.artifacts for v in a.validation if v.task), None)
    head = ["artifact", "runtime", "KiB", "max err", (metric or "task") + (f" {unit}" if unit and metric == "mae"
                                                                          else ""), "Δ task", "p50 µs", "result"]
    errs = {(a.file, v.runtime): max((o["max_abs"] for o in v.outputs), default=None)
            for a in report.artifacts for v in a.validation}
    runtime_rows = facts.runtime_rows(report)
    estimates = any(r["estimate_s"] for r in runtime_rows)
    if estimates:
        head.insert(7, "est. µs")
    rows = []
    for r in runtime_rows:
        err = errs.get((r["file"], r["runtime"]))
        task = r["task"]
        result = ("pass" if r["runtime_passed"] else "FAIL") if r["validated"] else "–"
        step = "†" if r["streaming"] and r["p50_s"] is not None else ""
        rows.append([r["file"], r["runtime"], f"{r['size_bytes'] / 1024:,.0f}", "–" if err is None else f"{err:.1e}",
                     f"{task['artifact']:.4g}" if task else "–",
                     "–" if r["task_drop"] is None else f"{r['task_drop']:+.1%}", _us(r["p50_s"]) + step, result])
        if estimates:
            rows[-1].insert(7, _us(r["estimate_s"]))
    legend = ("KiB: file size; max err: largest |artifact − float| over the outputs; Δ task: the task metric's change "
              "against the float model; p50: measured on this host (tflm: its host interpreter; – not measured)"
              + (", † per streaming step" if any(a.streaming for a in report.artifacts) else "")
              + ("; est.: the target's latency ESTIMATED from MACs, not measured" if estimates else "")
              + ("; int16x8 estimated at half the int8 rate (assumed)" if estimates and any(
                  a.precision == "int16x8" for a in report.artifacts) else "") + ".")
    return "\n".join(_grid(head, rows, {2, 3, 4, 5, 6, 7} if estimates else {2, 3, 4, 5, 6}) + _wrap(legend, ""))


def _wrap(text: str, indent: str = "  ") -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=indent, subsequent_indent=indent + "  ") or [indent]


def _lowering_lines(report: ExportReport) -> list[str]:
    """Per artifact whose ``--lowering auto`` was settled for the target: each candidate's p50 and size, the choice
    and why (artifacts with the same untimed reason share a line)."""
    rows = facts.lowering_rows(report)
    if not rows:
        return []
    by_file: dict[str, list[Json]] = {}
    for row in rows:
        by_file.setdefault(row["file"], []).append(row)
    timed = next((r for r in rows if r["measured"]), None)
    lines = [f"Lowering (auto) for {rows[0]['target']}" + (f", timed here on {timed['runtime']} (one thread, "
                                                          f"{timed['runs']} runs per candidate):" if timed else ":")]
    untimed: dict[str, list[str]] = {}
    for file, cands in by_file.items():
        chosen = next(c for c in cands if c["chosen"])
        if not chosen["measured"]:
            untimed.setdefault(f"{chosen['lowering']} ({chosen['why']})", []).append(file)
            continue
        figures = ", ".join(f"{c['lowering']} " + (f"{_us(c['p50_s'])} µs" if c["p50_s"] is not None else
                                                   "not timed") + f" {c['size_bytes'] / 1024:,.0f} KiB"
                            for c in cands)
        lines += _wrap(f"{file}: {figures} -> {chosen['lowering']} ({chosen['why']})")
    for text, files in untimed.items():
        lines += _wrap(f"{', '.join(files) if len(files) <= 2 else f'{len(files)} artifacts'}: {text}")
    return lines


def export_summary(report: ExportReport | Json, output: Path) -> str:
    """The headline, the table, the recommendation, notes and where the reports are."""
    report = ExportReport.of(report)
    vd = report.validation_data
    n = len(report.artifacts)
    failed = [a.file for a in report.artifacts if not a.passed]
    head = (f"All {n} artifact(s) passed validation" if not failed else f"{len(failed)} of {n} artifact(s) FAILED")
    lines = _wrap(f"{head} ({facts.data_words(vd)}, {vd.samples} windows).", "")
    for a in report.artifacts:  # passed, but not on a runtime the --target runs: exit 4 (BudgetExceeded)
        cannot = facts.not_runnable(report.profile, a.file)
        if cannot:
            lines += _wrap(f"{a.file}: {cannot}.")
    lines.append(table_text(report))
    acc = report.accuracy
    if acc:
        lines += _wrap(f"Forecast MAE in {acc['units']}: float model {acc['float']['mae']:.4g}, persistence "
                       f"{acc['persistence']['mae']:.4g} ({acc['persistence_rule']}).", "")
    lines += _lowering_lines(report)
    rec = facts.recommend(report)
    lines += _wrap(f"Recommended for {rec['target']}: {rec['file'] or 'none'}"
                   + (f" on {rec['runtime']}" if rec["file"] else "") + f" ({rec['rule']}).", "")
    notes: dict[str, list[str]] = {}
    for a in report.artifacts:
        for note in a.notes:
            if not (note.startswith("not runnable on ") and facts.not_runnable(report.profile, a.file)):  # above
                notes.setdefault(note, []).append(a.file)
    if notes:
        lines.append("Notes:")
    for note, files in notes.items():  # one line per distinct note, naming the artifacts it applies to
        lines += _wrap(f"{', '.join(files) if len(files) <= 2 else f'{len(files)} artifacts'}: {note}")
    for skipped in report.not_built:
        lines += _wrap(f"Not built: {skipped['format']} {skipped['precision']}: {skipped['why']}")
    if report.firmware:
        lines += _wrap(f"Firmware: {output / 'fw'} (report: {output / 'fw' / 'firmware.md'})", "")
    lines += _wrap(f"Report: {output / 'report.md'} and {output / 'report.json'}", "")
    if (output / "report.html").exists():
        lines += _wrap(f"Report (HTML, plots): {output / 'report.html'}", "")
    return "\n".join(lines)
