"""The CLI: commands, --json, exit codes and messages, one real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from models import WINDOW, write

from edge_lstm.cli import main


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_info_json(forecaster_ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["info", str(forecaster_ckpt), "--json"], capsys)
    d = json.loads(out)
    assert code == 0 and d["format"] == "checkpoint" and d["macs_per_inference"] > 0 and d["parameters"] > 0
    assert d["inputs"][0]["shape"] == ["batch", WINDOW, 1]


def test_info_human(forecaster_ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["info", str(forecaster_ckpt)], capsys)
    assert code == 0 and "MACs per inference" in out and f"batchx{WINDOW}x1" in out and "LSTM" in out


def test_export_json(forecaster_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["export", str(forecaster_ckpt), "-o", str(tmp_path / "o"), "--json"], capsys)
    assert code == 0 and json.loads(out)["passed"] is True


@pytest.mark.parametrize(("args", "code", "needle"), [
    (["info", "/no/model.pt"], 2, "does not exist"),
    (["info", "{bad}", "--input-shape", "1xAx1"], 2, "Cannot read input shape"),
    (["info", "{ckpt}", "--input-shape", "1x12"], 2, "rank"),
    (["info", "{ckpt}", "--input-shape", f"1x{WINDOW}x7"], 2, "takes 1 feature(s) per time step, the input gives 7"),
    (["info", "{pickle}", "--input-shape", f"1x{WINDOW}x1"], 2, "--trust-pickle"),
    (["export", "{ckpt}", "-o", "{out}", "--format", "coreml"], 2, "Unknown format"),
    (["export", "{ckpt}", "-o", "{out}", "--precision", "int3"], 2, "Unknown precision"),
    (["export", "{ckpt}", "-o", "{out}", "--data", "{nan}"], 2, "NaN"),
    (["export", "{ckpt}", "-o", "{exists}"], 2, "already exists"),
    (["export", "{ckpt}", "-o", "{out}", "--recipe", "{strict}"], 3, "failed validation"),
    (["export", "{bidir}", "-o", "{out}", "--streaming"], 5, "bidirectional"),
])
def test_bad_input_exit_codes(args: list[str], code: int, needle: str, forecaster_ckpt: Path, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "exists").mkdir()
    (tmp_path / "bad.pt").write_text("not a model")
    (tmp_path / "nan.csv").write_text("x\n" + "1\n" * 30 + "nan\n")
    (tmp_path / "strict.toml").write_text('inherit = "default"\nname = "s"\n[tolerance.fp32]\natol = 0.0\nrtol = 0.0\n')
    subs = {"{ckpt}": str(forecaster_ckpt), "{bad}": str(tmp_path / "bad.pt"), "{out}": str(tmp_path / "o"),
            "{nan}": str(tmp_path / "nan.csv"), "{exists}": str(tmp_path / "exists"),
            "{strict}": str(tmp_path / "strict.toml"),
            "{pickle}": str(write("stacked", "pickle", tmp_path)[0]),
            "{bidir}": str(write("bidirectional", "checkpoint", tmp_path)[0])}
    got, _, err = run([subs.get(a, a) for a in args], capsys)
    assert got == code, err
    assert needle in err
    assert "Traceback" not in err


def test_real_subprocess(forecaster_ckpt: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    p = subprocess.run([sys.executable, "-m", "edge_lstm.cli", "export", str(forecaster_ckpt), "-o",
                        str(tmp_path / "o"), "--streaming"], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "passed validation" in p.stdout and (tmp_path / "o" / "report.md").exists()
    bad = subprocess.run([sys.executable, "-m", "edge_lstm.cli", "info", str(tmp_path / "none.pt")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "does not exist" in bad.stderr and "Traceback" not in bad.stderr


def test_cli_runner_help_and_info(forecaster_ckpt: Path) -> None:
    from typer.testing import CliRunner

    from edge_lstm.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0 and "export" in res.output and "profile" in res.output
    res = runner.invoke(app, ["info", str(forecaster_ckpt), "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["arch"] == "forecaster"
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.startswith("edge-lstm ")


def test_ctrl_c_is_exit_130_with_an_aborted_error_and_nothing_written(forecaster_ckpt: Path, tmp_path: Path) -> None:
    """SIGINT in the middle of an export: exit 130, "aborted", and no output directory."""
    import signal

    out = tmp_path / "o"
    cmd = [sys.executable, "-c", "import sys; from edge_lstm.cli import main; raise SystemExit(main(sys.argv[1:]))",
           "export", str(forecaster_ckpt), "-o", str(out), "--format", "onnx", "--format", "tflite", "--precision",
           "fp32", "--precision", "int8", "--calib", "random", "--profile"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    assert proc.stderr is not None
    for line in proc.stderr:  # wait until the export is under way, then interrupt it
        if "capturing ONNX" in line:
            proc.send_signal(signal.SIGINT)
            break
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr[-2000:]
    assert "aborted" in stderr.splitlines()[-1]
    assert not out.exists() and not list(tmp_path.glob(".*o*"))  # no output, no staging left behind


def test_debug_keeps_the_exit_code_on_the_python_3_9_device_entry(capsys: pytest.CaptureFixture[str],
                                                                  tmp_path: Path) -> None:
    from edge_lstm.entry import device_main

    missing = str(tmp_path / "none.bundle.zip")
    assert device_main(["predict", missing, "-"]) == 2
    plain = capsys.readouterr().err
    assert device_main(["--debug", "predict", missing, "-"]) == 2
    debug = capsys.readouterr().err
    assert "Traceback (most recent call last)" in debug and debug.rstrip().endswith(plain.rstrip())


@pytest.mark.parametrize("entry", ["edge_lstm.cli", "edge_lstm.entry"])
def test_debug_adds_the_traceback_but_keeps_the_message_and_exit_code(entry: str, tmp_path: Path) -> None:
    """An expected failure (a missing file, an unknown runtime, a runtime that is not installed) is the same exit
    code and message with --debug; the traceback is extra, on stderr, and stdout's JSON is unchanged."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    art = tmp_path / "m.tflite"
    art.write_bytes(b"\x00" * 4 + b"TFL3" + b"\x00" * 8)
    cases = [["info", str(tmp_path / "missing.onnx")], ["profile", str(art), "--runtime", "nope"],
             ["ops", "--format", "tflite", "--precision", "nope"]]
    for args in cases:
        plain, debug = (subprocess.run([sys.executable, "-m", entry, *pre, *args, "--json"], env=env, cwd=tmp_path,
                                       capture_output=True, text=True, timeout=120, check=False)
                        for pre in ([], ["--debug"]))
        assert plain.returncode == debug.returncode == 2, (args, debug.stderr[-2000:])
        assert debug.stdout == plain.stdout and json.loads(debug.stdout)["error"]["code"] == 2
        assert "Traceback (most recent call last)" in debug.stderr and "Traceback" not in plain.stderr
        assert debug.stderr.rstrip().endswith(plain.stderr.rstrip())  # the same message, after the traceback
