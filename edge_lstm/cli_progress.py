"""How the CLI shows progress on stderr: rich bars with counts on a terminal, one line per step otherwise.

:func:`progress_for` picks the :class:`~edge_lstm.progress.Progress` for a command:
silent with ``--json`` (stdout holds the JSON, stderr stays quiet), rich bars when
stderr is a terminal (``validating ━━━━━━ artifact 3 of 14 ... 0:00:05``, with a
nested bar for the windows or runs of the current artifact), and otherwise one line
per step (``[3/14] validating model.fp16.onnx``), as ``edge-lstm train`` prints one
line per epoch. :func:`columns` are the bar columns every command uses (training's
epoch bars too), so all of them look alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.console import Console

from edge_lstm.progress import Progress


def columns() -> tuple[Any, ...]:
    """The columns of every progress bar: what, bar, count with its unit, the current stage, time elapsed."""
    from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
    from rich.table import Column

    fixed = Column(no_wrap=True)
    return (TextColumn("{task.description}", markup=False, table_column=fixed), BarColumn(bar_width=24),
            TextColumn("{task.fields[count]}", table_column=Column(no_wrap=True)),
            TextColumn("{task.fields[info]}", style="dim", markup=False,
                       table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1)),
            TimeElapsedColumn())


def count_text(done: int, total: int, unit: str, current: int | None = None) -> str:
    """``artifact 3 of 14`` while item 3 runs, ``120 of 256 windows`` for units done."""
    if current is not None:
        return f"{unit} {current} of {total}"
    return f"{done} of {total} {unit}{'' if total == 1 else 's'}"


@dataclass
class _Task:
    label: str
    total: int
    unit: str
    done: int = 0
    current: int = 0  # the item running now (0: counted by units, not items)
    ident: Any = None


class RichProgress(Progress):
    """Bars on a terminal; nested tasks disappear when done, top-level ones stay as a record."""

    def __init__(self, console: Console) -> None:
        from rich.progress import Progress as Bars

        self.bars = Bars(*columns(), console=console)
        self.stack: list[_Task] = []
        self.status: Any = None

    def __enter__(self) -> RichProgress:
        self.bars.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.status is not None:
            self.bars.remove_task(self.status)
        self.bars.__exit__(*exc)

    def __call__(self, message: str) -> None:
        if self.stack:
            self.bars.update(self.stack[-1].ident, info=message)
            return
        if self.status is None:
            self.status = self.bars.add_task(message, total=None, count="", info="")
        else:
            self.bars.update(self.status, description=message)

    def begin(self, label: str, total: int, unit: str) -> None:
        if not self.stack and self.status is not None:  # the stage line gives way to the task's bar
            self.bars.remove_task(self.status)
            self.status = None
        t = _Task(label, max(total, 0), unit)
        t.ident = self.bars.add_task(label, total=max(total, 1), count=count_text(0, t.total, unit), info="")
        self.stack.append(t)

    def item(self, label: str) -> None:
        if not self.stack:
            self(label)
            return
        t = self.stack[-1]
        t.current += 1
        t.done = t.current - 1
        self.bars.update(t.ident, completed=t.done, count=count_text(t.done, t.total, t.unit, t.current),
                         info=label)

    def advance(self, n: int = 1) -> None:
        if self.stack:
            t = self.stack[-1]
            t.done += n
            self.bars.update(t.ident, completed=t.done, count=count_text(t.done, t.total, t.unit))

    def end(self) -> None:
        if not self.stack:
            return
        t = self.stack.pop()
        if self.stack:  # a nested task (the windows of one artifact) leaves no trace
            self.bars.remove_task(t.ident)
            return
        done = t.total if t.current else t.done
        self.bars.update(t.ident, completed=max(t.total, 1), count=count_text(done, done, t.unit), info="")


class LineProgress(Progress):
    """One line per step on a stream that is not a terminal (a CI log): items and top-level stages."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.stack: list[_Task] = []

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stack.clear()

    def _line(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False, soft_wrap=True)

    def __call__(self, message: str) -> None:
        if not any(t.current for t in self.stack):  # inside an item its own line said what runs
            self._line(f"· {message}")

    def begin(self, label: str, total: int, unit: str) -> None:
        if not self.stack:
            self._line(f"{label}: {count_text(0, total, unit).split(' of ')[1]}")
        self.stack.append(_Task(label, total, unit))

    def item(self, label: str) -> None:
        if not self.stack:
            self(label)
            return
        t = self.stack[-1]
        t.current += 1
        width = len(str(t.total))
        self._line(f"{'  ' * (len(self.stack) - 1)}[{t.current:>{width}}/{t.total}] {label}")

    def advance(self, n: int = 1) -> None:
        if self.stack:
            self.stack[-1].done += n

    def end(self) -> None:
        if self.stack:
            self.stack.pop()


class _Quiet(Progress):
    def __enter__(self) -> _Quiet:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


def progress_for(quiet: bool, console: Console) -> Any:
    """A context manager yielding the command's :class:`Progress`: silent, rich bars, or lines."""
    if quiet:
        return _Quiet()
    if console.is_terminal:
        return RichProgress(console)
    return LineProgress(console)
