"""Device targets: TOML files under ``targets/`` -> validated, frozen :class:`Target`.

The files ship inside the wheel at ``edge_lstm/_data/targets`` and are read with
:mod:`importlib.resources`; in a source checkout the repository's ``targets/``
directory is used. A user may pass the path of their own TOML file instead of a
name. Every figure in a target file carries its source; throughput figures are
estimates and say how they were estimated.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from edge_lstm.errors import InputFileError, UsageError

KINDS = ("linux", "android", "mcu")
LOWERINGS = ("fused", "unrolled")
PRECISIONS = ("fp32", "fp16", "dynamic-int8", "int8")
RUNTIMES = ("onnxruntime", "litert", "tflite-runtime", "tflm", "torch")


@dataclass(frozen=True)
class Target:
    """One device: CPU, memory, runtimes, preferences and an estimated throughput.

    ``ram_budget_bytes`` and ``flash_budget_bytes`` are what the model may use
    (they default to the whole RAM and flash). ``fp32_macs_per_s`` and
    ``int8_macs_per_s`` are estimates of sustained single-thread throughput on
    batch-1 recurrent work; ``throughput_method`` says how they were estimated.
    """

    name: str
    display_name: str
    kind: str
    cpu: str
    arch: str
    cores: int
    clock_hz: int
    ram_bytes: int
    flash_bytes: int
    ram_budget_bytes: int
    flash_budget_bytes: int
    runtimes: tuple[str, ...]
    preferred_lowering: str
    preferred_precision: str
    fp32_macs_per_s: float
    int8_macs_per_s: float
    throughput_method: str
    sources: tuple[tuple[str, str], ...]
    path: str = ""

    def macs_per_s(self, precision: str) -> float:
        """Estimated throughput for an artifact of ``precision`` (int8 kinds use the int8 figure)."""
        return self.int8_macs_per_s if "int8" in precision else self.fp32_macs_per_s

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; throughput figures are labelled as estimates."""
        d = asdict(self)
        d["runtimes"] = list(self.runtimes)
        d["sources"] = dict(self.sources)
        d["throughput_is_estimate"] = True
        return d


def _targets_dir() -> Path:
    """The installed ``_data/targets`` directory, else the source checkout's ``targets/``."""
    try:
        packaged = resources.files("edge_lstm") / "_data" / "targets"
        if packaged.is_dir():
            return Path(str(packaged))
    except (ModuleNotFoundError, NotADirectoryError):  # pragma: no cover - odd installs
        pass
    return Path(__file__).resolve().parent.parent / "targets"


def list_targets() -> list[Target]:
    """Every built-in target, sorted by name."""
    return [load_target(p) for p in sorted(_targets_dir().glob("*.toml"))]


def known_names() -> list[str]:
    """Names of the built-in targets (file stems)."""
    return sorted(p.stem for p in _targets_dir().glob("*.toml"))


def load_target(name_or_path: str | Path) -> Target:
    """A built-in target by name, or a target TOML file by path."""
    text = str(name_or_path)
    path = Path(text)
    if not (text.endswith(".toml") or path.is_file()):
        path = _targets_dir() / f"{text}.toml"
        if not path.is_file():
            raise UsageError(
                f"Unknown target '{text}'.",
                f"Known targets: {', '.join(known_names())}; or pass the path of a target .toml file.",
            )
    if not path.is_file():
        raise InputFileError(f"Target file '{path}' does not exist.", "Pass a built-in name or an existing .toml file.")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise InputFileError(f"Target file '{path}' is not valid TOML: {e}.") from e
    return _build(data, path)


class _Reader:
    """Reads dotted fields from parsed TOML, naming the field and file in every error."""

    def __init__(self, data: dict[str, Any], path: Path) -> None:
        self.data = data
        self.path = path

    def get(self, dotted: str, kind: type | tuple[type, ...], default: Any = None, required: bool = True) -> Any:
        node: Any = self.data
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                if required:
                    raise InputFileError(
                        f"Target file '{self.path}' is missing the field '{dotted}'.",
                        "See the built-in files under targets/ for every required field.",
                    )
                return default
            node = node[part]
        if isinstance(node, bool) or not isinstance(node, kind):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise InputFileError(f"Target file '{self.path}': field '{dotted}' must be {names}, got {node!r}.")
        return node

    def positive(self, dotted: str, default: Any = None, required: bool = True) -> Any:
        value = self.get(dotted, (int, float), default, required)
        if value is not None and value <= 0:
            raise InputFileError(f"Target file '{self.path}': field '{dotted}' must be > 0, got {value}.")
        return value

    def choice(self, dotted: str, allowed: tuple[str, ...]) -> str:
        value = str(self.get(dotted, str))
        if value not in allowed:
            raise InputFileError(
                f"Target file '{self.path}': field '{dotted}' is '{value}'.", f"Accepted: {', '.join(allowed)}."
            )
        return value


def _build(data: dict[str, Any], path: Path) -> Target:
    r = _Reader(data, path)
    runtimes = r.get("software.runtimes", list)
    bad = [x for x in runtimes if x not in RUNTIMES]
    if bad or not runtimes:
        raise InputFileError(
            f"Target file '{path}': field 'software.runtimes' has {bad or 'no entries'}.",
            f"Accepted runtimes: {', '.join(RUNTIMES)}.",
        )
    sources = r.get("sources", dict)
    ram = int(r.positive("memory.ram_bytes"))
    flash = int(r.positive("memory.flash_bytes"))
    return Target(
        name=str(r.get("name", str)),
        display_name=str(r.get("display_name", str)),
        kind=r.choice("kind", KINDS),
        cpu=str(r.get("cpu.name", str)),
        arch=str(r.get("cpu.arch", str)),
        cores=int(r.positive("cpu.cores")),
        clock_hz=int(r.positive("cpu.clock_hz")),
        ram_bytes=ram,
        flash_bytes=flash,
        ram_budget_bytes=int(r.positive("memory.ram_budget_bytes", ram, required=False)),
        flash_budget_bytes=int(r.positive("memory.flash_budget_bytes", flash, required=False)),
        runtimes=tuple(str(x) for x in runtimes),
        preferred_lowering=r.choice("software.preferred_lowering", LOWERINGS),
        preferred_precision=r.choice("software.preferred_precision", PRECISIONS),
        fp32_macs_per_s=float(r.positive("throughput.fp32_macs_per_s")),
        int8_macs_per_s=float(r.positive("throughput.int8_macs_per_s")),
        throughput_method=str(r.get("throughput.method", str)),
        sources=tuple((str(k), str(v)) for k, v in sources.items()),
        path=str(path),
    )
