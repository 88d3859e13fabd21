"""Fuzz cases for every other file edge-lstm reads, for arguments, and for where it writes.

Data and calibration (CSV and .npy), recipes, targets, profile and export reports, argument abuse, and
output-path tricks: symlinks (dangling, looping, pointing out), foreign directories, planted links, a
read-only file system and a full one (small tmpfs mounts; CI runs as root), a run killed mid-staging.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import fuzz_corpus as c
import numpy as np
from fuzz_harness import REPO, Case

CKPT = "models:stacked:checkpoint"
FAST_EXPORT = ["--format", "onnx"]


def _files(**files: bytes | Callable[[Path], bytes]) -> Callable[[Path], dict[str, str]]:
    def build(sandbox: Path) -> dict[str, str]:
        c.base(CKPT)
        subs = {"model": str(sandbox / "in" / "m.pt")}
        (sandbox / "in" / "m.pt").write_bytes(c.base(CKPT)[0].read_bytes())
        for key, data in files.items():
            name = key.replace("_", ".", 1) if "_" in key else key
            p = sandbox / "in" / name
            p.write_bytes(data(sandbox) if callable(data) else data)
            subs[key.split("_")[0]] = str(p)
        return subs
    return build


def _npy(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


def _npy_pickle(sandbox: Path) -> bytes:
    return _npy(np.array([c.Evil(str(sandbox / "PWNED"))], dtype=object))


def _npy_huge_header() -> bytes:
    data = _npy(np.zeros(30, np.float32))
    return data.replace(b"(30,)", b"(2000000000000,)"[: len(b"(30,)")]).replace(
        b"'shape': (30,)", b"'shape': (4000000000, 4000000000)")


def data_cases() -> list[Case]:
    """``--data`` and ``--calib`` files of every broken kind: exit 2, nothing written."""
    series = "\n".join(str(20 + (i % 7)) for i in range(60)).encode()
    bad: dict[str, bytes | Callable[[Path], bytes]] = {
        "npy-str": _npy(np.array(["a"] * 40)), "npy-structured": _npy(np.zeros(40, dtype=[("a", "f4"), ("b", "i4")])),
        "npy-bool": _npy(np.ones(40, bool)), "npy-datetime": _npy(np.array(["2020-01-01"] * 40, dtype="datetime64[D]")),
        "npy-complex": _npy(np.ones(40, complex)), "npy-object-pickle": _npy_pickle,
        "npy-huge-shape": _npy_huge_header(), "npy-truncated": _npy(np.zeros(400, np.float32))[:300],
        "npy-4d": _npy(np.zeros((2, 2, 2, 2))), "npy-empty": _npy(np.zeros((0, 1))),
        "npy-nan": _npy(np.array([1.0, np.nan] * 30)), "npy-inf": _npy(np.array([1.0, np.inf] * 30)),
        "npy-float64-overflow": _npy(np.array([1e300] * 60)),
        "npy-windows-wrong": _npy(np.zeros((4, 3, 2), np.float32)),
        "npy-garbage": b"\x93NUMPY\x01\x00garbage", "csv-huge-field": b"x\n" + b"1" * 300_000 + b"\n",
        "csv-nul": b"x\n1\n2\x003\n" * 30, "csv-not-utf8": b"x\n" + b"\xff\xfe\xfa\n" * 40, "csv-empty": b"",
        "csv-header-only": b"temp\n", "csv-text-cells": b"x\n" + b"abc\n" * 40, "csv-1e999": b"x\n" + b"1e999\n" * 40,
        "csv-two-columns": b"a,b\n" + b"1,2\n" * 40, "csv-too-short": b"x\n1\n2\n",
        "csv-binary": bytes(range(256)) * 8, "csv-ragged": b"x\n1\n2,3,4\n" * 20,
    }
    out = []
    for name, data in bad.items():
        fname = f"d_{'npy' if name.startswith('npy') else 'csv'}"
        out.append(Case(f"data-{name}", _files(**{fname: data}),
                        ["export", "{model}", "-o", "{out}", "--json", "--data", "{d}", *FAST_EXPORT], {2},
                        fast=name in ("npy-str", "npy-huge-shape", "csv-huge-field", "npy-object-pickle")))
    for name in ("npy-bool", "npy-object-pickle", "csv-1e999", "csv-nul", "npy-huge-shape"):
        fname = f"d_{'npy' if name.startswith('npy') else 'csv'}"
        out.append(Case(f"calib-{name}", _files(**{fname: bad[name]}),
                        ["export", "{model}", "-o", "{out}", "--json", "--format", "tflite", "--precision", "int8",
                         "--calib", "{d}"], {2}, fast=name == "npy-bool"))
    out.append(Case("data-good-control", _files(d_csv=series),
                    ["export", "{model}", "-o", "{out}", "--json", "--data", "{d}", *FAST_EXPORT], {0}, fast=True))
    return out


RECIPES = {
    "unknown-key": 'inherit = "default"\nname = "r"\nformat = ["onnx"]\n',
    "unknown-validation-key": 'inherit = "default"\nname = "r"\n[validation]\nrandom_sample = 3\n',
    "unknown-tolerance-key": 'inherit = "default"\nname = "r"\n[tolerance.fp32]\natoll = 1.0\n',
    "unknown-precision-table": 'inherit = "default"\nname = "r"\n[tolerance.int4]\natol = 1.0\n',
    "nan-tolerance": 'inherit = "default"\nname = "r"\n[tolerance.fp32]\natol = nan\nrtol = 0.0\n',
    "inf-tolerance": 'inherit = "default"\nname = "r"\n[tolerance.fp32]\natol = inf\nrtol = 0.0\n',
    "negative-tolerance": 'inherit = "default"\nname = "r"\n[tolerance.fp32]\natol = -1.0\nrtol = 0.0\n',
    "string-tolerance": 'inherit = "default"\nname = "r"\n[tolerance.fp32]\natol = "tiny"\nrtol = 0.0\n',
    "bool-samples": 'inherit = "default"\nname = "r"\n[validation]\nmax_samples = true\n',
    "negative-samples": 'inherit = "default"\nname = "r"\n[validation]\nrandom_samples = -5\n',
    "huge-samples": 'inherit = "default"\nname = "r"\n[validation]\nrandom_samples = 99999999999\n',
    "float-seed": 'inherit = "default"\nname = "r"\n[validation]\nseed = 1.5\n',
    "cosine-out-of-range": 'inherit = "default"\nname = "r"\n[tolerance.int8]\nmin_cosine = 7.0\n',
    "self-inherit": 'inherit = "{self}"\nname = "r"\n',
    "cycle": 'inherit = "{other}"\nname = "r"\n',
    "missing-parent": 'inherit = "nope-nope"\nname = "r"\n',
    "formats-string": 'inherit = "default"\nname = "r"\nformats = "onnx"\n',
    "formats-unknown": 'inherit = "default"\nname = "r"\nformats = ["coreml"]\n',
    "formats-empty": 'inherit = "default"\nname = "r"\nformats = []\n',
    "lowering-unknown": 'inherit = "default"\nname = "r"\nlowering = "magic"\n',
    "not-toml": "name = [\n", "binary": "\x00\x01\x02", "empty": "",
    "per-output-not-table": 'inherit = "default"\nname = "r"\n[tolerance.fp32]\natol = 1e-5\nrtol = 1e-5\n'
                            'per_output = 3\n',
    "name-table": 'inherit = "default"\n[name]\nx = 1\n',
    "deep-nesting": 'inherit = "default"\nname = "r"\nx = ' + "[" * 2000 + "]" * 2000 + "\n",
}


def _recipe(body: str) -> Callable[[Path], dict[str, str]]:
    def build(sandbox: Path) -> dict[str, str]:
        (sandbox / "in" / "m.pt").write_bytes(c.base(CKPT)[0].read_bytes())
        p, other = sandbox / "in" / "r.toml", sandbox / "in" / "o.toml"
        other.write_text(f'inherit = "{p}"\nname = "o"\n')
        p.write_text(body.replace("{self}", str(p)).replace("{other}", str(other)))
        return {"model": str(sandbox / "in" / "m.pt"), "recipe": str(p)}
    return build


def recipe_cases() -> list[Case]:
    """Broken recipes: exit 2 before any work."""
    deep = [f'inherit = "{{in}}/r{i + 1}.toml"\nname = "r{i}"\n' for i in range(12)]

    def deep_build(sandbox: Path) -> dict[str, str]:
        (sandbox / "in" / "m.pt").write_bytes(c.base(CKPT)[0].read_bytes())
        for i, body in enumerate(deep):
            (sandbox / "in" / f"r{i}.toml").write_text(body.replace("{in}", str(sandbox / "in")))
        (sandbox / "in" / "r12.toml").write_text('inherit = "default"\nname = "r12"\n')
        return {"model": str(sandbox / "in" / "m.pt"), "recipe": str(sandbox / "in" / "r0.toml")}

    out = [Case(f"recipe-{k}", _recipe(v), ["export", "{model}", "-o", "{out}", "--json", "--recipe", "{recipe}"],
                {2}, fast=k in ("unknown-key", "nan-tolerance", "self-inherit", "cycle"))
           for k, v in RECIPES.items()]
    out.append(Case("recipe-too-deep", deep_build, ["export", "{model}", "-o", "{out}", "--json", "--recipe",
                                                    "{recipe}"], {2}))
    return out


def _target(change: Callable[[str], str]) -> Callable[[Path], dict[str, str]]:
    def build(sandbox: Path) -> dict[str, str]:
        p = sandbox / "in" / "t.toml"
        p.write_text(change((REPO / "targets" / "rpi4b.toml").read_text()))
        return {"target": str(p)}
    return build


TARGETS: dict[str, Callable[[str], str]] = {
    "cores-string": lambda s: s.replace("cores = 4", 'cores = "4"'),
    "cores-zero": lambda s: s.replace("cores = 4", "cores = 0"),
    "ram-negative": lambda s: s.replace("ram_bytes = 4_294_967_296", "ram_bytes = -1"),
    "budget-over-total": lambda s: s.replace("ram_budget_bytes = 1_073_741_824", "ram_budget_bytes = 9e99"),
    "throughput-nan": lambda s: s.replace("fp32_macs_per_s = 2.0e9", "fp32_macs_per_s = nan"),
    "throughput-inf": lambda s: s.replace("int8_macs_per_s = 3.0e9", "int8_macs_per_s = inf"),
    "unknown-key": lambda s: s.replace("[software]", "[software]\nruntime = 1"),
    "unknown-table": lambda s: s + "\n[extra]\nx = 1\n",
    "lowering-unknown": lambda s: s.replace('preferred_lowering = "loop"', 'preferred_lowering = "fusd"'),
    "runtime-unknown": lambda s: s.replace('"litert",', '"tensorrt",'),
    "runtimes-empty": lambda s: s.replace('runtimes = ["litert", "tflite-runtime", "onnxruntime"]', "runtimes = []"),
    "missing-field": lambda s: s.replace("clock_hz = 1_500_000_000", ""),
    "not-toml": lambda s: "name = [", "empty": lambda s: "",
    "firmware-bad-abi": lambda s: s + '\n[firmware]\ncpu = "cortex-m4"\nfpu = "none"\nfloat_abi = "maybe"\n',
    "firmware-unknown-key": lambda s: s + '\n[firmware]\ncpu = "cortex-m4"\nfpu = "none"\nfloat_abi = "soft"\nx = 1\n',
    "firmware-negative-origin": lambda s: s + '\n[firmware]\ncpu = "m4"\nfpu = "none"\nfloat_abi = "soft"\n'
                                              "flash_origin = -1\n",
    "firmware-cpu-injection": lambda s: s + '\n[firmware]\ncpu = "m4 -o /tmp/x"\nfpu = "none"\nfloat_abi = "soft"\n',
}


def target_cases() -> list[Case]:
    """Broken target files: exit 2 from `targets show`, and from `export --target` before any work."""
    out = [Case(f"target-{k}", _target(v), ["targets", "show", "{target}", "--json"], {2},
                fast=k in ("throughput-nan", "unknown-key", "firmware-bad-abi")) for k, v in TARGETS.items()]
    out.append(Case("target-firmware-ok", _target(lambda s: s + '\n[firmware]\ncpu = "cortex-m4"\nfpu = "fpv4-sp-d16"'
                                                            '\nfloat_abi = "hard"\nqemu_machine = "mps2-an386"\n'
                                                            "flash_origin = 0\nram_origin = 536870912\n"),
                    ["targets", "show", "{target}", "--json"], {0}, fast=True))
    return out


def _report(text: str | bytes) -> Callable[[Path], dict[str, str]]:
    def build(sandbox: Path) -> dict[str, str]:
        art = sandbox / "in" / "m.onnx"
        art.write_bytes(_onnx_artifact())
        p = sandbox / "in" / "prev.json"
        p.write_bytes(text.encode() if isinstance(text, str) else text)
        return {"artifact": str(art), "report": str(p)}
    return build


_ONNX: list[bytes] = []


def _onnx_artifact() -> bytes:
    if not _ONNX:
        from edge_lstm import capture
        from edge_lstm.load import load

        _ONNX.append(capture.to_onnx(load(c.base(CKPT)[0])).SerializeToString())
    return _ONNX[0]


REPORTS = {
    "truncated": '{"artifacts": [{"artifact": "m.onnx", "latency_s": {"p5', "not-json": "hello", "empty": "",
    "artifacts-not-list": '{"artifacts": 3}', "artifact-not-dict": '{"artifacts": [1, 2]}',
    "p50-string": '{"artifacts": [{"artifact": "m.onnx", "runtime": "onnxruntime", "latency_s": {"p50": "fast"}}]}',
    "memory-list": '{"artifacts": [{"artifact": "m.onnx", "memory": [1]}]}',
    "deep": "[" * 100_000 + "]" * 100_000, "nan": '{"artifacts": [{"artifact": "m.onnx", "latency_s": {"p50": NaN}}]}',
    "binary": b"\xff\xfe\x00\x01" * 100, "list-top": "[]",
}


def report_cases() -> list[Case]:
    """Corrupted reports given to `profile --compare` (and one to --export-report)."""
    cmd = ["profile", "{artifact}", "--runs", "3", "--warmup", "0", "--json", "--compare", "{report}"]
    out = [Case(f"report-compare-{k}", _report(v), cmd, {0} if k == "nan" else {2},
                fast=k in ("truncated", "deep", "p50-string")) for k, v in REPORTS.items()]
    for k in ("truncated", "artifacts-not-list", "deep"):
        out.append(Case(f"report-export-{k}", _report(REPORTS[k]),
                        ["profile", "{artifact}", "--runs", "3", "--warmup", "0", "--json", "--output",
                         "{out}/p.json", "--export-report", "{report}"], {2}, fast=k == "deep"))
    return out


ARGS: list[tuple[str, list[str], set[int]]] = [
    ("shape-huge", ["info", "{model}", "--input-shape", "1x99999999999x1"], {2}),
    ("shape-overflow", ["info", "{model}", "--input-shape", "1x4294967296x4294967296"], {2}),
    ("shape-zero", ["info", "{model}", "--input-shape", "0x12x1"], {2}),
    ("shape-negative", ["info", "{model}", "--input-shape", "1x-12x1"], {2}),
    ("shape-extra-dim", ["info", "{model}", "--input-shape", "1x12x1x1"], {2}),
    ("shape-missing-dim", ["info", "{model}", "--input-shape", "1x12"], {2}),
    ("shape-nine-axes", ["info", "{model}", "--input-shape", "1x1x1x1x1x1x1x1x1"], {2}),
    ("shape-garbage", ["info", "{model}", "--input-shape", "🙂"], {2}),
    ("shape-unicode-digits", ["info", "{model}", "--input-shape", "１x１２x１"], {2}),
    ("shape-empty", ["info", "{model}", "--input-shape", ""], {2}),
    ("shape-too-many", ["info", "{model}", "--input-shape", "1x12x1", "--input-shape", "1x12x1"], {2}),
    ("model-missing", ["info", "{in}/nope.pt"], {2}), ("model-dir", ["info", "{in}"], {2}),
    ("model-devzero", ["info", "/dev/zero"], {2}), ("model-empty-path", ["info", ""], {2}),
    ("model-long-name", ["info", "{in}/" + "a" * 300 + ".pt"], {2}),
    ("format-unknown", ["export", "{model}", "-o", "{out}", "--format", "coreml"], {2}),
    ("precision-unknown", ["export", "{model}", "-o", "{out}", "--precision", "int3"], {2}),
    ("lowering-unknown", ["export", "{model}", "-o", "{out}", "--lowering", "magic", "--format", "tflite"], {2}),
    ("io-unknown", ["export", "{model}", "-o", "{out}", "--io", "int4"], {2}),
    ("recipe-missing", ["export", "{model}", "-o", "{out}", "--recipe", "{in}/none.toml"], {2}),
    ("recipe-unknown-name", ["export", "{model}", "-o", "{out}", "--recipe", "nope"], {2}),
    ("target-devnull", ["export", "{model}", "-o", "{out}", "--target", "/dev/null"], {2}),
    ("target-traversal", ["export", "{model}", "-o", "{out}", "--target", "../../../etc/passwd"], {2}),
    ("unknown-option", ["export", "{model}", "--frobnicate"], {2}), ("no-command", ["--json"], {0, 2}),
    ("runs-zero", ["profile", "{model}", "--runtime", "torch", "--runs", "0"], {2}),
    ("runs-string", ["profile", "{model}", "--runs", "many"], {2}),
    ("threads-negative", ["profile", "{model}", "--runtime", "torch", "--threads", "-3"], {2}),
    ("warmup-negative", ["profile", "{model}", "--runtime", "torch", "--warmup", "-1"], {2}),
    ("remote-empty", ["profile", "{model}", "--remote", ""], {2}),
    ("remote-option-injection", ["profile", "{model}", "--remote", "-oProxyCommand=touch {marker}"], {2}),
    ("remote-shell", ["profile", "{model}", "--remote", "host;touch {marker}"], {2}),
    ("remote-dir-injection", ["profile", "{model}", "--remote", "127.0.0.1", "--remote-dir", "/tmp;touch {marker}"],
     {2}),
    ("runtime-unknown", ["profile", "{model}", "--runtime", "tensorrt"], {2}),
    ("calib-without-int8-missing", ["export", "{model}", "-o", "{out}", "--format", "tflite", "--precision", "int8"],
     {2}),
    ("output-empty", ["export", "{model}", "-o", ""], {2}),
]


def arg_cases() -> list[Case]:
    """Argument abuse: exit 2 with a message, never a crash."""
    def build(sandbox: Path) -> dict[str, str]:
        (sandbox / "in" / "m.pt").write_bytes(c.base(CKPT)[0].read_bytes())
        return {"model": str(sandbox / "in" / "m.pt")}

    return [Case(f"args-{name}", build, [*argv, "--json"], expect, fast=name.startswith(("shape-huge", "remote-")))
            for name, argv, expect in ARGS]
