"""Strict JSON: no NaN/Infinity ever; failures as one error object under --json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_lstm import jsonio
from edge_lstm.cli import main


def test_non_finite_numbers_become_null_with_a_note() -> None:
    text = jsonio.dumps({"psnr": float("inf"), "lat": [1.0, float("nan")], "ok": 2.5})
    doc = jsonio.loads_strict(text)
    assert doc["psnr"] is None and doc["lat"] == [1.0, None] and doc["ok"] == 2.5
    assert doc["non_finite"] == {"psnr": "inf", "lat[1]": "nan"}
    with pytest.raises(ValueError):
        jsonio.loads_strict('{"a": NaN}')


@pytest.mark.parametrize(("args", "code", "kind"), [
    (["info", "/no/such.pt", "--json"], 2, "input-file"),
    (["info", "{ckpt}", "--input-shape", "1x9999999999x1", "--json"], 2, "shape"),
    (["export", "{ckpt}", "--frobnicate", "--json"], 2, "usage"),
    (["targets", "show", "nope", "--json"], 2, "usage"),
])
def test_json_failures_are_one_error_object(args: list[str], code: int, kind: str, forecaster_ckpt: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    rc = main([a.replace("{ckpt}", str(forecaster_ckpt)) for a in args])
    out = capsys.readouterr().out
    err = json.loads(out)["error"]
    assert rc == code and err["code"] == code and err["kind"] == kind and err["message"]
    assert set(err) == {"code", "kind", "message", "hint"}


def test_one_error_object_for_every_edge_lstm_error(capsys: pytest.CaptureFixture[str]) -> None:
    from edge_lstm.errors import OutputError, ValidationFailed

    jsonio.emit_failure(ValidationFailed("1 artifact failed.", "a | b\n--- | ---\nm.onnx | cosine", "See report.md."))
    jsonio.emit_failure(OutputError("Cannot write 'x': disk full."))
    first, second = (json.loads(line)["error"] for line in capsys.readouterr().out.splitlines())
    assert first == {"code": 3, "kind": "validation",
                     "message": "1 artifact failed.\na | b\n--- | ---\nm.onnx | cosine", "hint": "See report.md."}
    # the failure table stays in the message, the hint beside it
    assert second == {"code": 2, "kind": "output", "message": "Cannot write 'x': disk full.", "hint": None}
