"""``edge-lstm info`` on damaged files: a corrupted or truncated ``.tflite`` is an input error (exit 2, a hint),
never an internal one (exit 1); bytes that are no model are refused as ``profile`` refuses them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from profile_models import loaded

from edge_lstm import archs, capture
from edge_lstm.cli import main


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Small real lowerings of an LSTM: the fused sequence op and the WHILE loop (a body subgraph)."""
    from edge_lstm.lower.tflite import lower

    proto = capture.to_onnx(loaded(archs.ArchConfig(hidden=8, layers=1), window=8))
    return {lowering: lower(proto, lowering).data for lowering in ("fused", "loop")}


def _info(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, object]]:
    capsys.readouterr()
    rc = main(["info", "--json", str(path)])
    out = json.loads(capsys.readouterr().out)  # --json prints one object, success or failure
    return rc, out


def _damaged(data: bytes, seed: int) -> list[bytes]:
    """Seeded damage: single bit flips, 6-byte overwrites (anywhere, and in the graph past the weights'
    offsets), and truncations."""
    rng = np.random.default_rng(seed)
    out = []
    for at in rng.integers(0, len(data), 60):
        b = bytearray(data)
        b[at] ^= 1 << int(rng.integers(0, 8))
        out.append(bytes(b))
    for at in rng.integers(8, len(data) - 6, 40):
        b = bytearray(data)
        b[at:at + 6] = rng.integers(0, 256, 6, dtype=np.uint8).tobytes()
        out.append(bytes(b))
    for n in (*rng.integers(8, len(data), 20), 8, 12, len(data) - 1):
        out.append(data[:n])
    return out


@pytest.mark.parametrize("lowering", ["fused", "loop"])
def test_info_on_corrupted_tflite_is_an_input_error(lowering: str, artifacts: dict[str, bytes], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    data = artifacts[lowering]
    path = tmp_path / "m.tflite"
    path.write_bytes(data)
    rc, out = _info(path, capsys)
    assert rc == 0 and out["format"] == "tflite", out
    refused = 0
    for k, bad in enumerate(_damaged(data, seed=11 if lowering == "fused" else 12)):
        path.write_bytes(bad)
        rc, out = _info(path, capsys)
        assert rc in (0, 2), (k, out)
        if rc == 2:
            err = out["error"]
            assert isinstance(err, dict) and err["kind"] != "internal" and err["hint"], (k, err)
            refused += 1
    assert refused >= 20  # the truncations alone are refused: the damage reached the reader


def test_info_dangling_tensor_index_names_the_file(artifacts: dict[str, bytes], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """An operator input that points past the tensor list (what a flipped graph byte gives) is named as corruption."""
    from edge_lstm.cost_tflite import parse

    data = bytearray(artifacts["fused"])
    model = parse(bytes(data))
    n = len(model.subgraphs[0].tensors)
    op = next(o for o in model.subgraphs[0].operators if o.inputs and o.inputs[0] >= 0)
    needle = np.array(op.inputs, dtype="<i4").tobytes()
    at = bytes(data).find(needle)
    assert at > 0
    data[at:at + 4] = np.array([n + 5], dtype="<i4").tobytes()
    path = tmp_path / "r.tflite"
    path.write_bytes(bytes(data))
    rc, out = _info(path, capsys)
    err = out["error"]
    assert rc == 2 and isinstance(err, dict) and err["kind"] == "input-file", out
    assert "'" + str(path) + "'" in str(err["message"]) and "truncated or corrupted" in str(err["message"])
    assert err["hint"]


def test_info_on_bytes_that_are_no_model_says_what_profile_says(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "junk.tflite"
    path.write_bytes(np.random.default_rng(3).integers(16, 256, 3000, dtype=np.uint8).tobytes())
    rc, out = _info(path, capsys)
    err = out["error"]
    assert rc == 2 and isinstance(err, dict), out
    assert "neither a TFLite flatbuffer, an ONNX graph nor a PyTorch file" in str(err["message"]), err
    assert ".tflite" in str(err["hint"])
    capsys.readouterr()
    assert main(["profile", "--json", str(path)]) == 2
    assert json.loads(capsys.readouterr().out)["error"]["message"] == err["message"]
