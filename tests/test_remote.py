"""Remote profiling against a real OpenSSH server on localhost (see sshd_helper)."""

from __future__ import annotations

import socket
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from profile_models import write_onnx
from sshd_helper import Sshd, free_port, sshd  # noqa: F401 - sshd is a fixture

from edge_lstm.errors import RemoteError, UsageError
from edge_lstm.profile import ProfileOptions, profile
from edge_lstm.remote import RemoteConfig, build_zipapp, scp_command, ssh_command

OPTS = ProfileOptions(runs=20, warmup=2, samples=2, timeout_s=60)


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edge_lstm import archs

    d = tmp_path_factory.mktemp("remote-models")
    return write_onnx(d / "small.onnx", archs.ArchConfig(hidden=16, layers=1), window=12)


def test_zipapp_is_self_contained(tmp_path: Path) -> None:
    with zipfile.ZipFile(build_zipapp(tmp_path / "r.pyz")) as z:
        names = set(z.namelist())
    assert {"__main__.py", "edge_lstm/device.py", "edge_lstm/runners/base.py", "edge_lstm/spec.py"} <= names
    assert not any(n.endswith(("load.py", "capture.py", "profile.py")) for n in names)
    assert "edge_lstm/kernel_tables/tflite-runtime-2.14.json" in names  # read from inside the zip on the device
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from edge_lstm import kernels; "
            "print(kernels.table_for('tflite-runtime', '2.14.0')[73])")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "r.pyz")], capture_output=True, text=True,
                         check=True, cwd=tmp_path)
    assert out.stdout.strip() == "1"  # LOG: float only


def test_a_feed_without_its_sample_axis_is_named(onnx_model: Path, tmp_path: Path) -> None:
    """One window saved as the whole feed: the runner says the arrays need a leading sample axis."""
    import json

    import numpy as np

    np.savez(tmp_path / "feed.npz", x=np.zeros((1, 12, 1), np.float32))  # the model takes (1, 12, 1) per sample
    proc = subprocess.run([sys.executable, str(build_zipapp(tmp_path / "r.pyz")), str(onnx_model), "--inputs",
                           str(tmp_path / "feed.npz")], capture_output=True, text=True, check=False, cwd=tmp_path)
    reply = json.loads(proc.stdout)
    assert proc.returncode == 2 and "leading axis" in reply["message"] and "(1, 1, 12, 1)" in reply["message"]


def test_zipapp_reads_a_tflite_file_with_what_it_carries(tmp_path: Path) -> None:
    from tflite_models import case

    from edge_lstm.lower.tflite import lower

    model = tmp_path / "m.tflite"
    model.write_bytes(lower(case("stacked").proto, "fused").data)
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import edge_lstm; from edge_lstm import tflite_read; "
            "m = tflite_read.read(open(sys.argv[2], 'rb').read()); "
            "print(edge_lstm.__file__.startswith(sys.argv[1]), sorted({tflite_read.op_name(m, o) "
            "for o in m.subgraphs[0].operators}), tflite_read.dtype_name(m.subgraphs[0].tensors[0].type))")
    out = subprocess.run([sys.executable, "-c", code, str(build_zipapp(tmp_path / "r.pyz")), str(model)],
                         capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout.split("\n")[0] == (
        "True ['FULLY_CONNECTED', 'RESHAPE', 'STRIDED_SLICE', 'UNIDIRECTIONAL_SEQUENCE_LSTM'] float32")


def test_commands_are_lists_and_remote_argv_is_quoted() -> None:
    cfg = RemoteConfig("pi@raspberrypi.local", connect_timeout_s=3)
    cmd = ssh_command(cfg, ["python3", "/tmp/a b/runner.pyz", "x; rm -rf /"])
    assert cmd[:5] == ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=3"]
    assert cmd[-2] == "pi@raspberrypi.local"
    assert cmd[-1] == "python3 '/tmp/a b/runner.pyz' 'x; rm -rf /'"
    scp = scp_command(RemoteConfig("ssh://pi@10.0.0.2:2222"), [Path("m.onnx")], "/tmp/d")
    assert "-P" in scp and scp[scp.index("-P") + 1] == "2222" and scp[-1] == "pi@10.0.0.2:/tmp/d/"


@pytest.mark.parametrize("host", ["-oProxyCommand=touch /tmp/pwned", "a b", "host;ls", ""])
def test_bad_host_rejected(host: str) -> None:
    with pytest.raises(UsageError):
        RemoteConfig(host)


@pytest.mark.parametrize("rdir", ["/tmp/x;touch /tmp/pwned", "/tmp/$(id)", "/tmp/a b", "/tmp/*", "-oProxy",
                                  "/tmp/../etc", "..", "/tmp/`id`", "~root/x", "/tmp/~", "", "/tmp/d'q"])
def test_bad_remote_dir_rejected(rdir: str) -> None:
    with pytest.raises(UsageError, match="--remote-dir"):
        RemoteConfig("pi@device", remote_dir=rdir)
    with pytest.raises(UsageError):
        scp_command(RemoteConfig("pi@device"), [Path("m.onnx")], rdir)


@pytest.mark.parametrize(("rdir", "workdir"), [("/tmp/edge-lstm_1.d", "/tmp/edge-lstm_1.d"), ("~/work", "work"),
                                               ("~", "."), ("rel/dir", "rel/dir"), ("/a..b/c", "/a..b/c")])
def test_plain_remote_dir_accepted(rdir: str, workdir: str) -> None:
    cfg = RemoteConfig("pi@device", remote_dir=rdir)
    assert cfg.workdir == workdir
    assert scp_command(cfg, [Path("m.onnx")], workdir)[-1] == f"pi@device:{workdir}/"


def test_remote_profile_onnx(sshd: Sshd, onnx_model: Path) -> None:  # noqa: F811
    cfg = sshd.config(python=sys.executable)
    report = profile([onnx_model], OPTS, remote=cfg)
    a = report["artifacts"][0]
    assert report["where"] == cfg.host and a["where"] == cfg.host
    assert a["runtime"] == "onnxruntime" and len(a["latencies_s"]) == 20
    assert a["latency_s"]["min"] <= a["latency_s"]["p50"] <= a["latency_s"]["max"]
    assert a["memory"]["peak_rss_bytes"] is not None and a["memory"]["baseline_rss_bytes"] > 0
    assert a["cost"]["macs"] == 12 * 4 * 16 * (1 + 16) + 16


def test_remote_profile_in_given_directory_cleans_up(sshd: Sshd, onnx_model: Path) -> None:  # noqa: F811
    cfg = sshd.config(python=sys.executable, remote_dir=str(sshd.workdir))
    profile([onnx_model], OPTS, remote=cfg)
    assert list(sshd.workdir.iterdir()) == []


def test_connection_refused(onnx_model: Path) -> None:
    cfg = RemoteConfig(f"ssh://root@127.0.0.1:{free_port()}", connect_timeout_s=5)
    with pytest.raises(RemoteError, match="connection refused"):
        profile([onnx_model], OPTS, remote=cfg)


def test_authentication_failure(sshd: Sshd, onnx_model: Path) -> None:  # noqa: F811
    cfg = sshd.config(identity=str(sshd.wrong_key), python=sys.executable)
    with pytest.raises(RemoteError, match="Authentication") as e:
        profile([onnx_model], OPTS, remote=cfg)
    assert "ssh-copy-id" in (e.value.hint or "")


def test_python_without_numpy(sshd: Sshd, onnx_model: Path, tmp_path: Path) -> None:  # noqa: F811
    bare = tmp_path / "bare-python"
    bare.write_text(f"#!/bin/sh\nexec {sys.executable} -S -I \"$@\"\n")
    bare.chmod(0o755)
    with pytest.raises(RemoteError, match="lacks the Python package 'numpy'"):
        profile([onnx_model], OPTS, remote=sshd.config(python=str(bare)))


def test_missing_runtime_on_device(sshd: Sshd, onnx_model: Path, tmp_path: Path) -> None:  # noqa: F811
    import numpy as np

    site = tmp_path / "numpy-only"
    site.mkdir()
    pkg = Path(np.__file__).parent
    for p in pkg.parent.iterdir():  # numpy and its bundled libraries, nothing else
        if p.name == "numpy" or p.name.startswith("numpy.libs"):
            (site / p.name).symlink_to(p)
    wrapper = tmp_path / "numpy-python"
    wrapper.write_text(f"#!/bin/sh\nPYTHONPATH={site} exec {sys.executable} -S \"$@\"\n")
    wrapper.chmod(0o755)
    with pytest.raises(RemoteError, match=r"runtime .* is missing") as e:
        profile([onnx_model], OPTS, remote=sshd.config(python=str(wrapper)))
    assert "onnxruntime" in e.value.message and "--remote-python" in (e.value.hint or "")


def test_python_not_found(sshd: Sshd, onnx_model: Path) -> None:  # noqa: F811
    with pytest.raises(RemoteError, match="was not found"):
        profile([onnx_model], OPTS, remote=sshd.config(python="/nonexistent/python3"))


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections but never speaks SSH."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield int(s.getsockname()[1])


def test_connect_timeout(silent_port: int, onnx_model: Path) -> None:
    cfg = RemoteConfig(f"ssh://root@127.0.0.1:{silent_port}", connect_timeout_s=1)
    with pytest.raises(RemoteError, match=r"[Tt]imed out"):
        profile([onnx_model], OPTS, remote=cfg)


def test_run_timeout(sshd: Sshd, onnx_model: Path, tmp_path: Path) -> None:  # noqa: F811
    slow = tmp_path / "slow-python"
    slow.write_text("#!/bin/sh\nexec sleep 30\n")
    slow.chmod(0o755)
    opts = ProfileOptions(runs=5, warmup=0, samples=1, timeout_s=3)
    with pytest.raises(RemoteError, match="Timed out after 3 s while running"):
        profile([onnx_model], opts, remote=sshd.config(python=str(slow)))


@pytest.mark.parametrize(("reply", "needle"), [
    ('{"runtime": "onnxruntime", "latencies_s": [1, ', "malformed JSON"),
    ('{"runtime": 3, "version": "x"}', "unexpected report"),
    ('{"runtime": "onnxruntime", "version": "1", "threads": 1, "load_s": -1, "first_s": 0, "latencies_s": []}',
     "unexpected report"),
])
def test_malformed_device_reply_is_a_remote_error(reply: str, needle: str, sshd: Sshd, onnx_model: Path,  # noqa: F811
                                                  tmp_path: Path) -> None:
    liar = tmp_path / "liar-python"
    liar.write_text(f"#!/bin/sh\necho '{reply}'\n")
    liar.chmod(0o755)
    with pytest.raises(RemoteError, match=needle) as e:
        profile([onnx_model], OPTS, remote=sshd.config(python=str(liar)))
    assert e.value.exit_code == 6
