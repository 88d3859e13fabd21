"""Which TFLite kernels (builtin op and version) a TFLite runtime release has: measured tables, not guesses.

An op's version grows when its kernel gains a type: ``LOG`` version 2 is the
integer LOG that full-int8 artifacts carry (a DeepAR-like head's softplus),
which tflite-runtime 2.14 (the release Raspberry Pi images ship, numpy<2) does
not have. Such an artifact is not a failure of the artifact; that runtime
cannot run it, and the report says so with the exact op and version.

The tables in ``kernel_tables/`` are measured by :func:`measure`: for every
builtin op code and version, a model holding just that operator code is handed
to the runtime's interpreter, whose op resolver says whether it has the kernel
(``python -m edge_lstm.kernels .venv-tflrt/bin/python`` rewrites the table;
``tests/test_kernels.py`` measures again and compares). Reading a table needs
numpy only (device-side); measuring needs ai-edge-litert's schema on the host.
"""

from __future__ import annotations

import json
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

#: (runtime, major.minor) -> measured table file in kernel_tables/
TABLES = {("tflite-runtime", "2.14"): "tflite-runtime-2.14.json"}
_DIR = Path(__file__).resolve().parent / "kernel_tables"
#: what an op resolver says when it has no kernel for an operator code's version
NO_KERNEL = "Didn't find op for builtin opcode"
_MAX_VERSION = 16


def table_for(runtime: str, version: str) -> dict[int, int] | None:
    """Builtin code -> the highest version ``runtime`` ``version`` (e.g. ``"2.14.0"``) has a kernel for;
    None when no table was measured for that release (nothing is claimed then)."""
    name = TABLES.get((runtime, ".".join(version.split(".")[:2])))
    return _load(name) if name else None


@lru_cache(maxsize=4)
def _load(name: str) -> dict[int, int]:
    import pkgutil

    blob = pkgutil.get_data("edge_lstm", f"kernel_tables/{name}")  # also from inside the device runner's zipapp
    raw = json.loads(blob or b"{}")
    return {int(code): int(entry["max_version"]) for code, entry in raw["kernels"].items()}


def missing(data: bytes, runtime: str, version: str) -> list[str]:
    """The operator codes of TFLite file ``data`` that ``runtime`` ``version`` has no kernel for, e.g.
    ``["LOG version 2 (it has LOG up to version 1)"]``; empty when it has them all or nothing was measured."""
    from edge_lstm.tflite_read import OPS, read

    kernels = table_for(runtime, version)
    if kernels is None:
        return []
    out = []
    for oc in read(data).operator_codes:
        have = kernels.get(oc.builtin, 0)
        if oc.version > have:
            name = OPS.get(oc.builtin, f"builtin {oc.builtin}")
            out.append(f"{name} version {oc.version} " + (f"(it has {name} up to version {have})" if have else
                                                           f"(it has no {name} kernel)"))
    return out


def installed_version(runtime: str) -> str | None:
    """The installed version of ``runtime``'s package (``tflite-runtime``, ``ai-edge-litert``), or None."""
    from importlib.metadata import PackageNotFoundError, version

    from edge_lstm import registry

    package = registry.runtime(runtime).packages[0] if runtime in registry.RUNTIMES else runtime
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def probe_model(code: int, version: int) -> bytes:
    """A TFLite model holding only operator code ``code`` at ``version`` (one tensor, no operator): enough for an
    interpreter's op resolver to look the kernel up when it opens the model. Host-only (ai-edge-litert's schema)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    oc = s.OperatorCodeT()
    oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), version
    t = s.TensorT()
    t.shape, t.type, t.buffer, t.name = [1], s.TensorType.FLOAT32, 0, "x"
    g = s.SubGraphT()
    g.tensors, g.inputs, g.outputs, g.operators = [t], [0], [0], []
    m = s.ModelT()
    m.version, m.operatorCodes, m.subgraphs, m.buffers = 3, [oc], [g], [s.BufferT()]
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


_PROBE = """
import json, sys
from tflite_runtime.interpreter import Interpreter
found = {}
for code, version, path in json.loads(sys.stdin.read()):
    try:
        Interpreter(model_path=path)
    except Exception as e:
        if sys.argv[1] in str(e):
            continue
    found.setdefault(code, []).append(version)
print(json.dumps(found))
"""


def measure(python: str, work: Path) -> dict[str, Any]:
    """Measure tflite-runtime's kernel table with the interpreter of ``python`` (numpy<2 and tflite-runtime).

    Each version counts only when every lower one is there too (a resolver registers a version range)."""
    from ai_edge_litert import schema_py_generated as s

    from edge_lstm.outputs import write_into

    names = {v: k for k, v in vars(s.BuiltinOperator).items() if not k.startswith("_")}
    jobs = []
    for code in sorted(names):
        for version in range(1, _MAX_VERSION + 1):
            path = write_into(work, f"op{code}_v{version}.tflite", probe_model(code, version))
            jobs.append((code, version, str(path)))
    code_ver = "import tflite_runtime, json; print(tflite_runtime.__version__)"
    release = subprocess.run([python, "-c", code_ver], capture_output=True, text=True, check=True).stdout.strip()
    proc = subprocess.run([python, "-c", _PROBE, NO_KERNEL], input=json.dumps(jobs), capture_output=True, text=True,
                          check=True)
    found = {int(k): set(v) for k, v in json.loads(proc.stdout.strip().splitlines()[-1]).items()}
    kernels = {}
    for code in sorted(names):
        top = 0
        while top + 1 in found.get(code, set()):
            top += 1
        kernels[str(code)] = {"op": names[code], "max_version": top}
    return {"runtime": "tflite-runtime", "version": release,
            "measured_by": "edge_lstm.kernels.measure: one operator code per model, opened by the interpreter",
            "kernels": kernels}


if __name__ == "__main__":  # python -m edge_lstm.kernels PYTHON_WITH_TFLITE_RUNTIME
    import tempfile

    from edge_lstm.outputs import write_text_atomic

    with tempfile.TemporaryDirectory() as tmp:
        result = measure(sys.argv[1], Path(tmp))
    out = _DIR / TABLES[("tflite-runtime", ".".join(result["version"].split(".")[:2]))]
    write_text_atomic(out, json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(f"{out}: {sum(1 for k in result['kernels'].values() if k['max_version'])} ops with kernels")
