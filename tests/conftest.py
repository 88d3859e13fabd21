"""Shared fixtures: real data files and saved test models; the CI rules for skips and slow tests.

In CI (``EDGE_LSTM_CI=1``, set by ``.ci/run``) a skipped test fails: CI installs
everything the tests need, so a skip there hides a missing part. Tests marked
``slow`` run in CI (or with ``--run-slow``); ``make test`` elsewhere deselects them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


@pytest.fixture(scope="session")
def demo_bundle(seattle_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The demo-like forecaster exported with --streaming --bundle, and PyTorch's forecasts on held-out hours
    (``tests/predict_helpers.py``)."""
    from predict_helpers import make_demo_bundle

    return make_demo_bundle(seattle_csv, tmp_path_factory.mktemp("demo-bundle"))


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator."""
    return np.random.default_rng(0)


IN_CI = os.environ.get("EDGE_LSTM_CI") == "1"


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--run-slow``: also run the tests marked slow (CI always does)."""
    parser.addoption("--run-slow", action="store_true", help="run tests marked slow (CI runs them always)")


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers."""
    config.addinivalue_line("markers", "slow: long-running; runs in CI (EDGE_LSTM_CI=1) or with --run-slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect slow tests outside CI unless --run-slow."""
    if IN_CI or config.getoption("--run-slow"):
        return
    slow = [i for i in items if i.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [i for i in items if not i.get_closest_marker("slow")]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """In CI a skip is a failure: everything a test needs is installed there."""
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where every test must run: {reason}"
