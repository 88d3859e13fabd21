"""What the reports say about each artifact, computed once from ``report.json`` for Markdown, HTML and the terminal.

A verdict per artifact (passed, failed and why, over budget), the gate each
validation applied in words, the rows of artifact × runtime with the measured
latency beside size and task-metric drop, and the recommended artifact with the
rule that picked it. The typed reports (:mod:`edge_lstm.reports`, or ``report.json`` as read back) in,
plain dicts out: no numpy, no plotting, so the device-side ``profile`` page can use it too.
"""

from __future__ import annotations

from typing import Any

from edge_lstm.reports import ArtifactEntry, ExportReport, Json, ProfileReport, ValidationDataInfo

#: a latency within this share of the fastest counts as a tie (broken by the smaller file)
LATENCY_TIE = 0.05


def gate_text(tol: dict[str, Any]) -> str:
    """The pass rule a validation applied, in words (``elementwise`` tolerances, or the aggregate gates)."""
    parts = []
    if tol.get("elementwise"):
        atol = f"atol {tol['atol']:g}" + (f" (or {tol['magnitude']:g} of the output's peak)" if tol.get("magnitude")
                                          else "")
        parts.append(f"every element within {atol} or rtol {tol['rtol']:g}")
    if tol.get("min_cosine") is not None:
        parts.append(f"cosine ≥ {tol['min_cosine']:g}")
    if tol.get("max_rel_l2") is not None:
        parts.append(f"relative L2 ≤ {tol['max_rel_l2']:g}")
    if tol.get("min_psnr") is not None:
        parts.append(f"PSNR ≥ {tol['min_psnr']:g} dB")
    if tol.get("max_task_drop") is not None:
        parts.append(f"task-metric drop ≤ {tol['max_task_drop']:.0%}")
    return ", ".join(parts) or "no NaN/Inf"


def held_out(metadata: dict[str, Any] | None, source: str, is_file: bool) -> Json | None:
    """Whether the validation windows were held out from training, as far as the checkpoint can tell:
    ``{"status": "no" | "unknown", "training_data": ..., "text": ...}``; ``None`` for random data.

    A checkpoint from ``edge-lstm train`` records its training file's name, sha256 and split rows. ``--data``
    with those bytes is the training file: every window of it is evaluated, training rows included, so the
    windows are not held out. Another file may still share rows with it (a slice of it), and a checkpoint that
    records no training data says nothing: both are "unknown", never "held out".
    """
    if not is_file:
        return None
    import hashlib
    from pathlib import Path

    meta = metadata or {}
    name, sha = meta.get("data"), meta.get("data_sha256")
    if not sha:
        return {"status": "unknown", "training_data": None,
                "text": "not known to be held out: the model file does not record its training data"}
    try:
        same = hashlib.sha256(Path(source).read_bytes()).hexdigest() == sha
    except OSError:
        same = False
    trained = {"file": name, "sha256": sha, "split_rows": meta.get("split_rows")}
    if same:
        split = meta.get("split_rows") or {}
        rows = ", ".join(f"{k} rows {v[0]}–{v[1] - 1}" for k, v in split.items()
                         if isinstance(v, list) and len(v) == 2 and all(isinstance(i, int) for i in v))
        return {"status": "no", "training_data": trained,
                "text": f"NOT held out: the model was trained on this file ({name}, same sha256"
                        + (f": {rows}" if rows else "") + "); its windows are evaluated, training rows included"}
    return {"status": "unknown", "training_data": trained,
            "text": f"not the training file {name} (sha256 {str(sha)[:12]}…): held out only if it shares no rows "
                    "with it"}


def data_words(vd: ValidationDataInfo) -> str:
    """``<source>`` with, for a file, whether its windows were held out (see :func:`held_out`)."""
    return f"{vd.source} ({vd.held_out['text']})" if vd.held_out else vd.source


def elements_text(o: dict[str, Any], tol: dict[str, Any]) -> str:
    """Elements outside atol/rtol: the gate itself for elementwise tolerances, only information otherwise."""
    text = f"{o['failing_elements']}/{o['elements']}"
    return text if tol.get("elementwise") else f"{text} (informative: the gate is aggregate)"


def _entries(profile: ProfileReport | Json | None) -> list[Json]:
    """The profile's entries (one per artifact × runtime); none without a profile."""
    return ProfileReport.of(profile).artifacts if profile else []


def not_runnable(profile: ProfileReport | Json | None, file: str) -> str | None:
    """Why the target cannot run ``file`` at all ("not runnable on <target>: validated on X only; <target> runs
    Y (what would)"), from its "runtime" budget check; ``None`` when it can, or no target was given."""
    for entry in _entries(profile):
        if entry.get("artifact") == file:
            for c in entry.get("budget") or []:
                if c["budget"] == "runtime" and c["status"] == "not-runnable":
                    return str(c.get("note") or "not runnable on the target")
    return None


def _budget_problems(profile: ProfileReport | Json | None, file: str) -> tuple[list[str], list[str]]:
    """(over, unverified) budget lines of one artifact from the profile's budget checks."""
    over, unsure = [], []
    for entry in _entries(profile):
        if entry.get("artifact") != file:
            continue
        for c in entry.get("budget") or []:
            if c["status"] == "over":
                over.append(f"{c['budget']} {c['used_bytes']:,} B > {c['budget_bytes']:,} B ({c['measure']})")
            elif c["status"] in ("not-measured", "unverified", "skipped"):
                unsure.append(f"{c['budget']} {c['status']} on {entry['runtime']}")
    if unsure:
        unsure = [f"budgets not measured / unverified: {', '.join(unsure)}"]
    return over, unsure


def verdict(artifact: ArtifactEntry | Json, profile: ProfileReport | Json | None = None) -> dict[str, Any]:
    """``{"status": passed | failed | over budget, "why": [...]}`` for one artifact of the report."""
    a = ArtifactEntry.of(artifact)
    why: list[str] = [f"{f['stage']} failed" + (f" on {f['runtime']}" if f.get("runtime") else "") + f": "
                      f"{' '.join(f['reason'].split())[:300]}" for f in a.failures]
    for v in a.validation:
        if v.passed:
            continue
        reasons = [f"{o['name']}: {'; '.join(o['reasons'])}" for o in v.outputs if o.get("reasons")]
        t, gate = v.task, v.tolerance.get("max_task_drop")
        if t and gate is not None and t["drop"] > gate:
            reasons.append(f"task {t['metric']} dropped {t['drop']:.2%} > {gate:.0%}")
        why.append(f"{v.runtime}: " + ("; ".join(reasons) or "failed"))
    over, unsure = _budget_problems(profile, a.file)
    cannot = not_runnable(profile, a.file)
    status = "failed" if why else "not runnable" if cannot else "over budget" if over else "passed"
    return {"status": status, "why": why + ([cannot] if cannot else []) + over, "unverified": unsure}


def runtime_rows(report: ExportReport | Json) -> list[dict[str, Any]]:
    """One row per artifact × runtime: validation, task metric drop, size, and the measured latency if any."""
    r = ExportReport.of(report)
    prof = {(p["artifact"], p["runtime"]): p for p in _entries(r.profile)}
    by_file: dict[str, list[dict[str, Any]]] = {}
    for key, entry in prof.items():
        by_file.setdefault(key[0], []).append(entry)
    rows = []
    for a in r.artifacts:
        runtimes = {v.runtime: v for v in a.validation}
        names = list(runtimes) + [p["runtime"] for p in by_file.get(a.file, []) if p["runtime"] not in runtimes]
        for rt in names or ["–"]:
            v, p = runtimes.get(rt), prof.get((a.file, rt))
            task = v.task if v else None
            rows.append({
                "file": a.file, "format": a.format, "precision": a.precision, "lowering": a.lowering,
                "streaming": a.streaming, "runtime": rt, "size_bytes": a.size_bytes,
                "validated": v is not None, "passed": a.passed and (v is None or v.passed),
                # this runtime's own verdict (the artifact may fail on another runtime: "passed" is False then)
                "runtime_passed": v.passed if v is not None else None,
                "task_drop": task["drop"] if task else None, "task": task,
                "p50_s": (p or {}).get("latency_s", {}).get("p50"), "p99_s": (p or {}).get("latency_s", {}).get("p99"),
                "per_sample_s": (p or {}).get("per_sample_s"),
                "estimate_s": ((p or {}).get("estimate") or {}).get("latency_s"),
                "latencies_s": (p or {}).get("latencies_s") or [], "emulated": bool((p or {}).get("emulated")),
            })
    return rows


def recommend(report: ExportReport | Json) -> dict[str, Any]:
    """The artifact to ship for the target (or this host), the rule that picked it, and the candidates it saw."""
    rep = ExportReport.of(report)
    prof = rep.profile
    target = prof.target if prof else None
    where = f"{target['display_name']} ({target['name']})" if target else "this host (no --target given)"
    passed = [row for row in runtime_rows(rep) if row["passed"] and not row["streaming"]]
    rows = passed
    cannot: set[str] = set()
    if target:
        ok = set(target.get("runtimes") or [])
        over = {a.file for a in rep.artifacts if verdict(a, prof)["status"] == "over budget"}
        cannot = {r["file"] for r in passed if not_runnable(prof, r["file"])}
        rows = [row for row in rows if row["file"] not in over | cannot and (
            not ok or row["runtime"] in ok or (row["runtime"] == "litert" and "tflite-runtime" in ok))]
    if target and target.get("kind") == "mcu":
        rows = [r for r in rows if r["runtime"] == "tflm"]
    else:  # TFLite Micro's host interpreter times reference kernels on this CPU: no basis for a CPU choice
        rows = [r for r in rows if r["runtime"] != "tflm"]
    if not rows:
        return {"file": None, "runtime": None, "target": where, "rule": _none_reason(passed, cannot, target),
                "candidates": 0}
    timed = [r for r in rows if r["p50_s"] is not None and not r["emulated"]]
    scope = "passed validation" + (", within every budget, on a runtime the target runs" if target else "")
    if target and target.get("kind") == "mcu":
        best = min(rows, key=lambda r: (r["size_bytes"], r["p50_s"] or 0.0))
        rule = (f"smallest file (flash) among whole-window artifacts that {scope} and ran correctly on TFLite Micro; "
                "MCU latency is not measured on this host")
    elif timed:
        fastest = min(r["p50_s"] for r in timed)
        close = [r for r in timed if r["p50_s"] <= fastest * (1 + LATENCY_TIE)]
        best = min(close, key=lambda r: (r["size_bytes"], r["p50_s"]))
        rule = f"lowest measured p50 latency on this host among whole-window artifacts that {scope}"
        if best["p50_s"] > fastest:  # the tie rule decided: say so
            rule += f"; within {LATENCY_TIE:.0%} of the fastest, the smaller file"
    else:
        best = min(rows, key=lambda r: r["size_bytes"])
        rule = f"smallest file among whole-window artifacts that {scope} (latency not measured: pass --profile)"
    return {"file": best["file"], "runtime": best["runtime"], "target": where, "rule": rule,
            "candidates": len(rows)}


def _none_reason(passed: list[dict[str, Any]], cannot: set[str], target: Json | None) -> str:
    """Why no artifact is recommended: the real reason, from the rows that passed validation."""
    if not passed:
        return "no whole-window artifact passed validation"
    if not target:  # what passed, passed on TFLite Micro only
        return ("the artifacts that passed run on TFLite Micro only, which is no runtime of this host: give "
                "a microcontroller --target to choose among them")
    name, runs = target["name"], ", ".join(target.get("runtimes") or [])
    files = {r["file"] for r in passed}
    if files <= cannot:
        return (f"every whole-window artifact that passed validation is not runnable on {name}: none passed on a "
                f"runtime {name} runs ({runs})")
    if target.get("kind") == "mcu":
        return (f"no whole-window artifact passed validation on TFLite Micro within {name}'s budgets "
                + (f"({len(cannot)} not runnable there)" if cannot else "(see the budget checks)"))
    return (f"the whole-window artifacts that passed validation are over {name}'s budgets"
            + (f" or not runnable there ({len(cannot)})" if cannot else "") + f" on the runtimes it runs ({runs})")


def _us_text(seconds: float) -> str:
    """``12.3 µs``; under 0.05 µs (a tiny model's estimate) ``<0.1 µs``, never a 0.0 that reads as free."""
    return "<0.1 µs" if 0 < seconds * 1e6 < 0.05 else f"{seconds * 1e6:,.1f} µs"


def budget_rows(profile: ProfileReport | Json | None) -> list[dict[str, str]]:
    """Each budget check of each profiled artifact with how its figure was obtained, spelled out."""
    out = []
    for entry in _entries(profile):
        est = entry.get("estimate")
        if est:
            out.append({"artifact": entry["artifact"], "runtime": entry["runtime"], "budget": "latency",
                        "figure": _us_text(est["latency_s"]), "basis": "estimated", "status": "–",
                        "note": est["basis"]})
        for c in entry.get("budget") or []:
            used = c.get("used_bytes")
            measured = c["status"] not in ("not-measured", "skipped") and used is not None
            basis = ("computed from the file" if c["budget"] == "flash" else "–" if c["budget"] == "runtime" else
                     "measured" if measured else "not measured")
            figure = (f"{used:,} B of {c['budget_bytes']:,} B" if used is not None and "budget_bytes" in c
                      else str(c.get("measure", "–")))
            out.append({"artifact": entry["artifact"], "runtime": entry["runtime"], "budget": c["budget"],
                        "figure": figure, "basis": basis, "status": c["status"],
                        "note": c.get("note") or c.get("measure", "")})
    return out


def versus(gain: float | None) -> str:
    """The float model against persistence, in words (a model can do worse than repeating the last value)."""
    if gain is None:
        return ""
    if gain >= 0:
        return f" The float model's MAE is {gain:.1%} lower than persistence's."
    return f" The float model's MAE is {-gain:.1%} HIGHER than persistence's: it does worse than the baseline."


def lowering_rows(report: ExportReport | Json) -> list[dict[str, Any]]:
    """One row per candidate form of each artifact whose ``--lowering auto`` was settled for a ``--target``
    (:class:`~edge_lstm.reports.LoweringChoice`): its size, validation, p50 timed for the choice, and why; the
    chosen row carries the choice's reason, the others their own note."""
    rows = []
    for a in ExportReport.of(report).artifacts:
        c = a.lowering_choice
        if c is None:
            continue
        for cand in c.candidates:
            rows.append({"file": a.file, "precision": a.precision, "target": c.target, "measured": c.measured,
                         "runtime": c.runtime, "lowering": cand.lowering, "size_bytes": cand.size_bytes,
                         "validated": ", ".join(f"{v['runtime']} {'pass' if v['passed'] else 'FAIL'}"
                                                for v in cand.validation) or "–",
                         "p50_s": cand.p50_s, "runs": cand.runs, "chosen": cand.chosen,
                         "why": c.reason if cand.chosen else cand.note})
    return rows


def lowering_method(report: ExportReport | Json) -> str | None:
    """How the candidates were timed, in one sentence; None when no artifact's lowering was settled by a target."""
    choices = [a.lowering_choice for a in ExportReport.of(report).artifacts if a.lowering_choice]
    if not choices:
        return None
    timed = next((c for c in choices if c.measured), None)
    if timed is None:
        return f"--lowering auto for {choices[0].target}: nothing timed (each artifact's row says why)."
    return (f"--lowering auto for {timed.target}: both forms of each whole-window TFLite artifact were built and "
            f"validated, then timed here on {timed.runtime} (one thread, {timed.rounds} interleaved rounds of "
            f"{timed.runs_per_round} runs each, one validation window); the rule's form is kept unless the other is "
            f"at least {timed.margin:.0%} faster in p50. These p50s were measured in this process for the choice; "
            "the profile measures the published files in fresh processes.")
