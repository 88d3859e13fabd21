"""Small test models for the TFLite lowering, built in code, with their ONNX and PyTorch outputs.

Tolerance: fp32, atol = rtol = 1e-5; an element fails only when it exceeds
both. The windows here are short (12 steps), so 1e-5 holds; windows of
hundreds of steps accumulate more rounding and may need ~1e-4.
"""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from edge_lstm import archs, capture, load, streaming
from edge_lstm.load import LoadedModel

WINDOW = 12
ATOL = RTOL = 1e-5

#: name -> config; together they cover every model kind the ONNX capture exports
KINDS: dict[str, archs.ArchConfig] = {
    "stacked": archs.ArchConfig(n_features=3, hidden=16, layers=2),
    "seq_first": archs.ArchConfig(n_features=2, hidden=16, layers=2, batch_first=False),
    "bidirectional": archs.ArchConfig(n_features=2, hidden=8, layers=2, bidirectional=True),
    "bidirectional_seq_first": archs.ArchConfig(hidden=8, layers=1, bidirectional=True, batch_first=False),
    "gru": archs.ArchConfig(cell="gru", n_features=2, hidden=16, layers=2),
    "gru_bidirectional": archs.ArchConfig(cell="gru", hidden=8, layers=2, bidirectional=True),
    "layernorm_gelu": archs.ArchConfig(hidden=16, layers=2, layernorm=True, activation="gelu", n_outputs=3),
    "relu_head": archs.ArchConfig(hidden=16, layers=1, activation="relu", n_outputs=4),
    "tanh_head": archs.ArchConfig(hidden=16, layers=1, activation="tanh"),
    "sigmoid_head": archs.ArchConfig(hidden=16, layers=1, activation="sigmoid", layernorm=True),
    "all_steps": archs.ArchConfig(n_features=3, hidden=8, layers=2, n_outputs=2, all_steps=True),
    "state_io": archs.ArchConfig(hidden=16, layers=2, state_io=True),
    "gru_state_io_seq_first": archs.ArchConfig(cell="gru", hidden=8, layers=2, batch_first=False, state_io=True),
    "proj_size": archs.ArchConfig(hidden=16, layers=2, proj_size=6),
    "rnn": archs.ArchConfig(cell="rnn", n_features=2, hidden=16, layers=2),
    # stacks whose weights dwarf a loop body's ops: the loop takes several steps an iteration
    "stacked_wide": archs.ArchConfig(n_features=3, hidden=64, layers=2),
    "all_steps_wide": archs.ArchConfig(n_features=3, hidden=64, layers=2, n_outputs=2, all_steps=True),
    "gru_wide": archs.ArchConfig(cell="gru", n_features=2, hidden=96, layers=2),
    "rnn_bidirectional_all_steps": archs.ArchConfig(cell="rnn", hidden=8, layers=1, bidirectional=True,
                                                    all_steps=True),
    "rnn_state_io": archs.ArchConfig(cell="rnn", hidden=8, layers=2, state_io=True),
}

#: the reference forecaster of FACTS.md: 2 x LSTM(64), window 96, one feature
REFERENCE = archs.ArchConfig(hidden=64, layers=2)


@dataclass
class Case:
    """One saved test model: the loaded model and its whole-window ONNX."""

    name: str
    model: LoadedModel
    proto: onnx.ModelProto

    def feeds(self, seed: int = 0) -> dict[str, np.ndarray]:
        """Seeded random inputs (state inputs too)."""
        rng = np.random.default_rng(seed)
        return {t.name: rng.standard_normal(t.concrete(1)).astype(np.float32) for t in self.model.inputs.inputs}

    def reference(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """PyTorch's outputs for ``feeds``."""
        with torch.no_grad():
            out = self.model.module(*[torch.from_numpy(feeds[n]) for n in self.model.inputs.names])
        outs = [out] if isinstance(out, torch.Tensor) else list(out)
        return {n: o.numpy() for n, o in zip(self.model.output_names, outs, strict=True)}

    @property
    def param_bytes(self) -> int:
        """Float32 bytes of the module's parameters."""
        return 4 * sum(int(p.numel()) for p in self.model.module.parameters())


_DIR = Path(tempfile.mkdtemp(prefix="edge-lstm-tflite-tests-"))


@functools.cache
def case(name: str, window: int = WINDOW) -> Case:
    """The saved, reloaded and captured model ``name`` (cached for the session)."""
    cfg = REFERENCE if name == "reference" else KINDS[name]
    torch.manual_seed(0)
    module = archs.build("forecaster", cfg).eval()
    path = load.save_checkpoint(_DIR / f"{name}-{window}.pt", module, "forecaster", cfg, window)
    model = load.load(path)
    return Case(name, model, capture.to_onnx(model))


@dataclass
class StepCase:
    """The one-timestep streaming variant of a case: its ONNX graph and how to drive it."""

    name: str
    model: load.LoadedModel  #: the whole-window model it was derived from
    step: streaming.StreamingModel
    proto: onnx.ModelProto


@functools.cache
def streaming_case(name: str) -> StepCase:
    """The one-timestep streaming variant of ``name`` (derived from its captured graph)."""
    base = case(name)
    step = capture.streaming_model(base.model, base.proto)
    return StepCase(name + "-step", base.model, step, step.proto)


def assert_close(
    got: dict[str, np.ndarray], ref: dict[str, np.ndarray], atol: float = ATOL, rtol: float = RTOL
) -> None:
    """Every output present with the reference shape; an element fails only beyond both atol and rtol·|ref|."""
    assert set(ref) <= set(got), f"outputs {sorted(got)} lack {sorted(set(ref) - set(got))}"
    for name, want in ref.items():
        have = np.asarray(got[name]).reshape(want.shape)
        err = np.abs(have - want)
        bad = (err > atol) & (err > rtol * np.abs(want))
        assert not bad.any(), f"{name}: {int(bad.sum())} elements off, max abs error {err.max():.3g}"
