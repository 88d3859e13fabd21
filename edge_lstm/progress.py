"""Progress of long work: stage messages, and counted tasks (artifact k of n, window k of N, run k of R).

Long work takes a ``say`` callable and calls ``say("capturing ONNX")`` for each stage.
A :class:`Progress` is such a callable that can also count: :func:`task` opens a
counted task on it (nested inside any task already open), whose items or ticks the
CLI draws as bars with counts, or as one line per step when stderr is not a terminal.
Any other callable (a plain function, or nothing) gets the stage messages only, so
code written for ``Callable[[str], None]`` (the firmware builder, the emulated device)
keeps working unchanged.

This module imports nothing beyond the standard library: device-side commands use it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

Say = Callable[[str], None]


class Progress:
    """A stage-message callable that can also count; this base class is silent (the Python API's default)."""

    def __call__(self, message: str) -> None:
        """A stage of the work (shown beside the innermost open task)."""

    def begin(self, label: str, total: int, unit: str) -> None:
        """A counted task of ``total`` ``unit``\\ s begins, nested inside the open one."""

    def item(self, label: str) -> None:
        """The next item of the innermost task begins (``artifact 3 of 14: validating ...``)."""

    def advance(self, n: int = 1) -> None:
        """``n`` more units of the innermost task are done (``120 of 256 windows``)."""

    def end(self) -> None:
        """The innermost task is done."""


def silent(_message: str) -> None:
    """A ``say`` that says nothing."""


class Counter:
    """The handle :func:`task` yields: start the next item, or count units done."""

    def __init__(self, say: Say, counting: bool) -> None:
        self._say, self._counting = say, counting

    def item(self, label: str) -> None:
        """The next item begins; without counting, ``label`` is a stage message."""
        if self._counting:
            self._say.item(label)  # type: ignore[attr-defined]
        else:
            self._say(label)

    def tick(self, n: int = 1) -> None:
        """``n`` more units done (nothing without counting)."""
        if self._counting:
            self._say.advance(n)  # type: ignore[attr-defined]


@contextlib.contextmanager
def task(say: Say | None, label: str, total: int, unit: str) -> Iterator[Counter]:
    """A counted task on ``say`` for the duration of the block; a plain ``say`` hears only item labels."""
    target = say or silent
    if not isinstance(target, Progress):
        yield Counter(target, False)
        return
    target.begin(label, total, unit)
    try:
        yield Counter(target, True)
    finally:
        target.end()


def item(say: Say | None, label: str) -> None:
    """The next item of the innermost open task on ``say`` (a stage message when ``say`` cannot count)."""
    if isinstance(say, Progress):
        say.item(label)
    elif say is not None:
        say(label)


def ticker(say: Say | None) -> Callable[[int], None] | None:
    """``advance`` of the innermost open task on ``say``, or None when ``say`` cannot count."""
    return say.advance if isinstance(say, Progress) else None
