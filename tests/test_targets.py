"""Target files: every built-in loads and is complete; bad names and files fail clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_lstm.errors import InputFileError, UsageError
from edge_lstm.targets import PRECISIONS, RUNTIMES, known_names, list_targets, load_target

REQUIRED = {"rpi3b", "rpi4b", "rpi5", "android-arm64", "x86-64-host", "stm32h7", "nrf52840", "esp32s3"}


def test_builtin_targets_cover_the_required_devices() -> None:
    assert set(known_names()) >= REQUIRED


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_builtin_target_is_complete(name: str) -> None:
    t = load_target(name)
    assert t.name == name
    assert t.ram_budget_bytes <= t.ram_bytes and t.flash_budget_bytes <= t.flash_bytes
    assert set(t.runtimes) <= set(RUNTIMES)
    assert t.preferred_precision in PRECISIONS
    assert {"cpu", "memory", "throughput"} <= dict(t.sources).keys()
    assert t.throughput_method.startswith("estimate")
    assert t.to_dict()["throughput_is_estimate"] is True
    if t.kind == "mcu":
        assert t.runtimes == ("tflm",) and t.ram_bytes < 2 * 1024 * 1024


def test_list_targets_sorted() -> None:
    names = [t.name for t in list_targets()]
    assert names == sorted(names)


def test_unknown_target_lists_known_ones() -> None:
    with pytest.raises(UsageError) as e:
        load_target("raspberry-pi-9")
    assert "rpi4b" in (e.value.hint or "") and "raspberry-pi-9" in e.value.message


def _write_without(tmp_path: Path, drop_line_prefix: str) -> Path:
    src = Path(load_target("rpi4b").path).read_text()
    lines = [ln for ln in src.splitlines() if not ln.startswith(drop_line_prefix)]
    out = tmp_path / "custom.toml"
    out.write_text("\n".join(lines))
    return out


def test_missing_field_names_field_and_file(tmp_path: Path) -> None:
    path = _write_without(tmp_path, "clock_hz")
    with pytest.raises(InputFileError) as e:
        load_target(path)
    assert "cpu.clock_hz" in e.value.message and str(path) in e.value.message


def test_custom_target_by_path_and_optional_budget_defaults(tmp_path: Path) -> None:
    path = _write_without(tmp_path, "ram_budget_bytes")
    t = load_target(str(path))
    assert t.ram_budget_bytes == t.ram_bytes


def test_bad_values_rejected(tmp_path: Path) -> None:
    src = Path(load_target("rpi4b").path).read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(src.replace('preferred_precision = "dynamic-int8"', 'preferred_precision = "int4"'))
    with pytest.raises(InputFileError, match=r"software\.preferred_precision"):
        load_target(bad)
    bad.write_text(src.replace("cores = 4", "cores = 0"))
    with pytest.raises(InputFileError, match=r"cpu\.cores"):
        load_target(bad)
    bad.write_text("name = [")
    with pytest.raises(InputFileError, match="not valid TOML"):
        load_target(bad)


def test_a_unique_prefix_names_a_built_in_target_and_an_ambiguous_one_lists_the_matches() -> None:
    assert load_target("rpi4").name == load_target("rpi4b").name
    with pytest.raises(UsageError, match="Unknown target 'rpi'") as e:
        load_target("rpi")
    assert "rpi3b, rpi4b, rpi5" in (e.value.hint or "")
