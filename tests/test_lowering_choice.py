"""``--lowering auto`` for a ``--target``: both forms timed on the target's host runtime (real runtimes), or why not."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest

from edge_lstm.errors import BudgetExceeded, UsageError
from edge_lstm.lower.tflite.auto import MARGIN
from edge_lstm.lowering_choice import ROUNDS, RUNS_PER_ROUND
from edge_lstm.pipeline import ExportOptions, export
from edge_lstm.recipes import Recipe, load_recipe


def _recipe(*precisions: str) -> Recipe:
    return replace(load_recipe().with_overrides(formats=["tflite"], precisions=list(precisions)), random_samples=4)


def test_a_litert_target_times_both_forms_and_reports_them(forecaster_ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    # full int8 (one precision, to keep the test short): its rival is calibrated too; the float precisions share
    # the same path through produce.rivals and settle
    export(forecaster_ckpt, ExportOptions(output_dir=out, recipe=_recipe("int8"), calib="random", target="rpi4b"))
    rep = json.loads((out / "report.json").read_text())
    window = rep["artifacts"]
    assert [a["file"] for a in window] == ["stacked.int8.tflite"]
    for a in window:
        c = a["lowering_choice"]
        assert c["measured"] and c["runtime"] == "litert" and c["target"] == "rpi4b" and c["rule"] == "loop"
        cands = {x["lowering"]: x for x in c["candidates"]}
        assert set(cands) == {"loop", "fused"} and [x["lowering"] for x in c["candidates"] if x["chosen"]] == [
            a["lowering"]] == [c["chosen"]]
        for x in cands.values():  # each candidate was validated and timed
            assert any(v["runtime"] == "litert" and v["passed"] for v in x["validation"])
            assert x["runs"] == ROUNDS * RUNS_PER_ROUND and x["p50_s"] > 0 and x["size_bytes"] > 0
        chosen, other = cands[c["chosen"]], cands[next(k for k in cands if k != c["chosen"])]
        data = (out / a["file"]).read_bytes()  # the published file is the chosen candidate, byte for byte
        assert hashlib.sha256(data).hexdigest() == a["sha256"] == chosen["sha256"] != other["sha256"]
        if c["chosen"] != c["rule"]:  # flipped only by a clear margin, and it says so
            assert other["p50_s"] >= (1 + MARGIN) * chosen["p50_s"] and c["reason"].startswith("auto: measured:")
        else:
            assert other["p50_s"] * (1 + MARGIN) > chosen["p50_s"]
        assert a["lowering_reason"] == c["reason"] and f"lowering: {c['reason']}" in a["notes"]
    md = (out / "report.md").read_text()
    section = md[md.index("## Lowering choice"):md.index("## Profile")]
    for a in window:
        for x in a["lowering_choice"]["candidates"]:
            assert f"| {a['file']} | {x['lowering']} | {x['size_bytes']:,} |" in section
    assert "timed here on litert" in section and "Lowering choice" in (out / "report.html").read_text()


def test_a_micro_target_keeps_fused_without_timing(forecaster_ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    export(forecaster_ckpt, ExportOptions(output_dir=out, recipe=_recipe("fp32"), target="stm32h7"))
    (a,) = json.loads((out / "report.json").read_text())["artifacts"]
    c = a["lowering_choice"]
    assert a["lowering"] == "fused" and not c["measured"] and c["runtime"] is None and "TFLite Micro" in c["reason"]
    assert [(x["lowering"], x["p50_s"], x["runs"]) for x in c["candidates"]] == [("fused", None, 0)]
    assert "nothing timed" in (out / "report.md").read_text()


def test_without_a_target_the_rule_holds_and_the_bytes_repeat(forecaster_ckpt: Path, tmp_path: Path) -> None:
    reps = []
    for name in ("a", "b"):
        export(forecaster_ckpt, ExportOptions(output_dir=tmp_path / name, recipe=_recipe("fp32", "int8"),
                                              calib="random"))
        reps.append(json.loads((tmp_path / name / "report.json").read_text()))
    assert [a["sha256"] for a in reps[0]["artifacts"]] == [a["sha256"] for a in reps[1]["artifacts"]]
    for a in reps[0]["artifacts"]:
        assert a["lowering_choice"] is None and "not timed" in a["lowering_reason"]
    assert "## Lowering choice" not in (tmp_path / "a" / "report.md").read_text()


def test_a_target_without_tflite_says_nothing_was_timed(forecaster_ckpt: Path, tmp_path: Path) -> None:
    from edge_lstm.resources import data_dir

    onnx_only = tmp_path / "onnx-only.toml"
    text = (data_dir("targets") / "rpi4b.toml").read_text()
    onnx_only.write_text(text.replace('runtimes = ["litert", "tflite-runtime", "onnxruntime"]',
                                      'runtimes = ["onnxruntime"]'))
    out = tmp_path / "out"
    # the .tflite validated on LiteRT (and TFLite Micro) only, which this target does not run: exit 4 after the
    # artifact and its reports are written, naming it and what would run there
    with pytest.raises(BudgetExceeded, match=r"stacked.fp32.tflite: not runnable on rpi4b: .*--format onnx"):
        export(forecaster_ckpt, ExportOptions(output_dir=out, recipe=_recipe("fp32"), target=str(onnx_only)))
    (a,) = json.loads((out / "report.json").read_text())["artifacts"]
    c = a["lowering_choice"]
    assert not c["measured"] and "runs no TFLite runtime (its runtimes: onnxruntime)" in c["reason"]


def test_an_unknown_target_fails_before_any_work(forecaster_ckpt: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="Unknown target 'rpi9'") as e:
        export(forecaster_ckpt, ExportOptions(output_dir=tmp_path / "out", recipe=_recipe("fp32"), target="rpi9"))
    assert "rpi4b" in (e.value.hint or "") and not (tmp_path / "out").exists()


def test_streaming_artifacts_keep_the_rule_untimed(forecaster_ckpt: Path) -> None:
    from edge_lstm import capture, load
    from edge_lstm.artifact import Artifact
    from edge_lstm.lower.tflite import lower
    from edge_lstm.lowering_choice import Plan, settle
    from edge_lstm.progress import silent
    from edge_lstm.spec import Precision

    model = load.load(forecaster_ckpt)
    step = capture.streaming_model(model, capture.to_onnx(model))
    low = lower(step.proto, "auto", streaming=True, litert=True)
    art = Artifact("m.stream.fp32.tflite", "tflite", Precision.FP32, low.lowering, True, low.data,
                   lowering_reason=low.reason)
    (got,) = settle([art], {}, Plan("rpi4b", "litert"), {}, silent)
    c = got.lowering_choice
    assert got is art and got.lowering == "fused" and c is not None and not c.measured
    assert c.reason.startswith("streaming: the rule's form, not timed") and c.candidates[0].p50_s is None


def test_no_rival_where_there_is_one_form_or_litert_has_no_kernel(model_dir: Path, tmp_path: Path) -> None:
    from models import write

    from edge_lstm import capture, load, produce
    from edge_lstm.artifact import Artifact
    from edge_lstm.lower.tflite import lower
    from edge_lstm.progress import silent
    from edge_lstm.spec import Precision

    gru = load.load(write("gru", "checkpoint", model_dir)[0])
    proto = capture.to_onnx(gru)
    low = lower(proto, "auto", litert=True)
    assert low.lowering == "loop"
    opts = ExportOptions(output_dir=tmp_path / "out", recipe=_recipe("fp32", "int16x8"), target="rpi4b")
    arts = [Artifact("g.fp32.tflite", "tflite", Precision.FP32, "loop", False, low.data),
            Artifact("g.int16x8.tflite", "tflite", Precision.INT16X8, "loop", False, low.data)]
    got = produce.rivals(gru, proto, arts, opts, silent)
    assert got["g.fp32.tflite"] == "fused: the same graph as loop (no layer the fused op can express)"
    assert str(got["g.int16x8.tflite"]).startswith("fused: not built: LiteRT and tflite-runtime have no 16x8 fused")
