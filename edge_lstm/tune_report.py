"""The tuning report: every trial, the Pareto front as a table and a plot, and the pick.

``report.json`` holds the same rows as ``report.html``. Latencies are the
target's estimate (MACs / its estimated throughput) unless the target has none;
host latencies are measured on this machine; both are labelled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edge_lstm.train_report import CSS, esc, fig_block, figure, table

if TYPE_CHECKING:
    import optuna


def trial_line(number: int, params: dict[str, Any], err: float, m: dict[str, Any], task: str) -> str:
    """One line per finished trial for the console."""
    what = "val MAE" if task == "forecast" else "val 1-macroF1"
    state = "feasible" if m["feasible"] else "INFEASIBLE: " + "; ".join(m["reasons"])
    return (f"trial {number}: {params['cell']} {params['layers']}x{params['hidden']} window {params['window']} "
            f"lr {params['lr']:.2g} batch {params['batch_size']} dropout {params['dropout']:.2f} -> {what} "
            f"{err:.4g}, {m['size_kb']:,.1f} KiB, {m['latency_ms']:.3g} ms ({m['latency_source']}), {state}")


def trial_row(t: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """A trial as a flat, JSON-ready row."""
    m = t.user_attrs.get("measured") or {}
    tr = t.user_attrs.get("train") or {}
    why = t.user_attrs.get("pruned") or t.user_attrs.get("failure") or "; ".join(m.get("reasons", []))
    if t.state.name == "FAIL" and not why:
        why = "failed (worker stopped or crashed)"
    return {
        "number": t.number, "state": t.state.name, "params": dict(t.params),
        "val_error": t.values[0] if t.values else None, "latency_ms": t.values[1] if t.values else None,
        "size_kb": t.values[2] if t.values else None,
        "feasible": bool(m.get("feasible")) and t.state.name == "COMPLETE", "reason": why, "test": tr.get("test"),
        "host_p50_ms": m.get("host_p50_ms"), "peak_ram_kb": m.get("peak_ram_kb"),
        "arena_kb": m.get("arena_kb"),
        "macs": m.get("macs"), "latency_source": m.get("latency_source"), "artifact_task": m.get("artifact_task"),
        "checkpoint_sha256": tr.get("checkpoint_sha256"), "worker": t.user_attrs.get("worker"),
        "epochs_run": tr.get("epochs_run"),
    }


def _fmt(v: Any, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def describe_params(p: dict[str, Any]) -> str:
    """A trial's hyperparameters in one short line (``–`` for none), as the tune tables and messages show them."""
    if not p:
        return "–"
    return (f"{p.get('cell')} {p.get('layers')}x{p.get('hidden')} w{p.get('window')} lr {p.get('lr', 0):.2g} "
            f"b{p.get('batch_size')} d{p.get('dropout', 0):.2f}")


def _rows(rows: list[dict[str, Any]], pareto: set[int]) -> list[list[Any]]:
    out = []
    for r in rows:
        test = (r.get("test") or {}).get("model") or {}
        test_err = test.get("mae", test.get("macro_f1"))
        out.append([r["number"], r["state"], describe_params(r["params"]), _fmt(r["val_error"], ".4g"),
                    _fmt(test_err, ".4g"), _fmt(r["size_kb"], ",.1f"), _fmt(r["latency_ms"], ".3g"),
                    _fmt(r["host_p50_ms"], ".3g"), _fmt(r["peak_ram_kb"], ",.0f"),
                    "yes" if r["number"] in pareto else "", "yes" if r["feasible"] else "no", r["reason"] or ""])
    return out


HEADER = ["trial", "state", "model", "val error", "test MAE / macro-F1", "size KiB", "latency ms (target estimate)",
          "host p50 ms (measured)", "peak RAM KiB", "Pareto", "feasible", "why"]


def pareto_plot(rows: list[dict[str, Any]], pareto: set[int], chosen: int | None, metric: str) -> str:
    """Validation error against the target's latency estimate; marker area follows the artifact's size."""
    fig, ax = figure(6.4, 3.8)
    done = [r for r in rows if r["val_error"] is not None]
    groups = (("infeasible", [r for r in done if not r["feasible"]], "x", "#b33"),
              ("feasible", [r for r in done if r["feasible"] and r["number"] not in pareto], "o", "#9ab"),
              ("Pareto-optimal", [r for r in done if r["number"] in pareto], "o", "#1f6fd1"))
    for label, rs, marker, color in groups:
        if rs:
            ax.scatter([r["latency_ms"] for r in rs], [r["val_error"] for r in rs], marker=marker, c=color,
                       s=[20 + 2 * r["size_kb"] ** 0.5 * 10 for r in rs], label=label, alpha=0.8)
    front = sorted((r for r in done if r["number"] in pareto), key=lambda r: r["latency_ms"])
    if front:
        ax.plot([r["latency_ms"] for r in front], [r["val_error"] for r in front], color="#1f6fd1", lw=0.8)
    for r in done:
        ax.annotate(str(r["number"]), (r["latency_ms"], r["val_error"]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    if chosen is not None:
        c = next(r for r in done if r["number"] == chosen)
        ax.scatter([c["latency_ms"]], [c["val_error"]], s=160, facecolors="none", edgecolors="#0a0", lw=2,
                   label=f"chosen (trial {chosen})")
    ax.set_xscale("log")
    ax.set_xlabel("latency per window, ms (target estimate)")
    ax.set_ylabel(metric)
    ax.legend(fontsize=7)
    return fig_block(fig, "Every measured trial; marker area grows with the artifact's size. The front is over "
                          "three objectives (error, latency, size), so a point can be on it through its size alone.")


def render(summary: dict[str, Any]) -> str:
    """``report.html`` of a tuning run."""
    rows, pareto = summary["trials"], set(summary["pareto"])
    chosen = summary.get("chosen") or {}
    front_rows = [r for r in rows if r["number"] in pareto]
    metric = "validation MAE (data units)" if summary["task"] == "forecast" else "validation 1 - macro-F1"
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>tune: {esc(summary['study'])}</title>"
            f"<style>{CSS}</style></head><body><h1>Tuning study {esc(summary['study'])}</h1>"
            f"<p>Target {esc(summary['target'])}; artifacts {esc(summary['format'])} {esc(summary['precision'])}; "
            f"{summary['counts']}; objectives (all minimised): {metric}, latency, size. "
            f"Chosen: trial {esc(chosen.get('number', '–'))} by the rule: {esc(summary['pick_rule'])}.</p>"
            f"{pareto_plot(rows, pareto, chosen.get('number'), metric)}"
            f"<h2>Pareto front (feasible trials)</h2>{table(HEADER, _rows(front_rows, pareto))}"
            f"<h2>Every trial</h2>{table(HEADER, _rows(rows, pareto))}"
            f"<h2>Budgets</h2><p>{esc(summary['budgets'])}</p></body></html>\n")
