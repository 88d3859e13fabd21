"""The reports as types: an export's ``report.json``, a profile report, and the model's cost they carry.

These are what the export and the profiler hand to the renderers (Markdown in
:mod:`edge_lstm.report`, the HTML pages of :mod:`edge_lstm.report_page` and
:mod:`edge_lstm.report_html`, the terminal summary of :mod:`edge_lstm.cli_summary`),
and what ``report.json`` is read back into (:meth:`ExportReport.from_dict`).
:meth:`~ExportReport.to_dict` gives the JSON exactly as it has always been:
the same keys, in the same order.

The sections that are already measured JSON — one runtime's validation, one
artifact's profile entry, the accuracy section, a target — stay JSON objects
(:data:`Json`) inside the typed top level: their producers
(:class:`~edge_lstm.validate.ArtifactValidation`, :mod:`edge_lstm.profile`)
define them.

A low layer: the standard library only, so the profiler on a device-only
install (Python 3.10, numpy and one runtime) builds its report with it too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSION = 1
TOOL = "edge-lstm"

#: a JSON object a producer lower down defines (a validation, a profile entry, a target)
Json = dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class LayerCostRow:
    """One layer that computes: its parameters and MACs, and whether it recurs over time."""

    name: str
    op: str
    params: int
    macs: int
    recurrent: bool

    def to_dict(self) -> Json:
        """JSON-ready form."""
        return {"name": self.name, "op": self.op, "params": self.params, "macs": self.macs,
                "recurrent": self.recurrent}

    @classmethod
    def from_dict(cls, d: Json) -> LayerCostRow:
        """Inverse of :meth:`to_dict`."""
        return cls(name=d["name"], op=d["op"], params=int(d["params"]), macs=int(d["macs"]),
                   recurrent=bool(d["recurrent"]))


@dataclass(frozen=True, kw_only=True)
class ModelCost:
    """What the float model costs, from its captured graph (:func:`edge_lstm.cost.model_cost`, computed once)."""

    macs_per_inference: int
    macs_per_step: int
    weight_bytes_fp32: int
    layer_costs: tuple[LayerCostRow, ...] = ()

    KEYS = ("macs_per_inference", "macs_per_step", "weight_bytes_fp32", "layer_costs")

    def to_dict(self) -> Json:
        """The keys it adds to the report's ``model`` section."""
        return {"macs_per_inference": self.macs_per_inference, "macs_per_step": self.macs_per_step,
                "weight_bytes_fp32": self.weight_bytes_fp32, "layer_costs": [r.to_dict() for r in self.layer_costs]}

    @classmethod
    def from_dict(cls, d: Json) -> ModelCost | None:
        """The cost in a report's ``model`` section; None when it has none."""
        if d.get("macs_per_inference") is None:
            return None
        return cls(macs_per_inference=int(d["macs_per_inference"]), macs_per_step=int(d["macs_per_step"]),
                   weight_bytes_fp32=int(d["weight_bytes_fp32"]),
                   layer_costs=tuple(LayerCostRow.from_dict(r) for r in d.get("layer_costs") or []))


@dataclass(frozen=True, kw_only=True)
class ValidationDataInfo:
    """Which data every artifact was validated on."""

    source: str  #: a file path, or "random (seed N)"
    samples: int
    steps: int
    labelled: bool
    #: whether the windows were held out from training, as the checkpoint tells (``report_facts.held_out``)
    held_out: Json | None = None

    def to_dict(self) -> Json:
        """JSON-ready form."""
        return {"source": self.source, "samples": self.samples, "steps": self.steps, "labelled": self.labelled,
                "held_out": self.held_out}

    @classmethod
    def from_dict(cls, d: Json) -> ValidationDataInfo:
        """Inverse of :meth:`to_dict`."""
        return cls(source=str(d.get("source", "")), samples=int(d.get("samples") or 0),
                   steps=int(d.get("steps") or 0), labelled=bool(d.get("labelled")),
                   held_out=d.get("held_out") if isinstance(d.get("held_out"), dict) else None)


@dataclass(frozen=True, kw_only=True)
class ValidationEntry:
    """One artifact validated on one runtime (the JSON of :class:`~edge_lstm.validate.ArtifactValidation`)."""

    runtime: str
    passed: bool
    samples: int
    data: str  #: the validation data's source
    tolerance: Json  #: Tolerance.to_dict(): the gate applied
    outputs: list[Json] = field(default_factory=list)  #: OutputMetrics.to_dict() per output
    task: Json | None = None  #: TaskMetrics.to_dict(), when the data is labelled
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> Json:
        """JSON-ready form."""
        return {"runtime": self.runtime, "passed": self.passed, "samples": self.samples, "data": self.data,
                "tolerance": self.tolerance, "outputs": self.outputs, "task": self.task, "notes": self.notes}

    @classmethod
    def from_dict(cls, d: Json) -> ValidationEntry:
        """Inverse of :meth:`to_dict`."""
        return cls(runtime=str(d.get("runtime", "")), passed=bool(d.get("passed")),
                   samples=int(d.get("samples") or 0), data=str(d.get("data", "")), tolerance=d.get("tolerance") or {},
                   outputs=list(d.get("outputs") or []), task=d.get("task"), notes=list(d.get("notes") or []))


@dataclass(frozen=True, kw_only=True)
class LoweringCandidate:
    """One form the measured ``auto`` lowering built for an artifact: its file, validation and measured latency."""

    lowering: str  #: "fused", "loop", or e.g. "fused+loop"
    size_bytes: int  #: 0 when it was not built
    sha256: str | None
    validation: list[Json] = field(default_factory=list)  #: {"runtime", "passed"} per runtime it was validated on
    p50_s: float | None = None  #: median seconds per window on the timing runtime, measured here; None: not timed
    runs: int = 0  #: timed runs behind ``p50_s``
    chosen: bool = False
    note: str = ""  #: why it was not built, validated or timed

    def to_dict(self) -> Json:
        """JSON-ready form."""
        return {"lowering": self.lowering, "size_bytes": self.size_bytes, "sha256": self.sha256,
                "validation": self.validation, "p50_s": self.p50_s, "runs": self.runs, "chosen": self.chosen,
                "note": self.note}

    @classmethod
    def from_dict(cls, d: Json) -> LoweringCandidate:
        """Inverse of :meth:`to_dict`."""
        return cls(lowering=str(d.get("lowering", "")), size_bytes=int(d.get("size_bytes") or 0),
                   sha256=d.get("sha256"), validation=list(d.get("validation") or []), p50_s=d.get("p50_s"),
                   runs=int(d.get("runs") or 0), chosen=bool(d.get("chosen")), note=str(d.get("note") or ""))


@dataclass(frozen=True, kw_only=True)
class LoweringChoice:
    """How ``--lowering auto`` chose an artifact's form for a ``--target``: timed side by side on the host runtime
    the target runs (``measured``), or by the rule, and why (:mod:`edge_lstm.lowering_choice`)."""

    target: str
    measured: bool  #: True when the candidates were timed here
    runtime: str | None  #: the host runtime they were timed on
    rule: str  #: the form the fixed rule picks (:mod:`edge_lstm.lower.tflite.auto`)
    chosen: str
    reason: str
    rounds: int = 0  #: interleaved rounds, ``runs_per_round`` timed runs of each candidate in each
    runs_per_round: int = 0
    margin: float = 0.0  #: how much faster (in p50) a candidate must be to overrule the rule
    candidates: list[LoweringCandidate] = field(default_factory=list)

    def to_dict(self) -> Json:
        """JSON-ready form."""
        return {"target": self.target, "measured": self.measured, "runtime": self.runtime, "rule": self.rule,
                "chosen": self.chosen, "reason": self.reason, "rounds": self.rounds,
                "runs_per_round": self.runs_per_round, "margin": self.margin,
                "candidates": [c.to_dict() for c in self.candidates]}

    @classmethod
    def from_dict(cls, d: Json) -> LoweringChoice:
        """Inverse of :meth:`to_dict`."""
        return cls(target=str(d.get("target", "")), measured=bool(d.get("measured")), runtime=d.get("runtime"),
                   rule=str(d.get("rule", "")), chosen=str(d.get("chosen", "")), reason=str(d.get("reason", "")),
                   rounds=int(d.get("rounds") or 0), runs_per_round=int(d.get("runs_per_round") or 0),
                   margin=float(d.get("margin") or 0.0),
                   candidates=[LoweringCandidate.from_dict(c) for c in d.get("candidates") or []])


@dataclass(frozen=True, kw_only=True)
class ArtifactEntry:
    """One artifact as the report lists it: the file, how it was made, its validations and failures."""

    path: str | None  #: where it was published; None when it could not be built
    file: str
    format: str
    precision: str
    lowering: str | None
    lowering_reason: str | None
    streaming: bool
    size_bytes: int
    sha256: str | None
    passed: bool
    validation: list[ValidationEntry] = field(default_factory=list)  #: one per runtime it was validated on
    notes: list[str] = field(default_factory=list)
    io_quant: Json | None = None
    float_layers: list[str] = field(default_factory=list)
    calibration: Json | None = None
    failures: list[Json] = field(default_factory=list)  #: one Failure.to_dict() each
    #: how ``--lowering auto`` chose the form for a ``--target`` (the candidates' figures); None without one
    lowering_choice: LoweringChoice | None = None

    def to_dict(self) -> Json:
        """The artifact's entry in ``report.json``."""
        return {"path": self.path, "file": self.file, "format": self.format, "precision": self.precision,
                "lowering": self.lowering, "lowering_reason": self.lowering_reason, "streaming": self.streaming,
                "size_bytes": self.size_bytes, "sha256": self.sha256, "passed": self.passed,
                "validation": [v.to_dict() for v in self.validation], "notes": self.notes, "io_quant": self.io_quant,
                "float_layers": self.float_layers, "calibration": self.calibration, "failures": self.failures,
                "lowering_choice": self.lowering_choice.to_dict() if self.lowering_choice else None}

    @classmethod
    def of(cls, value: ArtifactEntry | Json) -> ArtifactEntry:
        """``value`` itself, or its JSON (as read back from a file) typed."""
        return value if isinstance(value, ArtifactEntry) else cls.from_dict(value)

    @classmethod
    def from_dict(cls, d: Json) -> ArtifactEntry:
        """Inverse of :meth:`to_dict` (fields a report of an older version lacks take their defaults)."""
        return cls(path=d.get("path"), file=str(d.get("file", "")), format=str(d.get("format", "")),
                   precision=str(d.get("precision", "")),
                   lowering=d.get("lowering"), lowering_reason=d.get("lowering_reason"),
                   streaming=bool(d.get("streaming")), size_bytes=int(d.get("size_bytes") or 0),
                   sha256=d.get("sha256"), passed=bool(d.get("passed")),
                   validation=[ValidationEntry.from_dict(v) for v in d.get("validation") or []],
                   notes=list(d.get("notes") or []), io_quant=d.get("io_quant"),
                   float_layers=list(d.get("float_layers") or []), calibration=d.get("calibration"),
                   failures=list(d.get("failures") or []),
                   lowering_choice=LoweringChoice.from_dict(d["lowering_choice"]) if d.get("lowering_choice")
                   else None)


@dataclass(frozen=True, kw_only=True)
class Recommendation:
    """The artifact to ship for the target (or this host) and the rule that picked it
    (:func:`edge_lstm.report_facts.recommend`); ``file`` and ``runtime`` are ``None`` when none qualifies, and
    ``rule`` then says why."""

    file: str | None
    runtime: str | None
    target: str  #: "<display name> (<name>)", or "this host (no --target given)"
    rule: str
    candidates: int  #: the artifact × runtime rows it chose among

    def to_dict(self) -> Json:
        """JSON-ready form."""
        return {"file": self.file, "runtime": self.runtime, "target": self.target, "rule": self.rule,
                "candidates": self.candidates}

    @classmethod
    def from_dict(cls, d: Json) -> Recommendation:
        """Inverse of :meth:`to_dict`."""
        return cls(file=d.get("file"), runtime=d.get("runtime"), target=str(d.get("target", "")),
                   rule=str(d.get("rule", "")), candidates=int(d.get("candidates") or 0))


@dataclass(kw_only=True)
class ProfileReport:
    """What ``edge-lstm profile`` measured (and ``export --profile`` put in the export report)."""

    schema: int = SCHEMA_VERSION
    tool_version: str
    created: str
    host: Json
    where: str  #: "host", or the device it ran on
    options: Json
    artifacts: list[Json] = field(default_factory=list)  #: one entry per artifact × runtime (edge_lstm.profile)
    target: Json | None = None
    compare: list[Json] | None = None
    device: Json | None = None  #: as the device reported itself
    emulated: bool = False

    def to_dict(self) -> Json:
        """The report as JSON (``--json``, ``--output``, and the export report's ``profile`` section)."""
        return {"schema": self.schema, "kind": "profile", "tool": {"name": TOOL, "version": self.tool_version},
                "created": self.created, "host": self.host, "where": self.where, "options": self.options,
                "artifacts": self.artifacts, "target": self.target, "compare": self.compare, "device": self.device,
                "emulated": self.emulated}

    @classmethod
    def of(cls, value: ProfileReport | Json) -> ProfileReport:
        """``value`` itself, or its JSON (as read back from a file) typed."""
        return value if isinstance(value, ProfileReport) else cls.from_dict(value)

    @classmethod
    def from_dict(cls, d: Json) -> ProfileReport:
        """Inverse of :meth:`to_dict`."""
        return cls(schema=int(d.get("schema", SCHEMA_VERSION)), tool_version=str((d.get("tool") or {}).get("version")),
                   created=str(d.get("created")), host=d.get("host") or {}, where=str(d.get("where", "host")),
                   options=d.get("options") or {}, artifacts=list(d.get("artifacts") or []), target=d.get("target"),
                   compare=d.get("compare"), device=d.get("device"), emulated=bool(d.get("emulated")))


@dataclass(kw_only=True)
class ExportReport:
    """An export's ``report.json``: the model, the validation data, every artifact, the verdict, and the sections
    the options add (accuracy, device proof, firmware, profile)."""

    schema: int = SCHEMA_VERSION
    tool_version: str
    created: str
    model: Json  #: LoadedModel.summary(): name, format, arch, parameters, layers, inputs, outputs, ...
    cost: ModelCost | None
    recipe: str
    validation_data: ValidationDataInfo
    artifacts: list[ArtifactEntry]
    accuracy: Json | None = None
    proved_on: Json | None = None
    firmware: Json | None = None  #: present only when --firmware wrote fw/
    profile: ProfileReport | None = None  #: present only when the artifacts were profiled
    #: format x precision pairs asked for that the format cannot hold (another format asked for holds them), why
    not_built: list[Json] = field(default_factory=list)
    #: the artifact the reports recommend, set once the profile (and its budget checks) is in
    recommendation: Recommendation | None = None

    @property
    def passed(self) -> bool:
        """True when every artifact passed."""
        return all(a.passed for a in self.artifacts)

    @property
    def name(self) -> str:
        """The model's name."""
        return str(self.model["name"])

    def to_dict(self) -> Json:
        """``report.json``: the keys (and their order) it has always had."""
        d: Json = {"schema": self.schema, "tool": {"name": TOOL, "version": self.tool_version},
                   "created": self.created, "model": {**self.model, **(self.cost.to_dict() if self.cost else {})},
                   "recipe": self.recipe, "validation_data": self.validation_data.to_dict(),
                   "artifacts": [a.to_dict() for a in self.artifacts], "passed": self.passed,
                   "accuracy": self.accuracy, "proved_on": self.proved_on}
        if self.firmware is not None:
            d["firmware"] = self.firmware
        if self.profile is not None:
            d["profile"] = self.profile.to_dict()
        if self.not_built:
            d["not_built"] = self.not_built
        if self.recommendation is not None:
            d["recommendation"] = self.recommendation.to_dict()
        return d

    @classmethod
    def of(cls, value: ExportReport | Json) -> ExportReport:
        """``value`` itself, or its JSON (as read back from a file) typed."""
        return value if isinstance(value, ExportReport) else cls.from_dict(value)

    @classmethod
    def from_dict(cls, d: Json) -> ExportReport:
        """A ``report.json`` read back (inverse of :meth:`to_dict`); what a partial one lacks is empty."""
        model = {k: v for k, v in (d.get("model") or {}).items() if k not in ModelCost.KEYS}
        return cls(schema=int(d.get("schema", SCHEMA_VERSION)), tool_version=str((d.get("tool") or {}).get("version")),
                   created=str(d.get("created")), model=model, cost=ModelCost.from_dict(d.get("model") or {}),
                   recipe=str(d.get("recipe")),
                   validation_data=ValidationDataInfo.from_dict(d.get("validation_data") or {}),
                   artifacts=[ArtifactEntry.from_dict(a) for a in d.get("artifacts") or []],
                   accuracy=d.get("accuracy"), proved_on=d.get("proved_on"), firmware=d.get("firmware"),
                   profile=ProfileReport.from_dict(d["profile"]) if d.get("profile") else None,
                   not_built=list(d.get("not_built") or []),
                   recommendation=Recommendation.from_dict(d["recommendation"]) if d.get("recommendation") else None)
