"""``edge-lstm predict`` and ``Predictor`` on the demo-like bundle, against PyTorch's whole-window forecasts.

The reference is the PyTorch model run on each window of the held-out hours (the
last 96 readings at every position); the predictor feeds the same readings one at
a time (streaming, state carried between readings) or as sliding windows, on
LiteRT and ONNX Runtime, through the API, a file and a real pipe. The tolerance is
the one each artifact was validated with (in the bundle's manifest), applied to
the model's output (the normalised change), as export applies it.
"""

from __future__ import annotations

import json
import os
import platform
import select
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from predict_helpers import WINDOW, DemoBundle, assert_matches, read_forecasts

from edge_lstm import cli
from edge_lstm.errors import DataError, UsageError
from edge_lstm.predict import Predictor

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(("artifact", "runtime"), [("demo.stream.fp32.tflite", "litert"),
                                                   ("demo.stream.fp32.onnx", "onnxruntime"),
                                                   ("demo.stream.int8.tflite", "litert"),
                                                   ("demo.fp32.tflite", "litert"), ("demo.fp32.onnx", "onnxruntime")])
def test_api_equals_pytorch_windows(demo_bundle: DemoBundle, artifact: str, runtime: str) -> None:
    with Predictor.from_bundle(demo_bundle.bundle, artifact=artifact, runtime=runtime) as p:
        assert p.runtime == runtime and p.streaming == (".stream." in artifact)
        out = p.predict_series(demo_bundle.series)
        again = p.predict_series(demo_bundle.series)  # predict_series starts from a reset state every time
    np.testing.assert_array_equal(out, again)
    assert out.shape == (len(demo_bundle.series), 1)
    assert np.isnan(out[: WINDOW - 1]).all()  # warm-up: nothing before a full window
    assert_matches(demo_bundle, artifact, out[WINDOW - 1 :, 0])


def test_update_reset_and_mapping(demo_bundle: DemoBundle) -> None:
    p = Predictor.from_bundle(demo_bundle.bundle, streaming=True, runtime="litert", artifact="demo.stream.fp32.tflite")
    assert p.features == ["temp", "change"] and p.window == WINDOW and p.horizon == 1 and p.target == "temp"
    rows = demo_bundle.series
    outs = [p.update({"change": r[1], "temp": r[0]}) for r in rows[:WINDOW]]
    assert all(o is None for o in outs[:-1]) and outs[-1] is not None and outs[-1].shape == (1,)
    assert abs(outs[-1][0] - demo_bundle.reference[0]) < 1e-4
    p.reset()
    again = [p.update(list(r)) for r in rows[:WINDOW]][-1]
    assert again is not None and again[0] == outs[-1][0]  # reset: the same forecast from the same readings
    with pytest.raises(DataError, match="has 3 value"):
        p.update([1.0, 2.0, 3.0])
    with pytest.raises(DataError, match="no 'change'"):
        p.update({"temp": 1.0})
    with pytest.raises(DataError, match="'temp' is not a finite number"):
        p.update([float("nan"), 0.0])


def test_on_nan_policies_and_warmup(demo_bundle: DemoBundle) -> None:
    rows = demo_bundle.series.copy()
    rows[120, 0] = np.nan
    skip = Predictor.from_bundle(demo_bundle.bundle, streaming=True, on_nan="skip", runtime="litert")
    out = skip.predict_series(rows)
    assert np.isnan(out[120, 0]) and np.isfinite(out[121:, 0]).all() and skip.skipped == 1
    reset = Predictor.from_bundle(demo_bundle.bundle, streaming=True, on_nan="reset", runtime="litert")
    out = reset.predict_series(rows)
    assert reset.resets == 1 and np.isnan(out[120 : 120 + WINDOW]).all() and np.isfinite(out[120 + WINDOW :]).all()
    early = Predictor.from_bundle(demo_bundle.bundle, streaming=False, warmup=24, runtime="onnxruntime")
    out = early.predict_series(demo_bundle.series)
    assert np.isnan(out[:23]).all() and np.isfinite(out[23:]).all()
    assert_matches(demo_bundle, "demo.fp32.onnx", out[WINDOW - 1 :, 0])  # padding leaves full windows alone
    with pytest.raises(UsageError, match="Accepted: refuse, skip, reset"):
        Predictor.from_bundle(demo_bundle.bundle, on_nan="zero")


def test_choice_of_artifact(demo_bundle: DemoBundle) -> None:
    p = Predictor.from_bundle(demo_bundle.bundle)  # the API default: a streaming artifact when there is one
    assert p.streaming
    p = Predictor.from_bundle(demo_bundle.bundle, streaming=False, precision="int8")
    assert p.artifact["file"] == "demo.int8.tflite"
    with pytest.raises(UsageError, match="no whole-window artifact at precision fp16"):
        Predictor.from_bundle(demo_bundle.bundle, streaming=False, precision="fp16")
    with pytest.raises(UsageError, match="Unknown runtime 'tensorflow'"):
        Predictor.from_bundle(demo_bundle.bundle, runtime="tensorflow")


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """The real console entry point in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "edge_lstm.entry", *args], capture_output=True, text=True,
                          env=env, input=stdin, timeout=300, check=False)


@pytest.mark.parametrize("artifact", ["demo.stream.fp32.tflite", "demo.stream.int8.tflite", "demo.stream.fp32.onnx"])
def test_cli_streaming_file(demo_bundle: DemoBundle, tmp_path: Path, artifact: str) -> None:
    out = tmp_path / "forecasts.csv"
    p = run_cli("predict", str(demo_bundle.bundle), str(demo_bundle.heldout), "--streaming", "--artifact", artifact,
                "-o", str(out))
    assert p.returncode == 0, p.stderr
    assert f"{len(demo_bundle.reference)} forecast(s) from {len(demo_bundle.series)} reading(s)" in p.stderr
    header, rows = read_forecasts(out)
    assert header == ["line", "date", "temp_t+1"]
    assert [int(r[0]) for r in rows] == list(range(WINDOW + 1, len(demo_bundle.series) + 2))  # line 1 is the header
    dates = [line.split(",")[0] for line in demo_bundle.heldout.read_text().splitlines()[1:]]
    assert [r[1] for r in rows] == dates[WINDOW - 1 :]
    assert_matches(demo_bundle, artifact, np.array([float(r[2]) for r in rows]))
    again = run_cli("predict", str(demo_bundle.bundle), str(demo_bundle.heldout), "--streaming", "--artifact",
                    artifact, "-o", str(out))
    assert again.returncode == 2 and "already exists" in again.stderr and "--force" in again.stderr


def test_cli_window_json(demo_bundle: DemoBundle) -> None:
    p = run_cli("predict", str(demo_bundle.bundle), str(demo_bundle.heldout), "--runtime", "onnxruntime", "--json")
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert res["artifact"] == "demo.fp32.onnx" and not res["streaming"] and res["forecasts"] == len(res["rows"])
    assert_matches(demo_bundle, "demo.fp32.onnx", np.array([r["forecast"][0] for r in res["rows"]]))
    dev = res["device"]  # where it ran, as this machine reports itself
    assert dev["machine"] == platform.machine() and dev["python"] == platform.python_version()
    assert dev["numpy"] == np.__version__ and dev["emulated"] is None
    assert f"({platform.machine()}, {dev['os']}, Python {platform.python_version()}" in res["message"]


def test_json_into_a_closed_pipe_is_quiet(demo_bundle: DemoBundle, tmp_path: Path) -> None:
    """`predict --json | head -c 100`: the reader goes away mid-document; no internal error, exit 0."""
    lines = demo_bundle.heldout.read_text().splitlines()
    many = tmp_path / "many.csv"
    many.write_text("\n".join([lines[0], *(lines[1:] * 6)]) + "\n")  # > 64 KiB of JSON: more than a pipe holds
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for command in (["predict", str(demo_bundle.bundle), str(many), "--streaming", "--on-gap", "ignore", "--json"],
                    ["predict", str(demo_bundle.bundle), str(many), "--streaming", "--on-gap", "ignore"]):
        proc = subprocess.Popen([sys.executable, "-m", "edge_lstm.entry", *command], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env)
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.read(100)
        proc.stdout.close()
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=300) == 0 and "error" not in err and "Traceback" not in err, err


def test_stdin_pipe_flushes_each_forecast(demo_bundle: DemoBundle) -> None:
    """A sensor pipe: one line written at a time; each forecast must arrive before the next line is sent."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "edge_lstm.entry", "predict", str(demo_bundle.bundle), "-",
                             "--streaming", "--artifact", "demo.stream.fp32.tflite"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1, env=env)
    assert proc.stdin is not None and proc.stdout is not None
    lines = demo_bundle.heldout.read_text().splitlines()
    got: list[str] = []
    try:
        for i, line in enumerate(lines):
            proc.stdin.write(line + "\n")
            proc.stdin.flush()
            if i == 0 or i >= WINDOW:  # the header echo, then a forecast for every reading from the window's end
                got.append(_read_line(proc, timeout=60))
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    header, rows = read_forecasts("", "\n".join(got))
    assert header == ["line", "date", "temp_t+1"] and len(rows) == len(demo_bundle.reference)
    assert_matches(demo_bundle, "demo.stream.fp32.tflite", np.array([float(r[2]) for r in rows]))


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
    assert ready, "no forecast arrived: predict did not flush it"
    return proc.stdout.readline().rstrip("\n")


# ---------------------------------------------------------------- bad readings: exit code and message


def _with(b: DemoBundle, tmp_path: Path, edit: dict[int, str], drop: tuple[int, ...] = ()) -> Path:
    lines = b.heldout.read_text().splitlines()
    out = [edit.get(i, line) for i, line in enumerate(lines) if i not in drop]
    path = tmp_path / "readings.csv"
    path.write_text("\n".join(out) + "\n")
    return path


def _date(b: DemoBundle, i: int) -> str:
    return b.heldout.read_text().splitlines()[i].split(",")[0]


@pytest.mark.parametrize(("case", "message"), [
    ("missing-column", "has no column 'change'; the model takes temp, change; the header has date, temp"),
    ("text", "line 51: column 'temp' holds 'warm', not a number"),
    ("nan", "line 51: 'temp' is not a finite number (NaN, missing or infinite)"),
    ("empty", "line 51: 'change' is not a finite number"),
    ("short", "line 51 has 2 field(s); the columns need 3"),
    ("gap", "line 61: a gap in the readings: 10800 s passed since the previous reading"),
    ("backwards", "line 61: a gap in the readings: its timestamp"),
])
def test_bad_readings(demo_bundle: DemoBundle, tmp_path: Path, case: str, message: str) -> None:
    b = demo_bundle
    if case == "missing-column":
        lines = b.heldout.read_text().splitlines()
        path = tmp_path / "readings.csv"
        path.write_text("\n".join(",".join(line.split(",")[:2]) for line in lines) + "\n")
    elif case in ("gap", "backwards"):
        path = _with(b, tmp_path, {60: f"{_date(b, 50)},50.0,0.1"}) if case == "backwards" else \
            _with(b, tmp_path, {}, (60, 61))
    else:
        bad = {"text": "warm,0.1", "nan": "nan,0.1", "empty": "50.0,", "short": "50.0"}[case]
        path = _with(b, tmp_path, {50: f"{_date(b, 50)},{bad}"})
    p = run_cli("predict", str(b.bundle), str(path), "--streaming", "--runtime", "litert")
    assert p.returncode == 2, p.stderr
    assert message in p.stderr and "Traceback" not in p.stderr, p.stderr
    j = run_cli("predict", str(b.bundle), str(path), "--streaming", "--json")
    assert j.returncode == 2 and json.loads(j.stdout)["error"]["code"] == 2


def test_nan_and_gap_policies_on_the_cli(demo_bundle: DemoBundle, tmp_path: Path) -> None:
    b = demo_bundle
    nan = _with(b, tmp_path, {150: f"{_date(b, 150)},nan,0.1"})
    skip = json.loads(run_cli("predict", str(b.bundle), str(nan), "--streaming", "--on-nan", "skip", "--json").stdout)
    assert skip["skipped"] == 1 and skip["forecasts"] == len(b.reference) - 1
    assert 151 not in [r["line"] for r in skip["rows"]]
    reset = json.loads(run_cli("predict", str(b.bundle), str(nan), "--streaming", "--on-nan", "reset",
                               "--json").stdout)
    assert reset["resets"] == 1 and [r["line"] for r in reset["rows"]][54] == 151 + WINDOW
    gap = _with(b, tmp_path, {}, (60, 61))
    p = run_cli("predict", str(b.bundle), str(gap), "--on-gap", "reset", "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["resets"] == 1
    p = run_cli("predict", str(b.bundle), str(gap), "--on-gap", "ignore", "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["resets"] == 0
    for args, message in ((["--on-nan", "zero"], "Unknown --on-nan 'zero'"),
                          (["--on-gap", "x"], "Unknown gap policy 'x'"),
                          (["--warmup", "soon"], "--warmup 'soon' is neither 'window' nor a positive number"),
                          (["--timestamp-column", "when"], "no timestamp column 'when'"),
                          (["--threads", "0"], "Cannot run on 0 thread(s)")):
        p = run_cli("predict", str(b.bundle), str(b.heldout), *args)
        assert p.returncode == 2 and message in p.stderr, p.stderr


def test_headerless_feed_and_columns(demo_bundle: DemoBundle, tmp_path: Path) -> None:
    b = demo_bundle
    body = b.heldout.read_text().splitlines()[1:]
    (tmp_path / "plain.csv").write_text("\n".join(line.split(",", 1)[1] for line in body) + "\n")
    p = run_cli("predict", str(b.bundle), str(tmp_path / "plain.csv"), "--streaming", "--json")
    assert p.returncode == 0, p.stderr
    assert_matches(b, "demo.stream.fp32.onnx", np.array([r["forecast"][0] for r in json.loads(p.stdout)["rows"]]))
    (tmp_path / "feed.csv").write_text("\n".join(f"{line.split(',')[2]},{line.split(',')[1]},{line.split(',')[0]}"
                                                 for line in body) + "\n")
    p = run_cli("predict", str(b.bundle), str(tmp_path / "feed.csv"), "--columns", "change,temp,date",
                "--on-gap", "ignore", "--json")
    assert p.returncode == 0, p.stderr
    rows = json.loads(p.stdout)["rows"]
    assert rows[0]["timestamp"] == body[WINDOW - 1].split(",")[0]
    assert_matches(b, "demo.fp32.onnx", np.array([r["forecast"][0] for r in rows]))
    (tmp_path / "odd.csv").write_text("1.0,2.0,3.0\n")
    p = run_cli("predict", str(b.bundle), str(tmp_path / "odd.csv"))
    assert p.returncode == 2 and "line 1 has 3 field(s) and no header" in p.stderr


def test_missing_runtime_and_mode(demo_bundle: DemoBundle, tmp_path: Path) -> None:
    from edge_lstm.predict_engine import installed

    assert not installed("tflite-runtime")  # the host venv has ai-edge-litert; tflite-runtime has its own venv
    p = run_cli("predict", str(demo_bundle.bundle), str(demo_bundle.heldout), "--runtime", "tflite-runtime",
                "--streaming", "--artifact", "demo.stream.fp32.tflite")
    assert p.returncode == 2 and "No runtime for these artifacts is installed here: they run on tflite-runtime" \
        in p.stderr and "pip install tflite-runtime" in p.stderr, p.stderr
    only = tmp_path / "window-only.zip"
    assert cli.main(["bundle", str(demo_bundle.export), "--artifact", "demo.fp32.onnx", "-o", str(only)]) == 0
    p = run_cli("predict", str(only), str(demo_bundle.heldout), "--streaming")
    assert p.returncode == 2 and "The bundle has no streaming artifact" in p.stderr and "Drop --streaming" in p.stderr
    p = run_cli("predict", str(only), str(tmp_path / "nothing.csv"))
    assert p.returncode == 2 and "does not exist" in p.stderr


def test_predict_imports_no_torch(demo_bundle: DemoBundle) -> None:
    """The device side never imports torch, onnx or the exporters, even where they are installed."""
    code = ("import sys\nfrom edge_lstm.entry import main\nrc = main(sys.argv[1:])\n"
            "bad = [m for m in ('torch', 'onnx', 'onnxscript', 'edge_lstm.capture', 'edge_lstm.lower') "
            "if m in sys.modules]\nassert not bad, bad\nraise SystemExit(rc)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for args in (["predict", str(demo_bundle.bundle), str(demo_bundle.heldout), "--streaming", "--json"],
                 ["bundle", "verify", str(demo_bundle.bundle)]):
        p = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=300,
                           check=False)
        assert p.returncode == 0, p.stderr[-2000:]


def test_reader_gone_and_devnull(demo_bundle: DemoBundle) -> None:
    """`predict ... | head` stops quietly when the reader leaves; -o /dev/null writes through the device."""
    cmd = (f'set -o pipefail; "{sys.executable}" -m edge_lstm.entry predict "{demo_bundle.bundle}" '
           f'"{demo_bundle.heldout}" --streaming | head -2')
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    p = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, env=env, timeout=300, check=False)
    assert p.returncode == 0 and len(p.stdout.splitlines()) == 2 and "Traceback" not in p.stderr, p.stderr
    p = run_cli("predict", str(demo_bundle.bundle), str(demo_bundle.heldout), "-o", os.devnull)
    assert p.returncode == 0, p.stderr


@pytest.mark.parametrize("entry", ["main", "device_main"])
def test_reader_gone_on_stdout_and_stderr(demo_bundle: DemoBundle, entry: str) -> None:
    """`predict ... 2>&1 | head -1`: stdout and stderr both on the closed pipe; typer turns the broken pipe into
    SystemExit(1); edge-lstm ends quietly with exit 0 (the full CLI and the Python 3.9 device entry alike)."""
    call = (f"import sys; from edge_lstm.entry import {entry}; "
            f"sys.exit({entry}(sys.argv[1:]))")
    for extra in ("", "--streaming", "--json"):
        cmd = (f'set -o pipefail; "{sys.executable}" -c "{call}" predict "{demo_bundle.bundle}" '
               f'"{demo_bundle.heldout}" {extra} 2>&1 | head -1')
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        p = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, env=env, timeout=300, check=False)
        assert p.returncode == 0 and len(p.stdout.splitlines()) == 1, (extra, p.returncode, p.stdout, p.stderr)


def test_timestamps() -> None:
    from edge_lstm.predict_io import parse_time

    assert parse_time("2010/03/14 04:00") == parse_time("2010-03-14T04:00:00Z") == 1268539200.0
    assert parse_time("1268539200") == 1268539200.0 and parse_time("yesterday") is None


def test_forecast_rows_quote_what_csv_must() -> None:
    from edge_lstm.predict_io import format_row

    assert format_row(5, "Sun, 14 Mar 2010", [1.0]) == '5,"Sun, 14 Mar 2010",1\n'
    assert format_row(6, 'a "b"', [0.5]) == '6,"a ""b""",0.5\n'
    assert format_row(7, "2010-03-14 04:00", [1.5, 2.25]) == "7,2010-03-14 04:00,1.5,2.25\n"
    assert format_row(8, None, [0.1]) == "8,0.1\n"


def test_output_that_is_an_input_is_refused_with_and_without_force(demo_bundle: DemoBundle, tmp_path: Path) -> None:
    """-o naming the readings file (by another spelling, or a hard link) or the bundle would replace the input with
    forecasts: refused, exit 2, the input untouched."""
    readings = tmp_path / "readings.csv"
    readings.write_bytes(demo_bundle.heldout.read_bytes())
    (tmp_path / "sub").mkdir()
    (tmp_path / "hard.csv").hardlink_to(readings)
    bundle = tmp_path / "m.bundle.zip"
    bundle.write_bytes(demo_bundle.bundle.read_bytes())
    before = readings.read_bytes(), bundle.read_bytes()
    for out, force in ((readings, False), (tmp_path / "sub" / ".." / "readings.csv", True),
                       (tmp_path / "hard.csv", True), (bundle, True)):
        p = run_cli("predict", str(bundle), str(readings), "-o", str(out), *(["--force"] if force else []), "--json")
        assert p.returncode == 2, p.stderr
        err = json.loads(p.stdout)["error"]
        assert "itself" in err["message"] and "another -o file" in err["hint"], err
    assert (readings.read_bytes(), bundle.read_bytes()) == before
