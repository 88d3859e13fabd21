"""The measured ``--lowering auto`` for a ``--target``: both forms of each TFLite artifact, timed side by side.

With ``--lowering auto`` and a ``--target`` that runs LiteRT or tflite-runtime, the
export builds each whole-window TFLite artifact in the form the rule picks
(:func:`edge_lstm.lower.tflite.auto.choose`) and in the other one
(:func:`edge_lstm.produce.rivals`), validates both like every artifact, then
:func:`settle` times the two side by side here on the runtime the target runs:
one thread, XNNPACK on, :data:`ROUNDS` interleaved rounds of :data:`RUNS_PER_ROUND`
timed runs each (the device runner's timed loop, :func:`edge_lstm.device.time_runs`),
bounded by that count, never by seconds. :func:`edge_lstm.lower.tflite.auto.pick`
keeps the rule's form unless the other is clearly faster, and only a candidate that
passed validation on that runtime can be kept. The loser is not written; the
report carries both candidates' size, validation and p50
(:class:`~edge_lstm.reports.LoweringChoice`), which was chosen and why.

Each candidate's bytes are deterministic. Which one is published can depend on
the host only where the forms differ by more than the margin, and the report says
"measured" then; ``--lowering fused`` or ``loop`` pins a form. Nothing is timed
without a target, for a microcontroller target (TFLite Micro gets the fused form:
it has the kernels, and its host interpreter's speed says nothing about a
microcontroller), for a target that runs no TFLite runtime, or for streaming
artifacts (the loop's one-step form takes its state as inputs, the fused one keeps
it in variable tensors: different interfaces, not interchangeable).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from edge_lstm import progress, registry
from edge_lstm.artifact import Artifact
from edge_lstm.reports import LoweringCandidate, LoweringChoice

if TYPE_CHECKING:
    from edge_lstm.options import ExportOptions

Progress = Callable[[str], None]

#: interleaved rounds; in each, every candidate runs RUNS_PER_ROUND timed windows after WARMUP untimed ones
ROUNDS = 5
RUNS_PER_ROUND = 10
WARMUP = 2


@dataclass(frozen=True)
class Plan:
    """What the auto lowering does for this export's target: time the forms on ``runtime``, or why not."""

    target: str
    runtime: str | None  #: the host runtime to time on; None: nothing is timed
    why_not: str = ""  #: when ``runtime`` is None: the reason, for the report
    note: str = ""  #: how ``runtime`` stands in for the target's (e.g. tflite-runtime not installed here)


def plan(options: ExportOptions) -> Plan | None:
    """The plan for ``options``; None when there is nothing to choose (no target, no TFLite, a pinned lowering).

    Loads the target, so an unknown one fails here, before any artifact is built.
    """
    from edge_lstm.targets import Target, load_target

    if options.target is None:
        return None
    target = options.target if isinstance(options.target, Target) else load_target(options.target)
    if options.recipe.lowering != "auto" or "tflite" not in options.recipe.formats:
        return None
    if target.kind == "mcu":
        return Plan(target.name, None, f"fused for TFLite Micro on {target.name}, not timed: TFLite Micro has the "
                                       "fused LSTM kernels, and its host interpreter's speed says nothing about a "
                                       "microcontroller")
    tflite = [r.name for r in registry.runtimes_for("tflite") if r.device and r.name != "tflm"]
    wanted = [r for r in target.runtimes if r in tflite]
    if not wanted:
        return Plan(target.name, None, f"the rule's choice, not timed: {target.name} runs no TFLite runtime (its "
                                       f"runtimes: {', '.join(target.runtimes)}), so no form was measured for it")
    here = [r for r in wanted if registry.runtime(r).available()]
    if not here:
        hint = "; ".join(f"{r}: {registry.runtime(r).install}" for r in wanted)
        return Plan(target.name, None, f"the rule's choice, not timed: none of the TFLite runtimes {target.name} runs "
                                       f"({', '.join(wanted)}) is installed here ({hint})")
    note = "" if here[0] == wanted[0] else (f"{wanted[0]} is not installed here: timed on {here[0]}, which "
                                            f"{target.name} also runs")
    return Plan(target.name, here[0], note=note)


def settle(artifacts: list[Artifact], rivals: dict[str, Artifact | str], how: Plan,
           feed: dict[str, np.ndarray], say: Progress) -> list[Artifact]:
    """``artifacts`` with each auto-lowered TFLite artifact replaced by the candidate :func:`pick` keeps, every one
    carrying its :class:`LoweringChoice`. ``rivals`` are the other forms (validated) or why there is none; ``feed``
    is one validation window, the input every candidate is timed on."""
    todo = {id(a) for a in artifacts if a.format == "tflite" and a.built and a.lowering}
    out: list[Artifact] = []
    with progress.task(say, "timing the lowerings", len(todo), "artifact") as count:
        for art in artifacts:
            if id(art) not in todo:  # by identity: an Artifact's equality compares its bytes
                out.append(art)
                continue
            count.item(f"timing {art.filename}: fused and loop side by side on {how.runtime}"
                       if how.runtime and isinstance(rivals.get(art.filename), Artifact) else art.filename)
            out.append(_settle_one(art, rivals.get(art.filename), how, feed))
    return out


_STREAMING = ("streaming: the rule's form, not timed: the loop's one-step form takes its state as inputs, the "
              "fused one keeps it in variable tensors, so they are not interchangeable")


def _settle_one(art: Artifact, rival: Artifact | str | None, how: Plan, feed: dict[str, np.ndarray]) -> Artifact:
    rule = str(art.lowering)
    if how.runtime is None or art.streaming or not isinstance(rival, Artifact):
        why = how.why_not or (_STREAMING if art.streaming else f"the rule's choice, not timed: {rival}")
        others = [_missing(rival)] if isinstance(rival, str) else []
        art.lowering_choice = LoweringChoice(target=how.target, measured=False, runtime=how.runtime, rule=rule,
                                             chosen=rule, reason=why, candidates=[_candidate(art, True), *others])
        return art
    forms = {rule: art, str(rival.lowering): rival}
    timeable = {k: a for k, a in forms.items() if _ran_clean(a)}
    samples = time_side_by_side({k: a.data for k, a in timeable.items()}, how.runtime, feed)
    from edge_lstm.lower.tflite.auto import MARGIN, pick
    from edge_lstm.profile import latency_stats

    p50 = {k: float(latency_stats(v)["p50"]) for k, v in samples.items()}
    chosen, reason = pick(rule, {k: v for k, v in p50.items() if forms[k].passed}, how.runtime)
    if how.note:
        reason += f" ({how.note})"
    winner = forms[chosen]
    candidates = [_candidate(a, k == chosen, p50.get(k), len(samples.get(k, ()))) for k, a in forms.items()]
    winner.lowering_reason = reason
    winner.notes = [f"lowering: {reason}", *(n for n in winner.notes if not n.startswith("lowering: "))]
    winner.lowering_choice = LoweringChoice(target=how.target, measured=True, runtime=how.runtime, rule=rule,
                                            chosen=chosen, reason=reason, rounds=ROUNDS,
                                            runs_per_round=RUNS_PER_ROUND, margin=MARGIN, candidates=candidates)
    return winner


def _ran_clean(art: Artifact) -> bool:
    """True when the artifact ran (no build or run failure) and was validated on LiteRT or tflite-runtime: only
    then is it timed; only one that also passed can be kept."""
    return art.built and not art.failures and any(v.runtime in ("litert", "tflite-runtime") for v in art.validations)


def _candidate(art: Artifact, chosen: bool, p50_s: float | None = None, runs: int = 0) -> LoweringCandidate:
    note = "; ".join(" ".join(f.reason.split())[:300] for f in art.failures)
    if not note and not art.passed:
        note = "failed validation on " + ", ".join(v.runtime for v in art.validations if not v.passed)
    elif not note and p50_s is None and chosen is False:
        note = "not timed: it did not run on LiteRT or tflite-runtime"
    return LoweringCandidate(lowering=str(art.lowering), size_bytes=len(art.data),
                             sha256=hashlib.sha256(art.data).hexdigest() if art.built else None,
                             validation=[{"runtime": v.runtime, "passed": v.passed} for v in art.validations],
                             p50_s=p50_s, runs=runs, chosen=chosen, note=note)


def _missing(why: str) -> LoweringCandidate:
    """The other form when it was not built (or is the same graph): ``why`` starts with its lowering's name."""
    form, _, rest = why.partition(": ")
    return LoweringCandidate(lowering=form, size_bytes=0, sha256=None, note=rest)


def time_side_by_side(files: dict[str, bytes], runtime: str, feed: dict[str, np.ndarray],
                      rounds: int = ROUNDS, runs: int = RUNS_PER_ROUND, warmup: int = WARMUP) -> dict[str, list[float]]:
    """Seconds per window of each TFLite file on ``runtime`` (one thread), in ``rounds`` interleaved rounds of
    ``runs`` timed calls each (the order alternates round by round, so drift in the host's load falls on every
    file alike); state is reset before each window, as the device runner does for whole windows."""
    from edge_lstm.device import time_runs

    cls = registry.runtime(runtime).runner_class()
    runners = {k: cls.open(data, runtime, threads=1) for k, data in files.items()}
    samples: dict[str, list[float]] = {k: [] for k in files}
    try:
        for r in range(rounds):
            for k in list(runners)[:: 1 if r % 2 == 0 else -1]:
                samples[k] += time_runs(runners[k], feed, warmup, runs, reset=True)
    finally:
        for runner in runners.values():
            runner.deactivate()
    return samples


__all__ = ["Plan", "plan", "settle", "time_side_by_side"]
