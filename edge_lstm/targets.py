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

from edge_lstm import registry, schema
from edge_lstm.errors import TargetError, UsageError
from edge_lstm.registry import LOWERINGS
from edge_lstm.spec import Precision

KINDS = ("linux", "android", "mcu")
#: what a target may prefer and run: the registry's precisions and runtimes
PRECISIONS: tuple[str, ...] = tuple(p.value for p in Precision)
RUNTIMES: tuple[str, ...] = registry.RUNTIMES


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
    firmware: dict[str, Any] | None = None  # [firmware]: cpu, fpu, float_abi, qemu_machine, flash/ram origins

    def macs_per_s(self, precision: str) -> float:
        """Estimated throughput for an artifact of ``precision`` (int8 kinds use the int8 figure)."""
        return self.int8_macs_per_s if registry.integer_math(precision) else self.fp32_macs_per_s

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
    """A built-in target by name or a unique prefix of one (``rpi4`` -> ``rpi4b``), or a target TOML file by
    path."""
    text = str(name_or_path)
    path = Path(text)
    if not (text.endswith(".toml") or path.is_file()):
        path = _targets_dir() / f"{text}.toml"
        matches = [n for n in known_names() if n.startswith(text)] if text else []
        if not path.is_file() and len(matches) == 1:
            path = _targets_dir() / f"{matches[0]}.toml"
        if not path.is_file():
            which = f"'{text}' is the start of {', '.join(matches)}: name one. " if len(matches) > 1 else ""
            raise UsageError(
                f"Unknown target '{text}'.",
                f"{which}Known targets: {', '.join(known_names())}; or pass the path of a target .toml file.",
            )
    if not path.is_file():
        raise TargetError(f"Target file '{path}' does not exist.", "Pass a built-in name or an existing .toml file.")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError, RecursionError) as e:
        raise TargetError(f"Target file '{path}' is not valid TOML: {e}.") from e
    return _build(data, path)


_TEXT = {"type": "string", "minLength": 1, "maxLength": 1000}
_BYTES = {"type": "integer", "minimum": 1, "maximum": 1 << 50}
_RATE = {"type": "number", "exclusiveMinimum": 0, "maximum": 1e16}
_ADDRESS = {"type": "integer", "minimum": 0, "maximum": (1 << 64) - 1}


def _table(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "properties": props, "required": required or []}


#: the schema of a target file; ``[firmware]`` (optional) says how to build and emulate firmware for it
SCHEMA: dict[str, Any] = _table({
    "name": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"},
    "display_name": _TEXT,
    "kind": {"enum": list(KINDS)},
    "cpu": _table({"name": _TEXT, "arch": _TEXT, "cores": {"type": "integer", "minimum": 1, "maximum": 4096},
                   "clock_hz": {"type": "number", "exclusiveMinimum": 0, "maximum": 1e12}},
                  ["name", "arch", "cores", "clock_hz"]),
    "memory": _table({"ram_bytes": _BYTES, "flash_bytes": _BYTES, "ram_budget_bytes": _BYTES,
                      "flash_budget_bytes": _BYTES}, ["ram_bytes", "flash_bytes"]),
    "software": _table({"runtimes": {"type": "array", "minItems": 1, "uniqueItems": True,
                                     "items": {"enum": list(RUNTIMES)}},
                        "preferred_lowering": {"enum": list(LOWERINGS)},
                        "preferred_precision": {"enum": list(PRECISIONS)}},
                       ["runtimes", "preferred_lowering", "preferred_precision"]),
    "throughput": _table({"fp32_macs_per_s": _RATE, "int8_macs_per_s": _RATE, "method": _TEXT},
                         ["fp32_macs_per_s", "int8_macs_per_s", "method"]),
    "sources": {"type": "object", "additionalProperties": _TEXT},
    "firmware": _table({"cpu": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9.+_-]{0,63}$"},
                        "fpu": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9.+_-]{0,63}$"},
                        "float_abi": {"enum": ["hard", "softfp", "soft"]},
                        "qemu_machine": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"},
                        "flash_origin": _ADDRESS, "ram_origin": _ADDRESS}, ["cpu", "fpu", "float_abi"]),
}, ["name", "display_name", "kind", "cpu", "memory", "software", "throughput", "sources"])


def _file_error(path: Path) -> schema.Fail:
    def fail(sentence: str) -> TargetError:
        return TargetError(f"Target file '{path}': {sentence}.", "See the built-in files under targets/ for every "
                                                                 "field.")
    return fail


def _build(data: dict[str, Any], path: Path) -> Target:
    schema.check(data, SCHEMA, _file_error(path))
    mem = data["memory"]
    for kind in ("ram", "flash"):
        if mem.get(f"{kind}_budget_bytes", 0) > mem[f"{kind}_bytes"]:
            raise TargetError(f"Target file '{path}': field 'memory.{kind}_budget_bytes' is larger than "
                                 f"'memory.{kind}_bytes'.")
    cpu, sw, tp = data["cpu"], data["software"], data["throughput"]
    return Target(
        name=data["name"], display_name=data["display_name"], kind=data["kind"],
        cpu=cpu["name"], arch=cpu["arch"], cores=int(cpu["cores"]), clock_hz=int(cpu["clock_hz"]),
        ram_bytes=int(mem["ram_bytes"]), flash_bytes=int(mem["flash_bytes"]),
        ram_budget_bytes=int(mem.get("ram_budget_bytes", mem["ram_bytes"])),
        flash_budget_bytes=int(mem.get("flash_budget_bytes", mem["flash_bytes"])),
        runtimes=tuple(sw["runtimes"]), preferred_lowering=sw["preferred_lowering"],
        preferred_precision=sw["preferred_precision"],
        fp32_macs_per_s=float(tp["fp32_macs_per_s"]), int8_macs_per_s=float(tp["int8_macs_per_s"]),
        throughput_method=tp["method"], sources=tuple((str(k), str(v)) for k, v in data["sources"].items()),
        path=str(path), firmware=dict(data["firmware"]) if "firmware" in data else None,
    )
