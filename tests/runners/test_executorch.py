"""The ExecuTorch runner keeps stderr for errors: the notices every healthy load prints are dropped, real errors kept.

The notices are written by native code to file descriptor 2, so each case runs in a fresh process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("executorch.exir", reason="executorch is not installed (pip install 'edge-lstm[executorch]')")

from edge_lstm import archs, load
from edge_lstm.export_executorch import export_executorch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import sys
import numpy as np
from edge_lstm.runners.executorch import ExecuTorchRunner
for path in sys.argv[1:]:
    try:
        with ExecuTorchRunner(path) as r:
            print(r.infer({"x": np.zeros((1, 6, 1), np.float32)})["y"].shape, flush=True)
    except Exception as e:
        print("ERROR", e, flush=True)
    print("END", file=sys.stderr, flush=True)
"""


@pytest.fixture(scope="module")
def pte(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("et")
    torch.manual_seed(0)
    cfg = archs.ArchConfig(hidden=8, layers=1)
    load.save_checkpoint(d / "m.pt", archs.build("forecaster", cfg).eval(), "forecaster", cfg, 6,
                         {"mean": [0.0], "std": [1.0]}, "forecast")
    path = d / "m.fp32.pte"
    path.write_bytes(export_executorch(load.load(d / "m.pt")).data)
    return path


def test_stderr_is_quiet_on_a_healthy_load_and_keeps_a_real_error(pte: Path, tmp_path: Path) -> None:
    bad = tmp_path / "cut.pte"
    bad.write_bytes(pte.read_bytes()[:3000])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    p = subprocess.run([sys.executable, "-c", SCRIPT, str(pte), str(bad)], env=env, capture_output=True, text=True,
                       timeout=300, check=False)
    good_out, bad_out = p.stdout.splitlines()[:2]
    good_err, bad_err = p.stderr.split("END\n")[:2]
    assert p.returncode == 0 and good_out == "(1, 1)", p.stdout + p.stderr
    assert good_err.strip() == "", good_err  # no cpuinfo_utils, torchao or _pytree notices
    assert bad_out.startswith("ERROR") and "File size is too small" in bad_out, p.stdout + p.stderr
    assert "cpuinfo_utils" not in bad_err + bad_out
