"""``firmware.md``: the firmware report for people (the same facts as ``firmware.json``)."""

from __future__ import annotations

from typing import Any


def _b(n: int | None) -> str:
    return "–" if n is None else f"{n:,} B"


def _n(v: int | None) -> str:
    return "–" if v is None else f"{v:,}"


def _err(entry: dict[str, Any] | None) -> str:
    """Worst max-abs error per API ("window / stream"), with PASS or FAIL."""
    if not entry or "validation" not in entry:
        return "–"
    parts = []
    for v in entry["validation"]:
        worst = max((float("inf") if o["max_abs"] is None else o["max_abs"] for o in v["outputs"]), default=0.0)
        parts.append(f"{worst:.1e}")
    return " / ".join(parts) + (" PASS" if entry.get("passed") else " **FAIL**")


def _budget(checks: list[dict[str, Any]], kind: str) -> str:
    c = next((c for c in checks if c["budget"] == kind), None)
    if c is None or c["status"] == "skipped":
        return "–"
    if c["status"] == "over":
        return f"**OVER by {c['over_bytes']:,} B** ({c['used_bytes'] / c['budget_bytes']:.0%})"
    return f"ok ({c['used_bytes'] / c['budget_bytes']:.1%} of {c['budget_bytes']:,} B)"


def markdown(report: dict[str, Any]) -> str:
    """The whole report as Markdown."""
    src, tg, core = report["source"], report.get("target"), report["cortex_m"]
    lines = [f"# edge-lstm firmware: {src['name']}", "",
             f"- tool: edge-lstm {report['tool']['version']}, {report['created']}",
             f"- source: {src['origin']}",
             f"- target: {tg['display_name'] + ' (' + tg['name'] + ')' if tg else 'none'}",
             f"- Cortex-M build: {core['why']}"]
    if "validation_data" in report:
        vd = report["validation_data"]
        lines.append(f"- checked on: {vd['source']}; {vd['qemu_windows']} of them on the emulated core")
    if report.get("program"):
        p = report["program"]
        lines.append(f"- model: {p['parameters']:,} parameters, window {p['window']}, {p['input']['floats_per_step']} "
                     f"input float(s) per step, ops {p['ops']}")
    if report["c"]:
        lines += ["", "## Dependency-free C", "",
                  "| precision | host C max abs err (window / stream) | Cortex-M max abs err | flash | RAM "
                  "(data + bss + stack) | emulated instructions per window | per streaming step |",
                  "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
        for e in report["c"]:
            cm = e["cortex_m"]
            m, ins = cm.get("model") or {}, cm.get("emulated_instructions") or {}
            ram = (f"{m['ram_bytes']:,} B ({m['ram_static_bytes']:,} + {m['stack_bytes']:,})"
                   if m.get("stack_bytes") is not None else _b(m.get("ram_bytes")))
            flash = _b(m.get("flash_bytes"))
            if not m and cm.get("estimate"):
                flash, ram = (f"~{cm['estimate']['flash_bytes']:,} B (estimate)",
                              f"~{cm['estimate']['ram_bytes']:,} B (estimate)")
            lines.append(f"| {e['precision']} | {_err(e['host'])} | {_err(cm) if cm.get('status') == 'ran' else '–'} "
                         f"| {flash} | {ram} | {_n(ins.get('per_window'))} | {_n(ins.get('per_step_streaming'))} |")
        first = report["c"][0]["cortex_m"]
        if first.get("model"):
            lines += ["", f"Flash and RAM: {first['model']['label']}."]
        elif first.get("estimate"):
            lines += ["", f"Flash and RAM: {first['estimate']['label']}."]
        if first.get("emulated_instructions"):
            lines.append(f"Instructions: {first['emulated_instructions']['label']}; "
                         f"{first['emulated_instructions']['method']}.")
    if report["tflm"]:
        lines += ["", "## TFLite Micro", "",
                  "| artifact | steps per Invoke | model array (flash) | smallest arena that allocates and invokes "
                  "| arena in use after allocation (profile's figure) | MODEL_ARENA_SIZE | state tensors |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
        for t in report["tflm"]:
            a = t["arena"]
            lines.append(f"| {t['artifact']} | {t['steps_per_invoke']} | {_b(t['bytes'])} | "
                         f"{_b(a.get('measured_bytes'))} | {_b(a.get('recording_allocator_bytes'))} | "
                         f"{_b(a.get('recommended_bytes'))} | {t['state_tensors']} |")
        lines += ["", f"Sizes: {report['tflm'][0]['label_sizes']}."]
        if report["tflm"][0]["arena"].get("method"):
            lines.append(f"Arena: {report['tflm'][0]['arena']['method']}. {report['tflm'][0]['arena']['note']}")
    if tg:
        lines += ["", f"## Budgets on {tg['name']} (flash {tg['flash_budget_bytes']:,} B, RAM "
                      f"{tg['ram_budget_bytes']:,} B)", "", "| path | flash | RAM |", "| --- | --- | --- |"]
        for e in [*report["c"], *report["tflm"]]:
            lines.append(f"| {e['label']} | {_budget(e['budget'], 'flash')} | {_budget(e['budget'], 'ram')} |")
    if report["notes"]:
        lines += ["", "## Notes", "", *[f"- {n}" for n in report["notes"]]]
    lines += ["", f"Verdict: **{'PASS' if report['passed'] else 'FAIL'}**", ""]
    return "\n".join(lines)
