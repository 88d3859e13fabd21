"""The emulated aarch64 device: a real Debian arm64 userland under qemu-user, a real sshd in it, the real ARM runtimes.

The fast tests check the host-side logic on real files (apt sources, image
states, binfmt entries) and the not-root refusal as a real unprivileged user.
The slow ones (CI) build the userland once into the user's cache directory
(``~/.cache/edge-lstm/arm64``, reused between runs on the same machine), start
its sshd, prove the demo-like model's artifacts on the aarch64 runtimes, profile
over SSH, and break copies of the image to check each failure.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_lstm import cli, emulate
from edge_lstm.emulate import host, image, sshd
from edge_lstm.errors import EmulationError, UsageError

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, user: int | None = None) -> subprocess.CompletedProcess[str]:
    """The real CLI in a fresh process (as ``user`` when given: setpriv drops root)."""
    cmd = [sys.executable, "-m", "edge_lstm.cli", *args]
    if user is not None:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200, check=False)


# ---------------------------------------------------------------- host side, fast


def test_apt_mirror_from_deb822_and_one_line(tmp_path: Path) -> None:
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "debian.sources").write_text(
        "Types: deb\n# http://snapshot.debian.org/archive/debian/20250520T000000Z\nURIs: http://mirror.example/debian/\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n")
    assert host.apt_mirror((tmp_path / "sources.list", d)) == "http://mirror.example/debian"
    (tmp_path / "sources.list").write_text(
        "# deb http://old.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://one.example/debian bookworm main\n")
    assert host.apt_mirror((tmp_path / "sources.list", d)) == "http://one.example/debian"


def test_apt_mirror_missing_says_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text("deb http://security.debian.org/debian-security bookworm-security main\n")
    with pytest.raises(EmulationError, match="No Debian archive") as e:
        host.apt_mirror((tmp_path / "sources.list",))
    assert "--mirror" in (e.value.hint or "") and e.value.exit_code == 7


def test_pip_platform_tags_cover_the_userland_glibc() -> None:
    args = image.pip_platform_args("arm64", "3.11", "2.36")
    platforms = [args[i + 1] for i, a in enumerate(args) if a == "--platform"]
    assert {"manylinux_2_28_aarch64", "manylinux_2_34_aarch64", "manylinux2014_aarch64"} <= set(platforms)
    assert "manylinux_2_37_aarch64" not in platforms
    assert args[args.index("--python-version") + 1] == "3.11" and "--only-binary=:all:" in args


def test_unknown_arch_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="arm64"):
        emulate.status("riscv64", tmp_path)
    p = run_cli("device", "emulate", "--arch", "mips", "--image-dir", str(tmp_path))
    assert p.returncode == 2 and "Accepted: arm64" in p.stderr


def test_image_states(tmp_path: Path) -> None:
    assert image.inspect_image(tmp_path / "none").status == "absent"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert image.inspect_image(foreign).status == "foreign"
    half = tmp_path / "half"
    (half / "stages").mkdir(parents=True)
    (half / image.MARKER).write_text("{}")
    (half / "stages" / "debootstrap.json").write_text("{}")
    st = image.inspect_image(half)
    assert st.status == "partial" and st.done == ["debootstrap"] and "wheels, install, check" in st.detail
    (half / "image.json").write_text("{not json")
    assert image.inspect_image(half).status == "corrupt"


def test_foreign_directory_is_never_used(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(EmulationError, match=r"no \.edge-lstm-image marker"):
        image.ensure_image(tmp_path, "arm64", None, rebuild=True, say=lambda _m: None)
    assert (tmp_path / "precious.txt").read_text() == "keep me"
    p = run_cli("device", "emulate", "--image-dir", str(tmp_path))
    assert p.returncode == 7 and "never removes a directory" in p.stderr
    assert sorted(x.name for x in tmp_path.iterdir()) == ["precious.txt"]


def test_status_cli_on_an_empty_cache(tmp_path: Path) -> None:
    p = run_cli("device", "status", "--image-dir", str(tmp_path / "img"))
    assert p.returncode == 0 and "not built yet" in p.stdout and "not running" in p.stdout
    st = json.loads(run_cli("device", "status", "--image-dir", str(tmp_path / "img"), "--json").stdout)
    assert st["image"]["status"] == "absent" and st["running"] is False


def test_binfmt_that_cannot_be_registered(tmp_path: Path) -> None:
    """An empty binfmt_misc (not mounted) and an update-binfmts that fails, as in an unprivileged container."""
    fake = tmp_path / "update-binfmts"
    fake.write_text("#!/bin/sh\necho 'update-binfmts: warning: unable to open /proc/sys/fs/binfmt_misc' >&2\nexit 2\n")
    fake.chmod(0o755)
    with pytest.raises(EmulationError, match="Cannot register qemu-aarch64") as e:
        host.ensure_binfmt("arm64", tmp_path, str(fake))
    assert "unable to open" in e.value.message and "update-binfmts --enable" in (e.value.hint or "")
    assert e.value.exit_code == 7


def test_binfmt_without_fix_binary_flag(tmp_path: Path) -> None:
    (tmp_path / "qemu-aarch64").write_text("enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n"
                                           "flags: P\noffset 0\n")
    with pytest.raises(EmulationError, match="lacks the F"):
        host.ensure_binfmt("arm64", tmp_path, "true")
    (tmp_path / "qemu-aarch64").write_text("enabled\ninterpreter /x\nflags: PF\noffset 0\n")
    assert host.ensure_binfmt("arm64", tmp_path, "true").fixed


def _world_readable_dir() -> Path:
    d = Path(tempfile.mkdtemp(prefix="edge-lstm-nonroot-"))
    d.chmod(0o777)
    return d


@pytest.mark.skipif(os.geteuid() != 0, reason="drops root with setpriv: run as root (CI does)")
def test_not_root_is_refused_with_exit_7(forecaster_ckpt: Path) -> None:
    d = _world_readable_dir()
    try:
        p = run_cli("device", "emulate", "--image-dir", str(d / "img"), user=65534)
        assert p.returncode == 7, p.stderr
        assert "needs root" in p.stderr and "uid 65534" in p.stderr and "Hint:" in p.stderr
        assert not (d / "img" / "rootfs").exists()
        private = d / "root-only"
        private.mkdir(mode=0o700)
        p = run_cli("device", "status", "--image-dir", str(private / "img"), user=65534)
        assert p.returncode == 7 and "permission denied" in p.stderr and "Traceback" not in p.stderr, p.stderr
        model = d / "model.pt"
        shutil.copy(forecaster_ckpt, model)
        model.chmod(0o644)
        p = run_cli("export", str(model), "-o", str(d / "out"), "--prove-on", "arm64", user=65534)
        assert p.returncode == 7 and "--prove-on arm64" in p.stderr and "needs root" in p.stderr, p.stderr
        assert not (d / "out").exists()
    finally:
        shutil.rmtree(d)


# ---------------------------------------------------------------- the real emulated device (slow: CI)


@pytest.fixture(scope="module")
def device() -> Iterator[emulate.EmulatedDevice]:
    """The emulated arm64 device from the user's cache (built on first use); stopped afterwards if started here."""
    dev, started = emulate.emulate("arm64", say=lambda m: print(f"· {m}", flush=True))
    try:
        yield dev
    finally:
        if started:
            emulate.stop("arm64")


def _copy_image(tmp_path: Path) -> Path:
    """A copy of the cached image that costs no space (hard links), without the running device's state.

    The code writes into an image only through new files (atomic renames), so the original stays intact;
    the login records sshd appends to are copied for real.
    """
    src, dst = emulate.default_image_dir("arm64"), tmp_path / "img"
    dst.mkdir()
    for name in (image.MARKER, "image.json", "stages", "wheels", "rootfs"):
        subprocess.run(["cp", "-al", str(src / name), str(dst / name)], check=True)
    for rel in ("var/log/wtmp", "var/log/btmp", "var/log/lastlog"):
        f = dst / "rootfs" / rel
        if f.exists():
            data = f.read_bytes()
            f.unlink()
            f.write_bytes(data)
    return dst


@pytest.mark.slow
def test_device_reports_itself(device: emulate.EmulatedDevice) -> None:
    st = json.loads(run_cli("device", "status", "--json").stdout)
    assert st["running"] and st["image"]["status"] == "ready"
    d = st["device"]
    assert d["machine"] == "aarch64" and "bookworm" in d["os"] and d["pid"] == device.pid
    versions = st["image"]["manifest"]["versions"]
    assert versions["tflite-runtime"]["tflite-runtime"] == "2.14.0"
    assert versions["tflite-runtime"]["numpy"].startswith("1.")
    assert {"ai-edge-litert", "onnxruntime"} <= set(versions["main"])
    from edge_lstm.remote import ssh_command

    for runtime, module in (("litert", "ai_edge_litert"), ("tflite-runtime", "tflite_runtime")):
        cfg = device.remote_config(runtime)  # edge-lstm's device side is installed in both Pythons
        code = f"import edge_lstm.device as d, {module}; print(d.device_info()['machine'])"
        probe = subprocess.run(ssh_command(cfg, [cfg.python, "-c", code]), capture_output=True, text=True,
                               timeout=120, check=False)
        assert probe.returncode == 0 and probe.stdout.split() == ["aarch64"], probe.stderr
    p = run_cli("device", "emulate")  # already running: says so, starts nothing
    assert p.returncode == 0 and "already running" in p.stdout and "--remote edge-lstm-arm64" in p.stdout


@pytest.fixture(scope="module")
def demo_like(tmp_path_factory: pytest.TempPathFactory, seattle_csv: Path) -> tuple[Path, Path, Path, Path]:
    """The demo's forecaster shape (2 x LSTM(64), 96-hour window, next hour's change), trained briefly on real
    temperatures; held-out hours to validate on, training hours to calibrate on, and a lean recipe."""
    import csv

    import numpy as np
    import torch

    from edge_lstm import archs
    from edge_lstm.load import save_checkpoint

    d = tmp_path_factory.mktemp("demo-like")
    temps = np.array([float(r[1]) for r in list(csv.reader(seattle_csv.open()))[1:1801]], np.float32)
    train, held = temps[:1400], temps[1400 - 96:]
    for name, part in (("train.csv", train), ("heldout.csv", held)):
        (d / name).write_text("temp\n" + "".join(f"{t:.2f}\n" for t in part))
    mean, std = float(train.mean()), float(train.std())
    z = (train - mean) / std
    idx = np.arange(len(z) - 96)
    x = torch.from_numpy(np.stack([z[i : i + 96] for i in idx])[..., None])
    y = torch.from_numpy((z[idx + 96] - z[idx + 95])[:, None])
    torch.manual_seed(0)
    cfg = archs.ArchConfig(n_features=1, hidden=64, layers=2)
    model = archs.build("forecaster", cfg)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = np.random.default_rng(0)
    for _ in range(60):  # a few seconds: enough for outputs that carry signal (int8 is judged on the task)
        b = torch.from_numpy(gen.integers(0, len(x), 32))
        loss = torch.nn.functional.mse_loss(model(x[b]), y[b])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    save_checkpoint(d / "model.pt", model.eval(), "forecaster", cfg, 96,
                    {"mean": [mean], "std": [std], "target_index": [0], "target": "delta"}, "forecast")
    (d / "recipe.toml").write_text('name = "prove"\ninherit = "demo"\nprecisions = ["fp32", "dynamic-int8", '
                                   '"int8"]\n[validation]\nmax_samples = 24\ncalibration_samples = 48\n')
    return d / "model.pt", d / "heldout.csv", d / "train.csv", d / "recipe.toml"


def _rows(report: dict[str, object]) -> dict[tuple[str, str], dict[str, object]]:
    return {(a["file"], v["runtime"]): v for a in report["artifacts"] for v in a["validation"]}  # type: ignore


@pytest.mark.slow
def test_prove_on_arm64(device: emulate.EmulatedDevice, demo_like: tuple[Path, Path, Path, Path],
                        tmp_path: Path) -> None:
    from edge_lstm.recipes import LOWERINGS

    model, data, calib, recipe = demo_like
    loop = "loop"
    assert loop in LOWERINGS
    runs = [("fused", ["--format", "onnx", "--format", "tflite"]), (loop, ["--format", "tflite", "--precision",
                                                                           "fp32"])]
    for lowering, extra in runs:
        out = tmp_path / lowering
        code = cli.main(["export", str(model), "-o", str(out), "--recipe", str(recipe), "--data", str(data),
                         "--calib", str(calib), "--lowering", lowering, *extra, "--prove-on", "arm64", "--json"])
        assert code == 0
        report = json.loads((out / "report.json").read_text())
        rows = _rows(report)
        files = {a["file"]: a for a in report["artifacts"]}
        for f, a in files.items():
            wanted = ["onnxruntime"] if a["format"] == "onnx" else ["litert", "tflite-runtime"]
            for rt in wanted:
                row = rows[(f, f"{rt} (aarch64, emulated)")]
                assert row["passed"], (f, rt, row)
            assert a["passed"]
        proof = report["proved_on"]
        assert proof["device"] == "arm64" and proof["reported"]["machine"] == "aarch64"
        assert proof["reported"]["emulated"] and "bookworm" in proof["reported"]["os"]
        for run in proof["runs"]:  # the ARM builds give the host's outputs within the precision's tolerance
            assert run["versus_host"]["within_tolerance"], run
        if lowering == "fused":
            assert {a["precision"] for a in files.values() if a["format"] == "tflite"} == {"fp32", "dynamic-int8",
                                                                                          "int8"}
            assert {a["precision"] for a in files.values() if a["format"] == "onnx"} == {"fp32", "dynamic-int8"}
            assert len(proof["runs"]) == 3 * 2 + 2
        else:
            assert [a["lowering"] for a in files.values()] == [loop]
        md = (out / "report.md").read_text()
        assert "aarch64, emulated" in md and "EMULATED" in md


@pytest.mark.slow
def test_profile_remote_on_the_emulated_device(device: emulate.EmulatedDevice, tmp_path: Path) -> None:
    from profile_models import write_onnx

    from edge_lstm import archs, capture
    from edge_lstm.load import load
    from edge_lstm.lower.tflite import lower

    onnx_path = write_onnx(tmp_path / "small.onnx", archs.ArchConfig(hidden=16, layers=1), window=12)
    import onnx

    tfl = tmp_path / "small.tflite"
    tfl.write_bytes(lower(onnx.load(str(onnx_path)), lowering="fused").data)
    del capture, load
    fast = ["--runs", "5", "--warmup", "1", "--json"]
    p = run_cli("profile", str(tfl), str(onnx_path), *device.remote_args(), "--target", "rpi4b", *fast)
    assert p.returncode == 0, p.stderr
    rep = json.loads(p.stdout)
    assert rep["emulated"] and rep["device"]["machine"] == "aarch64" and "bookworm" in rep["device"]["os"]
    assert rep["device"]["python"].startswith("3.11")
    for a in rep["artifacts"]:
        assert a["emulated"] and a["timing"].startswith("emulated") and a["device"]["machine"] == "aarch64"
        ram = next(c for c in a["budget"] if c["budget"] == "ram")
        assert ram["status"] == "skipped" and "emulation" in ram["note"]
    assert {a["runtime"] for a in rep["artifacts"]} == {"litert", "onnxruntime"}
    assert rep["artifacts"][0]["runtime_version"].startswith("ai-edge-litert")
    p = run_cli("profile", str(tfl), *device.remote_args("tflite-runtime"), *fast)
    assert p.returncode == 0, p.stderr
    a = json.loads(p.stdout)["artifacts"][0]
    assert a["runtime_version"] == "tflite-runtime 2.14.0" and a["device"]["numpy"].startswith("1.")
    human = run_cli("profile", str(tfl), *device.remote_args(), "--runs", "3", "--warmup", "0")
    assert human.returncode == 0 and "EMULATED" in human.stdout and "aarch64" in human.stdout


@pytest.mark.slow
def test_corrupt_cache_is_refused(device: emulate.EmulatedDevice, tmp_path: Path) -> None:
    img = _copy_image(tmp_path)
    sshd_bin = img / "rootfs/usr/sbin/sshd"
    sshd_bin.unlink()  # the original keeps its own link
    sshd_bin.write_bytes(b"\x7fELF truncated")
    p = run_cli("device", "emulate", "--image-dir", str(img))
    assert p.returncode == 7, p.stderr
    assert "corrupt" in p.stderr and "/usr/sbin/sshd (openssh-server) differs" in p.stderr and "--rebuild" in p.stderr
    assert "CORRUPT" in run_cli("device", "status", "--image-dir", str(img)).stdout
    assert image.inspect_image(emulate.default_image_dir("arm64")).status == "ready"


@pytest.mark.slow
def test_sshd_that_does_not_come_up(device: emulate.EmulatedDevice, tmp_path: Path) -> None:
    img = _copy_image(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        p = run_cli("device", "emulate", "--image-dir", str(img), "--port", str(port))
    assert p.returncode == 7, p.stderr
    assert "sshd in the emulated device exited" in p.stderr and "Address already in use" in p.stderr
    assert "--port" in p.stderr and sshd.running(img) is None
    assert not (img / "state" / "device.json").exists()


@pytest.mark.slow
def test_half_built_image_resumes_then_stops(device: emulate.EmulatedDevice, tmp_path: Path) -> None:
    img = _copy_image(tmp_path)
    (img / "image.json").unlink()
    (img / "stages" / "install.json").unlink()
    shutil.rmtree(img / "rootfs/opt/edge-lstm/tflite-runtime")
    assert "half-built" in run_cli("device", "status", "--image-dir", str(img)).stdout
    p = run_cli("device", "emulate", "--image-dir", str(img), "--json")
    assert p.returncode == 0, p.stderr
    started = json.loads(p.stdout)
    try:
        assert started["started_now"] and started["machine"] == "aarch64" and started["port"] != device.port
        assert "resuming a half-built image" in p.stderr or p.stderr == ""
        assert image.inspect_image(img).status == "ready"
        assert (img / "rootfs/opt/edge-lstm/tflite-runtime/pyvenv.cfg").is_file()
    finally:
        p = run_cli("device", "stop", "--image-dir", str(img))
    assert p.returncode == 0 and f"pid {started['pid']}" in p.stdout
    assert not sshd._in_root(img / "rootfs")
    p = run_cli("device", "stop", "--image-dir", str(img))
    assert p.returncode == 0 and "No emulated arm64 device is running" in p.stdout
