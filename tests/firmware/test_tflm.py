"""TFLite Micro files: the C array is the .tflite byte for byte, the arena is a measured minimum, the constants are the
model's."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_lstm.firmware import tflm
from edge_lstm.firmware.hostc import host_compiler

pytest.importorskip("tflite_micro")

DUMP = r"""
#include <stdint.h>
#include <stdio.h>
#include "demo.model_data.h"
int main(void) {
  FILE *f = fopen("dumped.tflite", "wb");
  if (!f || fwrite(g_model_data, 1, g_model_data_len, f) != g_model_data_len) return 2;
  fclose(f);
  printf("align %u\n", (unsigned)((uintptr_t)g_model_data % 16u));
  printf("arena %d %d\n", MODEL_ARENA_MEASURED_BYTES, MODEL_ARENA_SIZE);
  printf("steps %d\n", MODEL_STEPS_PER_INVOKE);
  printf("in %d %.9g %d\n", MODEL_INPUT0_IS_INT8, (double)MODEL_INPUT0_SCALE, MODEL_INPUT0_ZERO_POINT);
  printf("out %d %.9g %d\n", MODEL_OUTPUT0_IS_INT8, (double)MODEL_OUTPUT0_SCALE, MODEL_OUTPUT0_ZERO_POINT);
  {
    const int s[] = MODEL_STATE_TENSORS;
    int i;
    printf("states");
    for (i = 0; i < MODEL_NUM_STATE_TENSORS; i++) printf(" %d", s[i]);
    printf("\n");
  }
  return 0;
}
"""


@pytest.fixture(scope="module")
def tflites(demo_forecaster) -> dict[str, bytes]:
    """The demo's fused float window model, its streaming model, and full int8 with int8 I/O."""
    from edge_lstm import capture
    from edge_lstm.lower.tflite import lower
    from edge_lstm.quantize import quantize_tflite
    from edge_lstm.spec import Precision

    f = demo_forecaster
    window = lower(f.proto, "fused").data
    stream = lower(capture.to_onnx(capture.streaming_model(f.loaded)), "fused", streaming=True).data
    int8 = quantize_tflite(window, Precision.INT8, calib=f.calib[::40], io="int8").data
    return {"fp32": window, "stream": stream, "int8-io": int8}


@pytest.fixture(scope="module")
def arenas(tflites) -> dict[str, dict]:
    """The measured arena of each model (each probe runs in a fresh process, so measure once)."""
    return {kind: tflm.measure_arena(data) for kind, data in tflites.items()}


def compile_and_dump(info: tflm.TflmModel, tmp: Path) -> dict[str, list[str]]:
    files = tflm.model_data_c(info, "demo")
    assert list(files) == ["demo.model_data.h", "demo.model_data.c"]
    for name, text in files.items():
        (tmp / name).write_text(text)
    (tmp / "dump.c").write_text(DUMP)
    cc = subprocess.run([host_compiler(), "-std=c99", "-Wall", "-Werror", "dump.c", "demo.model_data.c", "-o", "dump"],
                        cwd=tmp, capture_output=True, text=True)
    assert cc.returncode == 0, cc.stderr
    run = subprocess.run(["./dump"], cwd=tmp, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return {ln.split()[0]: ln.split()[1:] for ln in run.stdout.splitlines()}


def variable_tensors(data: bytes) -> list[int]:
    """Read with TFLite Micro's own schema, not the one the generator uses."""
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    sub = schema.Model.GetRootAs(data, 0).Subgraphs(0)
    return [i for i in range(sub.TensorsLength()) if sub.Tensors(i).IsVariable()]


@pytest.mark.parametrize("kind", ["fp32", "stream", "int8-io"])
def test_c_array_is_the_tflite_byte_for_byte(kind: str, tflites, arenas, tmp_path: Path) -> None:
    data = tflites[kind]
    info = tflm.describe(f"demo.{kind}.tflite", data)
    info.arena = arenas[kind]
    got = compile_and_dump(info, tmp_path)
    assert (tmp_path / "dumped.tflite").read_bytes() == data
    assert got["align"] == ["0"]
    assert [int(v) for v in got["states"]] == variable_tensors(data) and len(got["states"]) == 4  # h, c per layer
    assert int(got["steps"][0]) == (1 if kind == "stream" else 96)
    measured, size = (int(v) for v in got["arena"])
    assert size == math.ceil(measured * 1.1 / 16) * 16


def test_int8_io_constants_are_the_interpreters(tflites, tmp_path: Path) -> None:
    from tflite_micro.python.tflite_micro import runtime

    data = tflites["int8-io"]
    info = tflm.describe("demo.int8.tflite", data)
    info.arena = {"measured_bytes": 1, "recommended_bytes": 16, "margin": 0.1}
    got = compile_and_dump(info, tmp_path)
    it = runtime.Interpreter.from_bytes(data)
    for key, detail in (("in", it.get_input_details(0)), ("out", it.get_output_details(0))):
        q = detail["quantization_parameters"]
        assert got[key][0] == "1"
        assert float(got[key][1]) == pytest.approx(float(q["scales"][0]), rel=1e-7)
        assert int(got[key][2]) == int(q["zero_points"][0])


def _runs(data: bytes, arena: int, tmp: Path) -> bool:
    """An independent check in a fresh process: allocate with ``arena`` bytes and invoke."""
    (tmp / "m.tflite").write_bytes(data)
    code = ("import sys, numpy as np\nfrom tflite_micro.python.tflite_micro import runtime\n"
            "it = runtime.Interpreter.from_bytes(open(sys.argv[1], 'rb').read(), arena_size=int(sys.argv[2]))\n"
            "d = it.get_input_details(0)\nit.set_input(np.ones(d['shape'], d['dtype']), 0)\nit.invoke()\n"
            "print('ran')\n")
    p = subprocess.run([sys.executable, "-c", code, str(tmp / "m.tflite"), str(arena)], capture_output=True, text=True)
    return p.returncode == 0 and "ran" in p.stdout


@pytest.mark.parametrize("kind", ["fp32", "stream"])
def test_arena_is_the_smallest_that_runs(kind: str, tflites, arenas, tmp_path: Path) -> None:
    arena = arenas[kind]
    assert _runs(tflites[kind], arena["measured_bytes"], tmp_path)
    assert not _runs(tflites[kind], arena["measured_bytes"] - 16, tmp_path)
    assert arena["recommended_bytes"] >= arena["measured_bytes"] * 1.1


def test_streaming_arena_is_measured_not_taken_from_the_allocator(arenas) -> None:
    arena = arenas["stream"]
    # TFLite Micro's recording allocator under-reports this variable-tensor model; the probe finds what it needs
    assert arena["recording_allocator_bytes"] < arena["measured_bytes"]


def test_example_streams_with_reset_on_demand_and_windows_reset_each_time(tflites) -> None:
    stream = tflm.describe("s.tflite", tflites["stream"])
    window = tflm.describe("w.tflite", tflites["fp32"])
    s, w = tflm.example_main(stream, stem="s"), tflm.example_main(window, {"mean": [50.0], "std": [6.0]}, "w")
    assert '#include "s.model_data.h"' in s and "with w.model_data.c" in w
    for text, info in ((s, stream), (w, window)):
        assert "alignas(16) uint8_t tensor_arena[MODEL_ARENA_SIZE];" in text
        assert f"MicroMutableOpResolver<{len(info.ops)}>" in text
        for op in ("AddUnidirectionalSequenceLSTM", "AddFullyConnected", "AddReshape", "AddStridedSlice"):
            assert f"resolver.{op}();" in text
        assert "interpreter.ResetVariableTensor(kStateTensors[i])" in text
    assert "if (stream_restarted()) reset_state(interpreter);" in s and "One reading per Invoke" not in w
    assert "reset_state(interpreter);  // every window starts from a zero state" in w and "mean [50.0]" in w


def test_resolver_names_an_op_tflm_lacks() -> None:
    assert tflm.resolver_calls(["FULLY_CONNECTED", "BIDIRECTIONAL_SEQUENCE_LSTM", "REVERSE_V2"]) == [
        "  resolver.AddFullyConnected();", "  // TFLite Micro has no kernel for BIDIRECTIONAL_SEQUENCE_LSTM",
        "  resolver.AddReverseV2();"]


def test_describe_refuses_what_is_not_tflite() -> None:
    from edge_lstm.errors import InputFileError

    with pytest.raises(InputFileError, match="TFL3"):
        tflm.describe("x.tflite", np.zeros(64, np.uint8).tobytes())


def test_profile_and_firmware_label_their_two_arena_figures(tflites, arenas, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """profile shows the recording allocator's arena in use after allocation; firmware the smallest arena that
    allocates and invokes (larger: the allocator's planning scratch). Both are printed under their own label, and
    firmware shows profile's figure beside its own."""
    from edge_lstm.cli import main

    path = tmp_path / "m.tflite"
    path.write_bytes(tflites["fp32"])
    assert main(["profile", str(path), "--runtime", "tflm", "--runs", "3", "--json"]) == 0
    in_use = json.loads(capsys.readouterr().out)["artifacts"][0]["arena_bytes"]
    assert in_use == arenas["fp32"]["recording_allocator_bytes"]
    assert main(["profile", str(path), "--runtime", "tflm", "--runs", "3"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "arena in use" in text and "smallest arena that allocates and invokes" in text
    assert main(["firmware", str(path), "-o", str(tmp_path / "fw"), "--no-c", "--no-cortex-m"]) == 0
    said = " ".join(capsys.readouterr().out.split())
    smallest = json.loads((tmp_path / "fw" / "firmware.json").read_text())["tflm"][0]["arena"]["measured_bytes"]
    assert smallest == arenas["fp32"]["measured_bytes"] >= in_use
    assert (f"arena {smallest:,} B (the smallest that allocates and invokes; {in_use:,} B in use after allocation, "
            "the figure profile shows)") in said
    md = (tmp_path / "fw" / "firmware.md").read_text()
    assert "| smallest arena that allocates and invokes | arena in use after allocation (profile's figure) |" in md
    assert f"| {smallest:,} B | {in_use:,} B |" in md and "temporary scratch" in md
