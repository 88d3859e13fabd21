"""The fuzz suite: every case (>= 300) against the real CLI; the fast subset in `make test`, all of it in CI.

Each case asserts a documented exit code, no traceback, strict JSON with --json, no marker file from a
payload, nothing written outside -o and nothing left behind on failure (see fuzz_harness.py).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fuzz_corpus as corpus
from fuzz_cases import checkpoint_cases, container_cases, malicious_cases
from fuzz_cases_io import arg_cases, data_cases, recipe_cases, report_cases, target_cases
from fuzz_cases_out import can_mount, output_cases, unmount_under
from fuzz_harness import Case, Worker, run_case

CASES: list[Case] = [*container_cases(), *checkpoint_cases(), *malicious_cases(), *data_cases(), *recipe_cases(),
                     *target_cases(), *report_cases(), *arg_cases(), *output_cases()]


def _param(case: Case) -> object:
    return pytest.param(case, id=case.id, marks=() if case.fast else (pytest.mark.slow,))


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    corpus.set_root(tmp_path_factory.mktemp("fuzz-corpus"))
    w = Worker()
    yield w
    w.close()


def test_the_suite_is_large_and_covers_every_family() -> None:
    assert len(CASES) >= 300, len(CASES)
    assert len({c.id for c in CASES}) == len(CASES)
    families = {c.id.split("-")[0] for c in CASES}
    assert {"container", "checkpoint", "evil", "data", "calib", "recipe", "target", "report", "args",
            "out"} <= families
    fast = {c.id.split("-")[0] for c in CASES if c.fast}
    assert families == fast  # the fast subset samples every family


@pytest.mark.skipif(not can_mount(), reason="read-only and full file systems need a tmpfs mount (root)")
def test_file_system_cases_are_present() -> None:
    assert {"out-read-only-fs", "out-full-fs"} <= {c.id for c in CASES}


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_fuzz(case: Case, worker: Worker, tmp_path: Path) -> None:
    try:
        run_case(worker, case, tmp_path)
    finally:
        unmount_under(tmp_path)
