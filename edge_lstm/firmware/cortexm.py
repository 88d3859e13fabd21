"""Cross-compile the generated C for a Cortex-M, measure the ELF, and run it in qemu.

The build uses Debian's ``gcc-arm-none-eabi`` with newlib's semihosting library
(``--specs=rdimon.specs``) and the startup file, linker script and test harness
that ship in ``edge_lstm/firmware/data``. Two ELFs are linked from one
harness: with the model, and with stubs in its place (``-DEDGE_LSTM_BASELINE``);
the model's flash (text + rodata + data) and static RAM (data + bss) are the
difference of their sections, read with ``arm-none-eabi-size``. The run in
``qemu-system-arm`` adds the stack high-water mark of the model calls (from a
stack paint) and, under ``-icount shift=0``, emulated instructions per call.
These are figures of an emulated core: instruction counts, never device time.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from dataclasses import asdict, dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from edge_lstm.errors import InputFileError, UsageError
from edge_lstm.firmware.cgen import CSource
from edge_lstm.firmware.clit import cfloat
from edge_lstm.outputs import write_text_atomic

FIRMWARE_KEYS = ("cpu", "fpu", "float_abi", "qemu_machine", "flash_origin", "ram_origin")
FLOAT_ABIS = ("hard", "softfp", "soft")
#: what qemu's emulated boards provide: where code and data live (the run links there)
QEMU_MACHINES: dict[str, dict[str, int]] = {
    "mps2-an385": {"flash_origin": 0x0, "flash_length": 4 << 20, "ram_origin": 0x20000000, "ram_length": 4 << 20},
    "mps2-an386": {"flash_origin": 0x0, "flash_length": 4 << 20, "ram_origin": 0x20000000, "ram_length": 4 << 20},
    "mps2-an500": {"flash_origin": 0x0, "flash_length": 4 << 20, "ram_origin": 0x20000000, "ram_length": 4 << 20},
}
#: the files of the emulated-core build, as they sit in the output directory beside the generated C
STARTUP, HARNESS, HARNESS_DATA, LINK, MAKEFILE = ("cortexm_startup.c", "cortexm_harness.c", "cortexm_harness_data.h",
                                                  "cortexm_link.ld", "cortexm.mk")
STACK_SIZE = 16 << 10
HEAP_SIZE = 16 << 10  # newlib's stdio buffers (the harness prints through semihosting)
FLASH_SECTIONS = (".text", ".rodata", ".ARM.exidx", ".init_array", ".data")
RAM_SECTIONS = (".data", ".bss")
OPT_FLAGS = ("-std=c99", "-O2", "-ffp-contract=fast", "-ffunction-sections", "-fdata-sections")


@dataclass(frozen=True)
class CortexM:
    """A target's ``[firmware]`` table: how to compile for its core and, optionally, which qemu board runs it."""

    cpu: str
    fpu: str = "none"
    float_abi: str = "soft"
    qemu_machine: str | None = None
    flash_origin: int = 0x0
    ram_origin: int = 0x20000000

    def cflags(self) -> list[str]:
        """``-mcpu``, ``-mthumb``, the float ABI and FPU."""
        flags = [f"-mcpu={self.cpu}", "-mthumb", f"-mfloat-abi={self.float_abi}"]
        return flags + ([f"-mfpu={self.fpu}"] if self.fpu != "none" else [])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def firmware_config(target: Any) -> CortexM | None:
    """The target's ``[firmware]`` table (schema-checked by :mod:`edge_lstm.targets`), or None when it has none."""
    data = getattr(target, "firmware", None)
    if data is None:
        return None
    return parse_firmware_table(data, str(getattr(target, "path", "") or target.name))


def parse_firmware_table(data: Any, where: str) -> CortexM:
    """Validate a ``[firmware]`` table: exactly the keys :data:`FIRMWARE_KEYS`, with their types."""
    if not isinstance(data, dict):
        raise InputFileError(f"Target file '{where}': [firmware] must be a table.")
    unknown = sorted(set(data) - set(FIRMWARE_KEYS))
    if unknown or "cpu" not in data:
        raise InputFileError(f"Target file '{where}': [firmware] has unknown keys {unknown}" if unknown
                             else f"Target file '{where}': [firmware] needs 'cpu' (the -mcpu value).",
                             f"Accepted keys: {', '.join(FIRMWARE_KEYS)}.")
    for key in ("cpu", "fpu", "float_abi", "qemu_machine"):
        if key in data and not isinstance(data[key], str):
            raise InputFileError(f"Target file '{where}': [firmware] {key} must be a string, got {data[key]!r}.")
    for key in ("flash_origin", "ram_origin"):
        if key in data and (isinstance(data[key], bool) or not isinstance(data[key], int) or data[key] < 0):
            raise InputFileError(f"Target file '{where}': [firmware] {key} must be an address >= 0.")
    cfg = CortexM(**data)
    if cfg.float_abi not in FLOAT_ABIS:
        raise InputFileError(f"Target file '{where}': [firmware] float_abi is '{cfg.float_abi}'.",
                             f"Accepted: {', '.join(FLOAT_ABIS)}.")
    if cfg.qemu_machine is not None and cfg.qemu_machine not in QEMU_MACHINES:
        raise InputFileError(f"Target file '{where}': [firmware] qemu_machine '{cfg.qemu_machine}' is not one "
                             "edge-lstm runs.", f"Known: {', '.join(QEMU_MACHINES)}; or leave it out to build only.")
    return cfg


def toolchain_missing(need_qemu: bool) -> list[str]:
    """The programs a build (and run) needs that are not on the PATH."""
    progs = ["arm-none-eabi-gcc", "arm-none-eabi-size"] + (["qemu-system-arm"] if need_qemu else [])
    return [p for p in progs if shutil.which(p) is None]


def data_file(name: str) -> str:
    """The text of a file shipped in ``edge_lstm/firmware/data``."""
    return (resources.files("edge_lstm.firmware") / "data" / name).read_text(encoding="utf-8")


def linker_script(cfg: CortexM, unbounded: bool = False) -> str:
    """The linker script: the qemu board's memory map when it runs there, else the target's origins.

    ``unbounded`` links at the same origins with room for any model, to measure one too large to run.
    """
    board = None if unbounded else QEMU_MACHINES.get(cfg.qemu_machine or "")
    flash_o, ram_o = (board["flash_origin"], board["ram_origin"]) if board else (cfg.flash_origin, cfg.ram_origin)
    # lengths large enough that a model over its budget still links and is measured (exit 4 names the excess)
    flash_l, ram_l = (board["flash_length"], board["ram_length"]) if board else (256 << 20, 256 << 20)
    subs = {"FLASH_ORIGIN": hex(flash_o), "FLASH_LENGTH": hex(flash_l), "RAM_ORIGIN": hex(ram_o),
            "RAM_LENGTH": hex(ram_l), "STACK_SIZE": hex(STACK_SIZE), "HEAP_SIZE": hex(HEAP_SIZE)}
    text = data_file("link.ld.in")
    for k, v in subs.items():
        text = text.replace(f"@{k}@", v)
    return text


def harness_data(prefix: str, windows: np.ndarray, streams: int) -> str:
    """``cortexm_harness_data.h``: which functions to call and the input windows (exact float literals).

    The model's header is ``EDGE_LSTM_MODEL_HEADER`` (the build passes the precision's), fp32 by default.
    """
    m = prefix.upper()
    n, steps, feat = windows.shape
    return "\n".join([
        f"/* {HARNESS_DATA}: generated by edge-lstm; the windows the harness feeds the model. */",
        "#ifndef EDGE_LSTM_MODEL_HEADER", f'#define EDGE_LSTM_MODEL_HEADER "{prefix}.fp32.h"', "#endif",
        "#include EDGE_LSTM_MODEL_HEADER",
        f"#define H_RESET {prefix}_reset", f"#define H_STEP {prefix}_step", f"#define H_WINDOW_FN {prefix}_window",
        f"#define H_INPUT_SIZE {m}_INPUT_SIZE", f"#define H_WINDOW {m}_WINDOW",
        f"#define H_STEP_OUT {m}_OUTPUT_SIZE", f"#define H_WINDOW_OUT {m}_WINDOW_OUTPUT_SIZE",
        f"#define H_N_WINDOWS {n}", f"#define H_N_STREAMS {streams}",
        f"#if {m}_WINDOW != {steps} || {m}_INPUT_SIZE != {feat}",
        '#error "harness_data.h does not match the model header"', "#endif",
        f"static const float h_inputs[{n}][{steps * feat}] = {{",
        *[f"  {{{', '.join(cfloat(v) for v in w.reshape(-1))}}}," for w in windows],
        "};", "",
    ])


def makefile(cfg: CortexM, prefix: str) -> str:
    """``cortexm.mk``: rebuild both ELFs (``make -f cortexm.mk run PRECISION=int8-weights``) as edge-lstm did."""
    flags = " ".join([*cfg.cflags(), *OPT_FLAGS])
    model = f"{prefix}.$(PRECISION)"
    elf = f"{model}.elf"
    run = (f"run: {elf}\n\tqemu-system-arm -M {cfg.qemu_machine} -nographic -monitor none -serial null "
           f"-semihosting-config enable=on,target=native -icount shift=0 -kernel {elf}\n"
           if cfg.qemu_machine else "run:\n\t@echo 'no qemu machine for this target: build only'\n")
    common = f"{STARTUP} {HARNESS} {HARNESS_DATA} {LINK}"
    return (f"# Generated by edge-lstm: rebuild the Cortex-M test ELFs for {cfg.cpu}.\n"
            f"# make -f {MAKEFILE} run [PRECISION=fp32|int8-weights]\n"
            "PRECISION ?= fp32\n"
            f"CC = arm-none-eabi-gcc\nCFLAGS = {flags} -Wall -DEDGE_LSTM_MODEL_HEADER='\"{model}.h\"'\n"
            f"LDFLAGS = --specs=rdimon.specs -nostartfiles -T {LINK} -Wl,--gc-sections\n\n"
            f".PHONY: all run clean\nall: {elf} baseline.elf\n\n"
            f"{elf}: {common} {model}.c {model}.h\n"
            f"\t$(CC) $(CFLAGS) $(LDFLAGS) {STARTUP} {HARNESS} {model}.c -lm -o $@\n\n"
            f"baseline.elf: {common} {model}.h\n"
            f"\t$(CC) $(CFLAGS) -DEDGE_LSTM_BASELINE $(LDFLAGS) {STARTUP} {HARNESS} -lm -o $@\n\n" + run
            + f"\nclean:\n\trm -f {prefix}.*.elf baseline.elf\n")


def cortex_files(cfg: CortexM, prefix: str, windows: np.ndarray, streams: int) -> dict[str, str]:
    """The emulated-core build's files (name -> text): startup, harness and its data, linker script, makefile."""
    return {STARTUP: data_file("startup.c"), HARNESS: data_file("harness.c"), LINK: linker_script(cfg),
            HARNESS_DATA: harness_data(prefix, windows, streams), MAKEFILE: makefile(cfg, prefix)}


def _run(cmd: list[str], cwd: Path, what: str, timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise UsageError(f"{what} did not finish within {timeout:.0f} s: {' '.join(cmd)}",
                         "The program may have faulted (a hard fault loops forever) or run too long.") from e
    if proc.returncode != 0:
        raise UsageError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n" + proc.stderr.strip()[-2000:],
                         "This is an edge-lstm bug if the toolchain is installed: please report it.")
    return proc


def section_sizes(elf: Path) -> dict[str, int]:
    """Allocated section sizes of ``elf`` from ``arm-none-eabi-size -A -d``."""
    proc = _run(["arm-none-eabi-size", "-A", "-d", elf.name], elf.parent, "arm-none-eabi-size", 60)
    sizes = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith(".") and parts[1].isdigit():
            sizes[parts[0]] = int(parts[1])
    return sizes


def memory_of(sizes: dict[str, int]) -> dict[str, int]:
    """Flash (text + rodata + data, with the exception index and constructors) and static RAM (data + bss).

    An object file's per-function sections (``.text.lstm``, ``.rodata.k0_wx``) count under their output section.
    """
    total: dict[str, int] = {}
    for name, size in sizes.items():
        base = next((s for s in (*FLASH_SECTIONS, ".bss") if name == s or name.startswith(s + ".")), None)
        if base is not None:
            total[base] = total.get(base, 0) + size
    return {"flash_bytes": sum(total.get(s, 0) for s in FLASH_SECTIONS),
            "ram_static_bytes": sum(total.get(s, 0) for s in RAM_SECTIONS),
            "text_bytes": total.get(".text", 0), "rodata_bytes": total.get(".rodata", 0),
            "data_bytes": total.get(".data", 0), "bss_bytes": total.get(".bss", 0)}


def build(cfg: CortexM, work: Path, code: CSource, timeout: float = 900.0) -> dict[str, Any]:
    """Link the model and baseline ELFs in ``work`` (which holds :func:`cortex_files` and ``code``'s files).

    Returns both ELFs' sections, their difference (the model's cost), the model object's own sections, and
    whether it fits the emulated board (a larger one is linked without bounds, to be measured, not run).
    """
    flags = [*cfg.cflags(), *OPT_FLAGS, f'-DEDGE_LSTM_MODEL_HEADER="{code.header_name}"']
    ld = ["--specs=rdimon.specs", "-nostartfiles", "-T", LINK, "-Wl,--gc-sections"]
    gcc, obj = "arm-none-eabi-gcc", f"{code.prefix}.{code.precision}.o"
    _run([gcc, *flags, "-c", code.source_name, "-o", obj], work, "arm-none-eabi-gcc (model)", timeout)
    link = [gcc, *flags, *ld, STARTUP, HARNESS, obj, "-lm", "-o", "model_test.elf"]
    fits = subprocess.run(link, cwd=work, capture_output=True, text=True, check=False, timeout=timeout)
    if fits.returncode != 0 and "overflowed" in fits.stderr and cfg.qemu_machine:
        # larger than the emulated board's memory: measure it linked without bounds, and do not run it
        board = QEMU_MACHINES[cfg.qemu_machine]
        write_text_atomic(work / LINK, linker_script(replace(cfg, flash_origin=board["flash_origin"],
                                                       ram_origin=board["ram_origin"]), unbounded=True))
    if fits.returncode != 0:
        _run(link, work, "arm-none-eabi-gcc (link)", timeout)
    _run([gcc, *flags, "-DEDGE_LSTM_BASELINE", *ld, STARTUP, HARNESS, "-lm", "-o", "baseline.elf"], work,
         "arm-none-eabi-gcc (baseline)", timeout)
    full, base = memory_of(section_sizes(work / "model_test.elf")), memory_of(section_sizes(work / "baseline.elf"))
    model = {k: full[k] - base[k] for k in full}
    return {"elf": full, "baseline_elf": base, "model": model, "object": memory_of(section_sizes(work / obj)),
            "fits_emulated_board": fits.returncode == 0}


def run_qemu(cfg: CortexM, elf: Path, timeout: float = 900.0) -> dict[str, Any]:
    """Run ``elf`` on the qemu board with semihosting and ``-icount shift=0``; the harness's parsed report."""
    cmd = ["qemu-system-arm", "-M", str(cfg.qemu_machine), "-nographic", "-monitor", "none", "-serial", "null",
           "-semihosting-config", "enable=on,target=native", "-icount", "shift=0", "-kernel", elf.name]
    proc = _run(cmd, elf.parent, f"qemu-system-arm ({cfg.qemu_machine})", timeout)
    return parse_harness(proc.stdout, " ".join(cmd))


def parse_harness(stdout: str, cmd: str) -> dict[str, Any]:
    """The harness lines: calibration, stack, and per window/stream the ticks and the outputs (float32 bits)."""
    rep: dict[str, Any] = {"windows": [], "streams": [], "window_ticks": [], "stream_ticks": []}
    ended = False
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) < 2 or parts[0] != "EDGE-LSTM":
            continue
        tag = parts[1]
        if tag == "CAL":
            rep["cal_instructions"], rep["cal_ticks"] = int(parts[2]), int(parts[3])
        elif tag == "STACK":
            rep["stack_bytes"] = int(parts[2])
        elif tag in ("W", "S"):
            floats = np.array([struct.unpack("<f", bytes.fromhex(h)[::-1])[0] for h in parts[4:]], np.float32)
            rep["windows" if tag == "W" else "streams"].append(floats)
            rep["window_ticks" if tag == "W" else "stream_ticks"].append(int(parts[3]))
        elif tag == "END":
            ended = True
    if not ended or "cal_ticks" not in rep:
        raise UsageError(f"The model did not run to the end under qemu ({cmd}); output:\n{stdout[-1500:]}",
                         "This is an edge-lstm bug: please report it with the model.")
    return rep
