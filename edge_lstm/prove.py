"""Prove every artifact: run it once in a child process on each runtime, then validate it here.

The child run (:mod:`edge_lstm.preflight`) is what keeps a runtime crash from
killing the export: an artifact that a runtime cannot open, fails on, or dies on
gets a :class:`~edge_lstm.artifact.Failure` naming that runtime and is not run in
this process on it. Everything else is validated against the reference on the
same feeds: whole-window artifacts window by window, streaming ones step by step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from edge_lstm import feeds as feeds_mod
from edge_lstm import preflight, progress, registry
from edge_lstm.artifact import Artifact, Failure

if TYPE_CHECKING:
    from edge_lstm.load import LoadedModel
    from edge_lstm.recipes import Recipe
    from edge_lstm.runners.base import Runner
    from edge_lstm.streaming import StreamingModel

Progress = Callable[[str], None]


def runtimes_for(art: Artifact) -> list[str]:
    """The runtimes an artifact is validated on: TFLite Micro too for every TFLite file whose ops and
    precision it has kernels for (:func:`~edge_lstm.lower.tflite.support.micro_blockers`), whatever the
    lowering; the others carry a note with the reason. Any other format runs on its registry runtimes
    (:func:`edge_lstm.registry.runtimes_for`); one that is not installed fails the artifact's run, saying how to
    install it."""
    if art.format != "tflite":
        return [r.name for r in registry.runtimes_for(art.format)]
    from edge_lstm.lower.tflite.support import micro_blockers
    from edge_lstm.runners.litert import pick_runtime

    names = [pick_runtime()]
    if _int16_fused_lstm(art.data):  # LiteRT's fused LSTM kernel has no 16x8 path: TFLite Micro's has
        names = []
        art.notes.append("not validated on LiteRT or tflite-runtime: their fused LSTM kernel has no 16x8 path")
    else:
        _note_tflite_runtime(art)
    try:
        blockers = micro_blockers(art.data)
    except Exception:  # a file our reader cannot follow is not judged here: the child run on each runtime says
        blockers = []
    if blockers:
        art.notes.append("not validated on TFLite Micro: " + "; ".join(blockers))
    elif registry.runtime("tflm").available():
        names.append("tflm")
    else:
        art.notes.append("not validated on TFLite Micro: the tflite-micro package is not installed "
                         "(pip install 'edge-lstm[micro]')")
    return names


def _int16_fused_lstm(data: bytes) -> bool:
    """True when the file has a fused LSTM op with int16 activations (16x8)."""
    from edge_lstm.tflite_read import dtype_name, op_name, read

    try:
        model = read(data)
    except Exception:  # unreadable here: the child runs decide
        return False
    return any(op_name(model, op) == "UNIDIRECTIONAL_SEQUENCE_LSTM" and dtype_name(g.tensors[op.inputs[0]].type)
               == "int16" for g in model.subgraphs for op in g.operators)


#: the tflite-runtime release Raspberry Pi images ship (numpy<2): its kernel table is measured (edge_lstm.kernels)
PI_TFLITE_RUNTIME = "2.14"


def _note_tflite_runtime(art: Artifact) -> None:
    """Say in the report when tflite-runtime 2.14 lacks a kernel the artifact uses (it is then skipped there,
    on a device and in ``profile``, with this reason, rather than failing)."""
    from edge_lstm.kernels import missing

    try:
        lacks = missing(art.data, "tflite-runtime", PI_TFLITE_RUNTIME)
    except Exception:  # unreadable here: the child runs decide what runs it (see runtimes_for)
        return
    if lacks:
        art.notes.append(f"not runnable on tflite-runtime {PI_TFLITE_RUNTIME}: it has no kernel for "
                         f"{'; '.join(lacks)} (run it on ai-edge-litert)")


def tflm_available() -> bool:
    """True when the tflite-micro host interpreter is installed."""
    return registry.runtime("tflm").available()


def runner(art: Artifact, runtime: str) -> Runner:
    """The in-process runner of ``art`` on ``runtime``: the registry's runner class, opened on the bytes."""
    cls = registry.runtime(runtime).runner_class()
    return cls.open(art.data, runtime)  # type: ignore[no-any-return]


def first_feed(art: Artifact, sample: dict[str, np.ndarray], step: StreamingModel | None) -> dict[str, np.ndarray]:
    """One batch-1 sample for the child run: the first window, or its first step and a zero state."""
    if not art.streaming or step is None:
        return dict(sample)
    feed = {step.x: np.take(sample[step.x], [0], axis=step.time_axis)}
    for s in step.states:
        feed[s.input] = np.asarray(sample[s.input], np.float32) if s.input in sample else s.zeros(1)
    return feed


def smoke(art: Artifact, runtimes: list[str], sample: dict[str, np.ndarray],
          step: StreamingModel | None) -> list[str]:
    """Run ``art`` once in a child per the runtimes; record failures; the runtimes it ran on."""
    present = _installed(art, runtimes)
    results = preflight.check(art.data, registry.fmt(art.format).suffix, first_feed(art, sample, step), present)
    return _judge_smoke(art, present, results)


def _installed(art: Artifact, runtimes: list[str]) -> list[str]:
    """The runtimes that are installed; a failure saying how to install each that is not (not a crash)."""
    missing = [rt for rt in runtimes if not registry.runtime(rt).available()]
    for rt in missing:
        r = registry.runtime(rt)
        art.failures.append(Failure("run", f"runtime {rt} is not installed: install it with {r.install}", rt))
    return [rt for rt in runtimes if rt not in missing]


def _judge_smoke(art: Artifact, runtimes: list[str], results: dict[str, str | None]) -> list[str]:
    """Record what the child run found (a failure, or a note where the ops rule a runtime out); the runtimes that
    ran the artifact."""
    for rt in runtimes:
        why = results.get(rt)
        if why is not None and rt == "tflm" and _NO_KERNEL in why:  # the ops do not allow it: not a failure
            op = why.split(_NO_KERNEL)[-1].split("'")[1] if "'" in why.split(_NO_KERNEL)[-1] else "an op"
            art.notes.append(f"not validated on TFLite Micro: it has no kernel for {op}")
        elif why is not None and rt == "tflm" and _CANNOT in why:  # a kernel refuses a tensor: TFLM cannot run it
            art.notes.append("not validated on TFLite Micro: " + " ".join(why.split(_CANNOT)[-1].split()))
        elif why is not None and rt == "tflite-runtime" and _LACKS in why:  # an older release: skipped, saying why
            art.notes.append("not validated on " + " ".join(why.split(_LACKS)[0].split()) + ": it has no kernel for "
                             + " ".join(why.split(_LACKS)[-1].split()).split("\nHint")[0])
        elif why is not None:
            art.failures.append(Failure("run", why, rt))
    return [rt for rt in runtimes if results.get(rt) is None]


#: what TFLite Micro says about an op it has no kernel for, and about a kernel that refuses the model's tensors
#: (a projected LSTM): the ops do not allow TFLite Micro, which is a note; a crash there is still a failure
_NO_KERNEL = "Didn't find op for builtin opcode"
_CANNOT = "TFLite Micro cannot run this model:"
#: what the LiteRT runner says when the runtime release lacks a kernel (edge_lstm.runners.litert)
_LACKS = " cannot run this model: it has no kernel for "


def prove_all(artifacts: list[Artifact], model: LoadedModel, recipe: Recipe, vdata: feeds_mod.ValidationData,
              reference: dict[str, np.ndarray], step: StreamingModel | None, say: Progress,
              candidates: list[Artifact] | None = None, meanwhile: Callable[[], None] | None = None) -> None:
    """:func:`prove` every artifact and every lowering candidate (:mod:`edge_lstm.lowering_choice`), their child
    runs all in two child processes side by side (:func:`preflight.run_many`; a child per artifact cost most of a
    second each, most of an export's time). A whole-window artifact runs every validation window there, so the
    whole run is crash-contained, and is judged here on the outputs the child hands back; a streaming one runs
    once there and is fed step by step here. ``meanwhile`` runs here while the children do (the pipeline warms
    the report's plotting library)."""
    extra = list(candidates or [])
    planned: list[tuple[Artifact, list[str]]] = []
    for art in artifacts + extra:
        runtimes = _runtimes_or_fail(art)
        if runtimes is not None:
            planned.append((art, _installed(art, runtimes)))
    if not planned:
        return
    whole = sum(not art.streaming for art, _ in planned)
    say(f"running {len(planned)} artifact(s) in child processes on each runtime"
        + (f", {whole} on all {len(vdata.samples)} validation windows" if whole else ""))
    jobs = [preflight.Job(art.data, registry.fmt(art.format).suffix, first_feed(art, vdata.samples[0], step), rts,
                          None if art.streaming else vdata.samples)  # one list: one file for every job
            for art, rts in planned]
    found = preflight.run_many(jobs, meanwhile=meanwhile)
    with progress.task(say, "validating", len(planned), "artifact") as count:
        for (art, rts), ran in zip(planned, found, strict=True):
            rival = any(art is e for e in extra)
            count.item(f"validating {art.filename}" + (f" ({art.lowering}, a candidate)" if rival else ""))
            ok = _judge_smoke(art, rts, ran.why)
            if not ok:
                continue
            if art.streaming:
                _validate(art, ok, model, recipe, vdata, reference, step, say)
                continue
            for rt in ok:  # the child's outputs on every window, judged as an in-process run would be
                art.validations.append(feeds_mod.judge(art.filename, rt, model, recipe, art.precision, vdata,
                                                       reference, ran.outputs[rt]))


def _runtimes_or_fail(art: Artifact) -> list[str] | None:
    """The runtimes to prove ``art`` on; None (and a failure where one is due) when it is not to be run."""
    if not art.built:
        return None
    runtimes = runtimes_for(art)
    if not runtimes:  # never passed unchecked: a fused 16x8 LSTM without TFLite Micro installed
        art.failures.append(Failure("run", "the tflite-micro package is not installed, and no other runtime runs it "
                                    "(LiteRT's fused LSTM kernel has no 16x8 path): pip install 'edge-lstm[micro]'",
                                    "tflm"))
        return None
    return runtimes


def prove(art: Artifact, model: LoadedModel, recipe: Recipe, vdata: feeds_mod.ValidationData,
          reference: dict[str, np.ndarray], step: StreamingModel | None, say: Progress) -> None:
    """Child-run ``art`` on each of its runtimes, then validate it in this process on the ones that ran it."""
    runtimes = _runtimes_or_fail(art)
    if runtimes is None:
        return
    say(f"opening {art.filename} in a child process")
    ok = smoke(art, runtimes, vdata.samples[0], step)
    if ok:
        _validate(art, ok, model, recipe, vdata, reference, step, say)


def _validate(art: Artifact, ok: list[str], model: LoadedModel, recipe: Recipe, vdata: feeds_mod.ValidationData,
              reference: dict[str, np.ndarray], step: StreamingModel | None, say: Progress) -> None:
    """Validate ``art`` in this process on the runtimes ``ok`` that ran it in the child."""
    say(f"validating {art.filename}" + (" step by step" if art.streaming else ""))
    runners = [runner(art, rt) for rt in ok]
    if art.streaming:
        assert step is not None
        art.validations = feeds_mod.validate_streaming(art, model, step, recipe, vdata, reference, runners, say)
        return
    for r in runners:
        with progress.task(say, f"{art.filename} on {r.runtime}", len(vdata.samples), "window") as count:
            outs = feeds_mod.run_all(r, vdata.samples, count.tick)
        art.validations.append(feeds_mod.judge(art.filename, r.runtime, model, recipe, art.precision, vdata,
                                               reference, outs))
