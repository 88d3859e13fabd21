"""``edge-lstm firmware`` and ``export --firmware`` end to end: files, measured figures, budgets, exit codes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import zoo

from edge_lstm import archs
from edge_lstm.cli import main
from edge_lstm.load import save_checkpoint
from edge_lstm.targets import load_target


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


@pytest.fixture(scope="module")
def export_dir(demo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo exported as ONNX and fused TFLite, window and streaming."""
    out = tmp_path_factory.mktemp("fw-export") / "out"
    assert main(["export", str(demo.path), "-o", str(out), "--format", "onnx", "--format", "tflite", "--streaming",
                 "--lowering", "fused", "--json"]) == 0
    return out


@pytest.fixture(scope="module")
def stm32(export_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    fw = tmp_path_factory.mktemp("fw-stm32") / "fw"
    assert main(["firmware", str(export_dir), "--target", "stm32h7", "-o", str(fw)]) == 0
    return fw, json.loads((fw / "firmware.json").read_text())


def test_firmware_writes_every_file(stm32) -> None:
    fw, _ = stm32
    names = {p.name for p in fw.iterdir()}
    assert all(p.is_file() for p in fw.iterdir())  # edge-lstm's outputs hold regular files only
    assert names == {".edge-lstm-output.json", "firmware.json", "firmware.md", "model.fp32.h", "model.fp32.c",
                     "model.int8-weights.h", "model.int8-weights.c", "cortexm_startup.c", "cortexm_link.ld",
                     "cortexm_harness.c", "cortexm_harness_data.h", "cortexm.mk",
                     *[f"forecaster.{k}.{f}" for k in ("fp32", "stream.fp32")
                       for f in ("model_data.h", "model_data.c", "main.cc")]}  # no .tflite: the export's is the source


def test_shipped_makefile_rebuilds_and_runs_it(stm32, tmp_path: Path) -> None:
    import shutil
    import subprocess

    fw, _ = stm32
    work = tmp_path / "fw"
    shutil.copytree(fw, work)
    p = subprocess.run(["make", "-s", "-f", "cortexm.mk", "run", "PRECISION=int8-weights"], cwd=work,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    assert "EDGE-LSTM END" in p.stdout and (work / "model.int8-weights.elf").is_file()


def test_report_holds_measured_labelled_figures(stm32) -> None:
    _, rep = stm32
    assert rep["target"]["name"] == "stm32h7" and rep["passed"] is True
    by = {e["precision"]: e for e in rep["c"]}
    for e in by.values():
        cm = e["cortex_m"]
        assert cm["status"] == "ran" and cm["cpu"] == "cortex-m7" and cm["qemu_machine"] == "mps2-an500"
        assert cm["model"]["label"].startswith("measured on an emulated core")
        assert "not device time" in cm["emulated_instructions"]["label"]
        assert cm["model"]["ram_bytes"] == cm["model"]["ram_static_bytes"] + cm["model"]["stack_bytes"]
        assert {c["budget"]: c["status"] for c in e["budget"]} == {"flash": "ok", "ram": "ok"}
        assert e["host"]["passed"] and cm["passed"]
        assert {v["runtime"].split("(")[-1] for v in cm["validation"]} == {"window API)", "stream API)"}
    assert by["int8-weights"]["cortex_m"]["model"]["flash_bytes"] <= 0.30 * by["fp32"]["cortex_m"]["model"][
        "flash_bytes"]
    tf = {t["artifact"]: t for t in rep["tflm"]}
    assert set(tf) == {"forecaster.fp32.tflite", "forecaster.stream.fp32.tflite"}
    assert tf["forecaster.stream.fp32.tflite"]["streaming"] and "not measurable" in tf[
        "forecaster.fp32.tflite"]["label_sizes"]
    assert rep["validation_data"]["source"].endswith("reference ONNX Runtime on the float32 ONNX")


def test_existing_output_needs_force_and_json_prints_the_report(stm32, export_dir: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    fw, _ = stm32
    code, _, err = run(["firmware", export_dir, "-o", fw, "--no-cortex-m", "--no-tflm"], capsys)
    assert code == 2 and "already exists" in err
    code, out, _ = run(["firmware", export_dir, "-o", fw, "--no-cortex-m", "--no-tflm", "--precision", "fp32",
                        "--force", "--json"], capsys)
    rep = json.loads(out)
    assert code == 0 and [e["precision"] for e in rep["c"]] == ["fp32"] and rep["tflm"] == []
    assert rep["c"][0]["cortex_m"]["status"] == "skipped" and not (fw / "cortex-m").exists()


def test_too_large_for_nrf52840_is_exit_4_naming_flash(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = archs.ArchConfig(hidden=160, layers=2)
    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / "big.pt", archs.build("forecaster", cfg).eval(), "forecaster", cfg, 8)
    assert main(["export", str(path), "-o", str(tmp_path / "ex"), "--json"]) == 0
    capsys.readouterr()
    code, _, err = run(["firmware", tmp_path / "ex", "--target", "nrf52840", "-o", tmp_path / "fw", "--precision",
                        "fp32", "--windows", "2"], capsys)
    budget = load_target("nrf52840").flash_budget_bytes
    assert code == 4, err
    assert "C fp32: flash" in err and f"exceeds the budget of {budget:,} B by" in err and "RAM" not in err
    rep = json.loads((tmp_path / "fw" / "firmware.json").read_text())  # the report is still written
    check = next(c for c in rep["c"][0]["budget"] if c["budget"] == "flash")
    assert check["status"] == "over" and check["over_bytes"] == check["used_bytes"] - budget > 0
    assert check["used_bytes"] == rep["c"][0]["cortex_m"]["model"]["flash_bytes"]  # measured from the ELF
    assert f"{check['over_bytes']:,} B" in err


@pytest.mark.slow
def test_larger_than_the_emulated_board_is_measured_not_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = archs.ArchConfig(hidden=320, layers=2)  # 4.9 MB of float weights: more than qemu's 4 MiB of code memory
    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / "huge.pt", archs.build("forecaster", cfg).eval(), "forecaster", cfg, 4)
    assert main(["export", str(path), "-o", str(tmp_path / "ex"), "--json"]) == 0
    capsys.readouterr()
    code, _, err = run(["firmware", tmp_path / "ex", "--target", "stm32h7", "-o", tmp_path / "fw", "--precision",
                        "fp32", "--no-tflm", "--windows", "2"], capsys)
    assert code == 4 and "C fp32: flash" in err and "of the built ELF" in err
    cm = json.loads((tmp_path / "fw" / "firmware.json").read_text())["c"][0]["cortex_m"]
    assert cm["status"] == "built" and "larger than the memory of qemu's mps2-an500" in cm["model"]["label"]
    assert cm["model"]["flash_bytes"] > 4 << 20


def test_ram_over_budget_is_exit_4_naming_ram(others, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = Path(load_target("nrf52840").path).read_text().replace("ram_budget_bytes = 163_840",
                                                                  "ram_budget_bytes = 1_024")
    (tmp_path / "tiny.toml").write_text(text)
    code, _, err = run(["firmware", others["gru"].path, "--target", tmp_path / "tiny.toml", "-o", tmp_path / "fw",
                        "--no-tflm", "--precision", "int8-weights"], capsys)
    assert code == 2 and "is neither" in err  # a checkpoint is not a firmware source: export it first
    onnx_path = tmp_path / "gru.onnx"
    onnx_path.write_bytes(others["gru"].proto.SerializeToString())
    code, out, err = run(["firmware", onnx_path, "--target", tmp_path / "tiny.toml", "-o", tmp_path / "fw",
                          "--no-tflm", "--precision", "int8-weights", "--json"], capsys)
    assert code == 4 and "C int8-weights: RAM" in err and "exceeds the budget of 1,024 B" in err
    body = json.loads(out)  # one strict JSON object: the error, carrying the report it was judged on
    assert body["error"]["code"] == 4 and body["result"]["c"][0]["budget"][1]["status"] == "over"


def test_unsupported_op_is_exit_5_and_leaves_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edge_lstm import capture
    from edge_lstm.load import load

    path, shapes = zoo.save("mean_pool", "torchscript", tmp_path)
    (tmp_path / "m.onnx").write_bytes(capture.to_onnx(load(path, shapes)).SerializeToString())
    code, _, err = run(["firmware", tmp_path / "m.onnx", "-o", tmp_path / "fw"], capsys)
    assert code == 5 and "'ReduceMean'" in err and "Traceback" not in err
    assert not (tmp_path / "fw").exists() and not list(tmp_path.glob(".fw.*"))


def test_target_without_a_firmware_table_gets_labelled_estimates(export_dir: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["firmware", export_dir, "--target", "esp32s3", "-o", tmp_path / "fw", "--no-tflm"], capsys)
    assert code == 0, err
    rep = json.loads((tmp_path / "fw" / "firmware.json").read_text())
    for e in rep["c"]:
        assert e["cortex_m"]["status"] == "skipped" and "no [firmware] table" in e["cortex_m"]["why"]
        assert e["cortex_m"]["estimate"]["label"].startswith("estimate")
        assert all(c["measure"].startswith("estimate") for c in e["budget"])
    assert "no [firmware] table" in out


@pytest.mark.parametrize(("args", "needle"), [
    (["{file}"], "is neither"),
    (["{dir}"], "no report.json"),
    (["{export}", "--precision", "int4"], "Unknown C precision"),
    (["{export}", "--prefix", "9lives"], "C identifier"),
    (["{export}", "--target", "pi-zero"], "Unknown target"),
    (["{export}", "--target", "{badtarget}"], "unknown key(s) in firmware: 'speed'"),
])
def test_bad_input_is_exit_2(args: list[str], needle: str, export_dir: Path, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty").mkdir()
    text = Path(load_target("nrf52840").path).read_text() + 'speed = "fast"\n'
    (tmp_path / "bad.toml").write_text(text)
    subs = {"{file}": tmp_path / "notes.txt", "{dir}": tmp_path / "empty", "{export}": export_dir,
            "{badtarget}": tmp_path / "bad.toml"}
    code, _, err = run(["firmware", *[subs.get(a, a) for a in args], "-o", tmp_path / "fw"], capsys)
    assert code == 2 and needle in err and "Traceback" not in err


def test_missing_toolchain_says_what_to_install(export_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    code, _, err = run(["firmware", export_dir, "-o", tmp_path / "fw"], capsys)
    assert code == 2 and "arm-none-eabi-gcc" in err and "--no-cortex-m" in err and "apt-get install" in err


def test_tflite_artifact_gives_the_tflm_files_only(export_dir: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["firmware", export_dir / "forecaster.stream.fp32.tflite", "-o", tmp_path / "fw"], capsys)
    assert code == 0, err
    rep = json.loads((tmp_path / "fw" / "firmware.json").read_text())
    assert rep["c"] == [] and rep["tflm"][0]["streaming"] and "generated from the ONNX" in rep["notes"][0]


def test_a_loop_lowered_window_is_named_and_a_fused_one_lowered_here(demo, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"  # the default lowering: the window model as a loop, the streaming one fused
    assert main(["export", str(demo.path), "-o", str(out), "--format", "onnx", "--format", "tflite", "--precision",
                 "fp32", "--streaming", "--json"]) == 0
    lowerings = {a["file"]: a["lowering"] for a in json.loads((out / "report.json").read_text())["artifacts"]}
    assert lowerings["forecaster.fp32.tflite"] == "loop"
    code, _, err = run(["firmware", out, "-o", tmp_path / "fw", "--no-c", "--target", "stm32h7"], capsys)
    assert code == 0, err
    rep = json.loads((tmp_path / "fw" / "firmware.json").read_text())
    assert {t["artifact"] for t in rep["tflm"]} == {"forecaster.fp32.fused.tflite", "forecaster.stream.fp32.tflite"}
    notes = " ".join(rep["notes"])
    assert "forecaster.fp32.tflite is not used for TFLite Micro" in notes and "lowered (fused) here" in notes
    assert (tmp_path / "fw" / "forecaster.fp32.fused.model_data.c").is_file()


def test_changed_artifact_is_refused(export_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    copy = tmp_path / "ex"
    shutil.copytree(export_dir, copy)
    with (copy / "forecaster.fp32.onnx").open("ab") as f:
        f.write(b"\0")
    code, _, err = run(["firmware", copy, "-o", tmp_path / "fw"], capsys)
    assert code == 2 and "does not match the sha256" in err


def test_export_with_firmware_proves_against_pytorch(others, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["export", str(others["stacked_lstm"].path), "-o", str(out), "--format", "onnx", "--format",
                 "tflite", "--firmware", "--target", "nrf52840", "--json"]) == 0  # the .onnx cannot run on
    rep = json.loads((out / "report.json").read_text())  # nrf52840 (a note), the .tflite does
    assert rep["recommendation"]["file"] == "stacked_lstm.fp32.tflite"
    assert any(n.startswith("not runnable on nrf52840") for n in rep["artifacts"][0]["notes"])
    fw = rep["firmware"]
    assert fw == json.loads((out / "fw" / "firmware.json").read_text())
    assert (out / "fw" / "model.fp32.c").is_file() and (out / "fw" / "stacked_lstm.fp32.model_data.c").is_file()
    marker = json.loads((out / ".edge-lstm-output.json").read_text())
    assert "fw" in marker["dirs"] and "fw/model.fp32.c" in marker["files"]  # so --force may replace it again
    assert main(["export", str(others["stacked_lstm"].path), "-o", str(out), "--firmware", "--force", "--json"]) == 0
    assert "reference PyTorch" in fw["validation_data"]["source"] and fw["passed"]
    assert {e["cortex_m"]["status"] for e in fw["c"]} == {"ran"} and fw["target"]["name"] == "nrf52840"
    assert [t["artifact"] for t in fw["tflm"]] == ["stacked_lstm.fp32.tflite"]


def test_real_subprocess(export_dir: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    p = subprocess.run([sys.executable, "-m", "edge_lstm.cli", "firmware", str(export_dir), "-o", str(tmp_path / "fw"),
                        "--no-tflm", "--precision", "fp32"], capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr
    assert "measured on an emulated core" in p.stdout and "emulated instructions per window" in p.stdout
