"""What the user asked an export for beyond the recipe: :class:`ExportOptions`.

A low layer (the pipeline's helpers, :mod:`edge_lstm.produce` among them, read the options without importing the
orchestrator, :mod:`edge_lstm.pipeline`, which re-exports it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from edge_lstm.recipes import Recipe, load_recipe

if TYPE_CHECKING:
    from edge_lstm.targets import Target


@dataclass(frozen=True, kw_only=True)
class ExportOptions:
    """What the user asked for beyond the recipe (keyword arguments only: there are too many to keep in order)."""

    output_dir: Path
    recipe: Recipe = field(default_factory=load_recipe)
    streaming: bool = False
    data: Path | None = None
    calib: str | None = None  # a CSV/NPY path, or "random"
    io: str = "float"  # "float" | "int8" for full-integer TFLite
    input_shapes: tuple[tuple[int, ...], ...] = ()
    trust_pickle: bool = False
    force: bool = False
    profile: bool = False  # measure every artifact (fresh process each) into the report
    target: str | Target | None = None  # device target (name, TOML path or loaded): estimates, budgets (exit 4)
    prove_on: str | None = None  # "arm64" (the emulated device) or a --remote spec: validate there too
    prove_python: str = "python3"  # the Python on a real --prove-on device
    ssh_config: str | None = None  # ssh config file (-F) for a real --prove-on device
    bundle: bool = False  # also write <name>.bundle.zip of the artifacts that passed (edge_lstm.bundle)
    firmware: bool = False  # also write fw/ (edge_lstm.firmware): TFLite Micro C arrays, dependency-free C
    units: str | None = None  # the forecast target's units, for the report (default: the checkpoint's metadata)
    html: bool = True  # write report.html (tuning trials exported to a temporary directory skip it)
    input_dtypes: tuple[str, ...] = ()  # per input ("int64" for ids) where the graph does not say (edge_lstm.id_inputs)
