"""Shared fixtures: real data files and saved test models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from models import write  # test helpers import by module name: see pythonpath in pyproject.toml


@pytest.fixture(scope="session")
def seattle_csv() -> Path:
    """The real hourly Seattle temperatures (2010) that vega_datasets ships offline."""
    import vega_datasets

    path = Path(vega_datasets.__file__).parent / "_data" / "seattle-temps.csv"
    assert path.is_file()
    return path


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory for saved test models, shared by the session."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def forecaster_ckpt(model_dir: Path) -> Path:
    """A stacked LSTM forecaster checkpoint (window 12, one feature)."""
    return write("stacked", "checkpoint", model_dir)[0]


@pytest.fixture(scope="session")
def temps_csv(seattle_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short slice of the real series as a one-column CSV with a header."""
    import csv

    rows = list(csv.reader(seattle_csv.open()))[1:301]
    path = tmp_path_factory.mktemp("data") / "temps.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["temp"])
        w.writerows([[r[1]] for r in rows])
    return path


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator."""
    return np.random.default_rng(0)
