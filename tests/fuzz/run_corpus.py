"""Fuzz edge-lstm with a corpus it has not seen: every model file in a directory, intact and mutated.

    .venv/bin/python tests/fuzz/run_corpus.py DIR [--seeds 3]

Each file is run through ``info --json`` (with its input shapes when a ``NAME.shapes`` sidecar or the zoo
knows them) intact, truncated, bit-flipped (``--seeds`` times), with its first storage member duplicated
zero-filled, and with a pickle payload that writes a marker file planted in its main pickle. Every run is
checked by the suite's own harness; the table counts exit codes and every broken promise.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import zipfile
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

import fuzz_corpus as c  # noqa: E402
from fuzz_harness import Case, Worker, run_case  # noqa: E402


def _shapes(path: Path) -> list[str]:
    import zoo

    name = path.name.split(".")[0]
    return c.shape_args([tuple(s) for s in zoo.ZOO[name].shapes]) if name in zoo.ZOO else []


def _payload(src: Path, dst: Path) -> Path:
    with zipfile.ZipFile(src) as z:
        names = z.namelist()
    main = next((n for n in names if n.endswith("/data.pkl")), None) or next(
        (n for n in names if n.endswith("sample_inputs/model.pt")), names[0])
    marker = dst.parent.parent / "PWNED"
    data = c.evil_torch_save(marker) if main.endswith(".pt") else c.evil_pickle(marker)
    return c.replace(main, data)(src, dst)


def cases_for(path: Path, seeds: int) -> list[Case]:
    """The mutations of one corpus file."""
    def build(mut: c.Mutation | None) -> object:
        def go(sandbox: Path) -> dict[str, str]:
            dst = sandbox / "in" / path.name
            if mut is None:
                dst.write_bytes(path.read_bytes())
            else:
                mut(path, dst)
            return {"model": str(dst)}
        return go

    storage = "data/0"
    with zipfile.ZipFile(path) as z:
        storage = next((n.split("/", 1)[1] for n in z.namelist() if "/data/0" in n or "weight_0" in n), storage)
    muts: list[tuple[str, c.Mutation | None, set[int]]] = [
        ("intact", None, {0, 2, 5}), ("truncated", c.truncate(0.5), {2}),
        *[(f"flip-{s}", c.flip(100 + s), {0, 2, 5}) for s in range(seeds)],
        ("dup-storage-zeroed", c.duplicate(storage), {2}), ("payload", _payload, {2}),
    ]
    argv = ["info", "{model}", "--json", *_shapes(path)]
    return [Case(f"{path.name}-{name}", build(mut), argv, expect) for name, mut, expect in muts]  # type: ignore[arg-type]


def main() -> int:
    """Run the corpus and print the table; exit 1 when any promise broke."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    files = sorted(p for p in args.corpus.iterdir() if p.is_file() and zipfile.is_zipfile(p))
    codes: collections.Counter[int] = collections.Counter()
    broken: list[str] = []
    with tempfile.TemporaryDirectory(prefix="fuzz-corpus-") as tmp:
        c.set_root(Path(tmp) / "base")
        worker = Worker()
        try:
            for f in files:
                for case in cases_for(f, args.seeds):
                    sandbox = Path(tmp) / case.id
                    try:
                        run_case(worker, case, sandbox)
                    except AssertionError as e:
                        broken.append(f"{case.id}: {str(e).splitlines()[0]}")
                    codes[case.result["rc"] if case.result else -999] += 1
        finally:
            worker.close()
    print(f"{len(files)} files, {sum(codes.values())} runs; exit codes: "
          + ", ".join(f"{k}: {v}" for k, v in sorted(codes.items())))
    print(f"broken promises: {len(broken)}")
    for b in broken:
        print("  " + b)
    return 1 if broken else 0


if __name__ == "__main__":
    raise SystemExit(main())
