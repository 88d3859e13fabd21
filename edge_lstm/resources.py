"""Find the data files that ship with the package (``export/``, ``targets/``)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def data_dir(kind: str) -> Path:
    """The directory of bundled ``kind`` files: inside the wheel, or the source checkout's."""
    packaged = resources.files("edge_lstm") / "_data" / kind
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / kind
