"""One small PyTorch module per entry of the TFLite op table, with the ONNX op it exports to.

Each case is captured with edge-lstm's ONNX capture, lowered, and compared with
PyTorch (``test_ops.py``); ``golden`` is the exact TFLite op sequence the
lowering must write for it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


class Fn(nn.Module):
    """A module around a function of its inputs (for ops with no nn.Module)."""

    def __init__(self, fn: Callable[..., torch.Tensor], *modules: nn.Module) -> None:
        super().__init__()
        self.fn = fn
        self.mods = nn.ModuleList(modules)

    def forward(self, *x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.mods, *x)


@dataclass(frozen=True)
class OpCase:
    """A module exercising ``onnx_op``, its input shapes, and the TFLite ops it must lower to."""

    onnx_op: str
    build: Callable[[], nn.Module]
    shapes: tuple[tuple[int, ...], ...]
    golden: tuple[str, ...]
    int_input: bool = False
    claims_as: tuple[str, ...] = ()  #: the ONNX ops whose support claims this case checks, when not its own


def _bn_after_linear() -> nn.Module:
    bn = nn.BatchNorm1d(4)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.uniform_(-0.5, 0.5)
    return nn.Sequential(nn.Linear(3, 4), bn)


def _seq(*mods: nn.Module) -> Callable[[], nn.Module]:
    return lambda: nn.Sequential(*mods)


def _fn(fn: Callable[..., torch.Tensor], *mods: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    return lambda: Fn(fn, *(m() for m in mods))


CASES: dict[str, OpCase] = {
    "reduce_mean": OpCase("ReduceMean", _fn(lambda m, x: x.mean(dim=1)), ((1, 6, 4),), ("MEAN",)),
    "reduce_sum": OpCase("ReduceSum", _fn(lambda m, x: x.sum(dim=-1, keepdim=True)), ((1, 6, 4),), ("SUM",)),
    "reduce_max": OpCase("ReduceMax", _fn(lambda m, x: x.amax(dim=1)), ((1, 6, 4),), ("REDUCE_MAX",)),
    "reduce_min": OpCase("ReduceMin", _fn(lambda m, x: x.amin(dim=(1, 2))), ((1, 6, 4),), ("REDUCE_MIN",)),
    "conv1d": OpCase("Conv", _seq(nn.Conv1d(3, 5, 3, padding=1)), ((1, 3, 10),),
                     ("TRANSPOSE", "RESHAPE", "CONV_2D", "RESHAPE", "TRANSPOSE")),
    "conv1d_strided_valid": OpCase("Conv", _seq(nn.Conv1d(3, 4, 4, stride=2, dilation=1)), ((1, 3, 12),),
                                   ("TRANSPOSE", "RESHAPE", "CONV_2D", "RESHAPE", "TRANSPOSE")),
    "conv2d": OpCase("Conv", _seq(nn.Conv2d(2, 4, 3, padding=1)), ((1, 2, 6, 5),),
                     ("TRANSPOSE", "CONV_2D", "TRANSPOSE")),
    "conv2d_asymmetric_pad": OpCase("Conv", _seq(nn.Conv2d(2, 3, (3, 2), padding=(2, 0), dilation=(1, 2))),
                                    ((1, 2, 6, 7),), ("TRANSPOSE", "PAD", "CONV_2D", "TRANSPOSE")),
    "conv2d_depthwise": OpCase("Conv", _seq(nn.Conv2d(3, 6, 3, padding=1, groups=3)), ((1, 3, 5, 5),),
                               ("TRANSPOSE", "DEPTHWISE_CONV_2D", "TRANSPOSE")),
    "conv_transpose1d": OpCase("ConvTranspose", _seq(nn.ConvTranspose1d(3, 2, 3, stride=2)), ((1, 3, 5),),
                               ("TRANSPOSE", "RESHAPE", "TRANSPOSE_CONV", "RESHAPE", "TRANSPOSE")),
    "conv_transpose2d_padded": OpCase("ConvTranspose", _seq(nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1)),
                                      ((1, 2, 4, 4),), ("TRANSPOSE", "TRANSPOSE_CONV", "STRIDED_SLICE", "TRANSPOSE")),
    # folded: the fully-connected layer's weights and bias absorb the normalisation (PyTorch's exporter folds a
    # BatchNorm after a convolution itself; test_ops.py folds one after a hand-written ONNX Conv)
    "batchnorm_folded": OpCase("BatchNormalization", lambda: _bn_after_linear(), ((1, 3),), ("FULLY_CONNECTED",)),
    "batchnorm_alone": OpCase("BatchNormalization", _seq(nn.BatchNorm1d(4)), ((1, 4, 6),), ("MUL", "ADD")),
    "max_pool1d": OpCase("MaxPool", _seq(nn.MaxPool1d(2)), ((1, 3, 8),),
                         ("TRANSPOSE", "RESHAPE", "MAX_POOL_2D", "RESHAPE", "TRANSPOSE")),
    "max_pool2d_padded": OpCase("MaxPool", _seq(nn.MaxPool2d(3, stride=2, padding=1)), ((1, 2, 7, 7),),
                                ("TRANSPOSE", "MAX_POOL_2D", "TRANSPOSE")),
    "avg_pool2d": OpCase("AveragePool", _seq(nn.AvgPool2d(2)), ((1, 2, 6, 4),),
                         ("TRANSPOSE", "AVERAGE_POOL_2D", "TRANSPOSE")),
    "global_avg_pool": OpCase("GlobalAveragePool", _seq(nn.AdaptiveAvgPool2d(1)), ((1, 3, 4, 5),), ("MEAN",)),
    # a convolution chain transposes only at its ends
    "conv_relu_pool_chain": OpCase("Conv", _seq(nn.Conv1d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool1d(2),
                                                nn.Conv1d(4, 2, 3, padding=1)), ((1, 3, 8),),
                                   ("TRANSPOSE", "RESHAPE", "CONV_2D", "RELU", "MAX_POOL_2D", "CONV_2D", "RESHAPE",
                                    "TRANSPOSE")),
    "clip": OpCase("Clip", _fn(lambda m, x: x.clamp(-0.5, 0.7)), ((1, 8),), ("MAXIMUM", "MINIMUM")),
    "relu6": OpCase("Clip", _seq(nn.ReLU6()), ((1, 8),), ("RELU6",)),
    "hardsigmoid": OpCase("HardSigmoid", _seq(nn.Hardsigmoid()), ((1, 8),), ("MUL", "ADD", "MINIMUM", "MAXIMUM")),
    "hardswish": OpCase("HardSwish", _seq(nn.Hardswish()), ((1, 8),), ("HARD_SWISH",)),
    "softplus": OpCase("Softplus", _seq(nn.Softplus()), ((1, 8),), ("ABS", "SUB", "EXP", "ADD", "LOG", "RELU", "ADD")),
    "log": OpCase("Log", _fn(lambda m, x: torch.log(x.abs() + 1.0)), ((1, 8),), ("ABS", "ADD", "LOG")),
    "pow_square": OpCase("Pow", _fn(lambda m, x: x**2), ((1, 8),), ("MUL",), claims_as=("Mul",)),
    "pow_general": OpCase("Pow", _fn(lambda m, x: (x.abs() + 0.1) ** 1.5), ((1, 8),), ("ABS", "ADD", "POW")),
    "cast": OpCase("Cast", _fn(lambda m, x: (x > 0).to(torch.float32) * x), ((1, 8),), ("GREATER", "CAST", "MUL")),
    "expand": OpCase("Expand", _fn(lambda m, x: x[:, :1].expand(1, 5, 3)), ((1, 4, 3),),
                     ("STRIDED_SLICE", "BROADCAST_TO")),
    "where": OpCase("Where", _fn(lambda m, x: torch.where(x > 0, x, 0.1 * x)), ((1, 8),),
                    ("GREATER", "MUL", "SELECT_V2")),
    "pad": OpCase("Pad", _fn(lambda m, x: nn.functional.pad(x, (1, 2))), ((1, 3, 4),), ("PAD",)),
    "pad_value": OpCase("Pad", _fn(lambda m, x: nn.functional.pad(x, (0, 0, 2, 0), value=-1.0)), ((1, 3, 4),),
                        ("PADV2",)),
    "pad_reflect": OpCase("Pad", _fn(lambda m, x: nn.functional.pad(x, (2, 1), mode="reflect")), ((1, 3, 5),),
                          ("MIRROR_PAD",)),
    "tile": OpCase("Tile", _fn(lambda m, x: x.repeat(1, 3, 1)), ((1, 2, 4),), ("TILE",)),
    "argmax": OpCase("ArgMax", _fn(lambda m, x: x.argmax(dim=-1)), ((1, 5, 7),), ("ARG_MAX",)),
    "dropout": OpCase("Dropout", _seq(nn.Linear(4, 4), nn.Dropout(0.5)), ((1, 4),), ("FULLY_CONNECTED",)),
    # the core table: elementwise, activations, dense layers and data movement
    "add_sub_mul": OpCase("Sub", _fn(lambda m, x, y: (x + y) * x - y), ((1, 6), (1, 6)), ("ADD", "MUL", "SUB")),
    "div": OpCase("Div", _fn(lambda m, x: x / (x.abs() + 1.0)), ((1, 6),), ("ABS", "ADD", "DIV")),
    "exp": OpCase("Exp", _fn(lambda m, x: torch.exp(x)), ((1, 6),), ("EXP",)),
    "neg_exp": OpCase("Exp", _fn(lambda m, x: torch.exp(-x)), ((1, 6),), ("NEG", "EXP")),
    "sqrt": OpCase("Sqrt", _fn(lambda m, x: torch.sqrt(x.abs() + 0.5)), ((1, 6),), ("ABS", "ADD", "SQRT")),
    "floor_ceil": OpCase("Ceil", _fn(lambda m, x: torch.floor(x * 3) + torch.ceil(x * 2)), ((1, 6),),
                         ("MUL", "FLOOR", "MUL", "CEIL", "ADD")),
    "reciprocal": OpCase("Reciprocal", _fn(lambda m, x: torch.reciprocal(x.abs() + 1.0)), ((1, 6),),
                         ("ABS", "ADD", "DIV")),
    "max_min": OpCase("Max", _fn(lambda m, x, y: torch.maximum(x, y) - torch.minimum(x, y)), ((1, 6), (1, 6)),
                      ("MAXIMUM", "MINIMUM", "SUB")),
    "compare": OpCase("Less", _fn(lambda m, x: torch.where(x < 0.5, x, x * 2) + (x == 0).float()), ((1, 6),),
                      ("LESS", "MUL", "SELECT_V2", "EQUAL", "CAST", "ADD")),
    "relu_tanh_sigmoid": OpCase("Sigmoid", _fn(lambda m, x: torch.relu(x) + torch.tanh(x) * torch.sigmoid(x)),
                                ((1, 6),), ("RELU", "TANH", "LOGISTIC", "MUL", "ADD")),
    "leaky_relu": OpCase("LeakyRelu", _seq(nn.LeakyReLU(0.1)), ((1, 6),), ("LEAKY_RELU",)),
    "gelu": OpCase("Erf", _seq(nn.GELU()), ((1, 6),), ("GELU",)),  # the erf form, fused into one GELU
    "layernorm": OpCase("LayerNormalization", _seq(nn.LayerNorm(6)), ((1, 3, 6),),
                        ("MEAN", "SUB", "MUL", "MEAN", "ADD", "RSQRT", "MUL", "MUL", "ADD")),
    "linear": OpCase("Gemm", _seq(nn.Linear(6, 3)), ((1, 6),), ("FULLY_CONNECTED",)),
    "linear_3d": OpCase("MatMul", _seq(nn.Linear(6, 3)), ((1, 4, 6),), ("FULLY_CONNECTED",)),
    "batch_matmul": OpCase("MatMul", _fn(lambda m, x, y: x @ y), ((1, 3, 4), (1, 4, 2)), ("BATCH_MATMUL",)),
    "movement": OpCase("Transpose", _fn(lambda m, x: torch.flatten(x.transpose(1, 2).unsqueeze(0).squeeze(0), 1)),
                       ((1, 3, 4),), ("TRANSPOSE", "RESHAPE", "RESHAPE", "RESHAPE")),
    "slice_gather": OpCase("Gather", _fn(lambda m, x: x[:, 1:3] + x[:, -1].unsqueeze(1)), ((1, 5, 2),),
                           ("STRIDED_SLICE", "STRIDED_SLICE", "RESHAPE", "ADD")),
    "concat_split": OpCase("Split", _fn(lambda m, x: torch.cat(list(torch.split(x, [2, 4], dim=-1))[::-1], dim=-1)),
                           ((1, 6),), ("STRIDED_SLICE", "STRIDED_SLICE", "CONCATENATION")),
    "softmax_time_axis": OpCase("Softmax", _fn(lambda m, x: torch.softmax(x, dim=1)), ((1, 6, 3),),
                                ("TRANSPOSE", "SOFTMAX", "TRANSPOSE")),
}
