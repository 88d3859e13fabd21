"""The README is executed: its console commands and Python blocks run here, on a real model and real data."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from models import WINDOW

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def _commands() -> list[str]:
    return [line[2:] for block in _blocks("console") for line in block.splitlines() if line.startswith("$ ")]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory, temps_csv: Path) -> Path:
    """One directory for the whole README, in order: model.pt (a forecaster checkpoint, window 12), data.csv."""
    from models import build

    from edge_lstm.data import read_series
    from edge_lstm.load import save_checkpoint

    tmp_path = tmp_path_factory.mktemp("readme")
    series = read_series(temps_csv)
    module, cfg = build("stacked")
    norm = {"mean": [float(series.mean())], "std": [float(series.std())]}
    save_checkpoint(tmp_path / "model.pt", module, "forecaster", cfg, WINDOW, norm, "forecast")
    shutil.copy(temps_csv, tmp_path / "data.csv")
    return tmp_path


def test_readme_has_commands() -> None:
    assert len(_commands()) >= 5 and "make demo" in README and "make test" in README


@pytest.mark.parametrize("command", _commands())  # in README order: later commands read earlier outputs
def test_readme_command_runs(command: str, workdir: Path) -> None:
    argv = shlex.split(command)
    assert argv[0] == "edge-lstm"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "edge_lstm.cli", *argv[1:]], cwd=workdir, env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr


@pytest.mark.parametrize("index", range(len(_blocks("python"))))
def test_readme_python_runs(index: int, workdir: Path) -> None:
    code = _blocks("python")[index]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-c", code], cwd=workdir, env=env, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr
