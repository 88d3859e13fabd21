"""``edge-lstm train`` on real series: split, normalisation, determinism, reports, baselines, bad input."""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edge_lstm import archs, dataset, train_io
from edge_lstm.cli import main
from edge_lstm.load import load
from edge_lstm.train import TrainConfig, Windows, train

VEGA = Path(__import__("vega_datasets").__file__).parent / "_data"


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def _write(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def temps_1200(tmp_path_factory: pytest.TempPathFactory, seattle_csv: Path) -> Path:
    """The first 1,200 hours of the real series, with the date column and an hourly-change column."""
    rows = list(csv.reader(seattle_csv.open()))[1:1202]
    out = [[d, t, f"{float(t) - float(p):.2f}"] for (_, p), (d, t) in itertools.pairwise(rows)]
    return _write(tmp_path_factory.mktemp("t") / "temps.csv", ["date", "temp", "change"], out)


def _fast(**kw: object) -> TrainConfig:
    data = dataset.DataOptions(target_column="temp", window=24, **kw.pop("data", {}))  # type: ignore[arg-type]
    return TrainConfig(data, **{"hidden": 8, "layers": 1, "epochs": 2, **kw})  # type: ignore[arg-type]


def test_split_is_chronological_and_windows_stay_inside_their_part(temps_1200: Path) -> None:
    prep = dataset.prepare(dataset.read_table(temps_1200), _fast(data={"horizon": 3, "stride": 5}).data)
    parts = prep.split.parts()
    assert parts["train"][1] == parts["val"][0] and parts["val"][1] == parts["test"][0]
    for name, (lo, hi) in parts.items():
        s = prep.starts[name]
        assert s.min() >= lo and s.max() + 24 + 3 <= hi  # window and its three target rows inside the part
        assert np.all(np.diff(s) == (5 if name == "train" else 1))  # the stride applies to training windows
    train_rows = dataset.read_table(temps_1200).numeric("temp")[: parts["train"][1]]
    assert prep.mean[0] == pytest.approx(train_rows.mean()) and prep.std[0] == pytest.approx(train_rows.std())


def test_targets_level_and_delta_in_data_units(temps_1200: Path) -> None:
    table = dataset.read_table(temps_1200)
    raw = table.numeric("temp")
    for transform in ("level", "delta"):
        prep = dataset.prepare(table, _fast(data={"horizon": 2, "target_transform": transform}).data)
        s = prep.starts["test"][:5]
        back = prep.to_units(prep.targets(s), s)  # a perfect forecast maps back onto the truth
        assert np.allclose(back, np.stack([raw[s + 24], raw[s + 25]], axis=1), atol=1e-4)


def test_season_is_inferred_from_the_daily_cycle(seattle_csv: Path) -> None:
    raw = dataset.read_table(seattle_csv).numeric("temp")
    assert dataset.infer_season(raw[:6000], max_lag=500) == 24


def test_forget_gate_bias_is_one() -> None:
    model = archs.build("forecaster", archs.ArchConfig(hidden=8, layers=2))
    archs.init_forget_bias(model, 1.0)
    for name, p in model.rnn.named_parameters():
        if name.startswith("bias_ih"):
            assert torch.all(p[8:16] == 1.0)
        if name.startswith("bias_hh"):
            assert torch.all(p[8:16] == 0.0)


def test_cli_train_writes_checkpoint_log_and_report_identically_twice(temps_1200: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    args = ["train", str(temps_1200), "--target-column", "temp", "--features", "change", "--window", "24",
            "--hidden", "8", "--layers", "1", "--epochs", "3", "--stride", "2", "--dropout", "0.1", "--find-lr",
            "--target-transform", "delta", "-o", str(tmp_path / "m.pt"), "--json"]
    code, out, err = run(args, capsys)
    assert code == 0, err
    summary = json.loads(out)
    files = [tmp_path / n for n in ("m.pt", "m.train.json", "m.train.html")]
    first = [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
    assert run([*args, "--force"], capsys)[0] == 0
    assert [hashlib.sha256(f.read_bytes()).hexdigest() for f in files] == first  # same command, same bytes
    log = json.loads(files[1].read_text())
    assert log["checkpoint_sha256"] == first[0]
    assert {"train_loss", "val_loss", "lr", "grad_norm", "gradient_reach"} <= set(log["epochs"][0])
    assert log["lr_range_test"]["lrs"] and log["lr"] == pytest.approx(log["lr_range_test"]["suggested_lr"])
    html = files[2].read_text()
    assert html.count("<svg") >= 5 and "learning rate" in html and "persistence" in html
    assert "persistence" in summary["test"] and "seasonal_naive" in summary["test"]
    model = load(files[0])
    norm = model.normalization
    assert model.task == "forecast" and norm["columns"] == ["temp", "change"] and norm["target"] == "delta"
    assert norm["mean"][0] == pytest.approx(log["data"]["normalization"]["mean"][0])


def test_trained_checkpoint_exports_and_validates(temps_1200: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = tmp_path / "f.pt"
    assert run(["train", str(temps_1200), "--target-column", "temp", "--window", "24", "--hidden", "8",
                "--layers", "1", "--epochs", "2", "-o", str(ckpt)], capsys)[0] == 0
    held = _write(tmp_path / "held.csv", ["temp"], [[r[1]] for r in list(csv.reader(temps_1200.open()))[1:200]])
    code, out, err = run(["export", str(ckpt), "-o", str(tmp_path / "e"), "--data", str(held), "--json"], capsys)
    assert code == 0, err
    task = json.loads(out)["artifacts"][0]["validation"][0]["task"]
    assert task["metric"] == "mae" and task["drop"] < 1e-4
    # the training CSV itself (date, temp, change): the checkpoint's feature columns are taken by name
    code, out, err = run(["export", str(ckpt), "-o", str(tmp_path / "e2"), "--format", "onnx", "--data",
                          str(temps_1200), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["artifacts"][0]["validation"][0]["task"]["metric"] == "mae"
    wrong = _write(tmp_path / "wrong.csv", ["date", "tmp", "change"], list(csv.reader(temps_1200.open()))[1:200])
    code, out, _ = run(["export", str(ckpt), "-o", str(tmp_path / "e3"), "--data", str(wrong), "--json"], capsys)
    err_obj = json.loads(out)["error"]
    assert code == 2 and "no column 'temp'" in err_obj["message"] and "date, tmp, change" in err_obj["hint"]


def test_early_stopping_restores_the_best_weights(temps_1200: Path) -> None:
    cfg = _fast(epochs=8, patience=2, lr=0.05, schedule="none")  # a rate high enough to worsen validation
    result = train(temps_1200, cfg)
    log = result.log
    best = min(e["val_loss"] for e in log["epochs"])
    assert log["best_val_loss"] == best and log["epochs"][log["best_epoch"] - 1]["val_loss"] == best
    from edge_lstm.train import Silent, loss_function
    from edge_lstm.train_loop import Loop

    sets = {k: Windows(result.prepared, v) for k, v in result.prepared.starts.items()}
    loss_fn, _ = loss_function(result.prepared, sets["train"], cfg)
    assert Loop(result.model, sets, loss_fn, cfg, cfg.lr, Silent()).loss_on(sets["val"]) == pytest.approx(best)


def test_exploding_note_when_clipping_is_always_active(temps_1200: Path) -> None:
    notes = train(temps_1200, _fast(clip=1e-4)).notes
    assert [n["kind"] for n in notes] == ["exploding"] and "clipping" in notes[0]["text"]


def test_plain_rnn_on_a_long_window_gets_the_vanishing_note(seattle_csv: Path) -> None:
    cfg = TrainConfig(dataset.DataOptions(target_column="temp", window=320, stride=16), cell="rnn", hidden=16,
                      layers=1, epochs=2, max_steps_per_epoch=6)
    kinds = [n["kind"] for n in train(seattle_csv, cfg).notes]
    assert "vanishing" in kinds


def test_classifier_with_class_weights_macro_f1_and_confusion(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    data = VEGA / "seattle-weather.csv"
    args = ["train", str(data), "--task", "classify", "--label-column", "weather", "--window", "14",
            "--hidden", "16", "--layers", "1", "--epochs", "3", "-o", str(tmp_path / "c.pt"), "--json"]
    code, out, err = run(args, capsys)
    assert code == 0, err
    test = json.loads(out)["test"]
    assert test["classes"] == ["drizzle", "fog", "rain", "snow", "sun"]
    cm = np.array(test["model"]["confusion"])
    assert cm.shape == (5, 5) and cm.sum() == test["windows"]
    assert 0.0 <= test["model"]["macro_f1"] <= 1.0 and "majority_class" in test
    model = load(tmp_path / "c.pt")
    assert model.task == "classify" and model.metadata["classes"] == test["classes"]
    assert model.normalization["columns"] == ["precipitation", "temp_max", "temp_min", "wind"]


@pytest.mark.parametrize(("rows", "args", "needle"), [
    ("temp\n" + "1\n" * 5, ["--target-column", "tmp"], "no column 'tmp'"),
    ("temp\n" + "1.5\n" * 100 + "\nwarm\n", ["--target-column", "temp"],  # a blank line: file line 103, data row 101
     "line 103 (data row 101), column 'temp': 'warm' is not a number"),
    ("temp\n" + "".join(f"{i % 7}\n" for i in range(40)), ["--target-column", "temp", "--window", "24"],
     "too short for one window"),
    ("temp\n" + "3.0\n" * 400, ["--target-column", "temp", "--window", "12"], "constant"),
    ("x,y\n" + "".join(f"{i % 5},a\n" for i in range(300)), ["--task", "classify", "--label-column", "y",
                                                               "--window", "12"], "only one class"),
    ("temp\n" + "1\n" * 50, ["--target-column", "temp", "--cell", "transformer"], "Unknown --cell"),
    ("1\n2\n3\n", ["--target-column", "temp"], "no header row"),
    *[("temp\n" + "".join(f"{i % 7}\n" for i in range(300)), ["--target-column", "temp", "--window", "12", flag, "nan"],
       "finite numbers") for flag in ("--lr", "--weight-decay", "--clip")],
])
def test_bad_input_exit_2_and_nothing_written(rows: str, args: list[str], needle: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "bad.csv"
    data.write_text(rows)
    code, _, err = run(["train", str(data), *args, "-o", str(tmp_path / "m.pt")], capsys)
    assert code == 2 and needle in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv"]


def test_a_baseline_exact_on_the_test_rows_is_said_so_not_a_crash(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "periodic.csv"  # a period of 24 steps: the seasonal-naive forecast is exact
    data.write_text("temp\n" + "".join(f"{(i % 24) * 0.5 + (i % 3)}\n" for i in range(1200)))
    code, out, err = run(["train", str(data), "--target-column", "temp", "--window", "24", "--epochs", "1",
                          "--hidden", "4", "--layers", "1", "-o", str(tmp_path / "p.pt")], capsys)
    assert code == 0, err
    log = json.loads((tmp_path / "p.train.json").read_text())
    assert log["test"]["seasonal_naive"]["mae"] == 0 and "model_improvement" not in log["test"]["seasonal_naive"]
    assert "exact on the test rows" in out and "baseline exact" in (tmp_path / "p.train.html").read_text()


def test_existing_output_needs_force(temps_1200: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "m.train.json").write_text("{}")
    code, _, err = run(["train", str(temps_1200), "--target-column", "temp", "-o", str(tmp_path / "m.pt")], capsys)
    assert code == 2 and "already exists" in err and not (tmp_path / "m.pt").exists()


def test_python_api_writes_atomically(temps_1200: Path, tmp_path: Path) -> None:
    result = train(temps_1200, _fast(data={"horizon": 2}))
    assert result.test["horizon"] == 2 and result.model.head.out_features == 2
    paths = train_io.write_outputs(result, tmp_path / "h.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.pt", "h.train.html", "h.train.json"]
    assert load(paths["checkpoint"]).outputs[0].shape[-1] == 2


def test_a_model_worse_than_a_baseline_is_said_to_be_worse() -> None:
    from edge_lstm.cli_train import human_summary

    s = {"best_epoch": 3, "stopped": "ran all 3 epochs", "lr": 1e-3, "notes": [], "checkpoint": "m.pt", "log": "l",
         "report": "r",
         "test": {"windows": 10, "model": {"mae": 3.3, "rmse": 4.0},
                  "persistence": {"mae": 1.0, "rmse": 1.2, "model_improvement": -2.3}}}
    text = human_summary(s)
    assert "model HIGHER by 230.0%: worse" in text and "lower by -" not in text
