"""The fuzz cases, generated per family: model containers, checkpoint contents, malicious payloads, data and
calibration files, recipes, targets, reports, argument abuse and output-path tricks.

Every case names the exit codes the README documents for it (2 bad input, 3 validation, 4 budget, 5
unsupported, 6 remote; 0 where a mutation leaves the file valid). ``fast`` cases run in ``make test``; the
whole list runs in CI (``@pytest.mark.slow``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import fuzz_corpus as c
import torch
from fuzz_harness import Case

CKPT = "models:stacked:checkpoint"
BASES = {  # key -> input shapes needed by info (None: stored in the file)
    CKPT: False, "models:stacked:torchscript": True, "models:stacked:pt2": False, "models:stacked:pickle": True,
    "zoo:seq2seq:torchscript": True, "zoo:seq2seq:pt2": False, "zoo:explicit_state:torchscript": True,
    "zoo:explicit_state:pt2": False, "zoo:text:pt2": False, "zoo:gru_layernorm:torchscript": True,
    "zoo:cnn_lstm:pickle": True, "zoo:speech_bilstm:pt2": False,
}


def _model(key: str, mutation: c.Mutation | None, name: str = "m.pt") -> Callable[[Path], dict[str, str]]:
    def build(sandbox: Path) -> dict[str, str]:
        src, _shapes = c.base(key)
        dst = sandbox / "in" / name
        if mutation is None:
            dst.write_bytes(src.read_bytes())
        else:
            mutation(src, dst)
        return {"model": str(dst)}
    return build


def _info(key: str) -> list[str]:
    args = ["info", "{model}", "--json"]
    if BASES.get(key):
        args += c.shape_args(c.shapes_of(key))
    return args


def _pt2_key(key: str) -> bool:
    return key.endswith(":pt2")


def container_cases() -> list[Case]:
    """Truncated, bit-flipped, duplicated, renamed, dropped and added members, on every base file."""
    out = []
    for key in BASES:
        fast = key in (CKPT, "models:stacked:pt2", "zoo:seq2seq:torchscript")
        tag = key.replace(":", "-")
        pkl = "data/sample_inputs/model.pt" if _pt2_key(key) else "data.pkl"
        storage = "data/weights/weight_0" if _pt2_key(key) else "data/0"
        muts: list[tuple[str, c.Mutation, set[int]]] = [
            ("truncated-10", c.truncate(0.1), {2}), ("truncated-60", c.truncate(0.6), {2}),
            ("truncated-last-byte", c.truncate(0.9999), {2}),
            *[(f"flip-{s}", c.flip(s), {0, 2}) for s in range(3)],
            ("dup-storage-zeroed", c.duplicate(storage), {2}), ("dup-pickle-first", c.duplicate(pkl, False, True), {2}),
            ("renamed-storage", c.rename(storage, storage + "x"), {2}), ("dropped-pickle", c.drop(pkl), {2}),
            ("dropped-storage", c.drop(storage), {2}), ("added-member", c.add("evil.py", b"import os"), {2}),
            ("added-traversal", c.add("../../outside/evil", b"x"), {2}), ("added-absolute", c.add("/tmp/evil"), {2}),
        ]
        for name, mut, expect in muts:
            pickle_refused = key.endswith(":pickle")  # untrusted: refused whatever the mutation
            out.append(Case(f"container-{tag}-{name}", _model(key, mut), _info(key),
                            {2} if pickle_refused else expect, fast=fast and name in ("truncated-60", "flip-0",
                                                                                      "dup-storage-zeroed")))
        out.append(Case(f"container-{tag}-intact", _model(key, None), _info(key),
                        {2} if key.endswith(":pickle") else {0, 5}, fast=fast))
    return out + zoo_cases()


def zoo_cases() -> list[Case]:
    """Every other zoo network as TorchScript and .pt2: intact, bit-flipped, truncated."""
    import zoo

    out = []
    for name in zoo.ZOO:
        for form in ("torchscript", "pt2"):
            key = f"zoo:{name}:{form}"
            if key in BASES:
                continue
            BASES[key] = form == "torchscript"
            tag = key.replace(":", "-")
            out += [Case(f"container-{tag}-intact", _model(key, None), _info(key), {0, 2, 5}),
                    Case(f"container-{tag}-flip-1", _model(key, c.flip(1)), _info(key), {0, 2, 5}),
                    Case(f"container-{tag}-truncated-60", _model(key, c.truncate(0.6)), _info(key), {2})]
    return out


def _ckpt_obj(change: Callable[[dict], None]) -> Callable[[Path], dict[str, str]]:
    def build(sandbox: Path) -> dict[str, str]:
        obj = torch.load(c.base(CKPT)[0], weights_only=True)
        change(obj)
        dst = sandbox / "in" / "m.pt"
        torch.save(obj, dst)
        return {"model": str(dst)}
    return build


def _set(path: str, value: object) -> Callable[[dict], None]:
    def change(obj: dict) -> None:
        node = obj
        parts = path.split(".")
        for p in parts[:-1]:
            node = node[p]
        node[parts[-1]] = value
    return change


def _pop(path: str) -> Callable[[dict], None]:
    def change(obj: dict) -> None:
        node = obj
        parts = path.split(".")
        for p in parts[:-1]:
            node = node[p]
        node.pop(parts[-1])
    return change


def checkpoint_cases() -> list[Case]:
    """Checkpoint dicts of the wrong type or out of range: each refused with the field named (exit 2)."""
    bad: dict[str, Callable[[dict], None]] = {
        "dropout-5": _set("config.dropout", 5.0), "hidden-negative": _set("config.hidden", -4),
        "hidden-string": _set("config.hidden", "64"), "hidden-huge": _set("config.hidden", 10**9),
        "layers-zero": _set("config.layers", 0), "cell-unknown": _set("config.cell", "transformer"),
        "config-extra-key": _set("config.evil", 1), "config-not-dict": _set("config", [1, 2]),
        "bool-for-int": _set("config.hidden", True), "dropout-nan": _set("config.dropout", float("nan")),
        "norm-wrong-length": _set("normalization", {"mean": [0.0, 1.0], "std": [1.0, 1.0]}),
        "norm-zero-std": _set("normalization", {"mean": [0.0], "std": [0.0]}),
        "norm-negative-std": _set("normalization", {"mean": [0.0], "std": [-1.0]}),
        "norm-inf-mean": _set("normalization", {"mean": [float("inf")], "std": [1.0]}),
        "norm-string": _set("normalization", "zscore"),
        "target-index-out": _set("normalization", {"mean": [0.0], "std": [1.0], "target_index": [5]}),
        "spec-traversal-name": _set("input_spec", [{"name": "../../x", "shape": ["batch", 12, 1]}]),
        "spec-huge-shape": _set("input_spec", [{"name": "x", "shape": ["batch", 10**9, 10**9]}]),
        "spec-zero-dim": _set("input_spec", [{"name": "x", "shape": ["batch", 0, 1]}]),
        "spec-extra-input": _set("input_spec", [{"name": "x", "shape": ["batch", 12, 1]}] * 2),
        "spec-not-list": _set("input_spec", "x"), "task-unknown": _set("task", "rm -rf"),
        "version-2": _set("version", 2), "arch-unknown": _set("arch", "os.system"),
        "missing-state-dict": _pop("state_dict"), "missing-config": _pop("config"),
        "extra-top-key": _set("evil", 1), "metadata-not-dict": _set("metadata", "x"),
        "weights-nan": lambda o: o["state_dict"][next(iter(o["state_dict"]))].fill_(float("nan")),
        "weights-wrong-shape": lambda o: o["state_dict"].update({k: torch.zeros(3) for k in list(o["state_dict"])[:1]}),
        "weights-not-tensor": lambda o: o["state_dict"].update({"rnn.weight_ih_l0": [1.0, 2.0]}),
        "weights-missing": lambda o: o["state_dict"].pop(next(iter(o["state_dict"]))),
    }
    out = [Case(f"checkpoint-{k}", _ckpt_obj(v), ["info", "{model}", "--json"], {2},
                fast=k in ("dropout-5", "norm-zero-std", "spec-traversal-name", "weights-nan"))
           for k, v in bad.items()]
    for name in ("../../outside/evil", "/etc/passwd", "a" * 300, "nul\x00byte", "..", "con:aux"):
        def check(sandbox: Path, res: dict, name: str = name) -> None:
            files = [p.name for p in (sandbox / "work" / "out").iterdir()]
            assert all("/" not in f and not f.startswith("..") for f in files), files
        out.append(Case(f"checkpoint-name-{abs(hash(name)) % 10**6}", _ckpt_obj(_set("metadata", {"name": name})),
                        ["export", "{model}", "-o", "{out}", "--json"], {0}, fast=name.startswith(".."),
                        setup_check=check))
    return out


def _evil_model(kind: str) -> Callable[[Path], dict[str, str]]:
    """A model file of every container form with code hidden in it."""
    def build(sandbox: Path) -> dict[str, str]:
        marker = sandbox / "PWNED"
        dst = sandbox / "in" / ("m.pt2" if kind.startswith("pt2") else "m.pt")
        ck, ts, ep = (c.base(k)[0] for k in (CKPT, "models:stacked:torchscript", "models:stacked:pt2"))
        evil2, evil4 = c.evil_pickle(marker), c.evil_pickle(marker, 4)
        evil_ts = c.evil_torch_save(marker)
        mutations: dict[str, tuple[Path, c.Mutation]] = {
            "ckpt-data-pkl": (ck, c.replace("data.pkl", evil2)),
            "ckpt-data-pkl-stack-global": (ck, c.replace("data.pkl", evil4)),
            "ckpt-dup-data-pkl-evil-second": (ck, c.chain(c.duplicate("data.pkl", zero=False),
                                                          _replace_last("data.pkl", evil2))),
            "ckpt-dup-data-pkl-evil-first": (ck, c.chain(c.duplicate("data.pkl", zero=False, first=True),
                                                         c.replace("data.pkl", evil2))),
            "ckpt-hidden-member": (ck, c.add("extra/evil.pkl", evil2)),
            "ts-data-pkl": (ts, c.replace("/data.pkl", evil2)),
            "ts-constants-pkl": (ts, c.replace("constants.pkl", evil2)),
            "ts-debug-pkl": (ts, c.replace(".py.debug_pkl", evil2)),
            "ts-traced-inputs": (ts, c.replace("traced_inputs.pkl", evil4)),
            "ts-code-writes-file": (ts, _ts_code_save(marker)),
            "pt2-sample-inputs": (ep, c.replace("sample_inputs/model.pt", evil_ts)),
            "pt2-sample-inputs-legacy": (ep, c.replace("sample_inputs/model.pt", c.evil_torch_save(marker,
                                                                                                  legacy=True))),
            "pt2-dup-sample-inputs-evil-second": (ep, c.chain(c.duplicate("sample_inputs/model.pt", zero=False),
                                                              _replace_last("sample_inputs/model.pt", evil_ts))),
            "pt2-dup-sample-inputs-evil-first": (ep, c.chain(c.duplicate("sample_inputs/model.pt", zero=False,
                                                                         first=True),
                                                             c.replace("sample_inputs/model.pt", evil_ts))),
            "pt2-pickled-weight": (ep, c.chain(c.edit_json("model_weights_config.json", _use_pickle("weight_0")),
                                               c.replace("weights/weight_0", evil_ts))),
            "pt2-opaque-constant": (ep, c.chain(c.edit_json("model_constants_config.json", _const("opaque_0")),
                                                c.add("data/constants/opaque_0", evil2))),
            "pt2-custom-obj-constant": (ep, c.chain(c.edit_json("model_constants_config.json", _const("custom_obj_0")),
                                                    c.add("data/constants/custom_obj_0", evil2))),
            "pt2-legacy-weights": (ep, c.add("data/weights/model.pt", evil_ts)),
            "pt2-legacy-constants": (ep, c.chain(c.drop("model_constants_config.json"),
                                                 c.add("data/constants/model.pt", evil_ts))),
            "pt2-guard-code": (ep, c.edit_json("models/model.json", lambda d: d.update(
                guards_code=[f"__import__('builtins').open({str(marker)!r}, 'w')"]))),
            "pt2-sym-expr": (ep, c.edit_json("models/model.json", lambda d: d.update(range_constraints={
                f"__import__('builtins').open({str(marker)!r}, 'w')": {"min_val": 0, "max_val": 2}}))),
            "pt2-operator-target": (ep, c.edit_json("models/model.json", _retarget("torch.os.system"))),
            "pt2-extension-op": (ep, c.edit_json("models/model.json", _retarget("#evil"))),
            "pt2-aoti-library": (ep, c.add("data/aotinductor/model/model.so", b"\x7fELF")),
            "pt2-second-program": (ep, c.add("models/evil.json", b"{}")),
        }
        if kind == "legacy-pickle":
            dst.write_bytes(evil2)
        elif kind == "legacy-torch-save":
            dst.write_bytes(c.evil_torch_save(marker, legacy=True))
        else:
            src, mut = mutations[kind]
            mut(src, dst)
        return {"model": str(dst)}
    return build


EVIL_KINDS = ["legacy-pickle", "legacy-torch-save", "ckpt-data-pkl", "ckpt-data-pkl-stack-global",
              "ckpt-dup-data-pkl-evil-second", "ckpt-dup-data-pkl-evil-first", "ckpt-hidden-member", "ts-data-pkl",
              "ts-constants-pkl", "ts-debug-pkl", "ts-traced-inputs", "ts-code-writes-file", "pt2-sample-inputs",
              "pt2-sample-inputs-legacy", "pt2-dup-sample-inputs-evil-second", "pt2-dup-sample-inputs-evil-first",
              "pt2-pickled-weight", "pt2-opaque-constant", "pt2-custom-obj-constant", "pt2-legacy-weights",
              "pt2-legacy-constants", "pt2-guard-code", "pt2-sym-expr", "pt2-operator-target", "pt2-extension-op",
              "pt2-aoti-library", "pt2-second-program"]


def _replace_last(suffix: str, data: bytes) -> c.Mutation:
    def go(src: Path, dst: Path) -> Path:
        e = c.read_zip(src)
        i = max(k for k, (n, _) in enumerate(e) if n.endswith(suffix))
        e[i] = (e[i][0], data)
        return c.write_zip(dst, e)
    return go


def _use_pickle(path_name: str) -> Callable[[dict], None]:
    def change(doc: dict) -> None:
        for meta in doc["config"].values():
            if meta["path_name"] == path_name:
                meta["use_pickle"] = True
    return change


def _const(path_name: str) -> Callable[[dict], None]:
    def change(doc: dict) -> None:
        doc["config"]["evil"] = {"path_name": path_name, "is_param": False, "use_pickle": True, "tensor_meta": None}
    return change


def _retarget(target: str) -> Callable[[dict], None]:
    def change(doc: dict) -> None:
        doc["graph_module"]["graph"]["nodes"][0]["target"] = target
    return change


def _ts_code_save(marker: Path) -> c.Mutation:
    """TorchScript whose forward() writes a file (aten::save): a program, not a pickle."""
    def go(src: Path, dst: Path) -> Path:
        e = c.read_zip(src)
        # the module's code file: its path depends on how the model's class was imported
        i = next(k for k, (n, d) in enumerate(e) if "/code/" in n and n.endswith(".py") and b"def forward" in d)
        lines = e[i][1].decode().splitlines()
        at = next(k for k, ln in enumerate(lines) if ln.strip().startswith("def forward"))
        while not lines[at].rstrip().endswith(":"):
            at += 1
        indent = " " * (len(lines[at + 1]) - len(lines[at + 1].lstrip()))
        lines.insert(at + 1, f"{indent}torch.save(x, {str(marker)!r})")
        e[i] = (e[i][0], ("\n".join(lines) + "\n").encode())
        return c.write_zip(dst, e)
    return go


def malicious_cases() -> list[Case]:
    """Code hidden in every container form: refused without --trust-pickle; the marker is never written."""
    out = []
    for kind in EVIL_KINDS:
        shapes = ["--input-shape", "1x12x1"] if kind.startswith(("ts-", "legacy")) else []
        out.append(Case(f"evil-info-{kind}", _evil_model(kind), ["info", "{model}", "--json", *shapes], {2},
                        fast=True))
    for kind in ("ckpt-data-pkl", "ts-code-writes-file", "pt2-sample-inputs", "pt2-guard-code", "legacy-pickle"):
        shapes = ["--input-shape", "1x12x1"] if kind.startswith(("ts-", "legacy")) else []
        out.append(Case(f"evil-export-{kind}", _evil_model(kind), ["export", "{model}", "-o", "{out}", "--json",
                                                                   *shapes], {2}, fast=kind == "pt2-sample-inputs"))
        out.append(Case(f"evil-profile-{kind}", _evil_model(kind), ["profile", "{model}", "--runtime", "torch",
                                                                    "--runs", "2", "--warmup", "0", "--json",
                                                                    *shapes], {2}, fast=kind == "ckpt-data-pkl"))
    return out
