"""docs/architecture.md names every module of the package and nothing that is gone, and its layers hold: no module
imports one from a group listed after its own (imports inside functions count; see tests/test_imports.py)."""

from __future__ import annotations

import re
from pathlib import Path

from test_imports import import_graph, module_names  # test helpers import by module name

REPO = Path(__file__).resolve().parents[1]


def _groups() -> list[tuple[str, list[str]]]:
    """(heading, module files) of each group of the map, in order."""
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    out = []
    for block in re.split(r"^### ", text, flags=re.M)[1:]:
        heading = block.splitlines()[0]
        out.append((heading, re.findall(r"^\| `([a-z0-9_/]+\.py)` \|", block, flags=re.M)))
    return out


def _dotted(file: str) -> str:
    name = "edge_lstm." + file.removesuffix(".py").replace("/", ".")
    return name.removesuffix(".__init__")


def test_the_module_map_matches_the_code() -> None:
    listed = {f for _, files in _groups() for f in files}
    package = REPO / "edge_lstm"
    actual = {p.relative_to(package).as_posix() for p in package.rglob("*.py")}
    assert not actual - listed, f"modules missing from docs/architecture.md: {sorted(actual - listed)}"
    assert not listed - actual, f"docs/architecture.md names modules that do not exist: {sorted(listed - actual)}"


def test_no_module_imports_a_later_layer() -> None:
    groups = _groups()
    rank = {_dotted(f): i for i, (_, files) in enumerate(groups) for f in files}
    graph = import_graph(module_names())
    upward = [f"{a} ({groups[rank[a]][0]}) imports {b} ({groups[rank[b]][0]})"
              for a, deps in sorted(graph.items()) for b in sorted(deps) if rank.get(b, -1) > rank.get(a, -1)]
    assert not upward, "imports against the layers of docs/architecture.md:\n" + "\n".join(upward)
