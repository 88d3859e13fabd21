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


def test_cyclic_or_too_deep_inheritance_is_a_recipe_error(tmp_path: Path) -> None:
    from edge_lstm.errors import RecipeError
    from edge_lstm.recipes import MAX_INHERIT

    (tmp_path / "a.toml").write_text('inherit = "b.toml"\nname = "a"\n')
    (tmp_path / "b.toml").write_text('inherit = "a.toml"\nname = "b"\n')
    with pytest.raises(RecipeError, match=r"inherits from itself \(a.toml -> b.toml -> a.toml\)") as e:
        load_recipe(tmp_path / "a.toml")
    assert e.value.kind == "recipe" and e.value.exit_code == 2
    # a chain of MAX_INHERIT files (the bundled default the last) loads; one more is refused, not cut off
    for i in range(MAX_INHERIT):
        parent = "default" if i == 0 else f"r{i - 1}.toml"
        (tmp_path / f"r{i}.toml").write_text(f'inherit = "{parent}"\nname = "r{i}"\n')
    assert load_recipe(tmp_path / f"r{MAX_INHERIT - 2}.toml").name == f"r{MAX_INHERIT - 2}"
    with pytest.raises(RecipeError, match=f"goes {MAX_INHERIT + 1} levels deep; at most {MAX_INHERIT}"):
        load_recipe(tmp_path / f"r{MAX_INHERIT - 1}.toml")


def test_each_kind_of_config_error_has_its_class(tmp_path: Path) -> None:
    from edge_lstm.errors import InputFileError, RecipeError, TargetError
    from edge_lstm.targets import load_target

    bad = tmp_path / "bad.toml"
    bad.write_text("name = [")
    with pytest.raises(RecipeError, match="not valid TOML"):
        load_recipe(bad)
    with pytest.raises(TargetError, match="not valid TOML") as e:
        load_target(bad)
    assert isinstance(e.value, InputFileError) and e.value.kind == "target"
    bad.write_text('name = "x"\nformats = ["onnx"]\nprecisions = ["fp32"]\n')
    with pytest.raises(RecipeError, match="has no tolerance"):
        load_recipe(bad)


def test_an_inheriting_recipe_overrides_one_tolerance_key_and_keeps_the_others(tmp_path: Path) -> None:
    """`[tolerance.int8] max_task_drop = 0.01` under `inherit = "default"` tightens that gate alone: the int8
    gate stays statistical (cosine, relative L2, PSNR), not the dataclass's elementwise default."""
    path = tmp_path / "tight.toml"
    path.write_text('inherit = "default"\nname = "tight"\n\n[tolerance.int8]\nmax_task_drop = 0.01\n')
    base, tight = load_recipe("default").tolerances[Precision.INT8], load_recipe(str(path)).tolerances[Precision.INT8]
    assert tight.max_task_drop == 0.01
    assert (tight.elementwise, tight.min_cosine, tight.max_rel_l2, tight.min_psnr) == \
        (base.elementwise, base.min_cosine, base.max_rel_l2, base.min_psnr) == (False, 0.99, 0.15, 25.0)
    assert load_recipe(str(path)).tolerances[Precision.FP32] == load_recipe("default").tolerances[Precision.FP32]
