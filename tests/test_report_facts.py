"""Verdicts, gates, the recommendation rule and the 100-column summary, on report dicts shaped like report.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_lstm import report_facts as facts
from edge_lstm.cli_summary import WIDTH, export_summary
from edge_lstm.report_page import expected_plots, render_export
from edge_lstm.spec import Tolerance

FLOAT_TOL = Tolerance().to_dict()
INT8_TOL = Tolerance(elementwise=False, min_cosine=0.99, max_rel_l2=0.15, min_psnr=25, max_task_drop=0.03).to_dict()


def _output(failing: int = 0, reasons: list[str] | None = None) -> dict[str, Any]:
    return {"name": "y", "max_abs": 1e-3, "mean_abs": 1e-4, "p99_abs": 1e-3, "max_rel": 0.1, "rmse": 1e-4,
            "rel_l2": 1e-3, "cosine": 0.9999, "psnr": 50.0, "non_finite": 0, "elements": 256,
            "failing_elements": failing, "by_timestep": None, "passed": not reasons, "reasons": reasons or []}


def _artifact(file: str, size: int, runtime: str, tol: dict[str, Any], drop: float, passed: bool = True,
              streaming: bool = False) -> dict[str, Any]:
    task = {"metric": "mae", "reference": 1.0, "artifact": 1.0 + drop, "drop": drop}
    reasons = None if passed else ["cosine 0.9 < 0.99"]
    return {"file": file, "format": file.rsplit(".", 1)[1], "precision": file.split(".")[-2], "lowering": None,
            "lowering_reason": None, "streaming": streaming, "size_bytes": size, "passed": passed, "notes": [],
            "failures": [], "validation": [{"runtime": runtime, "passed": passed, "samples": 256, "data": "d.csv",
                                            "tolerance": tol, "outputs": [_output(200, reasons)], "task": task,
                                            "notes": []}]}


def _profile(entries: list[tuple[str, str, float]], target: dict[str, Any] | None = None) -> dict[str, Any]:
    prof: dict[str, Any] = {"where": "host", "artifacts": [
        {"artifact": f, "runtime": rt, "latency_s": {"p50": p50, "p99": p50 * 2, "runs": 3},
         "latencies_s": [p50, p50, p50 * 2], "per_sample_s": None, "budget": [], "estimate": None}
        for f, rt, p50 in entries]}
    if target:
        prof["target"] = target
    return prof


def _report(artifacts: list[dict[str, Any]], profile: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"schema": 1, "tool": {"name": "edge-lstm", "version": "0"}, "created": "now", "recipe": "default",
            "model": {"name": "m", "format": "checkpoint", "arch": "forecaster", "parameters": 10,
                      "layers": ["rnn: LSTM(1, 4)"], "inputs": [{"name": "x", "shape": [1, 12, 1]}],
                      "outputs": [{"name": "y", "shape": [1, 1]}], "macs_per_inference": 100, "macs_per_step": 8,
                      "weight_bytes_fp32": 40, "layer_costs": []},
            "validation_data": {"source": "d.csv", "samples": 256, "steps": 12, "labelled": True},
            "artifacts": artifacts, "passed": all(a["passed"] for a in artifacts), "accuracy": None,
            **({"profile": profile} if profile else {})}


def test_gate_in_words_and_failing_elements_only_informative_for_aggregate_gates() -> None:
    assert facts.gate_text(FLOAT_TOL) == "every element within atol 1e-05 or rtol 1e-05"
    assert facts.gate_text(INT8_TOL) == "cosine ≥ 0.99, relative L2 ≤ 0.15, PSNR ≥ 25 dB, task-metric drop ≤ 3%"
    assert facts.elements_text(_output(251), INT8_TOL) == "251/256 (informative: the gate is aggregate)"
    assert facts.elements_text(_output(3), FLOAT_TOL) == "3/256"


def test_recommendation_fastest_passing_ties_to_the_smaller_file() -> None:
    arts = [_artifact("m.fp32.onnx", 200_000, "onnxruntime", FLOAT_TOL, 0.0),
            _artifact("m.dynamic-int8.onnx", 60_000, "onnxruntime", INT8_TOL, 0.002),
            _artifact("m.int8.tflite", 58_000, "litert", INT8_TOL, 0.2, passed=False),
            _artifact("m.stream.fp32.onnx", 200_000, "onnxruntime", FLOAT_TOL, 0.0, streaming=True)]
    prof = _profile([("m.fp32.onnx", "onnxruntime", 100e-6), ("m.dynamic-int8.onnx", "onnxruntime", 103e-6),
                     ("m.int8.tflite", "litert", 10e-6), ("m.stream.fp32.onnx", "onnxruntime", 1e-6)])
    rec = facts.recommend(_report(arts, prof))
    assert (rec["file"], rec["runtime"]) == ("m.dynamic-int8.onnx", "onnxruntime")  # 3% slower, 3x smaller
    assert "lowest measured p50" in rec["rule"] and rec["candidates"] == 2  # failed and streaming excluded
    assert facts.verdict(arts[2])["status"] == "failed" and "cosine 0.9 < 0.99" in facts.verdict(arts[2])["why"][0]
    assert facts.recommend(_report(arts))["file"] == "m.dynamic-int8.onnx"  # no profile: the smallest passing file


def test_recommendation_for_a_microcontroller_needs_tflm_and_the_budgets() -> None:
    target = {"name": "mcu", "display_name": "An MCU", "kind": "mcu", "runtimes": ["tflm"],
              "flash_budget_bytes": 100_000, "ram_budget_bytes": 50_000}
    arts = [_artifact("m.fp32.tflite", 200_000, "tflm", FLOAT_TOL, 0.0),
            _artifact("m.int8.tflite", 58_000, "tflm", INT8_TOL, 0.01),
            _artifact("m.dynamic-int8.tflite", 50_000, "litert", INT8_TOL, 0.0)]
    prof = _profile([("m.fp32.tflite", "tflm", 1e-3), ("m.int8.tflite", "tflm", 2e-3),
                     ("m.dynamic-int8.tflite", "litert", 1e-4)], target)
    prof["artifacts"][0]["budget"] = [{"budget": "flash", "status": "over", "used_bytes": 200_000,
                                       "budget_bytes": 100_000, "measure": "file size"}]
    report = _report(arts, prof)
    assert facts.verdict(arts[0], prof)["status"] == "over budget"
    rec = facts.recommend(report)
    assert (rec["file"], rec["runtime"]) == ("m.int8.tflite", "tflm") and "TFLite Micro" in rec["rule"]
    budgets = facts.budget_rows(prof)
    assert budgets[0]["basis"] == "computed from the file" and budgets[0]["status"] == "over"


def test_summary_fits_100_columns_even_with_long_names() -> None:
    long = "a_model_with_a_rather_long_descriptive_name_for_its_users.stream.dynamic-int8.tflite"
    arts = [_artifact(long, 60_000, "tflite-runtime", INT8_TOL, 0.001, streaming=True),
            _artifact("m.fp32.onnx", 200_000, "onnxruntime", FLOAT_TOL, 0.0)]
    text = export_summary(_report(arts, _profile([(long, "tflite-runtime", 9e-6)])), Path("out"))
    assert max(len(line) for line in text.splitlines()) <= WIDTH, text
    assert "p50 µs" in text and "KiB" in text and "9†" in text


def test_page_without_profile_or_labels_says_what_is_not_measured() -> None:
    report = _report([_artifact("m.fp32.onnx", 200_000, "onnxruntime", FLOAT_TOL, 0.0)])
    html = render_export(report)
    assert expected_plots(report) == ["tradeoff"] and 'data-plot="tradeoff"' in html
    assert "Latency not measured" in html and "No forecast against actual values" in html
    assert "No <code>--target</code> given" in html and "<script" not in html


def test_the_tie_rule_is_named_only_when_it_decided() -> None:
    arts = [_artifact("m.fp32.onnx", 200_000, "onnxruntime", FLOAT_TOL, 0.0),
            _artifact("m.dynamic-int8.onnx", 60_000, "onnxruntime", INT8_TOL, 0.002)]
    fastest = facts.recommend(_report(arts, _profile([("m.fp32.onnx", "onnxruntime", 65e-6),
                                                      ("m.dynamic-int8.onnx", "onnxruntime", 106e-6)])))
    assert fastest["file"] == "m.fp32.onnx" and "lowest measured p50" in fastest["rule"]
    assert "smaller file" not in fastest["rule"]  # simply the fastest: 65 against 106 µs
    tie = facts.recommend(_report(arts, _profile([("m.fp32.onnx", "onnxruntime", 100e-6),
                                                  ("m.dynamic-int8.onnx", "onnxruntime", 103e-6)])))
    assert tie["file"] == "m.dynamic-int8.onnx" and "within 5% of the fastest, the smaller file" in tie["rule"]


def _target_entry(file: str, runtime: str) -> dict[str, Any]:
    return {"artifact": file, "runtime": runtime, "latency_s": {"p50": 1e-4, "p99": 2e-4, "runs": 3},
            "latencies_s": [1e-4], "per_sample_s": None, "estimate": None, "emulated": False,
            "where": "host", "size": {"file_bytes": 11_000}, "memory": {"peak_rss_bytes": None}}


def test_an_artifact_the_target_cannot_run_is_not_runnable_fails_its_budgets_and_is_never_recommended() -> None:
    import pytest

    from edge_lstm.errors import BudgetExceeded
    from edge_lstm.profile import budget_checks, enforce_budgets, mark_not_runnable, not_runnable
    from edge_lstm.report_page import render_export
    from edge_lstm.reports import ProfileReport
    from edge_lstm.targets import load_target

    rpi = load_target("rpi4b")
    fused = _artifact("m.int16x8.tflite", 11_000, "tflm", INT8_TOL, 0.0)  # fused 16x8: TFLite Micro only
    fused["lowering"] = "fused"
    why = not_runnable(["tflm"], rpi, "int16x8", "fused")
    assert why and why.startswith("not runnable on rpi4b: validated on tflm only; rpi4b runs litert")
    assert "--lowering loop" in why and "--precision int16x8" in why
    assert not_runnable(["tflm", "litert"], rpi, "int16x8", "fused") is None
    assert not_runnable(["litert"], load_target("rpi3b"), "fp32", "loop") is None
    assert "--precision int8" in (not_runnable(["litert"], load_target("stm32h7"), "dynamic-int8", "fused") or "")
    entry = _target_entry("m.int16x8.tflite", "tflm")
    entry["budget"] = budget_checks(entry, rpi)
    assert [c["status"] for c in entry["budget"] if c["budget"] == "runtime"] == ["warn"]
    prof = ProfileReport.from_dict({"where": "host", "artifacts": [entry], "target": rpi.to_dict()})
    mark_not_runnable(prof, {"m.int16x8.tflite": why})
    assert [c["status"] for c in entry["budget"] if c["budget"] == "runtime"] == ["not-runnable"]
    report = _report([fused], prof.to_dict())
    v = facts.verdict(fused, prof)
    assert v["status"] == "not runnable" and why in v["why"]
    rec = facts.recommend(report)
    assert rec["file"] is None and "not runnable on rpi4b" in rec["rule"]
    assert "no whole-window artifact passed validation" not in rec["rule"]  # every one passed
    text = export_summary(report, Path("out"))
    assert "m.int16x8.tflite: not runnable on rpi4b: validated on tflm only" in text.replace("\n   ", "")
    assert "not runnable on rpi4b" in render_export(report)
    with pytest.raises(BudgetExceeded, match=r"No artifact can run on rpi4b:\n  m.int16x8.tflite: not runnable"):
        enforce_budgets(prof)


def test_no_recommendation_says_why_when_nothing_passed() -> None:
    arts = [_artifact("m.int8.tflite", 58_000, "litert", INT8_TOL, 0.2, passed=False)]
    rec = facts.recommend(_report(arts))
    assert rec["file"] is None and rec["rule"] == "no whole-window artifact passed validation"


def test_export_on_the_training_file_says_not_held_out_in_every_report(seattle_csv: Path, tmp_path: Path,
                                                                       capsys: Any) -> None:
    import csv
    import json
    import re

    from edge_lstm.cli import main

    train_csv, other = tmp_path / "train.csv", tmp_path / "other.csv"
    rows = list(csv.reader(seattle_csv.open()))
    for path, part in ((train_csv, rows[1:601]), (other, rows[3001:3301])):
        with path.open("w", newline="") as f:
            csv.writer(f).writerows([["date", "temp"], *part])
    ckpt = tmp_path / "m.pt"
    assert main(["train", str(train_csv), "--target-column", "temp", "--window", "24", "--hidden", "4",
                 "--layers", "1", "--epochs", "1", "-o", str(ckpt)]) == 0
    capsys.readouterr()
    said = {}
    for data in (train_csv, other):
        out = tmp_path / data.stem
        assert main(["export", str(ckpt), "-o", str(out), "--format", "onnx", "--data", str(data)]) == 0
        page = re.sub(r"<svg.*?</svg>", "", (out / "report.html").read_text(), flags=re.S)  # the plots' own labels
        said[data.stem] = (capsys.readouterr().out, json.loads((out / "report.json").read_text()),
                           (out / "report.md").read_text(), page)
    text, rep, md, html = said["train"]
    held = rep["validation_data"]["held_out"]
    assert held["status"] == "no" and held["training_data"]["file"] == "train.csv"
    assert held["training_data"]["split_rows"]["train"][0] == 0
    for words in (text.replace("\n  ", " "), md, html):
        assert "held-out" not in words and "NOT held out: the model was trained on this file (train.csv" in words
    assert "train rows 0–" in md
    text, rep, md, html = said["other"]
    assert rep["validation_data"]["held_out"]["status"] == "unknown"  # another file may still share rows
    for words in (text.replace("\n  ", " "), md, html):
        assert "held-out" not in words and "not the training file train.csv" in words
    assert "held out only if it shares no rows with it" in md


def test_the_export_summary_shows_a_sub_microsecond_estimate_as_under_one(tmp_path: Path, capsys: Any) -> None:
    import torch

    from edge_lstm import archs, load
    from edge_lstm.cli import main

    torch.manual_seed(0)
    cfg = archs.ArchConfig(hidden=2, layers=1)
    ckpt = tmp_path / "tiny.pt"  # 6 steps x 4 gates x 2 x (1 + 2) MACs: a few ns at the x86 host's estimated rate
    load.save_checkpoint(ckpt, archs.build("forecaster", cfg).eval(), "forecaster", cfg, 6,
                         {"mean": [0.0], "std": [1.0]}, "forecast")
    assert main(["export", str(ckpt), "-o", str(tmp_path / "out"), "--format", "onnx", "--profile",
                 "--target", "x86-64-host"]) == 0
    text = capsys.readouterr().out
    head = next(line for line in text.splitlines() if line.startswith("artifact"))
    row = next(line for line in text.splitlines() if line.startswith("tiny.fp32.onnx"))
    assert "est. µs" in head, text
    assert " <1 " in row and " 0 " not in row, text  # the estimate column, right-aligned


def test_summary_table_gives_each_runtime_its_own_verdict() -> None:
    """An int8 file that fails on LiteRT but passes on TFLite Micro: the artifact fails (and is never recommended),
    but the TFLite Micro row says pass — it was that runtime's validation that passed."""
    from edge_lstm.cli_summary import table_text

    art = _artifact("m.int8.tflite", 1000, "litert", INT8_TOL, 0.5, passed=False)
    ok = _artifact("m.int8.tflite", 1000, "tflm", INT8_TOL, 0.01)["validation"][0]
    art["validation"].append(ok)
    rep = _report([art])
    rows = {r["runtime"]: r for r in facts.runtime_rows(rep)}
    assert not rows["litert"]["passed"] and not rows["tflm"]["passed"]  # the artifact's verdict: it failed
    assert rows["tflm"]["runtime_passed"] and not rows["litert"]["runtime_passed"]
    lines = {ln.split()[1]: ln.split()[-1] for ln in table_text(rep).splitlines() if ln.startswith("m.int8")}
    assert lines == {"litert": "FAIL", "tflm": "pass"}
