"""Timing loops shared by the benchmarks: p50 of a callable, and interleaved rounds over several.

numpy only, so a worker process in a peer converter's venv (benchmarks/peers/worker.py) times with the
same loop as the in-process benchmarks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np

T = TypeVar("T")

ROUNDS = 5


def p50(fn: Callable[[], object], runs: int, warmup: int = 20) -> float:
    """Median seconds per call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def interleaved(calls: dict[str, T], runs: int, measure: Callable[[T, int, int], float] = p50,  # type: ignore[assignment]
                rounds: int = ROUNDS) -> dict[str, float]:
    """Median seconds per call of each entry, measured in ``rounds`` interleaved rounds.

    The host is shared, so load drifts between artifacts measured one after the
    other; interleaving them round by round exposes all of them to the same
    drift. ``measure(entry, runs, warmup)`` gives one round's p50 of an entry (by
    default the entry is a callable timed with :func:`p50`; peers.py passes worker
    processes). Returns each entry's median over rounds of its per-round p50, and
    under ``"<name>/ort"`` the median over rounds of its per-round ratio to "ort".
    """
    per: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(rounds):
        for k, fn in calls.items():
            per[k].append(measure(fn, max(10, runs // rounds), 10))
    out = {k: float(np.median(v)) for k, v in per.items()}
    ort = np.array(per["ort"])
    out.update({f"{k}/ort": float(np.median(np.array(v) / ort)) for k, v in per.items()})
    return out
