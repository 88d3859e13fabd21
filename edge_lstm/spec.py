"""Frozen value types shared by every layer: tensor specs, precisions, tolerances."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Union

from edge_lstm.errors import ShapeError

Dim = Union[int, str]  # noqa: UP007 - evaluated at import, and the device side runs on Python 3.9
#: (a str names a dynamic axis, e.g. "batch")


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape and dtype of one model input or output.

    ``shape`` holds ints for static axes and strings for dynamic ones
    (``("batch", 96, 1)``). ``vocab`` is set for integer id inputs (an embedding's
    indices): the valid ids are ``0 .. vocab - 1`` (:mod:`edge_lstm.id_inputs`).
    """

    name: str
    shape: tuple[Dim, ...]
    dtype: str = "float32"
    vocab: int | None = None

    def concrete(self, batch: int = 1) -> tuple[int, ...]:
        """The shape with every dynamic axis set to ``batch``."""
        return tuple(d if isinstance(d, int) else batch for d in self.shape)

    def with_shape(self, shape: tuple[Dim, ...]) -> TensorSpec:
        """A copy with another shape."""
        return replace(self, shape=shape)

    # -- layout: where the batch and time axes are, how many features a step has --------------------------------

    @property
    def dynamic_axes(self) -> dict[int, str]:
        """The dynamic axes and their names (``{0: "batch"}`` for ``("batch", 96, 1)``)."""
        return {a: d for a, d in enumerate(self.shape) if isinstance(d, str)}

    @property
    def is_dynamic(self) -> bool:
        """True when some axis is dynamic."""
        return any(isinstance(d, str) for d in self.shape)

    @property
    def is_ids(self) -> bool:
        """True for an integer id input (an embedding's indices: ``(batch, time)`` token or label ids)."""
        return not self.dtype.startswith("float")

    @property
    def batch_axis(self) -> int | None:
        """The batch axis: the first dynamic axis; with static shapes (a TFLite file's), the first axis of
        size 1 (axis 1 of a ``(time, 1, features)`` input); None when there is neither."""
        marked = next((a for a, d in enumerate(self.shape) if isinstance(d, str)), None)
        return marked if marked is not None else next((a for a, d in enumerate(self.shape) if d == 1), None)

    @property
    def seq_first(self) -> bool:
        """True for a ``(time, batch, features)`` input: rank 3 with the batch axis in the middle."""
        return len(self.shape) == 3 and self.batch_axis == 1

    @property
    def time_axis(self) -> int:
        """The time axis of a sequence input: 0 when :attr:`seq_first`, else 1."""
        return 0 if self.seq_first else 1

    @property
    def steps(self) -> int:
        """Time steps per window: the time axis's length (1 for an input that is not a sequence)."""
        shape = self.concrete(1)
        if (self.is_ids and len(shape) == 2) or len(shape) == 3:
            return int(shape[self.time_axis])
        return 1

    @property
    def features(self) -> int:
        """Values per time step: the last axis of a sequence (1 for ids, one per step), else every element."""
        shape = self.concrete(1)
        if self.is_ids and len(shape) == 2:
            return 1
        if len(shape) == 3:
            return int(shape[2])
        total = 1
        for d in shape:
            total *= d
        return total

    @property
    def window_shape(self) -> tuple[int, ...]:
        """The shape of one sample: :meth:`concrete` without the batch axis."""
        batch = self.batch_axis
        return tuple(d for a, d in enumerate(self.concrete(1)) if a != batch)

    def with_batch_axis(self, axis: int, name: str = "batch") -> TensorSpec:
        """A copy whose axis ``axis`` is the dynamic axis ``name``."""
        return self.with_shape(tuple(name if a == axis else d for a, d in enumerate(self.shape)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        d: dict[str, Any] = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        if self.vocab is not None:
            d["vocab"] = self.vocab
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TensorSpec:
        """Inverse of :meth:`to_dict`."""
        vocab = d.get("vocab")
        return cls(str(d["name"]), tuple(d["shape"]), str(d.get("dtype", "float32")),
                   int(vocab) if vocab is not None else None)

    def __str__(self) -> str:
        ids = f" (ids 0-{self.vocab - 1})" if self.vocab else ""
        return f"{self.name}: {self.dtype}[{'x'.join(str(d) for d in self.shape)}]{ids}"


@dataclass(frozen=True)
class InputSpec:
    """The inputs a model takes, in ``forward`` order."""

    inputs: tuple[TensorSpec, ...]

    @property
    def names(self) -> list[str]:
        """Input names in order."""
        return [t.name for t in self.inputs]

    def to_dict(self) -> list[dict[str, Any]]:
        """JSON-ready form."""
        return [t.to_dict() for t in self.inputs]

    @classmethod
    def from_dict(cls, items: list[dict[str, Any]]) -> InputSpec:
        """Inverse of :meth:`to_dict`."""
        return cls(tuple(TensorSpec.from_dict(d) for d in items))


_SHAPE_RE = re.compile(r"^[0-9]{1,12}(x[0-9]{1,12}){0,7}$", re.ASCII)
#: bounds on --input-shape: one axis, and the elements of one input (256 MiB of float32)
MAX_DIM = 1 << 24
MAX_ELEMENTS = 1 << 26
MAX_RANK = 8


def parse_shape(text: str) -> tuple[int, ...]:
    """Parse ``"1x96x1"`` into ``(1, 96, 1)``; raise :class:`ShapeError` on anything else.

    Sizes are bounded (each axis at most :data:`MAX_DIM`, an input at most :data:`MAX_ELEMENTS` elements,
    at most :data:`MAX_RANK` axes): a runtime handed a huge shape can crash rather than fail.
    """
    cleaned = text.strip().lower().replace(",", "x").replace(" ", "")
    if not _SHAPE_RE.match(cleaned):
        raise ShapeError(
            f"Cannot read input shape '{text}'.",
            f"Write shapes as positive integers joined by 'x', e.g. --input-shape 1x96x1 (at most {MAX_RANK} axes).",
        )
    dims = tuple(int(p) for p in cleaned.split("x"))
    if any(d <= 0 for d in dims):
        raise ShapeError(f"Input shape '{text}' has a zero dimension.", "Every dimension must be >= 1.")
    total = 1
    for d in dims:
        total *= d
    if max(dims) > MAX_DIM or total > MAX_ELEMENTS:
        raise ShapeError(f"Input shape '{text}' is too large ({total:,} elements).",
                         f"Each axis may be at most {MAX_DIM:,} and an input at most {MAX_ELEMENTS:,} elements.")
    return dims


if sys.version_info >= (3, 11):  # noqa: UP036 - devices run 3.10 (see below)
    from enum import StrEnum
else:  # Python 3.10, which devices still run: the same str()/format() behaviour as 3.11's StrEnum

    class StrEnum(str, Enum):  # noqa: UP042 - enum.StrEnum is 3.11+
        """An Enum whose members are their string values."""

        def __str__(self) -> str:
            return str(self.value)


class Precision(StrEnum):
    """Numeric precision of an exported artifact."""

    FP32 = "fp32"
    FP16 = "fp16"
    DYNAMIC_INT8 = "dynamic-int8"
    INT8 = "int8"
    INT16X8 = "int16x8"  #: int16 activations, int8 weights, int64 biases (TFLite only)

    @property
    def is_quantized(self) -> bool:
        """True for every precision below float32."""
        return self is not Precision.FP32


@dataclass(frozen=True)
class Tolerance:
    """When an artifact's outputs count as equal to the reference.

    An element fails only when it exceeds both ``atol`` and ``rtol * |ref|``.
    ``magnitude`` scales the absolute tolerance with the output: the effective
    ``atol`` is ``max(atol, magnitude * max|ref|)`` per output, so an output in the
    tens gets the absolute slack its precision can represent there (float16 keeps
    11 significant bits: a value near 20 is stored to within about 0.005).
    For int8 artifacts the element rule is off (``elementwise=False``) and the
    aggregate gates decide: cosine similarity, relative L2 error, PSNR (relative
    to the output's peak), and the drop of the task metric when labelled data is
    given; all of them are independent of the output's scale.
    """

    atol: float = 1e-5
    rtol: float = 1e-5
    magnitude: float | None = None  #: atol grows to this fraction of the output's peak absolute value
    elementwise: bool = True
    min_cosine: float | None = None
    max_rel_l2: float | None = None
    min_psnr: float | None = None
    max_task_drop: float | None = None  # relative worsening of the task metric, e.g. 0.03
    per_output: dict[str, dict[str, float]] = field(default_factory=dict)

    def for_output(self, name: str) -> Tolerance:
        """This tolerance with the overrides for one output applied."""
        over = self.per_output.get(name)
        if not over:
            return self
        return replace(self, **{k: v for k, v in over.items() if k != "per_output"})  # type: ignore[arg-type]

    def atol_for(self, peak: float) -> float:
        """The absolute tolerance for an output whose largest absolute reference value is ``peak``."""
        return self.atol if self.magnitude is None else max(self.atol, self.magnitude * peak)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        d: dict[str, Any] = {
            "atol": self.atol,
            "rtol": self.rtol,
            "magnitude": self.magnitude,
            "elementwise": self.elementwise,
            "min_cosine": self.min_cosine,
            "max_rel_l2": self.max_rel_l2,
            "min_psnr": self.min_psnr,
            "max_task_drop": self.max_task_drop,
        }
        if self.per_output:
            d["per_output"] = self.per_output
        return d
