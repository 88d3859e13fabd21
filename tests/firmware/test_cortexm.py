"""The generated C cross-compiled for a Cortex-M4F and run in qemu (mps2-an386) against PyTorch; ELF figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_lstm.errors import InputFileError
from edge_lstm.firmware import cortexm
from edge_lstm.firmware.build import DEFAULT_CORE
from edge_lstm.firmware.cgen import generate
from edge_lstm.firmware.graph import build_program

M7 = cortexm.CortexM(cpu="cortex-m7", fpu="fpv5-d16", float_abi="hard", qemu_machine="mps2-an500")


def build_and_run(case, precision: str, work: Path, core: cortexm.CortexM = DEFAULT_CORE) -> tuple[dict, dict, object]:
    prog = build_program(case.proto)
    code = generate(prog, precision, source=case.name)
    windows = case.windows.reshape(len(case.windows), prog.window, prog.n_input)
    for name, text in {**cortexm.cortex_files(core, "model", windows, 2), **code.files}.items():
        (work / name).write_text(text)
    sizes = cortexm.build(core, work, code)
    return sizes, cortexm.run_qemu(core, work / "model_test.elf"), (prog, code)


def check_outputs(case, run: dict, prog, precision: str, int8_close) -> None:
    """Window API on every window, streaming API (from a reset, step by step) on the first ones, against PyTorch."""
    ref = case.reference()
    window = np.stack(run["windows"])
    steps = np.stack(run["streams"]).reshape(len(run["streams"]), prog.window, prog.step_output_size)
    streamed = steps.reshape(len(steps), -1) if case.all_steps else steps[:, -1, :]
    assert window.shape == ref.shape and len(streamed) == 2
    if precision == "fp32":
        np.testing.assert_allclose(window, ref, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(streamed, ref[:2], atol=1e-5, rtol=1e-5)
    else:
        int8_close(window, ref)
        int8_close(streamed, ref[:2])


@pytest.mark.parametrize("precision", ["fp32", "int8-weights"])
def test_demo_on_emulated_cortex_m4f(precision: str, demo, tmp_path: Path, int8_close) -> None:
    sizes, run, (prog, code) = build_and_run(demo, precision, tmp_path)
    check_outputs(demo, run, prog, precision, int8_close)
    model = sizes["model"]
    # the model's flash is the ELF minus the same harness without the model; its constants are all in there
    assert model["flash_bytes"] == sizes["elf"]["flash_bytes"] - sizes["baseline_elf"]["flash_bytes"]
    assert 0.99 * code.weight_bytes <= sizes["object"]["rodata_bytes"] <= model["flash_bytes"]  # tiny ones may inline
    assert 0 < run["stack_bytes"] < 4096
    per_tick = run["cal_instructions"] / run["cal_ticks"]
    assert per_tick == pytest.approx(40.0, rel=1e-3)  # -icount shift=0: 1 ns per instruction, a 25 MHz timer
    instructions = np.mean(run["window_ticks"]) * per_tick
    assert instructions > prog.macs_per_step * prog.window  # at least one instruction per multiply-accumulate


def test_int8_weights_flash_is_under_a_third(demo, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    f32 = build_and_run(demo, "fp32", tmp_path / "a")[0]["model"]["flash_bytes"]
    i8 = build_and_run(demo, "int8-weights", tmp_path / "b")[0]["model"]["flash_bytes"]
    assert i8 <= 0.30 * f32


@pytest.mark.parametrize("precision", ["fp32", "int8-weights"])
@pytest.mark.parametrize("name", ["stacked_lstm", "gru", "softmax_classifier", "multi_feature", "rnn_all_steps"])
def test_architectures_on_emulated_cortex_m4f(name: str, precision: str, cases, tmp_path: Path, int8_close) -> None:
    case = cases[name]
    _, run, (prog, _) = build_and_run(case, precision, tmp_path)
    check_outputs(case, run, prog, precision, int8_close)


def test_cortex_m7_on_mps2_an500(cases, tmp_path: Path, int8_close) -> None:
    sizes, run, (prog, _) = build_and_run(cases["gru"], "fp32", tmp_path, M7)
    check_outputs(cases["gru"], run, prog, "fp32", int8_close)
    assert sizes["model"]["flash_bytes"] > 0


def test_built_in_targets_name_their_cores() -> None:
    from edge_lstm.targets import load_target

    nrf, stm = cortexm.firmware_config(load_target("nrf52840")), cortexm.firmware_config(load_target("stm32h7"))
    assert nrf == cortexm.CortexM("cortex-m4", "fpv4-sp-d16", "hard", "mps2-an386", 0x0, 0x20000000)
    assert stm is not None and stm.cpu == "cortex-m7" and stm.qemu_machine == "mps2-an500"
    assert cortexm.firmware_config(load_target("esp32s3")) is None  # Xtensa: no Arm build


@pytest.mark.parametrize(("table", "needle"), [
    ({"cpu": "cortex-m4", "mhz": 64}, "unknown keys ['mhz']"),
    ({"fpu": "none"}, "needs 'cpu'"),
    ({"cpu": "cortex-m4", "float_abi": "hardest"}, "float_abi"),
    ({"cpu": "cortex-m4", "qemu_machine": "stm32-board"}, "qemu_machine"),
    ({"cpu": "cortex-m4", "flash_origin": -1}, "flash_origin"),
    ({"cpu": 4}, "must be a string"),
])
def test_firmware_table_is_validated(table: dict, needle: str) -> None:
    with pytest.raises(InputFileError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        cortexm.parse_firmware_table(table, "t.toml")


def test_linker_script_uses_the_board_map_when_emulated() -> None:
    board = cortexm.linker_script(cortexm.CortexM("cortex-m7", "fpv5-d16", "hard", "mps2-an500", 0x08000000))
    own = cortexm.linker_script(cortexm.CortexM("cortex-m0plus", flash_origin=0x10000000, ram_origin=0x20000000))
    assert "ORIGIN = 0x0," in board and "ORIGIN = 0x10000000" in own and "@" not in own


def test_startup_linker_script_and_harness_ship_inside_the_package() -> None:
    from importlib import resources

    data = resources.files("edge_lstm.firmware") / "data"
    assert {p.name for p in data.iterdir()} >= {"startup.c", "link.ld.in", "harness.c"}  # package data: in the wheel
    assert "Reset_Handler" in cortexm.data_file("startup.c") and "@FLASH_ORIGIN@" in cortexm.data_file("link.ld.in")
