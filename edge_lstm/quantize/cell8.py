"""An all-int8 LSTM cell that XNNPACK runs whole: the cell state carried as an int8 value plus its rounding residual.

The loop lowering's LSTM step quantized as TFLite's quantizer does it is all
int8, and XNNPACK takes every op of the loop body (one delegate kernel a body),
but it loses accuracy in the cell state: ``c`` is rounded to 1/255 of its range
every step and the errors add up along the recurrence, and the forget gate, an
int8 LOGISTIC output at scale 1/256, can never reach 1 (the cell leaks). The
int16 cell of :mod:`.cell16` fixes both but runs its elementwise ops on TFLite's
builtin kernels, off XNNPACK: ~3x the float loop on the reference forecaster.

This rewrite keeps every op int8 (so the body stays one XNNPACK kernel) and gets
the precision back in two ways:

* **the forget gate is computed as 1 - f**: its rows of every weight and bias
  feeding the gate pre-activation are negated before calibration, so the
  LOGISTIC gives ``nf = sigmoid(-z_f) = 1 - f``; ``nf`` can be exactly 0, so the
  cell can hold its value, and ``nf * c`` (what the cell forgets) is a small
  value with a fine scale where ``f * c`` has the whole range of ``c``;
* **the rounding residual of c is a loop variable** ``r`` (int8 at 1/128 of
  ``c``'s step): with ``e = i*g - nf*c + (1 - nf)*r`` (the change of ``c``, a
  small value), ``c' = c + e`` is rounded to ``c``'s grid and ``r' = e - (c' - c)``
  keeps what the rounding dropped; ``c' - c`` is exact on ``c``'s grid (both have
  one scale and zero point). ``c + r`` carries ~15 bits; only the rounding of
  the small terms (``i*g``, ``nf*c``, ``e``) is lost, and ``r`` feeds it back.
  The TANH of the cell reads ``c' + r'`` over ``c``'s range clipped where tanh
  flattens (one of :data:`TANH_RANGES`, the most accurate on the calibration
  windows: :func:`edge_lstm.quantize.tflite.to_int8` tries each).

Per step that is seven int8 elementwise ops more than the quantizer's cell (one
MUL, four SUBs and two ADDs besides the ADD that forms ``c'``; all in XNNPACK's
int8 set: on the reference forecaster the body is 153 ops, one delegate kernel,
against 113 ops as 8 delegate kernels and 90 builtin ops for the int16 cell). The
float rewrite (:func:`residual_cells`) runs before calibration, so TFLite's
calibrator records every new tensor's range; :func:`residual_scales` then gives
the tensors that are zero in float (the residual and its products) and the cell
state their scales. Only cells inside WHILE bodies are rewritten: ``r`` is a loop
variable, and a graph without a loop would need it as a model input.

XNNPACK refuses (fails to prepare, not falls back) a SPLIT whose outputs are
quantized unlike its input, so the gates cannot get scales of their own for free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_lstm.quantize.cell16 import _Cell, _find_cells, _ops
from edge_lstm.quantize.loops import TEMP_NAME
from edge_lstm.quantize.tflite_edit import SubgraphView, same_quantization, while_loops
from edge_lstm.tflite_schema import FLOAT32, const_array, copy_quantization, is_const, quantization, schema, set_data

#: the residual's int8 step is the cell state's divided by this
_RESIDUAL_STEPS = 128.0
#: ranges [-x, x] the TANH of the cell state may read c + r over (where tanh flattens, a narrower range rounds c more
#: finely and clips it less than it gains: 2.2 measured best of these on both Seattle forecasters);
#: :func:`edge_lstm.quantize.tflite.to_int8` keeps the one most accurate on the calibration windows
TANH_RANGES = (1.8, 2.2, 3.2)
#: names of the tensors this rewrite adds (the calibrator keys ranges by name; loops.drop_temp_names clears them)
PREFIX = TEMP_NAME + "res"


@dataclass
class _Gate:
    """The columns ``[lo, hi)`` (mod ``width``) of a tensor to negate."""

    lo: int
    hi: int
    width: int


# ---------------------------------------------------------------- before calibration (float)


def residual_cells(model: Any) -> int:
    """Rewrite the LSTM cells of every WHILE body as described in the module docstring (float ops, before
    calibration); returns how many cells were rewritten (0 leaves the model as it was)."""
    done = 0
    for n, (main, body, cond, op) in enumerate(while_loops(model)):
        body.refresh()
        cells = _find_cells(body)
        if not cells or not _float_cells(body, cells):
            continue
        negated: dict[tuple[int, int], tuple[int, int, int]] = {}
        if not all(_negate_forget(main, body, op, c, negated) for c in cells):
            raise ValueError("forget gate rows could not be traced to their weights")  # caller keeps the original
        for chain, links in enumerate(_chains(body, cells)):
            _rewrite_chain(main, body, cond, op, links, f"{PREFIX}{n}.{chain}")
        done += len(cells)
    return done


def _float_cells(body: SubgraphView, cells: list[_Cell]) -> bool:
    return all(body.tensor(int(t)).type == FLOAT32 for c in cells
               for k in (c.mul_f, c.mul_i, c.add) for t in _ops(body, k).outputs)


def _chains(body: SubgraphView, cells: list[_Cell]) -> list[list[_Cell]]:
    """The cells in chains (one layer's steps in order: each step's c_prev is the previous step's c)."""
    by_out = {int(_ops(body, c.add).outputs[0]): c for c in cells}
    heads = [c for c in cells if c.c_prev not in by_out]
    chains = []
    for head in heads:
        chain, cur = [head], head
        while True:
            nxt = next((c for c in cells if c.c_prev == int(_ops(body, cur.add).outputs[0])), None)
            if nxt is None:
                break
            chain.append(nxt)
            cur = nxt
        chains.append(chain)
    return chains


def _negate_forget(main: SubgraphView, body: SubgraphView, loop: Any, cell: _Cell,
                   negated: dict[tuple[int, int], tuple[int, int, int]]) -> bool:
    """Negate the forget gate's columns of every weight and bias that feeds this cell's gate pre-activation."""
    s = schema().BuiltinOperator
    f = next(int(t) for t in _ops(body, cell.mul_f).inputs if int(t) != cell.c_prev)
    split = body.producer.get(f)
    if split is None or body.code(split) != s.SPLIT:
        return False
    sop = body.graph.operators[split]
    act = body.producer.get(int(sop.inputs[1]))
    if act is None or body.code(act) != s.LOGISTIC:
        return False
    k = [int(t) for t in sop.outputs].index(f)
    h = int(body.tensor(f).shape[-1])
    z = int(body.graph.operators[act].inputs[0])
    width = int(body.tensor(z).shape[-1])
    body.refresh()
    return _negate(main, body, loop, z, _Gate(k * h, (k + 1) * h, width), negated, set())


def _negate(main: SubgraphView, sub: SubgraphView, loop: Any, t: int, gate: _Gate,
            negated: dict[tuple[int, int], tuple[int, int, int]], seen: set[tuple[int, int]]) -> bool:
    """Negate columns ``gate`` of tensor ``t`` at their source: the fully-connected ops computing them, through
    ADD, shape-only ops that keep the column pattern, and the loop's pass-through variables."""
    s = schema().BuiltinOperator
    key = (id(sub.graph), t)
    if key in seen:
        return True
    seen.add(key)
    if int(sub.tensor(t).shape[-1]) % gate.width:
        return False
    k = sub.producer.get(t)
    if k is None:
        return _negate_loop_input(main, sub, loop, t, gate, negated, seen)
    op, code = sub.graph.operators[k], sub.code(k)
    if code == s.FULLY_CONNECTED:
        return _negate_fc(sub, op, gate, negated)
    if code == s.ADD:
        return all(_negate(main, sub, loop, int(i), gate, negated, seen) for i in op.inputs)
    if code in (s.RESHAPE, s.GATHER):
        return _negate(main, sub, loop, int(op.inputs[0]), gate, negated, seen)
    if code == s.SPLIT:
        return _negate(main, sub, loop, int(op.inputs[1]), gate, negated, seen)
    return False


def _negate_loop_input(main: SubgraphView, body: SubgraphView, loop: Any, t: int, gate: _Gate,
                       negated: dict[tuple[int, int], tuple[int, int, int]], seen: set[tuple[int, int]]) -> bool:
    """A body input that the body passes through unchanged: negate its initial value in the main graph."""
    ins = [int(i) for i in body.graph.inputs]
    if body is main or t not in ins or int(body.graph.outputs[ins.index(t)]) != t:
        return False
    main.refresh()
    return _negate(main, main, loop, int(loop.inputs[ins.index(t)]), gate, negated, seen)


def _negate_fc(sub: SubgraphView, op: Any, gate: _Gate, negated: dict[tuple[int, int], tuple[int, int, int]]) -> bool:
    rows = [int(op.inputs[1])] + ([int(op.inputs[2])] if len(op.inputs) > 2 and op.inputs[2] >= 0 else [])
    for t in rows:
        tensor = sub.tensor(t)
        if tensor.type != FLOAT32 or not is_const(sub.model, tensor):
            return False
        key, want = (id(sub.graph), t), (gate.lo, gate.hi, gate.width)
        if key in negated:
            if negated[key] != want:
                return False
            continue
        arr = const_array(sub.model, tensor, np.float32).reshape(tensor.shape).copy()
        if arr.shape[0] % gate.width:
            return False
        idx = np.arange(arr.shape[0]) % gate.width
        arr[(idx >= gate.lo) & (idx < gate.hi)] *= -1.0
        set_data(sub.model, tensor, arr)
        negated[key] = want
    return True


def _binary(body: SubgraphView, at: int, code: int, a: int, b: int, out: int) -> int:
    """Insert ``out = a <code> b`` (ADD, SUB or MUL, no fused activation) at ``at``; returns the next position."""
    s = schema()
    body.add_op(at, code, [a, b], [out])
    op = body.graph.operators[at]
    opts = {s.BuiltinOperator.ADD: (s.BuiltinOptions.AddOptions, s.AddOptionsT),
            s.BuiltinOperator.SUB: (s.BuiltinOptions.SubOptions, s.SubOptionsT),
            s.BuiltinOperator.MUL: (s.BuiltinOptions.MulOptions, s.MulOptionsT)}[code]
    op.builtinOptionsType, op.builtinOptions = opts[0], opts[1]()
    return at + 1


def _rewrite_chain(main: SubgraphView, body: SubgraphView, cond: SubgraphView, loop: Any, chain: list[_Cell],
                   tag: str) -> None:
    """Give a chain of cells the residual loop variable and the residual update (float ops)."""
    s = schema()
    ops = s.BuiltinOperator
    like = body.tensor(chain[0].c_prev)
    r_in = r = _new(body, like, f"{tag}:r_in")
    for k, cell in enumerate(chain):
        body.refresh()
        add = _ops(body, cell.add)
        at = body.index(add)
        d = int(_ops(body, cell.mul_f).outputs[0])  # the forget gate is 1 - f now: this is nf * c_prev
        nf = next(int(t) for t in _ops(body, cell.mul_f).inputs if int(t) != cell.c_prev)
        ig = int(_ops(body, cell.mul_i).outputs[0])
        c_out = int(add.outputs[0])
        body.graph.operators.remove(add)
        names = ("qq", "e1", "e2", "e", "D", "r")
        qq, e1, e2, e, dd, r_new = (_new(body, like, f"{tag}:{n}.{k}") for n in names)
        at = _binary(body, at, ops.MUL, nf, r, qq)
        at = _binary(body, at, ops.SUB, ig, d, e1)
        at = _binary(body, at, ops.SUB, r, qq, e2)
        at = _binary(body, at, ops.ADD, e1, e2, e)
        at = _binary(body, at, ops.ADD, cell.c_prev, e, c_out)
        at = _binary(body, at, ops.SUB, c_out, cell.c_prev, dd)
        at = _binary(body, at, ops.SUB, e, dd, r_new)
        # tanh reads c' + r' (c to its residual's precision) over the range where tanh is not yet flat
        full = _new(body, like, f"{tag}:cr.{k}")
        _binary(body, at, ops.ADD, c_out, r_new, full)
        _ops(body, cell.tanh).inputs = [full]
        r = r_new
    # the residual becomes the loop's last variable: zero at the start, unused after the loop
    body.graph.inputs = [*body.graph.inputs, r_in]
    body.graph.outputs = [*body.graph.outputs, r]
    c_in = _new(cond, like, f"{tag}:r_cond")
    cond.graph.inputs = [*cond.graph.inputs, c_in]
    zero = _new(main, like, f"{tag}:r0")
    set_data(main.model, main.tensor(zero), np.zeros([int(v) for v in like.shape], np.float32))
    loop.inputs = [*loop.inputs, zero]
    loop.outputs = [*loop.outputs, _new(main, like, f"{tag}:r_final")]


def _new(sub: SubgraphView, like: Any, name: str) -> int:
    t = sub.add_tensor(like, FLOAT32)
    sub.tensor(t).name = name.encode()
    return t


# ---------------------------------------------------------------- after quantization


@dataclass
class TanhInput:
    """The input of a cell state's TANH (``c + r``) and the cell state's range: its range is chosen last."""

    tensor: Any  #: the TensorT (it survives the later edits of the model)
    lo: float
    hi: float

    def clip(self, x: float) -> None:
        """Quantize over the cell state's range clipped to [-x, x]."""
        self.tensor.quantization = _asym(max(self.lo, -x), min(self.hi, x))


def residual_scales(model: Any, tanh_range: float = TANH_RANGES[1]) -> list[TanhInput]:
    """Scales for the rewritten cells in the quantizer's output (before the loop state is made int8): one
    quantization for a chain's cell states, exact differences on that grid, the residual at 1/128 of its step,
    the cell states' TANH inputs over [-tanh_range, tanh_range]. Returns those TANH inputs (to try other ranges
    with :meth:`TanhInput.clip`)."""
    inputs: list[TanhInput] = []
    for _, body, _, _ in while_loops(model):
        names = {bytes(t.name): i for i, t in enumerate(body.graph.tensors) if t.name}
        tags = sorted({n.split(b":")[0] for n in names if n.startswith(PREFIX.encode()) and b":D." in n})
        for tag in tags:
            inputs += _fix_chain(body, names, tag.decode())
    for t in inputs:
        t.clip(tanh_range)
    return inputs


def _named(names: dict[bytes, int], name: str) -> int | None:
    """The int8 tensor holding ``name``: the quantizer renames a subgraph input's or output's int8 copy
    ``<name>_int8`` (the float tensor keeps the name)."""
    return names.get(f"{name}_int8".encode(), names.get(name.encode()))


def _need(names: dict[bytes, int], name: str) -> int:
    t = _named(names, name)
    if t is None:
        raise ValueError(f"the quantized model has no tensor {name!r}: not a residual cell this module wrote")
    return t


def _real_range(q: Any) -> tuple[float, float]:
    if q.min is not None and len(q.min) and q.max is not None and len(q.max):
        return float(q.min[0]), float(q.max[0])
    sc, z = float(q.scale[0]), int(q.zeroPoint[0])
    return (-128 - z) * sc, (127 - z) * sc


def _asym(lo: float, hi: float) -> Any:
    """TFLite's asymmetric int8 quantization of [lo, hi] widened to hold 0."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    sc = (hi - lo) / 255.0 or 1.0
    return quantization([sc], [int(np.clip(np.round(-128 - lo / sc), -128, 127))])


def _fix_chain(body: SubgraphView, names: dict[bytes, int], tag: str) -> list[TanhInput]:
    steps: list[int] = []
    while _named(names, f"{tag}:D.{len(steps)}") is not None:
        steps.append(len(steps))
    producer = {int(t): op for op in body.graph.operators for t in op.outputs}
    # the cell states of the chain: each D = SUB(c', c_prev) names both (int8 tensors now)
    states: list[int] = []
    for k in steps:
        sub = producer[_need(names, f"{tag}:D.{k}")]
        states += [int(t) for t in sub.inputs if int(t) not in states]
    ranges = [_real_range(body.tensor(t).quantization) for t in states]
    cq = _asym(min(r[0] for r in ranges), max(r[1] for r in ranges))
    step = float(cq.scale[0])
    for state in states:
        body.tensor(state).quantization = copy_quantization(cq)
    # the residual: |r| <= step/2 (what one rounding to c's grid drops), at step/128 (XNNPACK takes an ADD or SUB
    # whose input scale is below 256x its output's: e - D with D on c's grid)
    fine = quantization([step / _RESIDUAL_STEPS], [0])
    for name in ["r_in", *[f"{n}.{k}" for k in steps for n in ("qq", "e2", "r")]]:
        found = _named(names, f"{tag}:{name}")
        if found is not None:
            body.tensor(found).quantization = copy_quantization(fine)
    lo, hi = _real_range(cq)
    tanh_inputs = []
    for k in steps:
        body.tensor(_need(names, f"{tag}:D.{k}")).quantization = quantization([step], [0])  # whole steps of c
        e = body.tensor(_need(names, f"{tag}:e.{k}"))
        e_lo, e_hi = _real_range(e.quantization)
        e.quantization = _asym(e_lo - step / 2, e_hi + step / 2)  # the float range, with the residual's
        tanh_inputs.append(TanhInput(body.tensor(_need(names, f"{tag}:cr.{k}")), lo, hi))
    return tanh_inputs


def residual_chains(model: Any) -> int:
    """How many residual cell chains (a layer's steps in a loop body) ``model`` holds, read from its ops: a chain
    step subtracts two int8 cell states on one grid into an exact difference (same scale, zero point 0) that a SUB
    takes from the state's change (the new residual)."""
    s = schema()
    chains = 0
    for _, body, _, _ in while_loops(model):
        body.refresh()
        outs: set[int] = set()
        prevs: list[int] = []
        for k, op in enumerate(body.graph.operators):
            if body.code(k) != s.BuiltinOperator.SUB or len(op.inputs) != 2:
                continue
            a, b, o = (body.tensor(int(t)) for t in (*op.inputs, op.outputs[0]))
            qa, qb, qo = a.quantization, b.quantization, o.quantization
            out = int(op.outputs[0])
            into_sub = any(body.code(u) == s.BuiltinOperator.SUB and int(body.graph.operators[u].inputs[1]) == out
                           for u in body.consumers.get(out, []))
            if not into_sub or a.type != s.TensorType.INT8 or None in (qa, qb, qo) or not same_quantization(qa, qb) \
                    or not np.isclose(float(qo.scale[0]), float(qa.scale[0])) or int(qo.zeroPoint[0]) != 0:
                continue
            outs.add(int(op.inputs[0]))
            prevs.append(int(op.inputs[1]))
        chains += sum(1 for p in prevs if p not in outs)
    return chains
