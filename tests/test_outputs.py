"""Where edge-lstm writes: safe names, the marker, --force rules, links, stale staging, full disks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge_lstm import outputs
from edge_lstm.errors import OutputError, OutputExistsError, UsageError


@pytest.mark.parametrize(("text", "expected"), [
    ("../../etc/passwd", "passwd"), ("/abs/model", "model"), ("..", "model"), ("a b;c", "a_b_c"),
    (".hidden", "hidden"), ("x" * 300, "x" * 64), ("nul\x00x", "nul_x"), ("", "model"),
])
def test_safe_name(text: str, expected: str) -> None:
    assert outputs.safe_name(text) == expected


def _publish(out: Path, files: dict[str, bytes], force: bool = False) -> None:
    with outputs.staged_dir(out, force) as stage:
        for name, data in files.items():
            outputs.write_into(stage, name, data)


def test_marker_lists_what_was_written_and_force_replaces_only_that(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _publish(out, {"a.onnx": b"1", "report.json": b"{}"})
    assert json.loads((out / outputs.MARKER).read_text())["files"] == ["a.onnx", "report.json"]
    with pytest.raises(OutputExistsError):
        _publish(out, {"b.onnx": b"2"})
    _publish(out, {"b.onnx": b"2"}, force=True)
    assert sorted(p.name for p in out.iterdir()) == [outputs.MARKER, "b.onnx"]
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match=r"notes\.txt"):
        _publish(out, {"c.onnx": b"3"}, force=True)
    assert (out / "notes.txt").read_text() == "mine"


def test_a_report_json_alone_does_not_make_a_directory_ours(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text("{}")
    with pytest.raises(OutputExistsError, match="not an edge-lstm export"):
        _publish(out, {"a": b"1"}, force=True)


def test_links_are_never_written_through(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for target in (elsewhere, tmp_path / "missing"):
        link = tmp_path / "out"
        link.symlink_to(target)
        with pytest.raises(UsageError, match="symbolic link"):
            _publish(link, {"a": b"1"}, force=True)
        link.unlink()
    assert not list(elsewhere.iterdir()) and not (tmp_path / "missing").exists()
    with pytest.raises(UsageError, match="plain file name"):
        _publish(tmp_path / "out", {"../x": b"1"})
    assert not (tmp_path / "x").exists() and not (tmp_path / "out").exists()


def test_planted_link_inside_our_output_blocks_force(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _publish(out, {"a.onnx": b"1"})
    (out / "a.onnx").unlink()
    (out / "a.onnx").symlink_to(tmp_path / "precious")
    (tmp_path / "precious").write_text("keep")
    with pytest.raises(OutputExistsError):
        _publish(out, {"b": b"2"}, force=True)
    assert (tmp_path / "precious").read_text() == "keep"


def test_stale_staging_of_a_dead_process_is_removed(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    pid = int(dead.stdout)
    out = tmp_path / "out"
    stale = tmp_path / f".out.{outputs._host_tag()}-{pid}.abcd1234.partial"
    stale.mkdir()
    (stale / "half.onnx").write_bytes(b"x")
    alive = tmp_path / f".out.{outputs._host_tag()}-{os.getpid()}.efgh5678.partial"  # a run still going
    alive.mkdir()
    _publish(out, {"a": b"1"})
    assert not stale.exists() and alive.exists()


def test_an_output_renamed_aside_by_a_killed_publish_is_restored(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _publish(out, {"a": b"1"})
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)
    aside = tmp_path / f".out.{outputs._host_tag()}-{dead}.old"
    out.rename(aside)
    with pytest.raises(OutputExistsError):  # restored, so it exists again, and needs --force
        outputs.check_destination(out, force=False)
    assert (out / "a").read_bytes() == b"1" and not aside.exists()


def test_io_errors_name_the_path_and_reason(tmp_path: Path) -> None:
    import errno

    e = outputs.io_error(OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x")))
    assert isinstance(e, OutputError) and e.exit_code == 2
    assert str(tmp_path / "x") in e.message and "No space left" in e.message and "full" in (e.hint or "")


def test_files_added_later_by_edge_lstm_join_the_marker(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _publish(out, {"a.onnx": b"1"})
    outputs.write_files_atomic({out / "profile.json": b"{}"})
    outputs.add_to_marker(out, ["profile.json"])
    _publish(out, {"b.onnx": b"2"}, force=True)  # still ours as a whole
    assert sorted(p.name for p in out.iterdir()) == [outputs.MARKER, "b.onnx"]


def test_subdirectories_are_ours_only_as_listed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with outputs.staged_dir(out, force=False) as stage:
        outputs.write_into(stage, "report.json", b"{}")
        outputs.write_into(stage, "fw/model.c", b"int x;")
        outputs.write_into(stage, "fw/arm/model.elf", b"\x7fELF")
    marker = json.loads((out / outputs.MARKER).read_text())
    assert marker["files"] == ["fw/arm/model.elf", "fw/model.c", "report.json"]
    assert marker["dirs"] == ["fw", "fw/arm"]
    with outputs.staged_dir(out, force=True) as stage:  # our own nested output: replaced
        outputs.write_into(stage, "report.json", b"{}")
    assert not (out / "fw").exists()
    (out / "notes").mkdir()
    (out / "notes" / "mine.txt").write_text("a user's file")
    with pytest.raises(OutputExistsError, match="notes"), outputs.staged_dir(out, force=True):
        pass
    assert (out / "notes" / "mine.txt").read_text() == "a user's file"


@pytest.mark.parametrize("name", ["../x", "/abs", "a/../b", "a//b", ".hidden/x", "a/b/c/d/e/f"])
def test_relative_names_stay_inside(tmp_path: Path, name: str) -> None:
    with pytest.raises(UsageError), outputs.staged_dir(tmp_path / "out", force=False) as stage:
        outputs.write_into(stage, name, b"x")
    assert not any(p.name == "x" for p in tmp_path.rglob("*"))


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".partial"))


def test_atomic_file_replaces_only_when_the_block_succeeds(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    path.write_bytes(b"old")
    with pytest.raises(ValueError, match="half way"), outputs.atomic_file(path, "w", encoding="utf-8") as f:
        f.write("new, half written")
        raise ValueError("half way")
    assert path.read_bytes() == b"old" and _leftovers(tmp_path) == []  # untouched, no temporary left
    with outputs.atomic_file(path, "w", encoding="utf-8", newline="") as f:
        f.write("a,b\r\n1,2\n")
    assert path.read_bytes() == b"a,b\r\n1,2\n" and _leftovers(tmp_path) == []
    assert path.stat().st_mode & 0o777 == outputs.file_mode()  # an ordinary file, not mkstemp's private one
    outputs.write_bytes_atomic(path, b"\x00\x01", perms=0o600)
    assert path.read_bytes() == b"\x00\x01" and path.stat().st_mode & 0o777 == 0o600
    outputs.write_text_atomic(path, "é\n")
    assert path.read_bytes() == "é\n".encode()


def test_atomic_write_into_a_missing_directory_is_an_output_error(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="missing"):
        outputs.write_bytes_atomic(tmp_path / "missing" / "x.bin", b"1")
    assert list(tmp_path.iterdir()) == []


def test_several_files_all_or_nothing(tmp_path: Path) -> None:
    first, second = tmp_path / "a.pt", tmp_path / "a.train.json"
    second.mkdir()  # a rename over a non-empty directory fails after the first file was placed
    (second / "keep").write_text("x")
    with pytest.raises(OutputError, match=r"a\.train\.json"):
        outputs.write_files_atomic({first: b"1", second: b"2"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.train.json"]  # the first is gone again, no temps
    assert (second / "keep").read_text() == "x"
    second.joinpath("keep").unlink()
    second.rmdir()
    first.write_bytes(b"theirs")
    with pytest.raises(OutputExistsError, match=r"a\.pt"):
        outputs.write_files_atomic({first: b"1", second: b"2"}, force=False)
    assert first.read_bytes() == b"theirs" and sorted(p.name for p in tmp_path.iterdir()) == ["a.pt"]
    outputs.write_files_atomic({first: b"1", second: b"2"}, force=True)
    assert first.read_bytes() == b"1" and second.read_bytes() == b"2" and _leftovers(tmp_path) == []


def test_outputs_is_light_enough_for_the_device_side() -> None:
    """The device runner (numpy and one runtime, Python 3.9) writes through this module: it imports only the
    standard library and edge_lstm.errors."""
    code = ("import sys; import edge_lstm.outputs\n"
            "print(sorted(m for m in sys.modules if m.startswith('edge_lstm') or m in ('numpy', 'torch', 'onnx')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert proc.stdout.strip() == "['edge_lstm', 'edge_lstm.errors', 'edge_lstm.outputs']"


def test_shown_resolves_dot_dot_and_links_in_the_parent_and_keeps_the_name(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert outputs.shown(Path("a/../c")) == Path("c")
    assert outputs.shown("a/./../a/out.zip") == Path("a/out.zip")
    assert outputs.shown(Path("link/x")) == Path("real/x")  # the parent's link followed, as resolve_output does
    assert outputs.shown(tmp_path / "a" / ".." / "c") == Path("c")
    outside = tmp_path.parent / "elsewhere"
    assert outputs.shown(tmp_path / ".." / "elsewhere") == outside.resolve()  # outside the working dir: absolute
    (tmp_path / "c").mkdir()
    with pytest.raises(OutputExistsError, match="Output 'c' already exists"):
        outputs.check_destination(Path("a/../c"), force=False)


def test_export_and_bundle_print_output_paths_normalised(forecaster_ckpt: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from edge_lstm.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "a").mkdir()
    assert main(["export", str(forecaster_ckpt), "-o", "a/../c", "--format", "onnx", "--precision", "fp32"]) == 0
    text = capsys.readouterr().out
    assert "Report: c/report.md and c/report.json" in text and ".." not in text
    assert main(["bundle", "a/../c", "-o", "a/../b.zip", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["bundle"] == str(tmp_path.resolve() / "b.zip")
    assert main(["bundle", "a/../c", "-o", "a/../b.zip", "--force"]) == 0
    assert capsys.readouterr().out.startswith("Wrote b.zip ")


def test_a_file_or_foreign_output_is_never_hinted_to_force(forecaster_ckpt: Path, temps_csv: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """`export -o data3.csv` (an existing file) and `-o mine/` (your files): refused with and without --force, and
    the first refusal does not suggest the --force that would be refused too."""
    import json

    from edge_lstm.cli import main

    data = tmp_path / "data3.csv"
    data.write_bytes(temps_csv.read_bytes())
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    for out, said in ((data, "is an existing file, not an edge-lstm export"), (mine, "holds files edge-lstm did not")):
        for force in ([], ["--force"]):
            assert main(["export", str(forecaster_ckpt), "-o", str(out), "--json", *force]) == 2
            e = json.loads(capsys.readouterr().out)["error"]
            assert said in e["message"] and "--force will not replace it" in e["message"], e
            assert "Pass --force" not in e["hint"] and "another --output" in e["hint"], e
    assert data.read_bytes() == temps_csv.read_bytes() and (mine / "notes.txt").read_text() == "keep"
