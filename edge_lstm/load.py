"""Load ``model.pt`` into a :class:`LoadedModel`, safe by default.

The format is detected by content, never by file name, and the file is opened
and classified by edge-lstm itself before torch reads it (:func:`inspect`:
:mod:`edge_lstm.archive` verifies the zip, :mod:`edge_lstm.containers` checks
every member and pickle against an allow-list):

1. edge-lstm's own checkpoint (a ``torch.save``d dict, loaded ``weights_only=True``
   and validated against :mod:`edge_lstm.checkpoint`'s schema);
2. TorchScript (``torch.jit.save``), its code and graph limited to tensor operators;
3. ``torch.export`` ExportedProgram (``.pt2``), which carries example input shapes;
4. a whole pickled ``nn.Module``, only with ``trust_pickle=True``, since unpickling runs code.

Anything only ``trust_pickle=True`` may load is named in the error. Names taken
from the file pass through :func:`edge_lstm.outputs.safe_name`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_lstm import archs, checkpoint
from edge_lstm.archive import open_zip
from edge_lstm.containers import Inspection, audit_torchscript_graph, inspect_file
from edge_lstm.errors import InputFileError, ShapeError, UnsupportedModel
from edge_lstm.outputs import safe_name
from edge_lstm.spec import InputSpec, TensorSpec

if TYPE_CHECKING:
    import torch
    from torch import nn

CHECKPOINT_FORMAT = "edge-lstm-checkpoint"
CHECKPOINT_VERSION = 1


@dataclass
class LoadedModel:
    """A model ready to export: the module in eval mode, its I/O specs and metadata."""

    module: nn.Module
    format: str  # "checkpoint" | "torchscript" | "exported-program" | "pickle"
    name: str
    inputs: InputSpec
    outputs: tuple[TensorSpec, ...]
    arch: str | None = None
    config: archs.ArchConfig | None = None
    normalization: dict[str, Any] | None = None
    task: str = "unknown"  # "forecast" | "classify" | "unknown"
    metadata: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None
    #: facts about how the model is exported that every artifact's notes carry (e.g. a window other than the
    #: checkpoint's recorded one)
    notes: list[str] = field(default_factory=list)

    @property
    def output_names(self) -> list[str]:
        """Output names in order."""
        return [t.name for t in self.outputs]

    @property
    def has_state_io(self) -> bool:
        """True when ``forward`` takes and returns the recurrent state explicitly."""
        if self.config is not None:
            return self.config.state_io
        return len(self.inputs.inputs) > 1 and len(self.outputs) == len(self.inputs.inputs)

    def summary(self) -> dict[str, Any]:
        """JSON-ready description (format, layers, parameters, specs)."""
        params = sum(int(p.numel()) for p in self.module.parameters())
        return {
            "name": self.name,
            "format": self.format,
            "arch": self.arch,
            "config": self.config.to_dict() if self.config else None,
            "task": self.task,
            "parameters": params,
            "layers": describe_layers(self.module),
            "inputs": self.inputs.to_dict(),
            "outputs": [o.to_dict() for o in self.outputs],
            "normalization": self.normalization,
        }


def describe_layers(module: nn.Module) -> list[str]:
    """One line per leaf layer, e.g. ``rnn: LSTM(1, 64, num_layers=2, batch_first=True)``."""
    lines = []
    for name, sub in module.named_modules():
        if name and not list(sub.children()):
            text = repr(sub) if hasattr(sub, "extra_repr") else type(sub).__name__
            if text.startswith("RecursiveScriptModule"):
                text = getattr(sub, "original_name", text)
            lines.append(f"{name}: {text}")
    return lines


def save_checkpoint(
    path: str | Path,
    module: nn.Module,
    arch: str,
    config: archs.ArchConfig,
    window: int,
    normalization: dict[str, Any] | None = None,
    task: str = "forecast",
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write an edge-lstm checkpoint atomically (temp file, then rename; a full disk is exit code 2)."""
    import torch

    spec = _arch_input_spec(config, window)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "arch": arch,
        "config": config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
        "input_spec": spec.to_dict(),
        "normalization": normalization,
        "task": task,
        "metadata": metadata or {},
    }
    import io

    from edge_lstm.outputs import write_files_atomic

    buf = io.BytesIO()
    torch.save(payload, buf)
    path = Path(path)
    write_files_atomic({path: buf.getvalue()})  # a temporary name, then a rename; nothing left on failure
    return path


def _arch_input_spec(config: archs.ArchConfig, window: int) -> InputSpec:
    shapes = archs.input_shapes(config, window, batch=1)
    specs = []
    for i, (name, shape) in enumerate(zip(archs.input_names(config), shapes, strict=True)):
        batch_axis = (0 if config.batch_first else 1) if i == 0 else 1
        specs.append(TensorSpec(name, tuple(shape)).with_batch_axis(batch_axis))
    return InputSpec(tuple(specs))


def sniff_format(path: Path) -> str:
    """Tell the model format from the file's bytes (see :func:`inspect`)."""
    return inspect(path).format


MAX_MODEL_BYTES = 4 << 30


def inspect(path: Path) -> Inspection:
    """Open and classify a model file ourselves (:mod:`edge_lstm.containers`), before torch reads it."""
    try:
        if not path.exists() and not path.is_symlink():
            raise InputFileError(f"Model file '{path}' does not exist.", "Check the path.")
        if path.is_dir():
            raise InputFileError(f"'{path}' is a directory, not a model file.")
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(4)
    except OSError as e:
        raise InputFileError(f"Cannot read '{path}': {e.strerror or e}.") from e
    if size > MAX_MODEL_BYTES:
        raise InputFileError(f"'{path}' is {size:,} bytes, larger than the {MAX_MODEL_BYTES:,} accepted.")
    if head[:2] == b"PK":
        with open_zip(path, f"'{path}'") as z:
            return inspect_file(None, z, f"'{path}'")
    if head[:1] == b"\x80":
        return inspect_file(path.read_bytes(), None, f"'{path}'")  # legacy (non-zip) torch.save pickle
    if head[:1] == b"\x08":
        raise InputFileError(
            f"'{path}' looks like an ONNX model; edge-lstm exports from PyTorch models.",
            "Pass the PyTorch model.pt it came from (an edge-lstm checkpoint, TorchScript, .pt2 or pickled module); "
            "to measure an ONNX or TFLite file you already have, use `edge-lstm profile`.",
        )
    raise InputFileError(
        f"'{path}' is not a PyTorch model (unrecognised content).",
        "edge-lstm reads edge-lstm checkpoints, TorchScript, torch.export .pt2 and pickled nn.Module files.",
    )


def _refuse_untrusted(path: Path, verdict: Inspection) -> None:
    what = {"torch-save": "holds pickled Python objects (e.g. a whole nn.Module saved with torch.save(model))",
            "torchscript": "is a TorchScript archive whose code reaches outside tensors",
            "exported-program": "is a torch.export archive with pickled parts or code"}[verdict.format]
    shown = "; ".join(verdict.needs_trust[:3]) + (" ..." if len(verdict.needs_trust) > 3 else "")
    raise InputFileError(
        f"'{path}' {what} ({shown}); loading it would run code from the file.",
        "If you trust the file, pass --trust-pickle (trust_pickle=True), with the model's classes importable "
        "(set PYTHONPATH). Safer: save a TorchScript, torch.export .pt2 or edge-lstm checkpoint.",
    )


def load(
    path: str | Path,
    input_shapes: list[tuple[int, ...]] | None = None,
    trust_pickle: bool = False,
    input_dtypes: Sequence[str] = (),
) -> LoadedModel:
    """Load a model file; ``input_shapes`` overrides or supplies the input shapes.

    Inputs that reach an embedding are integer ids (:mod:`edge_lstm.id_inputs`), found from the graph;
    ``input_dtypes`` (one per input) says it where the graph cannot.
    """
    path = Path(path)
    verdict = inspect(path)
    if verdict.needs_trust and not trust_pickle:
        _refuse_untrusted(path, verdict)
    if verdict.format == "torchscript":
        model = _load_torchscript(path, trust_pickle)
    elif verdict.format == "exported-program":
        model = _load_exported(path)
    else:
        model = _load_torch_save(path, bool(verdict.needs_trust))
    if input_shapes:
        recorded = model.inputs.inputs[0].steps if model.format == "checkpoint" and model.inputs.inputs else None
        model.inputs = _override_shapes(model.inputs, input_shapes, path)
        given = model.inputs.inputs[0].steps if model.inputs.inputs else None
        if recorded is not None and given is not None and given != recorded:
            model.notes.append(
                f"window {given} steps (--input-shape), not the {recorded} the checkpoint records: validated on "
                f"{given}-step windows (allowed: an LSTM takes windows of any length)")
    if not model.inputs.inputs:
        raise ShapeError(
            f"The input shapes of '{path}' ({model.format}) are not stored in the file.",
            "Pass them with --input-shape, e.g. --input-shape 1x96x1 (once per forward() input).",
        )
    from edge_lstm.id_inputs import mark_ids

    mark_ids(model, input_dtypes)
    if model.format == "torchscript":
        from edge_lstm.checks import check_torchscript

        check_torchscript(model.module, model.inputs.inputs)  # before anything runs it at a rank it cannot take
    model.outputs = probe_outputs(model)
    if model.format != "checkpoint":
        mark_batch_axes(model)
    return model


def _override_shapes(spec: InputSpec, shapes: list[tuple[int, ...]], path: Path) -> InputSpec:
    old = spec.inputs
    if old and len(shapes) != len(old):
        raise ShapeError(
            f"{len(shapes)} --input-shape given, but the model takes {len(old)} inputs ({', '.join(spec.names)}).",
            "Pass --input-shape once per forward() input, in order.",
        )
    out = []
    for i, shape in enumerate(shapes):
        if i < len(old):
            prev = old[i]
            if len(prev.shape) != len(shape):
                raise ShapeError(
                    f"--input-shape {'x'.join(map(str, shape))} has rank {len(shape)}, "
                    f"but input '{prev.name}' has rank {len(prev.shape)} {tuple(prev.shape)}.",
                )
            dims = tuple("batch" if isinstance(p, str) else s for p, s in zip(prev.shape, shape, strict=True))
            out.append(prev.with_shape(dims))
        else:
            name = "x" if i == 0 else f"input_{i}"
            dims2: tuple[int | str, ...] = tuple(shape)
            out.append(TensorSpec(name, dims2))
    return InputSpec(tuple(out))


def example_inputs(spec: InputSpec, batch: int = 1, seed: int = 0) -> list[torch.Tensor]:
    """Seeded random tensors that fit ``spec`` (valid ids for integer inputs)."""
    import torch

    from edge_lstm.id_inputs import id_bound

    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, id_bound(t), t.concrete(batch), generator=gen, dtype=getattr(torch, t.dtype))
            if not t.dtype.startswith("float") else torch.randn(*t.concrete(batch), generator=gen)
            for t in spec.inputs]


def probe_outputs(model: LoadedModel) -> tuple[TensorSpec, ...]:
    """Run the model once on zeros to learn its outputs; a rejected shape is a ShapeError."""
    import torch

    xs = [torch.zeros(*t.concrete(1), dtype=getattr(torch, t.dtype, torch.float32)) for t in model.inputs.inputs]
    seen: list[tuple[str, Any, tuple[int, ...]]] = []
    try:
        with torch.no_grad(), _first_recurrent_call(model.module, seen):
            out = model.module(*xs)
    except Exception as e:  # the model's own error says what it wanted
        _raise_feature_mismatch(model, seen, e)
        shapes = ", ".join("x".join(map(str, t.concrete(1))) for t in model.inputs.inputs)
        raise ShapeError(
            f"The model rejects input shape(s) {shapes}: {_model_error(e)}",
            "Check --input-shape against what forward() expects (batch, time, features for batch_first).",
        ) from e
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    if not all(isinstance(o, torch.Tensor) for o in outs):
        raise UnsupportedModel("The model returns something other than tensors; export needs tensor outputs.")
    names = model.output_names if len(model.outputs) == len(outs) else (
        archs.output_names(model.config) if model.config else [f"output_{i}" if i else "y" for i in range(len(outs))]
    )
    if model.config is None:  # batch axes of other models are found by probing (mark_batch_axes)
        return tuple(TensorSpec(n, tuple(int(d) for d in o.shape)) for n, o in zip(names, outs, strict=True))
    return tuple(TensorSpec(n, tuple(int(d) for d in o.shape)).with_batch_axis(_out_batch_axis(model, i))
                 for i, (n, o) in enumerate(zip(names, outs, strict=True)))


@contextlib.contextmanager
def _first_recurrent_call(module: Any, seen: list[tuple[str, Any, tuple[int, ...]]]) -> Iterator[None]:
    """Record the first recurrent layer (``nn.LSTM``/``GRU``/``RNN``) an eager module calls, with its input's shape
    (TorchScript modules take no hooks: their feature check is :func:`edge_lstm.checks.check_layers`'s)."""
    import torch

    if not isinstance(module, torch.nn.Module) or isinstance(module, torch.jit.ScriptModule):
        yield
        return

    def hook(name: str) -> Any:
        def record(layer: Any, args: tuple[Any, ...]) -> None:
            if not seen and args and isinstance(args[0], torch.Tensor):
                seen.append((name, layer, tuple(int(d) for d in args[0].shape)))
        return record

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in module.named_modules()
               if isinstance(m, torch.nn.RNNBase)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _raise_feature_mismatch(model: LoadedModel, seen: list[tuple[str, Any, tuple[int, ...]]],
                            e: BaseException) -> None:
    """A checkpoint's or pickled module's first recurrent layer fed the wrong feature count straight from the input:
    the same :class:`ShapeError` as :func:`edge_lstm.checks.check_layers` gives a TorchScript model."""
    if not seen or not model.inputs.inputs:
        return
    name, layer, got_shape = seen[0]
    spec = model.inputs.inputs[0]
    shape = spec.concrete(1)
    want, got = int(layer.input_size), got_shape[-1] if got_shape else None
    if got is None or got == want or not shape or shape[-1] != got:
        return
    from edge_lstm.checks import feature_mismatch

    op = {"LSTM": "LSTM", "GRU": "GRU"}.get(type(layer).__name__, "RNN")
    raise feature_mismatch(spec, op, name or op, want, got) from e


def _model_error(e: BaseException) -> str:
    """The model's own complaint: TorchScript puts it last, after the traceback of where it was traced."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    last = next((ln for ln in reversed(lines) if re.match(r"^[A-Za-z_.]*(Error|Exception): ", ln)), None)
    return (last.split(": ", 1)[1] if last and len(lines) > 1 else (lines or [type(e).__name__])[0])[:400]


def _out_batch_axis(model: LoadedModel, index: int) -> int:
    if index > 0:
        return 1  # state outputs: (layers*dirs, batch, hidden)
    cfg = model.config
    if cfg is not None and cfg.all_steps and not cfg.batch_first:
        return 1
    return 0


def _load_torch_save(path: Path, pickled: bool) -> LoadedModel:
    """A ``torch.save`` file: ``weights_only`` unless :func:`inspect` found objects only trust may load."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=not pickled)
    except (AttributeError, ModuleNotFoundError, ImportError) as e:
        raise InputFileError(
            f"'{path}' needs a class that is not importable: {e}.",
            "Put the module that defines the model's classes on PYTHONPATH.",
        ) from e
    except Exception as e:  # torch raises RuntimeError, UnpicklingError, EOFError ... with long traces
        raise InputFileError(
            f"'{path}' could not be read as a PyTorch file: {_first_line(e)}",
            "The file may be truncated or corrupted; save the model again.",
        ) from e
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        return _from_checkpoint(obj, path)
    if isinstance(obj, torch.nn.Module):
        obj.eval()
        return LoadedModel(obj, "pickle", safe_name(path.stem.split(".")[0]), InputSpec(()), (), source=path)
    if isinstance(obj, dict):
        raise InputFileError(
            f"'{path}' holds a dict that is not an edge-lstm checkpoint (a bare state_dict has no architecture).",
            "Save with edge_lstm.load.save_checkpoint, torch.jit.save or torch.export.save.",
        )
    raise InputFileError(f"'{path}' holds a {type(obj).__name__}, not a model.")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:300]


def _from_checkpoint(obj: dict[str, Any], path: Path) -> LoadedModel:
    import torch

    if obj.get("version") != CHECKPOINT_VERSION:
        raise InputFileError(
            f"Checkpoint version {obj.get('version')!r} is not supported (expected {CHECKPOINT_VERSION})."
        )
    config = checkpoint.validate(obj, str(path))
    state = obj["state_dict"]
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise InputFileError(f"Checkpoint '{path}': state_dict entry {key!r} is not a tensor.")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise InputFileError(f"Checkpoint '{path}': state_dict.{key} holds NaN or infinite weights.",
                                 "Retrain or fix the weights; a model with non-finite weights cannot be validated.")
    try:
        module = archs.build(str(obj["arch"]), config)
        module.load_state_dict(state)
    except (KeyError, RuntimeError, TypeError, ValueError) as e:
        raise InputFileError(f"Checkpoint '{path}' does not match its architecture: {_first_line(e)}.") from e
    spec = InputSpec.from_dict(list(obj["input_spec"]))
    module.eval()
    meta = dict(obj.get("metadata") or {})
    return LoadedModel(
        module, "checkpoint", safe_name(meta.get("name") or path.stem.split(".")[0]), spec, (),
        arch=str(obj["arch"]), config=config, normalization=obj.get("normalization"),
        task=str(obj.get("task", "unknown")), metadata=meta, source=path,
    )


def _load_torchscript(path: Path, trusted: bool) -> LoadedModel:
    import torch

    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as e:  # torch raises RuntimeError subclasses with long C++ traces
        raise InputFileError(
            f"'{path}' is a TorchScript archive that could not be loaded: {_first_line(e)}",
            "The file may be truncated or corrupted; save it again with torch.jit.save.",
        ) from e
    if not trusted:  # before forward() ever runs: the graph may reach only tensor operators
        audit_torchscript_graph(module, f"'{path}'")
    module.eval()
    return LoadedModel(module, "torchscript", safe_name(path.stem.split(".")[0]), InputSpec(()), (), source=path)


def _load_exported(path: Path) -> LoadedModel:
    import logging

    import torch

    quiet = logging.getLogger("torch.export")  # it logs its own tracebacks before raising; ours is the message
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        ep = torch.export.load(str(path))
        module = _EvalOnly(ep.module())
    except Exception as e:
        raise InputFileError(
            f"'{path}' is a torch.export archive that could not be loaded: {_first_line(e)}",
            "The file may be truncated or corrupted; save it again with torch.export.save.",
        ) from e
    finally:
        quiet.setLevel(level)
    from edge_lstm.id_inputs import from_exported

    args = ep.example_inputs[0] if ep.example_inputs else ()
    names = [s.arg.name for s in ep.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    ids = from_exported(ep)  # an input the program hands to an embedding: its table's rows
    specs = tuple(
        TensorSpec(safe_name(names[i], f"input_{i}") if i < len(names) else f"input_{i}",
                   tuple(int(d) for d in a.shape), str(a.dtype).removeprefix("torch."),
                   ids.get(names[i]) if i < len(names) and not a.is_floating_point() else None)
        for i, a in enumerate(args) if isinstance(a, torch.Tensor)
    )
    return LoadedModel(module, "exported-program", safe_name(path.stem.split(".")[0]), InputSpec(specs), (),
                       source=path)


def _eval_only_cls() -> type:
    from torch import nn

    class EvalOnly(nn.Module):
        """Wraps an ExportedProgram's module, whose ``train()`` raises, for tracing exporters."""

        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def train(self, mode: bool = True) -> EvalOnly:
            return self  # an exported program is frozen in inference mode

        def forward(self, *args: Any) -> Any:
            return self.inner(*args)

    return EvalOnly


def _EvalOnly(inner: nn.Module) -> nn.Module:  # noqa: N802 - reads like a class at call sites
    return _eval_only_cls()(inner)  # type: ignore[no-any-return]


def mark_batch_axes(model: LoadedModel) -> LoadedModel:
    """Find each input's batch axis by probing, for models whose file does not say.

    A window is repeated twice along a candidate axis; that axis is the batch
    axis when the model accepts it and returns the single-sample outputs twice.
    Inputs after the first (recurrent states) are tried on axis 1, the first on
    axes 0 then 1. Models that reject both keep static shapes.
    """
    import torch

    specs = model.inputs.inputs
    if not specs or any(t.is_dynamic for t in specs):
        return model
    xs = example_inputs(model.inputs, seed=7)
    with torch.no_grad():
        try:
            single = _as_list(model.module(*xs))
        except Exception:
            return model
        for axis in ((0, 1) if len(specs[0].shape) >= 2 else (0,)):
            axes = [axis] + [1] * (len(specs) - 1)
            out_axes = _batches_on(model, xs, axes, single)
            if out_axes is not None:
                model.inputs = InputSpec(tuple(t.with_batch_axis(ax) for t, ax in zip(specs, axes, strict=True)))
                model.outputs = tuple(o.with_batch_axis(ax) for o, ax in zip(model.outputs, out_axes, strict=True))
                return model
    return model  # static shapes, inputs and outputs alike


def _as_list(out: Any) -> list[Any]:
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _batches_on(model: LoadedModel, xs: list[torch.Tensor], axes: list[int], single: list[Any]) -> list[int] | None:
    """The outputs' batch axes when doubling the inputs along ``axes`` doubles the outputs; else None."""
    import torch

    try:
        doubled = [torch.cat([x, x], dim=a) if x.dim() > a else x for x, a in zip(xs, axes, strict=True)]
        outs = _as_list(model.module(*doubled))
    except Exception:
        return None
    found = []
    for o, s in zip(outs, single, strict=True):
        ax = next((a for a in range(s.dim()) if o.shape[a] == 2 * s.shape[a] and s.shape[a] == 1), None)
        if ax is None or not torch.allclose(o.narrow(ax, 0, 1), s, atol=1e-5) or not torch.allclose(
                o.narrow(ax, 1, 1), s, atol=1e-5):
            return None
        found.append(ax)
    return found
