"""CLI: ``profile`` and ``targets list|show`` registered onto a typer app."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import typer
from profile_models import write_onnx
from sshd_helper import Sshd, sshd  # noqa: F401 - sshd is a fixture
from typer.testing import CliRunner

from edge_lstm import archs, cli, cli_profile
from edge_lstm.errors import BudgetExceeded, InputFileError, OutputExistsError, UsageError
from edge_lstm.targets import load_target

runner = CliRunner()
FAST = ["--runs", "10", "--warmup", "1"]


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    a = typer.Typer()
    cli_profile.register(a)
    return a


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_onnx(tmp_path_factory.mktemp("cli") / "tiny.onnx", archs.ArchConfig(hidden=8, layers=1), window=6)


def test_targets_list_json(app: typer.Typer) -> None:
    res = runner.invoke(app, ["targets", "list", "--json"])
    assert res.exit_code == 0, res.output
    names = {t["name"] for t in json.loads(res.stdout)}
    assert {"rpi3b", "rpi4b", "rpi5", "android-arm64", "x86-64-host", "stm32h7", "nrf52840", "esp32s3"} <= names


def test_targets_show(app: typer.Typer) -> None:
    res = runner.invoke(app, ["targets", "show", "stm32h7"])
    assert res.exit_code == 0 and "ESTIMATE" in res.stdout and "DS12110" in res.stdout
    data = json.loads(runner.invoke(app, ["targets", "show", "nrf52840", "--json"]).stdout)
    assert data["ram_bytes"] == 262_144 and data["throughput_is_estimate"] is True


def test_unknown_target_raises_usage_error(app: typer.Typer) -> None:
    res = runner.invoke(app, ["targets", "show", "pi-zero-9"])
    assert isinstance(res.exception, UsageError) and "rpi4b" in (res.exception.hint or "")


def test_profile_json_only(app: typer.Typer, model: Path) -> None:
    res = runner.invoke(app, ["profile", str(model), *FAST, "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)  # nothing but JSON on stdout
    assert report["artifacts"][0]["artifact"] == "tiny.onnx"


def test_profile_over_budget_writes_reports_then_raises(app: typer.Typer, model: Path, tmp_path: Path) -> None:
    src = Path(load_target("nrf52840").path).read_text().replace("flash_budget_bytes = 655_360",
                                                                  "flash_budget_bytes = 1_000")
    tiny = tmp_path / "tiny-mcu.toml"
    tiny.write_text(src)
    out = tmp_path / "out" / "report.json"
    res = runner.invoke(app, ["profile", str(model), *FAST, "--target", str(tiny), "--output", str(out)])
    assert isinstance(res.exception, BudgetExceeded) and res.exception.exit_code == 4
    assert f"by {model.stat().st_size - 1000:,} B" in res.exception.message
    assert "ESTIMATE" in res.stdout and "OVER" in res.stdout
    assert json.loads(out.read_text())["target"]["name"] == "nrf52840"
    assert (out.parent / "report.html").read_text().startswith("<!DOCTYPE html>")


def test_profile_compare(app: typer.Typer, model: Path, tmp_path: Path) -> None:
    prev = tmp_path / "prev.json"
    assert runner.invoke(app, ["profile", str(model), *FAST, "--output", str(prev)]).exit_code == 0
    res = runner.invoke(app, ["profile", str(model), *FAST, "--compare", str(prev), "--json"])
    rows = json.loads(res.stdout)["compare"]
    assert rows[0]["file_bytes"]["change"] == 0
    human = runner.invoke(app, ["profile", str(model), *FAST, "--compare", str(prev)])
    assert "Change against the previous report" in human.stdout


def test_profile_not_a_model(app: typer.Typer, tmp_path: Path) -> None:
    junk = tmp_path / "x.tflite"
    junk.write_text("hello")
    res = runner.invoke(app, ["profile", str(junk)])
    assert isinstance(res.exception, InputFileError)


def test_profile_remote(app: typer.Typer, model: Path, sshd: Sshd, tmp_path: Path) -> None:  # noqa: F811
    cfg = tmp_path / "ssh_config"
    cfg.write_text(sshd.client_config.read_text() + f"  IdentityFile {sshd.key}\n")
    res = runner.invoke(app, ["profile", str(model), *FAST, "--json", "--remote", f"ssh://root@127.0.0.1:{sshd.port}",
                              "--ssh-config", str(cfg), "--remote-python", sys.executable])
    assert res.exit_code == 0, res.output
    a = json.loads(res.stdout)["artifacts"][0]
    assert a["where"] == f"ssh://root@127.0.0.1:{sshd.port}" and len(a["latencies_s"]) == 10


def test_exit_codes_through_main_cli(model: Path) -> None:
    assert cli.main(["targets", "show", "no-such-board"]) == 2
    assert cli.main(["profile", str(model), "--runs", "3", "--warmup", "0", "--json", "--remote",
                     "root@127.0.0.1", "--ssh-config", "/dev/null", "--remote-python", "python3",
                     "--timeout", "20"]) == 6


def test_profile_refuses_existing_output_without_force(app: typer.Typer, model: Path, tmp_path: Path) -> None:
    export_dir = tmp_path / "export"
    export_dir.mkdir()
    export_report = export_dir / "report.json"
    export_report.write_text('{"kind": "export", "artifacts": []}')
    res = runner.invoke(app, ["profile", str(model), *FAST, "--output", str(export_report)])
    assert isinstance(res.exception, OutputExistsError) and res.exception.exit_code == 2
    assert str(export_report) in res.exception.message and "--force" in (res.exception.hint or "")
    assert export_report.read_text() == '{"kind": "export", "artifacts": []}'
    assert not (export_dir / "report.html").exists()

    out = tmp_path / "prof.json"  # only the HTML beside it exists
    (tmp_path / "prof.html").write_text("mine")
    res = runner.invoke(app, ["profile", str(model), *FAST, "--output", str(out)])
    assert isinstance(res.exception, OutputExistsError) and "prof.html" in res.exception.message
    assert not out.exists() and (tmp_path / "prof.html").read_text() == "mine"

    res = runner.invoke(app, ["profile", str(model), *FAST, "--output", str(export_report), "--force"])
    assert res.exit_code == 0, res.output
    assert json.loads(export_report.read_text())["kind"] == "profile"
    assert (export_dir / "report.html").read_text().startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in export_dir.iterdir()) == ["report.html", "report.json"]


def test_profile_output_errors_exit_2_through_main_cli(model: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["profile", str(model), *FAST, "--output", "/proc/nope/r.json"]) == 2
    assert "/proc/nope/r.json" in capsys.readouterr().err
    existing = tmp_path / "report.json"
    existing.write_text("{}")
    assert cli.main(["profile", str(model), *FAST, "--output", str(existing)]) == 2
    assert "--force" in capsys.readouterr().err


def test_profile_torchscript_with_input_shape(app: typer.Typer, tmp_path: Path) -> None:
    from models import write as write_torch

    path, shapes = write_torch("stacked", "torchscript", tmp_path)
    res = runner.invoke(app, ["profile", str(path), *FAST])
    assert res.exception is not None and "--input-shape" in (getattr(res.exception, "hint", "") or "")
    flags = [a for s in shapes for a in ("--input-shape", "x".join(map(str, s)))]
    res = runner.invoke(app, ["profile", str(path), *FAST, *flags, "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["artifacts"][0]["runtime"] == "torch"
    pickled, _ = write_torch("stacked", "pickle", tmp_path)
    res = runner.invoke(app, ["profile", str(pickled), *FAST, *flags, "--trust-pickle", "--json"])
    assert res.exit_code == 0, res.output
    bad = runner.invoke(app, ["profile", str(path), *FAST, "--input-shape", "1xAx1"])
    assert isinstance(bad.exception, UsageError)


def _nan_tflite(path: Path) -> Path:
    """y = sqrt(x - 100) on N(0, 1) inputs, lowered to TFLite: NaN in every output."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from edge_lstm.lower.tflite import lower

    graph = helper.make_graph(
        [helper.make_node("Sub", ["x", "hundred"], ["d"]), helper.make_node("Sqrt", ["d"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(np.full((1, 4), 100.0, np.float32), "hundred")])
    path.write_bytes(lower(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), "fused").data)
    return path


def test_wrong_outputs_exit_3_with_a_hint_naming_the_report_that_exists(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    nan = str(_nan_tflite(tmp_path / "nan.tflite"))
    args = ["profile", nan, "--runs", "3", "--warmup", "1"]
    assert cli.main(args) == 3
    err = capsys.readouterr().err
    assert "no report was written" in err and "--output report.json" in err and "see the report" not in err
    assert not list(tmp_path.glob("*.json"))
    out = tmp_path / "r" / "report.json"
    assert cli.main([*args, "--output", str(out)]) == 3
    err = capsys.readouterr().err
    assert f"the report with every run is {out}" in err and out.is_file() and (out.parent / "report.html").is_file()
    assert json.loads(out.read_text())["artifacts"][0]["outputs_check"]["non_finite"] > 0
    assert cli.main([*args, "--json"]) == 3
    doc = json.loads(capsys.readouterr().out)
    assert doc["error"]["code"] == 3 and '"result" of this JSON error' in doc["error"]["hint"]
    assert doc["result"]["artifacts"][0]["outputs_check"]["non_finite"] > 0


def test_profile_target_marks_what_it_cannot_run_as_export_does(app: typer.Typer, model: Path) -> None:
    res = runner.invoke(app, ["profile", str(model), *FAST, "--target", "nrf52840"])
    assert isinstance(res.exception, BudgetExceeded)  # like export: exit 4 when no artifact can run there
    assert "NOT RUNNABLE" in res.stdout and "warn" not in res.stdout
    err = str(res.exception)
    assert "No artifact can run on nrf52840" in err and "profiled on onnxruntime only" in err
    ok = runner.invoke(app, ["profile", str(model), *FAST, "--target", "rpi4b", "--json"])
    assert ok.exit_code == 0
    assert not [c for c in json.loads(ok.stdout)["artifacts"][0]["budget"] if c["budget"] == "runtime"]


def test_profile_target_not_runnable_through_main_cli(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["profile", str(model), *FAST, "--target", "nrf52840", "--json"]) == 4
    doc = json.loads(capsys.readouterr().out)
    assert doc["error"]["code"] == 4 and "profiled on onnxruntime only" in doc["error"]["message"]
    assert "were written" not in doc["error"]["hint"]  # profile writes nothing without --output
    runtime = [c for c in doc["result"]["artifacts"][0]["budget"] if c["budget"] == "runtime"]
    assert [c["status"] for c in runtime] == ["not-runnable"] and "nrf52840 runs tflm" in runtime[0]["note"]


def test_profile_html_says_not_runnable(model: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    assert cli.main(["profile", str(model), *FAST, "--target", "nrf52840", "--output", str(out)]) == 4
    page = (tmp_path / "report.html").read_text()
    assert "not runnable on the target" in page and "not measured / unverified" not in page
