"""C literals and comments: exact float32 literals, arrays, and text made safe inside a comment."""

from __future__ import annotations

import numpy as np

from edge_lstm.errors import UsageError


def cfloat(v: float) -> str:
    """A float32 literal that reads back to exactly ``v`` (9 significant digits are enough for float32)."""
    f = float(np.float32(v))
    if not np.isfinite(f):
        raise UsageError(f"The model holds a non-finite constant ({f}); it cannot be written as C.",
                         "Check the model's weights for NaN or Inf.")
    s = f"{f:.9g}"
    if "e" not in s and "." not in s:
        s += ".0"
    return s + "f"


def comment(text: str) -> str:
    """``text`` made safe inside a C comment: printable ASCII, no comment terminator, at most 120 characters."""
    clean = "".join(ch if " " <= ch <= "~" else "?" for ch in str(text))
    return clean.replace("*/", "* /")[:120]


def c_array(ctype: str, name: str, values: np.ndarray, per_line: int, qualifiers: str = "static const") -> str:
    """A C array definition of ``values`` (floats as exact literals, integers as decimals)."""
    flat = np.asarray(values).reshape(-1)
    fmt = cfloat if ctype == "float" else (lambda v: str(int(v)))
    lines = [", ".join(fmt(v) for v in flat[i:i + per_line]) for i in range(0, flat.size, per_line)]
    body = ",\n  ".join(lines)
    return f"{qualifiers} {ctype} {name}[{flat.size}] = {{\n  {body}\n}};\n"
