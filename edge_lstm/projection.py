"""LSTMs with ``proj_size``: ONNX's LSTM op has no projection, so these layers are
captured as explicit per-step cells (input projection for all steps at once,
then the recurrence), which every runtime and the unrolled TFLite lowering run.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

#: doc_string prefix of the ONNX Scan a projected LSTM layer direction is captured as; JSON metadata follows
PROJECTION_TAG = "edge-lstm:lstm-projection "

if TYPE_CHECKING:
    import torch
    from torch import nn


def has_projection(module: nn.Module) -> bool:
    """True when any ``nn.LSTM`` inside uses ``proj_size``."""
    from torch import nn

    return any(isinstance(m, nn.LSTM) and m.proj_size > 0 for m in module.modules())


def unroll_projections(module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose projected LSTMs are replaced by explicit cells."""
    from torch import nn

    clone = copy.deepcopy(module)
    for parent in list(clone.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.LSTM) and child.proj_size > 0:
                setattr(parent, name, _cells_cls()(child))
    return clone


def _cells_cls() -> type:
    import torch
    from torch import nn

    class ProjectedLSTMCells(nn.Module):
        """Computes exactly what ``nn.LSTM(proj_size=P)`` computes, one step at a time."""

        def __init__(self, lstm: nn.LSTM) -> None:
            super().__init__()
            self.lstm = lstm

        def forward(self, x: torch.Tensor, hx: Any = None) -> Any:
            lstm = self.lstm
            seq = x.transpose(0, 1) if lstm.batch_first else x
            dirs = 2 if lstm.bidirectional else 1
            batch = seq.shape[1]
            if hx is None:
                h0 = seq.new_zeros(lstm.num_layers * dirs, batch, lstm.proj_size)
                c0 = seq.new_zeros(lstm.num_layers * dirs, batch, lstm.hidden_size)
            else:
                h0, c0 = hx
            hs, cs = [], []
            for layer in range(lstm.num_layers):
                outs = []
                for d in range(dirs):
                    out, h, c = self._direction(seq, layer, d, h0[layer * dirs + d], c0[layer * dirs + d])
                    outs.append(out)
                    hs.append(h)
                    cs.append(c)
                seq = torch.cat(outs, dim=-1) if dirs == 2 else outs[0]
            y = seq.transpose(0, 1) if lstm.batch_first else seq
            return y, (torch.stack(hs), torch.stack(cs))

        def _direction(self, seq: torch.Tensor, layer: int, d: int, h: torch.Tensor,
                       c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            lstm = self.lstm
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            w_ih, w_hh, w_hr = (getattr(lstm, f"weight_{k}{sfx}") for k in ("ih", "hh", "hr"))
            pre = torch.matmul(seq, w_ih.t())
            if lstm.bias:
                pre = pre + getattr(lstm, f"bias_ih{sfx}") + getattr(lstm, f"bias_hh{sfx}")
            steps = range(seq.shape[0] - 1, -1, -1) if d else range(seq.shape[0])
            outs = []
            for t in steps:
                gates = pre[t] + torch.matmul(h, w_hh.t())
                i, f, g, o = gates.chunk(4, dim=-1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.matmul(torch.sigmoid(o) * torch.tanh(c), w_hr.t())
                outs.append(h)
            if d:
                outs.reverse()
            return torch.stack(outs), h, c

    return ProjectedLSTMCells
