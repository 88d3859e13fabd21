"""``<name>.train.html``: the training log as a self-contained page with plots (matplotlib, inline SVG).

Nothing is fetched when the page opens. The SVG is written with a fixed hash
salt and no date, so the same log renders to the same bytes.
"""

from __future__ import annotations

import html
import io
from typing import Any

CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}.note{background:#fff4d6;padding:.6em;
border-left:4px solid #d9a400;margin:.6em 0}figure{display:inline-block;margin:.5em;vertical-align:top}
figcaption{font-size:90%;max-width:460px}.bad{color:#b00}"""


def esc(v: Any) -> str:
    """HTML-escaped text."""
    return html.escape(str(v))


def svg(fig: Any) -> str:
    """A matplotlib figure as inline ``<svg>`` text, byte-stable for the same figure."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": "edge-lstm", "svg.fonttype": "none"}):
        fig.savefig(buf, format="svg", metadata={"Date": None}, bbox_inches="tight")
    text = buf.getvalue()
    return text[text.index("<svg"):]


def figure(width: float = 4.6, height: float = 2.8) -> tuple[Any, Any]:
    """A pyplot-free figure and its axes (safe in worker processes and threads)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    return fig, fig.subplots()


def table(header: list[str], rows: list[list[Any]]) -> str:
    """A plain HTML table."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def fig_block(fig: Any, caption: str) -> str:
    """A figure with its caption."""
    return f"<figure>{svg(fig)}<figcaption>{esc(caption)}</figcaption></figure>"


def _epoch_axis(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")


def _loss_plot(epochs: list[dict[str, Any]], best: int) -> str:
    fig, ax = figure()
    xs = [e["epoch"] for e in epochs]
    ax.plot(xs, [e["train_loss"] for e in epochs], marker="o", ms=3, label="train")
    ax.plot(xs, [e["val_loss"] for e in epochs], marker="o", ms=3, label="validation")
    ax.axvline(best, color="#999", ls="--", lw=1, label=f"best (epoch {best})")
    ax.set_yscale("log")
    _epoch_axis(ax)
    ax.set_ylabel("loss (normalised)")
    ax.legend(fontsize=8)
    return fig_block(fig, "Loss per epoch; the weights of the best validation epoch are kept.")


def _grad_plot(epochs: list[dict[str, Any]], clip: float) -> str:
    fig, ax = figure()
    xs = [e["epoch"] for e in epochs]
    for key, style in (("max", ":"), ("median", "-"), ("min", "--")):
        ax.plot(xs, [e["grad_norm"][key] for e in epochs], ls=style, label=key)
    if clip > 0:
        ax.axhline(clip, color="#c00", lw=1, label=f"clip {clip:g}")
    ax.set_yscale("log")
    _epoch_axis(ax)
    ax.set_ylabel("gradient norm (before clipping)")
    ax.legend(fontsize=8)
    share = [e["clipped_steps"] / max(e["steps"], 1) for e in epochs]
    return fig_block(fig, "Total gradient norm per step, summarised per epoch. Clipped steps per epoch: "
                     + ", ".join(f"{s:.0%}" for s in share) + ".")


def _lr_plot(epochs: list[dict[str, Any]]) -> str:
    fig, ax = figure(4.6, 2.2)
    ax.plot([e["epoch"] for e in epochs], [e["lr"] for e in epochs], marker="o", ms=3)
    ax.set_yscale("log")
    _epoch_axis(ax)
    ax.set_ylabel("learning rate")
    return fig_block(fig, "Learning rate at the start of each epoch.")


def _reach_plot(epochs: list[dict[str, Any]]) -> str:
    fig, ax = figure()
    marked = [epochs[0], epochs[len(epochs) // 2], epochs[-1]] if len(epochs) > 2 else epochs
    for e in {id(m): m for m in marked}.values():
        prof = e["gradient_reach"]["profile"]
        ax.plot([p[0] for p in prof], [max(p[1], 1e-45) for p in prof], marker=".", label=f"epoch {e['epoch']}")
    ax.set_yscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("steps before the window's last step")
    ax.set_ylabel("gradient relative to the last step")
    ax.legend(fontsize=8)
    return fig_block(fig, "How much of the loss's gradient reaches each input step (a fixed training batch). "
                          "A curve that falls to ~0 on the left means the early steps barely train the model.")


def _lr_test_plot(test: dict[str, Any]) -> str:
    fig, ax = figure()
    ax.plot(test["lrs"], test["losses"])
    ax.axvline(test["suggested_lr"], color="#0a0", ls="--", label=f"chosen {test['suggested_lr']:.2g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("smoothed training loss")
    ax.legend(fontsize=8)
    return fig_block(fig, f"Learning-rate range test; chosen: {test.get('rule', '')}.")


def _forecast_plot(sample: dict[str, Any]) -> str:
    fig, ax = figure(9.4, 2.8)
    ax.plot(sample["truth"], color="#222", lw=1.2, label="truth")
    ax.plot(sample["model"], color="#1f6fd1", lw=1, label="model")
    ax.plot(sample["persistence"], color="#d17b1f", lw=0.8, ls="--", label="persistence")
    ax.set_xlabel("test window")
    ax.set_ylabel("next value (data units)")
    ax.legend(fontsize=8, ncol=3)
    return fig_block(fig, f"The first {len(sample['truth'])} test forecasts (one step ahead).")


def _metrics_section(test: dict[str, Any]) -> str:
    if "persistence" in test:
        rows = [["model", f"{test['model']['mae']:.4g}", f"{test['model']['rmse']:.4g}", ""]]
        for key, label in (("persistence", "persistence (last value)"), ("seasonal_naive", "seasonal naive")):
            if key in test:
                b = test[key]
                extra = f" (season {b['season']})" if "season" in b else ""
                rows.append([label + extra, f"{b['mae']:.4g}", f"{b['rmse']:.4g}",
                             f"{b['model_improvement']:.1%}" if "model_improvement" in b else "– (baseline exact)"])
        return ("<h2>Test metrics (data units)</h2>"
                + table(["forecaster", "MAE", "RMSE", "model's MAE lower by"], rows)
                + f"<p>{test['windows']} test windows, horizon {test['horizon']}.</p>")
    m = test["model"]
    rows = [["model", f"{m['accuracy']:.4f}", f"{m['macro_f1']:.4f}"]]
    rows += [[k.replace("_", " "), f"{test[k]['accuracy']:.4f}", f"{test[k]['macro_f1']:.4f}"]
             for k in ("majority_class", "previous_window") if k in test]
    classes = test["classes"]
    cm = [[c, *row] for c, row in zip(classes, m["confusion"], strict=True)]
    per = [[c, f"{p['precision']:.3f}", f"{p['recall']:.3f}", f"{p['f1']:.3f}", p["support"]]
           for c, p in zip(classes, m["per_class"], strict=True)]
    return ("<h2>Test metrics</h2>" + table(["classifier", "accuracy", "macro-F1"], rows)
            + "<h3>Confusion matrix (rows: true class, columns: predicted)</h3>" + table(["", *classes], cm)
            + table(["class", "precision", "recall", "F1", "support"], per))


def render_training(log: dict[str, Any], name: str) -> str:
    """The whole report page."""
    cfg, data, epochs = log["config"], log["data"], log["epochs"]
    notes = "".join(f'<div class="note"><b>{esc(n["kind"])}</b>: {esc(n["text"])}</div>' for n in log["notes"])
    plots = [_loss_plot(epochs, log["best_epoch"]), _grad_plot(epochs, cfg["clip"]), _lr_plot(epochs),
             _reach_plot(epochs)]
    if log.get("lr_range_test") and log["lr_range_test"]["lrs"]:
        plots.append(_lr_test_plot(log["lr_range_test"]))
    if log["test"].get("sample"):
        plots.append(_forecast_plot(log["test"]["sample"]))
    split = data["split_rows"]
    data_rows = [[k, f"rows {v[0] + 1}-{v[1]}", data["windows"][k]] for k, v in split.items()]
    settings = [[k, v] for k, v in cfg.items() if k != "data"] + [[f"data.{k}", v] for k, v in cfg["data"].items()]
    epoch_rows = [[e["epoch"], f"{e['train_loss']:.5g}", f"{e['val_loss']:.5g}", f"{e['lr']:.3g}",
                   f"{e['grad_norm']['median']:.3g}", f"{e['clipped_steps']}/{e['steps']}",
                   f"{e['gradient_reach']['early_to_last']:.2e}"] for e in epochs]
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(name)}: training report</title>"
            f"<style>{CSS}</style></head><body><h1>{esc(name)}: training report</h1>"
            f"<p>{esc(data['file'])} ({data['rows']} rows, sha256 {esc(data['sha256'][:12])}…), task "
            f"{esc(data['task'])}, features {esc(', '.join(data['features']))}. Best epoch {log['best_epoch']} "
            f"(validation loss {log['best_val_loss']:.5g}); {esc(log['stopped'])}; learning rate {log['lr']:.3g}.</p>"
            f"{notes}{_metrics_section(log['test'])}<h2>Training</h2>{''.join(plots)}"
            "<h2>Chronological split (no window crosses a boundary)</h2>"
            + table(["part", "rows", "windows"], data_rows)
            + "<h2>Epochs</h2>" + table(["epoch", "train loss", "val loss", "lr", "median grad norm", "clipped",
                                          "gradient reach (first tenth / last)"], epoch_rows)
            + "<h2>Settings</h2>" + table(["setting", "value"], settings) + "</body></html>\n")
