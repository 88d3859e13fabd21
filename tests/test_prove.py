"""``export --prove-on HOST``: the real-device path, against a real OpenSSH server on localhost (see sshd_helper).

The "device" is this host reached over SSH, with this venv's Python: it has
ai-edge-litert and onnxruntime but not tflite-runtime, so the missing runtime is
exercised too. The emulated aarch64 device is tested in test_emulate.py.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

from sshd_helper import Sshd, sshd  # noqa: F401 - sshd is a fixture

from edge_lstm import cli


def _ssh_config(server: Sshd, tmp_path: Path) -> Path:
    cfg = tmp_path / "ssh_config"
    cfg.write_text(f"Host *\n  IdentityFile {server.key}\n" + server.client_config.read_text().replace("Host *\n", ""))
    return cfg


def test_prove_on_a_device_over_ssh(sshd: Sshd, forecaster_ckpt: Path, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "out"
    code = cli.main(["export", str(forecaster_ckpt), "-o", str(out), "--format", "onnx", "--format", "tflite",
                     "--streaming", "--prove-on", f"ssh://root@127.0.0.1:{sshd.port}", "--prove-python",
                     sys.executable, "--ssh-config", str(_ssh_config(sshd, tmp_path)), "--json"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    machine = platform.machine()
    rows = {(a["file"], v["runtime"]): v for a in report["artifacts"] for v in a["validation"]}
    assert rows[("stacked.fp32.onnx", f"onnxruntime ({machine})")]["passed"]
    assert rows[("stacked.fp32.tflite", f"litert ({machine})")]["passed"]
    tfl = next(a for a in report["artifacts"] if a["file"] == "stacked.fp32.tflite")
    assert any("not proven" in n and "tflite-runtime" in n for n in tfl["notes"])  # not in this venv
    stream = [a for a in report["artifacts"] if a["streaming"]]
    assert stream and all(any(n.startswith("not proven on") for n in a["notes"]) for a in stream)
    proof = report["proved_on"]
    assert proof["reported"]["machine"] == machine and proof["reported"]["emulated"] is None
    assert all(r["versus_host"]["within_tolerance"] and r["versus_host"]["max_abs"] == 0.0 for r in proof["runs"])
    assert "also validated on ssh://root@127.0.0.1" in (out / "report.md").read_text()


def test_prove_on_an_unreachable_device_fails_with_exit_6(forecaster_ckpt: Path, tmp_path: Path) -> None:
    from sshd_helper import free_port

    code = cli.main(["export", str(forecaster_ckpt), "-o", str(tmp_path / "out"), "--prove-on",
                     f"ssh://root@127.0.0.1:{free_port()}"])
    assert code == 6 and not (tmp_path / "out").exists()


def test_prove_on_a_bad_host_is_refused_before_any_work(forecaster_ckpt: Path, tmp_path: Path) -> None:
    code = cli.main(["export", str(forecaster_ckpt), "-o", str(tmp_path / "out"), "--prove-on", "a;b"])
    assert code == 2 and not (tmp_path / "out").exists()
