"""A registry of small test models built in code, one per model kind the exporters cover."""

from __future__ import annotations

from pathlib import Path

import torch

from edge_lstm import archs, load

WINDOW = 12

KINDS: dict[str, archs.ArchConfig] = {
    "stacked": archs.ArchConfig(hidden=16, layers=2),
    "seq_first": archs.ArchConfig(hidden=16, layers=1, batch_first=False),
    "bidirectional": archs.ArchConfig(hidden=8, layers=2, bidirectional=True),
    "proj_size": archs.ArchConfig(hidden=16, layers=2, proj_size=6),
    "gru": archs.ArchConfig(cell="gru", hidden=16, layers=2),
    "dropout_layernorm_act": archs.ArchConfig(hidden=16, layers=2, dropout=0.3, layernorm=True, activation="tanh"),
    "all_steps": archs.ArchConfig(hidden=8, layers=1, n_features=3, n_outputs=2, all_steps=True),
    "state_io": archs.ArchConfig(hidden=16, layers=2, state_io=True),
    "gru_state_io_seq_first": archs.ArchConfig(cell="gru", hidden=8, batch_first=False, state_io=True),
}


def build(kind: str, seed: int = 0) -> tuple[torch.nn.Module, archs.ArchConfig]:
    """The module of ``kind`` with seeded weights, in eval mode."""
    torch.manual_seed(seed)
    cfg = KINDS[kind]
    return archs.build("forecaster", cfg).eval(), cfg


def write(kind: str, form: str, directory: Path) -> tuple[Path, list[tuple[int, ...]]]:
    """Save ``kind`` as ``form`` (checkpoint, torchscript, pt2, pickle); return the path and input shapes."""
    module, cfg = build(kind)
    shapes = archs.input_shapes(cfg, WINDOW)
    path = directory / f"{kind}.{form}.pt"
    if form == "checkpoint":
        load.save_checkpoint(path, module, "forecaster", cfg, WINDOW,
                             {"mean": [0.0] * cfg.n_features, "std": [1.0] * cfg.n_features}, "forecast")
    elif form == "torchscript":
        args = tuple(torch.randn(*s) for s in shapes)
        torch.jit.trace(module, args).save(str(path))
    elif form == "pt2":
        args = tuple(torch.randn(*s) for s in shapes)
        torch.export.save(torch.export.export(module, args), str(path))
    elif form == "pickle":
        torch.save(module, path)
    else:
        raise ValueError(form)
    return path, shapes
