"""Classify a PyTorch model file by reading it ourselves, before torch touches it.

An allow-list, not a block-list. Every member of the zip container (opened by
:func:`edge_lstm.archive.open_zip`: unique, safe names, sane sizes, CRCs checked)
must be one that ``torch.save``, ``torch.jit.save`` or ``torch.export.save``
writes for that kind of file; anything else is refused outright. Every pickle
inside, wherever it sits and whatever it is called (nested ``.pt`` files
included), is read by :func:`scan_pickle`, an unpickler whose ``find_class``
returns inert placeholders, so nothing from the file runs while we look; the
globals it names must all be on the list for its kind. A ``.pt2``'s program
(JSON) is audited too: operator targets, symbolic-shape expressions and guard
code are strings that ``torch.export.load`` turns into Python calls.

What the allow-lists cannot clear (a whole pickled module, opaque or
script-object constants) is reported in :attr:`Inspection.needs_trust`; the
loader refuses the file unless the user passed ``--trust-pickle``.
"""

from __future__ import annotations

import _compat_pickle
import io
import json
import pickle
import re
import tokenize
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from edge_lstm.archive import SafeZip, open_zip
from edge_lstm.errors import InputFileError

_MAX_JSON = 256 << 20
_MAX_PICKLE = 64 << 20
#: element sizes of the legacy typed storages, to check a storage member's size against its pickle
_STORAGE_BYTES = {"FloatStorage": 4, "DoubleStorage": 8, "HalfStorage": 2, "BFloat16Storage": 2, "LongStorage": 8,
                  "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1, "BoolStorage": 1,
                  "ComplexFloatStorage": 8, "ComplexDoubleStorage": 16}
_SIDE_EFFECT_OPS = {"save", "from_file", "load_tensor", "_record_function_enter", "_record_function_enter_new"}
_TS_OP_NAMESPACES = {"aten", "prim", "quantized"}
_TS_META = {"version", "byteorder", ".data/version", ".data/serialization_id", ".format_version",
            ".storage_alignment"}
_SAVE_META = {"byteorder", "version", ".format_version", ".storage_alignment", ".data/serialization_id",
              ".data/version"}
_PT2_META = {"archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id"}


@dataclass
class PickleScan:
    """What a pickle would ask for: the globals it names and the storages it points at."""

    globals: set[str] = field(default_factory=set)
    storages: dict[str, tuple[str, int]] = field(default_factory=dict)  # key -> (storage type, numel)


@dataclass
class Inspection:
    """The verdict on one model file: its kind, and what only ``--trust-pickle`` may load."""

    format: str  # "torch-save" | "torchscript" | "exported-program"
    needs_trust: list[str] = field(default_factory=list)
    pickled_module: bool = False  # a torch.save'd whole nn.Module (or other objects), not a checkpoint


class _Inert:
    """What every global becomes while scanning: accepts any call, state and items, does nothing."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _Inert:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> _Inert:
        return _Inert()

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        """List protocol (APPEND)."""

    def extend(self, values: Any) -> None:
        """List protocol (APPENDS)."""


class _Scanner(pickle.Unpickler):
    def __init__(self, f: io.BytesIO, scan: PickleScan) -> None:
        super().__init__(f)
        self.scan = scan

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names (protocol 2 writes __builtin__.set), mapped as pickle itself maps them
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        self.scan.globals.add(f"{module}.{name}")
        return type(name if name.isidentifier() else "Global", (_Inert,), {})  # a fresh type: NEWOBJ needs one

    def persistent_load(self, pid: Any) -> Any:
        if isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage":
            numel = pid[4] if isinstance(pid[4], int) else -1
            self.scan.storages[str(pid[2])] = (getattr(pid[1], "__name__", ""), numel)
        return _Inert()


def scan_pickle(data: bytes, where: str) -> PickleScan:
    """Read a pickle without running it; an unreadable one is refused (we never guess what it holds)."""
    scan = PickleScan()
    if len(data) > _MAX_PICKLE:
        raise InputFileError(f"{where}: a pickle of {len(data):,} bytes is larger than any model file's.")
    try:
        _Scanner(io.BytesIO(data), scan).load()
    except Exception as e:  # any failure: fail closed, the loader must not see what we could not read
        raise InputFileError(f"{where} holds a pickle that cannot be read safely ({type(e).__name__}: {e}).",
                             "The file is corrupted or was crafted; save the model again.") from e
    return scan


def weights_only_globals() -> frozenset[str]:
    """The globals ``torch.load(weights_only=True)`` accepts (torch's own list)."""
    from torch import _weights_only_unpickler as wou

    return frozenset(wou._get_allowed_globals())


def _ts_global_ok(g: str) -> bool:
    return (g.startswith("__torch__.") and "torch.classes." not in g) or g.startswith("torch.jit._pickle.") or g in {
        "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_qtensor", "collections.OrderedDict",
        "builtins.set", "torch.device"} or (g.startswith("torch.") and g.endswith("Storage") and g.count(".") == 1)


def split_prefix(z: SafeZip) -> tuple[str, dict[str, str]]:
    """The archive's one top-level directory and each member's name below it."""
    prefixes = {n.split("/", 1)[0] for n in z.names}
    if len(prefixes) != 1 or any("/" not in n for n in z.names):
        raise InputFileError(f"{z.where} is not laid out like a PyTorch archive (members outside one top-level "
                             f"directory: {', '.join(sorted(prefixes)[:4])}).")
    prefix = prefixes.pop()
    return prefix, {n.split("/", 1)[1]: n for n in z.names}


def inspect_file(raw: bytes | None, z: SafeZip | None, where: str) -> Inspection:
    """Classify a model file (a verified zip ``z``, or the bytes of a legacy pickle)."""
    if z is None:
        return _legacy(raw or b"", where)
    _prefix, rel = split_prefix(z)
    if "models/model.json" in rel or any(r.startswith("models/") for r in rel):
        return _exported_program(z, rel, where)
    if any(r.startswith("code/") for r in rel):
        return _torchscript(z, rel, where)
    if "data.pkl" in rel:
        return _torch_save(z, rel, where)
    raise InputFileError(f"{where} is a zip archive but not a PyTorch model.")


def _unexpected(rel: Iterable[str], where: str) -> None:
    extra = sorted(rel)
    if extra:
        raise InputFileError(f"{where} holds member(s) that this kind of file does not have: "
                             f"{', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}; the archive is refused.",
                             "Save the model again with torch.save / torch.jit.save / torch.export.save.")


def _storages(z: SafeZip, rel: dict[str, str], directory: str, scan: PickleScan, where: str) -> set[str]:
    """Check the storage members a pickle points at exist with the size it declares; their names."""
    used = set()
    for key, (stype, numel) in scan.storages.items():
        name = f"{directory}/{key}"
        if name not in rel:
            raise InputFileError(f"{where}: the storage member '{name}' that the model points at is missing.",
                                 "The file is truncated or was tampered with; save it again.")
        size = z.member(rel[name]).size
        item = _STORAGE_BYTES.get(stype)
        placeholder = directory == "traced_inputs" and size == 0  # torch.jit.trace stores its inputs' shapes only
        if item is not None and numel >= 0 and size != numel * item and not placeholder:
            raise InputFileError(f"{where}: storage member '{name}' holds {size:,} bytes, but the model declares "
                                 f"{numel:,} elements of {item} bytes.")
        used.add(name)
    return used


def _torch_save(z: SafeZip, rel: dict[str, str], where: str) -> Inspection:
    scan = scan_pickle(z.read(rel["data.pkl"]), f"{where}: data.pkl")
    used = _storages(z, rel, "data", scan, where) | {"data.pkl"}
    _unexpected(set(rel) - used - _SAVE_META, where)
    unsafe = sorted(scan.globals - weights_only_globals())
    return Inspection("torch-save", [f"data.pkl: {g}" for g in unsafe], pickled_module=bool(unsafe))


def _torchscript(z: SafeZip, rel: dict[str, str], where: str) -> Inspection:
    used = set(_TS_META) & set(rel)
    needs: list[str] = []
    for pkl, directory in (("data.pkl", "data"), ("constants.pkl", "constants"), ("traced_inputs.pkl",
                                                                                  "traced_inputs")):
        if pkl in rel:
            scan = scan_pickle(z.read(rel[pkl]), f"{where}: {pkl}")
            _check_ts_globals(scan, pkl, where)
            used |= _storages(z, rel, directory, scan, where) | {pkl}
    if "data.pkl" not in rel:
        raise InputFileError(f"{where} is a TorchScript archive without its data.pkl.")
    for r in rel:
        if r.startswith("code/") and r.endswith(".debug_pkl"):
            _check_ts_globals(scan_pickle(z.read(rel[r]), f"{where}: {r}"), r, where)
            used.add(r)
        elif r.startswith("code/") and r.endswith(".py"):
            needs += [f"{r}: {why}" for why in audit_torchscript_source(z.read(rel[r]), f"{where}: {r}")]
            used.add(r)
        elif r.startswith("extra/"):
            used.add(r)  # extra files are only read when asked for by name
    _unexpected(set(rel) - used, where)
    return Inspection("torchscript", needs)


def _check_ts_globals(scan: PickleScan, member: str, where: str) -> None:
    bad = sorted(g for g in scan.globals if not _ts_global_ok(g))
    if bad:
        raise InputFileError(f"{where}: {member} names Python objects that TorchScript never writes "
                             f"({', '.join(bad[:3])}); the file was crafted, so it is refused.")


def audit_torchscript_source(code: bytes, where: str) -> list[str]:
    """What in TorchScript code reaches outside tensors (operators that write or read files, custom classes)."""
    import ast

    try:
        tree = ast.parse(code.decode("utf-8"))
    except (UnicodeDecodeError, SyntaxError, ValueError, RecursionError, MemoryError) as e:
        raise InputFileError(f"{where} is not readable TorchScript code ({type(e).__name__}).") from e
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            if node.attr in _SIDE_EFFECT_OPS:
                found.append(f"calls '{node.attr}'")
            if isinstance(node.value, ast.Name) and node.value.id == "ops" and node.attr not in _TS_OP_NAMESPACES:
                found.append(f"calls operators of 'ops.{node.attr}'")
            if node.attr == "classes" and isinstance(node.value, ast.Attribute) and node.value.attr == "torch":
                found.append("uses a custom C++ class (torch.classes)")
        elif isinstance(node, ast.Name) and node.id in _SIDE_EFFECT_OPS:
            found.append(f"calls '{node.id}'")
    return sorted(set(found))


def audit_torchscript_graph(module: Any, where: str) -> None:
    """After loading: every operator that ``forward`` reaches must be a tensor operator."""
    graph = getattr(module, "inlined_graph", None)
    if graph is None:
        return
    stack = [graph]
    while stack:
        g = stack.pop()
        for node in g.nodes():
            kind = node.kind()
            ns, _, name = kind.partition("::")
            if ns not in _TS_OP_NAMESPACES or name in _SIDE_EFFECT_OPS:
                raise _side_effect(where, kind)
            stack.extend(node.blocks())



def _side_effect(where: str, what: str) -> InputFileError:
    return InputFileError(f"{where} calls '{what}', which reaches outside tensors (files, custom code); "
                          "running it would let the model file act on this machine.",
                          "If you trust the file, pass --trust-pickle; otherwise export the model without it.")


def _legacy(raw: bytes, where: str) -> Inspection:
    """The pre-zip ``torch.save`` format: magic, protocol and system pickles, the object, then storage keys."""
    f = io.BytesIO(raw)
    globals_: set[str] = set()
    for _ in range(5):
        scan = PickleScan()
        try:
            _Scanner(f, scan).load()
        except Exception as e:  # fail closed, as scan_pickle does
            raise InputFileError(f"{where} is a legacy PyTorch pickle that cannot be read safely "
                                 f"({type(e).__name__}: {e}).", "Save the model again with torch.save.") from e
        globals_ |= scan.globals
    unsafe = sorted(globals_ - weights_only_globals())
    return Inspection("torch-save", [f"pickle: {g}" for g in unsafe], pickled_module=bool(unsafe))


# ---------------------------------------------------------------- torch.export archives (.pt2)


def _exported_program(z: SafeZip, rel: dict[str, str], where: str) -> Inspection:
    needs: list[str] = []
    used = set(_PT2_META) & set(rel)
    if rel.get("archive_format") is not None and z.read(rel["archive_format"], 64).strip() != b"pt2":
        raise InputFileError(f"{where}: archive_format is not 'pt2'.")
    models = [r for r in rel if r.startswith("models/")]
    if models != ["models/model.json"]:
        raise InputFileError(f"{where} holds program(s) {', '.join(models) or 'none'}; a torch.export .pt2 for "
                             "edge-lstm holds exactly models/model.json.")
    needs += [f"models/model.json: {why}" for why in audit_program(_json(z, rel["models/model.json"], where),
                                                                    f"{where}: models/model.json")]
    used.add("models/model.json")
    sample = "data/sample_inputs/model.pt"
    if sample not in rel:  # torch.export.load reads it unconditionally
        raise InputFileError(f"{where} has no {sample}: it is incomplete.", "Save the model again.")
    needs += _nested_torch_save(z.read(rel[sample]), f"{where}: {sample}")
    used.add(sample)
    for kind in ("weights", "constants"):
        used_k, needs_k = _payloads(z, rel, kind, where)
        used |= used_k
        needs += needs_k
    for r in rel:
        if r.startswith("extra/"):
            used.add(r)  # read as text only
    _unexpected(set(rel) - used, where)
    return Inspection("exported-program", needs)


def _json(z: SafeZip, name: str, where: str) -> Any:
    try:
        return json.loads(z.read(name, _MAX_JSON))
    except (ValueError, RecursionError) as e:
        raise InputFileError(f"{where}: {name} is not valid JSON ({type(e).__name__}).") from e


def _nested_torch_save(data: bytes, where: str) -> list[str]:
    """A ``torch.save`` file inside an archive: verified like a top-level one; what needs trust."""
    if data[:2] == b"PK":
        with open_zip(data, where) as inner:
            _p, rel = split_prefix(inner)
            if "data.pkl" not in rel:
                raise InputFileError(f"{where} is not a torch.save file.")
            verdict = _torch_save(inner, rel, where)
    elif not data:
        return []
    else:
        verdict = _legacy(data, where)
    return [f"{where.split(': ', 1)[-1]} -> {n}" for n in verdict.needs_trust]


def _payloads(z: SafeZip, rel: dict[str, str], kind: str, where: str) -> tuple[set[str], list[str]]:
    """``data/weights`` or ``data/constants``: the config, the files it lists, and what needs trust."""
    directory = f"data/{kind}"
    legacy = f"{directory}/model.pt"
    config_name = f"{directory}/model_{kind}_config.json"
    if legacy in rel:  # the older layout: one torch.save file, read like sample inputs
        if config_name in rel:
            raise InputFileError(f"{where} holds both {legacy} and {config_name}; only one layout may be used.")
        return {legacy}, _nested_torch_save(z.read(rel[legacy]), f"{where}: {legacy}")
    if config_name not in rel:
        raise InputFileError(f"{where} has no {config_name}: it is incomplete.")
    config = _json(z, rel[config_name], where)
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise InputFileError(f"{where}: {config_name} has no 'config' table.")
    used, needs = {config_name}, []
    for fqn, meta in entries.items():
        if not isinstance(meta, dict) or not isinstance(meta.get("path_name"), str):
            raise InputFileError(f"{where}: {config_name} entry '{fqn}' has no path_name.")
        path = meta["path_name"]
        member = f"{directory}/{path}"
        if "/" in path or member not in rel:
            raise InputFileError(f"{where}: {config_name} points '{fqn}' at '{path}', which the archive does not "
                                 "hold.")
        used.add(member)
        if path.startswith(("custom_obj_", "opaque_")):
            needs.append(f"{member}: an opaque or script-object constant, restored by unpickling")
        elif meta.get("use_pickle"):
            needs += _nested_torch_save(z.read(rel[member]), f"{where}: {member}")
        elif not path.startswith(("weight_", "tensor_")):
            raise InputFileError(f"{where}: {config_name} entry '{fqn}' has an unknown payload '{path}'.")
    return used, needs


_SAFE_OPERATOR = {f"_operator.{n}" for n in (
    "getitem", "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "neg", "pos", "abs", "eq", "ne", "lt",
    "le", "gt", "ge", "and_", "or_", "not_", "invert")} | {f"math.{n}" for n in ("ceil", "floor", "trunc", "sqrt")}
_SYM_NAMES = {"Max", "Min", "Mod", "FloorDiv", "CeilDiv", "PythonMod", "CleanDiv", "CeilToInt", "FloorToInt",
              "ModularIndexing", "Where", "LShift", "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv",
              "IntTrueDiv", "IsNonOverlappingAndDenseIndicator", "TruncToFloat", "TruncToInt", "RoundToInt",
              "RoundDecimal", "ToFloat", "Identity", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And", "Or", "Not", "True",
              "False", "oo", "Abs", "sqrt", "floor", "ceiling", "Piecewise", "int_oo"}
_SYMBOL = re.compile(r"^(?:[spuzfcdq]|ps|zuf|zf|unbacked_[a-z]+)?\d+$")
_GUARD_NAMES = {"L", "size", "stride", "storage_offset", "dim", "numel", "and", "or", "not", "True", "False", "in",
                "is", "None", "len"}


def operator_ok(target: str) -> bool:
    """True for an operator target that only computes on tensors and numbers."""
    m = re.fullmatch(r"torch\.ops\.(aten|prims|higher_order)\.([A-Za-z0-9_]+)(?:\.[A-Za-z0-9_]+)?", target)
    if m:
        return m.group(2) not in _SIDE_EFFECT_OPS
    return target in _SAFE_OPERATOR or bool(re.fullmatch(r"torch\.sym_[a-z]+|torch\._sym_sqrt", target))


def _expression_ok(text: str, names_ok: Any) -> bool:
    """A Python expression made only of numbers, operators, brackets, plain strings and allowed names."""
    if len(text) > 4096:
        return False
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return False
    for tok in tokens:
        if tok.type == tokenize.NAME and ("__" in tok.string or not names_ok(tok.string)):
            return False
        if tok.type == tokenize.STRING and not re.fullmatch(r"'[A-Za-z0-9_]*'|\"[A-Za-z0-9_]*\"", tok.string):
            return False
        if tok.type == tokenize.OP and tok.string in (";", ":=", "=", "lambda", "@", ":"):
            return False
        if tok.type in (tokenize.ERRORTOKEN,):
            return False
    return True


def audit_program(doc: Any, where: str) -> list[str]:
    """What in a serialized ExportedProgram would become a Python call we did not vet.

    ``torch.export.load`` resolves each node's ``target`` by attribute lookup from ``torch``, ``_operator``
    or ``math`` (so ``torch.os.system`` would resolve), parses symbolic shapes with sympy (an ``eval``), and
    compiles ``guards_code`` into a Python function. Each is checked against what tensor programs use.
    """
    if not isinstance(doc, dict):
        raise InputFileError(f"{where} is not a serialized ExportedProgram.")
    found = []
    for guard in doc.get("guards_code") or []:
        if not isinstance(guard, str) or not _expression_ok(guard, lambda n: n in _GUARD_NAMES):
            found.append(f"guard code {str(guard)[:60]!r} is not a plain shape check (it would be compiled and run)")
    constraints = doc.get("range_constraints") or {}
    found += [f"symbolic shape {str(k)[:60]!r} is not a plain expression (it would be evaluated)"
              for k in (constraints if isinstance(constraints, dict) else ["?"]) if not _sym_ok(str(k))]
    stack: list[Any] = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "target" and isinstance(v, str) and not operator_ok(v):
                    found.append(f"calls '{v[:80]}', which is not a tensor operator")
                if k == "expr_str" and not _sym_ok(str(v)):
                    found.append(f"symbolic shape {str(v)[:60]!r} is not a plain expression (it would be evaluated)")
                stack.append(v)
        elif isinstance(node, list):
            stack.extend(node)
    return sorted(set(found))[:20]


def _sym_ok(text: str) -> bool:
    return _expression_ok(text, lambda n: n in _SYM_NAMES or bool(_SYMBOL.match(n)))
