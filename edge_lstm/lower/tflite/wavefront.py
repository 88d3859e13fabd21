"""Two stacked LSTM layers as one LSTM cell, the upper layer one step behind (a *wavefront*).

At step ``t`` the lower layer computes its step ``t`` from ``h1_{t-1}`` and
the upper layer its step ``t-1`` from ``h1_{t-1}`` and ``h2_{t-2}``: both read
only the state ``[h1_{t-1}, h2_{t-2}]``, so the pair is one LSTM cell of
``H1 + H2`` units over ``T + 1`` steps, whose recurrent matrix holds, gate by
gate, ``[[R1, 0], [W2, R2]]`` (the upper layer's input weights become
recurrent ones) and whose input weights feed only the lower layer's rows.
One cell of twice the width costs half the kernel calls of two cells, and the
upper layer's input product needs no separate op.

The upper layer must not move at step 0 (its input ``h1_{-1}`` does not
exist): an extra input feature, 1 at step 0 and 0 after, carries the weight
``-b`` on the upper layer's cell-gate rows, so that gate's pre-activation is
exactly ``b - b = 0`` there, ``tanh(0) = 0``, and the upper state stays exactly
zero (``c = f*0 + i*0``, ``h = o*tanh(0)``). The weight is the size of a bias,
so per-tensor int8 weight scales (dynamic int8) are not stretched by it. At
step ``T`` the lower layer's half computes a step nobody reads.

Used by the loop lowering for dynamic int8 (:func:`edge_lstm.lower.tflite.loop.run_pair`): whole windows
(not one-step streaming models, whose state would then lag a step) of a small forward pair, the upper layer
starting from zeros, read only at its last step. In float, and for larger layers, the combined matrix's
extra bytes cost more than the ops saved; full int8 keeps the layers apart, as the quantizer's per-layer
ranges and the int16 cell rewrite need. (A fused ``UNIDIRECTIONAL_SEQUENCE_LSTM`` of the combined cell ran
1.2x slower than two fused ops on TFLite's builtin kernel, whose time is its matrix-vector products.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_lstm.lower.tflite.cells import FUSED_ORDER


@dataclass(frozen=True)
class Pair:
    """The combined cell's weights in ONNX gate order (i, o, f, c), each gate's rows lower layer first."""

    w: np.ndarray  #: [4*(H1+H2), I+1] input weights; the last column is the step-0 feature
    r: np.ndarray  #: [4*(H1+H2), H1+H2] recurrent weights
    b: np.ndarray  #: [4*(H1+H2)] bias (input and recurrent biases added)
    h1: int
    h2: int

    def gate(self, m: np.ndarray, g: int) -> np.ndarray:
        """Gate ``g``'s rows (ONNX order) of a combined matrix or vector."""
        n = self.h1 + self.h2
        return np.ascontiguousarray(m[g * n : (g + 1) * n])

    def fused(self, m: np.ndarray) -> list[np.ndarray]:
        """``m``'s gate blocks in the fused op's slot order (i, f, c, o)."""
        return [self.gate(m, g) for g in FUSED_ORDER]


#: ONNX's LSTM gate order i, o, f, c: the cell gate's index
_CELL = 3


def combine(w1: np.ndarray, r1: np.ndarray, b1: np.ndarray, w2: np.ndarray, r2: np.ndarray,
            b2: np.ndarray) -> Pair:
    """The pair's combined cell from each layer's ONNX-order weights: ``w`` [4H, I], ``r`` [4H, H], ``b`` [4H]
    (both biases added)."""
    h1, h2 = r1.shape[1], r2.shape[1]
    i = w1.shape[1]
    ws, rs, bs = [], [], []
    for g in range(4):
        lo, up = slice(g * h1, (g + 1) * h1), slice(g * h2, (g + 1) * h2)
        step0 = np.zeros((h2, 1), np.float32)
        if g == _CELL:
            step0[:, 0] = -b2[up]
        ws += [np.concatenate([w1[lo], np.zeros((h1, 1), np.float32)], 1),
               np.concatenate([np.zeros((h2, i), np.float32), step0], 1)]
        rs += [np.concatenate([r1[lo], np.zeros((h1, h2), np.float32)], 1), np.concatenate([w2[up], r2[up]], 1)]
        bs += [b1[lo], b2[up]]
    return Pair(np.concatenate(ws).astype(np.float32), np.concatenate(rs).astype(np.float32),
                np.concatenate(bs).astype(np.float32), h1, h2)


def step0_feature(steps: int, batch: int) -> np.ndarray:
    """The extra input column over the ``steps + 1`` steps (time-major rows): 1 at step 0, else 0."""
    e = np.zeros(((steps + 1) * batch, 1), np.float32)
    e[:batch] = 1.0
    return e
