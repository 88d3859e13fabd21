"""The options several commands share, declared once: ``--json``, ``--force``, ``--input-shape``,
``--input-dtype``, ``--trust-pickle``.

Typer reads these annotations at run time, and the device-side commands (:mod:`edge_lstm.cli_bundle`, served
by :mod:`edge_lstm.entry` on Python 3.9) use them too: so this module has no ``from __future__ import
annotations`` and no ``X | None`` (``Optional``, ``List`` instead).
"""

from typing import Annotated, List, Optional  # noqa: UP035 - typer evaluates the annotations on Python 3.9

import typer

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON only.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace existing outputs.")]
ShapeOpt = Annotated[Optional[List[str]], typer.Option(  # noqa: UP006, UP045 - Python 3.9, see above
    "--input-shape", help="Input shape like 1x96x1 (PyTorch model files); repeat once per forward() input, in "
                          "order.", show_default=False)]
DtypeOpt = Annotated[Optional[List[str]], typer.Option(  # noqa: UP006, UP045 - Python 3.9, see above
    "--input-dtype", help="Input dtype: float32, int64 or int32 (token ids); repeat once per forward() input, in "
                          "order. Inputs that feed an embedding are found as int64 without it.")]
TrustOpt = Annotated[bool, typer.Option(
    "--trust-pickle", help="Allow loading a whole pickled nn.Module (runs code from the file).")]
