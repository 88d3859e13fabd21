"""``edge-lstm ops``: the support matrix on the command line, filtered per format and precision; the README's
table is the generated one."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from edge_lstm.cli import main
from edge_lstm.lower.tflite.support import markdown, table

README = Path(__file__).resolve().parents[1] / "README.md"


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_ops_json_lists_every_table_op(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["ops", "--json"], capsys)
    ops = {e["op"]: e for e in json.loads(out)["ops"]}
    assert code == 0 and set(ops) == set(table())
    assert ops["ReduceMean"]["tflite"]["int8"] and ops["Conv"]["tflite_micro"]["int8"]
    assert not ops["Pow"]["tflite"]["int8"] and ops["LSTM"]["onnx"]["dynamic-int8 weights"] == "int8"
    assert ops["GRU"]["onnx"]["dynamic-int8 weights"] == "int8"  # a Scan of int8 products (issue-9c)
    assert ops["Gemm"]["onnx"]["dynamic-int8 weights"] == "float"


def test_ops_filters_per_format_precision_and_micro(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = _run(["ops", "--format", "tflite", "--precision", "int8", "--json"], capsys)
    int8 = {e["op"] for e in json.loads(out)["ops"]}
    _, out, _ = _run(["ops", "--format", "tflite", "--precision", "int8", "--micro", "--json"], capsys)
    micro8 = {e["op"] for e in json.loads(out)["ops"]}
    assert {"LSTM", "GRU", "Conv", "ReduceMean"} <= micro8 < int8 < set(table())
    assert "Where" not in int8 and "Log" in int8 and "Log" not in micro8 and "Tile" not in micro8


def test_ops_human_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["ops"], capsys)
    assert code == 0 and f"{len(table())} ONNX ops" in out and "ReduceMean" in out


@pytest.mark.parametrize(("args", "needle"), [
    (["ops", "--format", "onnx", "--precision", "int8"], "Format onnx has no precision int8"),
    (["ops", "--format", "coreml"], "Unknown format 'coreml'"),
    (["ops", "--precision", "int4"], "Unknown precision 'int4'"),
    (["ops", "--format", "onnx", "--micro"], "--micro applies to --format tflite"),
])
def test_ops_bad_filters_are_usage_errors(args: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(args, capsys)
    assert code == 2 and needle in err


def test_readme_support_matrix_is_the_generated_one() -> None:
    text = README.read_text()
    found = re.search(r"<!-- ops-table:begin -->\n(.*?)\n<!-- ops-table:end -->", text, re.S)
    assert found, "README.md lacks the ops table markers"
    assert found.group(1) == markdown(), "README's matrix is stale: paste edge_lstm.lower.tflite.support.markdown()"


def test_ops_lists_what_an_int16x8_artifact_needs(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = _run(["ops", "--format", "tflite", "--precision", "int16x8", "--json"], capsys)
    ops = {e["op"]: e for e in json.loads(out)["ops"]}
    _, out, _ = _run(["ops", "--format", "tflite", "--precision", "int8", "--json"], capsys)
    int8 = {e["op"] for e in json.loads(out)["ops"]}
    assert {"LSTM", "GRU", "Gemm", "Tanh", "Sigmoid", "Concat"} <= set(ops) < int8  # 16x8 is int8, widened
    assert not {"Conv", "Softmax", "Relu", "Clip", "Div"} & set(ops)  # no int16 kernel checked for these
    assert ops["LSTM"]["int16x8_forms"] == ["UNIDIRECTIONAL_SEQUENCE_LSTM (fused)", "a WHILE loop (loop)"]
    assert ops["MatMul"]["int16x8_forms"] == ["FULLY_CONNECTED (constant weight)"]  # not BATCH_MATMUL
    assert ops["Scan"]["int16x8_forms"] == ["a WHILE loop"]  # the projected fused LSTM is refused at 16x8
    _, out, _ = _run(["ops", "--format", "tflite", "--precision", "int16x8", "--micro", "--json"], capsys)
    micro = {e["op"] for e in json.loads(out)["ops"]}
    assert "LSTM" in micro and micro <= set(ops)
    assert not {"GRU", "RNN", "Scan"} & micro  # only a WHILE loop: TFLite Micro has no int16 GATHER
    _, text, _ = _run(["ops", "--precision", "int16x8"], capsys)
    assert f"{len(ops)} ONNX ops" in text and "TFLite int16x8" in text and "WHILE loop on LiteRT" in text


@pytest.mark.parametrize("name", ["linear", "add_sub_mul", "concat_split", "movement", "batchnorm_alone",
                                  "relu_tanh_sigmoid", "clip", "softmax_time_axis", "layernorm"])
def test_int16x8_claims_hold_on_litert(name: str) -> None:
    """What ``ops --precision int16x8`` claims is what the 16x8 quantizer makes and LiteRT runs."""
    import numpy as np
    from op_cases import CASES
    from test_ops import _capture
    from test_support import _onnx_ops, _works, reference_samples

    from edge_lstm.cli_ops import _entry
    from edge_lstm.errors import EdgeLstmError
    from edge_lstm.lower.tflite import lower
    from edge_lstm.quantize import quantize_tflite
    from edge_lstm.spec import Precision

    c = CASES[name]
    module, proto, names = _capture(c)
    claimed = all(_entry(op, table()[op])["tflite"]["int16x8"] for op in _onnx_ops(proto, name))
    rng = np.random.default_rng(1)
    samples = reference_samples(c, module, names, rng)
    calib = {n: rng.standard_normal((32, *s)).astype(np.float32) for n, s in zip(names, c.shapes, strict=True)}
    try:
        data = quantize_tflite(lower(proto, "loop", precision=Precision.INT16X8).data, Precision.INT16X8, calib).data
    except EdgeLstmError:
        data = None
    assert (data is not None and _works(data, samples, micro=False, int8=True)) == claimed


def test_the_cli_modules_import_no_private_name_of_another_module() -> None:
    import ast

    import edge_lstm
    from edge_lstm.quantize import int16x8

    root = Path(edge_lstm.__file__).parent
    private = []
    for path in sorted(root.glob("cli*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("edge_lstm"):
                private += [f"{path.name}: {node.module}.{a.name}" for a in node.names
                            if a.name.startswith("_") and not a.name.startswith("__")]
    assert private == []
    assert "FULLY_CONNECTED" in int16x8.INT16_OPS and "GATHER" in int16x8.INT16_OPS
