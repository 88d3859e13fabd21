"""Export recipes as data."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_lstm.errors import UsageError
from edge_lstm.recipes import list_recipes, load_recipe
from edge_lstm.spec import Precision


def test_bundled_recipes_load() -> None:
    assert {"default", "edge", "micro", "demo"} <= set(list_recipes())
    for name in list_recipes():
        r = load_recipe(name)
        assert set(r.tolerances) == set(Precision)


def test_long_sequences_get_the_documented_looser_bound() -> None:
    r = load_recipe("default")
    assert r.tolerance(Precision.FP32, 96).atol == 1e-5
    assert r.tolerance(Precision.FP32, 1000).atol == pytest.approx(1e-4)


def test_overrides_and_bad_values() -> None:
    r = load_recipe().with_overrides(formats=["tflite", "onnx"], precisions=["fp16"], lowering="unrolled")
    assert r.formats == ("tflite", "onnx") and r.precisions == (Precision.FP16,) and r.lowering == "unrolled"
    with pytest.raises(UsageError, match="Accepted: onnx, tflite"):
        load_recipe().with_overrides(formats=["coreml"])
    with pytest.raises(UsageError, match="Accepted: fp32"):
        load_recipe().with_overrides(precisions=["int4"])
    with pytest.raises(UsageError, match="Unknown recipe"):
        load_recipe("nope")


def test_user_recipe_file(tmp_path: Path) -> None:
    p = tmp_path / "mine.toml"
    p.write_text('inherit = "default"\nname = "mine"\n[tolerance.fp32]\natol = 1e-3\nrtol = 0.0\n')
    r = load_recipe(p)
    assert r.name == "mine" and r.tolerances[Precision.FP32].atol == 1e-3
    p.write_text('name = "x"\nformats = ["onnx"]\nprecisions = ["fp32"]\n[tolerance.fp32]\natl = 1\n')
    with pytest.raises(UsageError, match="unknown tolerance key"):
        load_recipe(p)


@pytest.mark.parametrize(("body", "needle"), [
    ("[validation]\nrandom_sample = 0\n", "unknown \\[validation\\] key"),
    ('[validation]\nmax_samples = "lots"\n', "non-negative integer"),
    ('[tolerance.fp32]\natol = "big"\nrtol = 0.0\n', "must be a number"),
    ("[tolerance.fp32]\natol = 1e-5\nrtol = 1e-5\nper_output = { y = { atoll = 1.0 } }\n", "unknown tolerance key"),
])
def test_malformed_recipe_values(body: str, needle: str, tmp_path: Path) -> None:
    p = tmp_path / "bad.toml"
    p.write_text('inherit = "default"\nname = "bad"\n' + body)
    with pytest.raises(UsageError, match=needle):
        load_recipe(p)


def test_repeated_precision_is_exported_once() -> None:
    r = load_recipe().with_overrides(precisions=["fp32", "fp16", "fp32"])
    assert r.precisions == (Precision.FP32, Precision.FP16)
