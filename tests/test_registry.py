"""The capability registry is the one table: every consumer agrees with it, and an absent package is a status."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edge_lstm import device, produce, prove_device, registry, targets
from edge_lstm.cli import main
from edge_lstm.errors import OptionsError, RuntimeUnavailable, UsageError
from edge_lstm.pipeline import ExportOptions, _check_request
from edge_lstm.recipes import SCHEMA, load_recipe
from edge_lstm.runners.base import Runner
from edge_lstm.spec import Precision

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("rt", registry.RUNTIMES_TABLE, ids=lambda r: r.name)
def test_every_runtime_runner_imports_and_an_absent_one_says_how_to_install(rt: registry.Runtime) -> None:
    cls = rt.runner_class()  # runner modules import their runtime lazily: this works with the package absent
    assert issubclass(cls, Runner) and cls.runtime in (rt.name, "litert")
    assert all(f in registry.FORMATS for f in rt.formats)
    if rt.available():
        assert rt.status() == "available"
        rt.require()
    else:  # e.g. tflite-runtime, which needs numpy<2 and lives in its own venv
        assert rt.status() == f"unavailable, install with {rt.install}"
        with pytest.raises(RuntimeUnavailable, match=rt.name) as e:
            rt.require()
        assert e.value.hint is not None and rt.install in e.value.hint


def test_a_runtime_whose_package_is_blocked_is_unavailable_not_an_import_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what a missing package looks like to the import system
    rt = registry.runtime("onnxruntime")
    assert not rt.available() and rt.status() == "unavailable, install with pip install onnxruntime"
    with pytest.raises(RuntimeUnavailable) as e:
        rt.require()
    assert e.value.exit_code == 2 and e.value.to_dict()["error"]["kind"] == "missing-runtime"


@pytest.mark.parametrize("fmt", registry.FORMATS_TABLE, ids=lambda f: f.name)
def test_every_format_precision_is_accepted_by_recipes_and_export_options(fmt: registry.Format,
                                                                          tmp_path: Path) -> None:
    recipe = load_recipe().with_overrides(formats=[fmt.name], precisions=[p.value for p in fmt.precisions])
    assert recipe.formats == (fmt.name,) and recipe.precisions == fmt.precisions
    assert fmt.name in SCHEMA["properties"]["formats"]["items"]["enum"]
    opts = ExportOptions(output_dir=tmp_path / "o", recipe=recipe, calib="random")
    if fmt.buildable():
        _check_request(opts)
    else:
        with pytest.raises(RuntimeUnavailable, match=fmt.name):
            _check_request(opts)
    assert fmt.name in produce.WHOLE_WINDOW, "a format without a builder"
    assert registry.runtimes_for(fmt.name), "a format no runtime runs"
    assert registry.format_of_suffix(fmt.suffix) == fmt.name
    for p in Precision:
        if p not in fmt.precisions:
            with pytest.raises(UsageError, match=f"Format {fmt.name} has no precision {p.value}"):
                registry.check_precision(fmt.name, p)


def test_consumers_read_the_registry() -> None:
    assert set(produce.WHOLE_WINDOW) == set(registry.FORMATS) and set(produce.STREAMING) <= set(registry.FORMATS)
    assert targets.RUNTIMES == registry.RUNTIMES
    assert tuple(p.value for p in Precision) == targets.PRECISIONS
    assert targets.SCHEMA["properties"]["software"]["properties"]["preferred_lowering"]["enum"] == list(
        registry.LOWERINGS)
    assert set(device.RUNTIMES) == set(registry.RUNTIMES) == set(device.RUNTIME_PACKAGES)
    assert prove_device.RUNTIMES["onnx"] == ("onnxruntime",) and prove_device.RUNTIMES["executorch"] == ()
    from edge_lstm.lower.tflite import LOWERINGS

    assert LOWERINGS is registry.LOWERINGS


def test_integer_math_replaces_string_tests() -> None:
    assert [registry.integer_math(p) for p in Precision] == [False, False, True, True, True]
    tg = targets.load_target("rpi4b")
    assert tg.macs_per_s("dynamic-int8") == tg.int8_macs_per_s and tg.macs_per_s("fp16") == tg.fp32_macs_per_s


def test_format_by_content() -> None:
    assert registry.format_of_bytes(b"\x1c\x00\x00\x00TFL3") == "tflite"
    assert registry.format_of_bytes(b"<\x00\x00\x00ET12") == "executorch"
    assert registry.format_of_bytes(b"\x14\x00\x00\x00ORTM") == "ort"
    assert registry.format_of_bytes(b"\x08\x07\x12\x00\x00\x00\x00\x00") is None  # ONNX: a protobuf


def test_cli_help_and_errors_list_the_registry(capsys: pytest.CaptureFixture[str]) -> None:
    assert all(f in registry.help_formats() for f in registry.FORMATS)
    assert all(r in registry.help_runtimes() for r in registry.RUNTIMES)
    with pytest.raises(UsageError, match="Accepted: onnx, tflite, executorch, ort"):
        registry.fmt("coreml")
    rc = main(["ops", "--format", "executorch", "--json"])
    err = json.loads(capsys.readouterr().out)["error"]
    assert rc == 2 and "no op table" in err["message"] and "onnx, tflite" in err["hint"]


def test_export_of_a_precision_no_asked_format_holds_is_an_options_error(tmp_path: Path) -> None:
    recipe = load_recipe().with_overrides(formats=["executorch"], precisions=["int8"])
    with pytest.raises(OptionsError, match=r"aten\.lstm") as e:
        _check_request(ExportOptions(output_dir=tmp_path / "o", recipe=recipe, calib="random"))
    assert e.value.exit_code == 2 and e.value.kind == "options" and "tflite" in (e.value.hint or "")


def test_formats_command_lists_the_registry_with_each_runtime_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["formats", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [f["name"] for f in doc["formats"]] == list(registry.FORMATS)
    by_name = {r["name"]: r for r in doc["runtimes"]}
    assert list(by_name) == list(registry.RUNTIMES)
    for rt in registry.RUNTIMES_TABLE:
        assert by_name[rt.name]["status"] == rt.status() and by_name[rt.name]["available"] == rt.available()
    assert doc["formats"][2]["precisions"] == ["fp32"] and doc["formats"][3]["runtimes"] == ["onnxruntime"]


def test_profile_refuses_an_unknown_runtime_listing_the_registry(capsys: pytest.CaptureFixture[str],
                                                                 tmp_path: Path) -> None:
    art = tmp_path / "m.onnx"
    art.write_bytes(b"\x08\x07")
    rc = main(["profile", str(art), "--runtime", "nope", "--json"])
    err = json.loads(capsys.readouterr().out)["error"]
    assert rc == 2 and err["message"] == "Unknown runtime 'nope'." and all(r in err["hint"] for r in registry.RUNTIMES)


def test_formats_reports_an_installed_runtime_or_exporter_that_fails_to_import_as_broken(tmp_path: Path) -> None:
    """Two packages that ``find_spec`` finds but that break when imported: one raises ImportError (a missing
    native library), one kills its process (a crashing native library); ``formats`` survives both."""
    fake = tmp_path / "site"
    for package, body in (("tflite_micro", "raise ImportError('libtflm.so: cannot open shared object file')\n"),
                          ("onnx", "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n")):
        (fake / package).mkdir(parents=True)
        (fake / package / "__init__.py").write_text(body)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(fake), str(ROOT)]), XDG_CACHE_HOME=str(tmp_path / "c"))
    proc = subprocess.run([sys.executable, "-m", "edge_lstm.entry", "formats", "--json"], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    runtimes = {r["name"]: r for r in doc["runtimes"]}
    tflm = runtimes["tflm"]
    assert tflm["available"] is False and "libtflm.so: cannot open shared object file" in tflm["why_not"]
    assert tflm["status"].startswith("installed but broken: import tflite_micro failed: ImportError")
    assert runtimes["onnxruntime"]["available"] is True  # the others still import
    onnx = {f["name"]: f for f in doc["formats"]}["onnx"]
    assert onnx["buildable"] is False and f"signal {int(signal.SIGSEGV)}" in onnx["why_not"]
    cache = json.loads((tmp_path / "c" / "edge-lstm" / "imports.json").read_text())
    assert "libtflm.so" in cache["results"]["tflite_micro"]
