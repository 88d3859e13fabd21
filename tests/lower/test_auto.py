"""The ``auto`` lowering's decision: the rule, and :func:`pick` over measured p50s (numbers in, a choice out)."""

from __future__ import annotations

from pathlib import Path

from models import build

from edge_lstm import capture, load
from edge_lstm.lower.tflite import lower
from edge_lstm.lower.tflite.auto import MARGIN, pick


def test_the_rule_keeps_its_form_unless_the_other_is_clearly_faster() -> None:
    kept, why = pick("loop", {"loop": 100e-6, "fused": 100e-6 / (1 + MARGIN / 2)}, "litert")
    assert kept == "loop" and why.startswith(f"auto: within {MARGIN:.0%}: the rule's choice, loop")
    flipped, why = pick("loop", {"loop": 200e-6, "fused": 100e-6}, "litert")
    assert flipped == "fused" and why == "auto: measured: fused 2.00x faster than loop on litert here"
    confirmed, why = pick("loop", {"loop": 100e-6, "fused": 190e-6}, "litert")
    assert confirmed == "loop"
    assert why == "auto: measured: loop 1.90x faster than fused on litert here (the rule's choice)"


def test_only_a_candidate_that_passed_can_be_kept() -> None:
    assert pick("loop", {"fused": 1e-3}, "litert")[0] == "fused"  # the rule's form failed validation
    assert pick("loop", {"loop": 1e-3}, "litert")[0] == "loop"
    form, why = pick("loop", {}, "litert")
    assert form == "loop" and "no candidate passed validation" in why


def test_without_a_target_the_rule_gives_the_same_bytes_and_says_nothing_was_timed(tmp_path: Path) -> None:
    module, cfg = build("stacked")
    path = tmp_path / "m.pt"
    load.save_checkpoint(path, module, "forecaster", cfg, 12, {"mean": [0.0], "std": [1.0]}, "forecast")
    proto = capture.to_onnx(load.load(path))
    first, second = lower(proto, "auto"), lower(proto, "auto")
    assert first.data == second.data and first.lowering == "loop" and "not timed here" in first.reason
