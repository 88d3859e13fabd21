"""``edge-lstm tune``: trials trained, exported through the pipeline, measured; budgets; workers; shared studies.

The distributed test runs a real PostgreSQL server (tests/pg_helper.py) and two
``edge-lstm tune`` processes against one study, kills one mid-trial and checks
that its trial is marked failed and the other process finishes the study.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from edge_lstm.cli import main
from edge_lstm.load import load

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["--target-column", "temp", "--target", "rpi4", "--epochs", "2", "--hidden", "4,8", "--layers", "1",
         "--windows", "12,24", "--batch-sizes", "64", "--cells", "lstm,gru"]


@pytest.fixture(scope="module")
def hours(tmp_path_factory: pytest.TempPathFactory, seattle_csv: Path) -> Path:
    """The first 900 hours of the real series."""
    rows = list(csv.reader(seattle_csv.open()))[:901]
    path = tmp_path_factory.mktemp("tune") / "hours.csv"
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_tune_two_local_workers_pareto_front_and_chosen_model(hours: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tuned"
    code, stdout, err = run(["tune", str(hours), *SMALL, "--trials", "4", "--workers", "2", "--max-flash-kb", "10",
                             "-o", str(out), "--json"], capsys)
    assert code == 0, err
    s = json.loads(stdout)
    assert s["counts"].get("COMPLETE", 0) + s["counts"].get("PRUNED", 0) >= 4
    assert s["format"] == "tflite" and s["precision"] == "dynamic-int8" and s["target"] == "rpi4b"
    workers = {r["worker"]["pid"] for r in s["trials"] if r["worker"]}
    assert len(workers) == 2  # both processes ran trials
    for r in s["trials"]:
        if r["state"] == "COMPLETE" and not r["feasible"]:
            assert "flash" in r["reason"] and "over the budget" in r["reason"]  # recorded, with the reason
    assert s["pareto"] and all(r["feasible"] for r in s["trials"] if r["number"] in s["pareto"])
    chosen = s["chosen"]
    assert chosen["number"] in s["pareto"] and chosen["reproduced_bit_exact"] is True
    assert chosen["val_error"] == min(r["val_error"] for r in s["trials"] if r["number"] in s["pareto"])
    assert load(out / "model.pt").config is not None
    assert (out / "export" / "report.json").is_file() and (out / "study.db").is_file()
    assert "<svg" in (out / "report.html").read_text() and "Pareto front" in (out / "report.html").read_text()


def test_no_trial_meets_the_budget_exit_4_closest_shown_nothing_written(hours: Path, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["tune", str(hours), *SMALL, "--trials", "2", "--workers", "1", "--max-flash-kb", "0.5",
                        "-o", str(tmp_path / "t")], capsys)
    assert code == 4 and "No trial meets the budget" in err and "The closest" in err
    assert list(tmp_path.iterdir()) == []


def test_bad_tune_input_exit_2(hours: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["tune", str(hours), "--target-column", "temp", "--target", "no-such-board",
                        "-o", str(tmp_path / "t")], capsys)
    assert code == 2 and "Unknown target" in err
    code, _, err = run(["tune", str(hours), "--target-column", "nope", "--target", "rpi4b", "-o", str(tmp_path / "t")],
                       capsys)
    assert code == 2 and "no column 'nope'" in err and not (tmp_path / "t").exists()


@pytest.mark.parametrize("flag", [["--max-flash-kb", "-5"], ["--max-ram-kb", "0"], ["--max-latency-ms", "nan"],
                                  ["--precision", "int9"], ["--format", "onnx", "--precision", "int8"]])
def test_bad_budget_or_precision_is_exit_2_before_any_trial(hours: Path, tmp_path: Path, flag: list[str],
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["tune", str(hours), *SMALL, *flag, "-o", str(tmp_path / "t"), "--json"], capsys)
    err = json.loads(out)["error"]
    assert code == 2 and err["kind"] == "usage", err
    assert ("budget" in err["message"]) or ("precision" in err["message"].lower()), err
    assert not (tmp_path / "t").exists() and "Traceback" not in out


def test_microcontroller_ram_is_the_tflm_arena_and_a_trial_over_it_is_infeasible(
        hours: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    small = ["--target-column", "temp", "--target", "nrf52840", "--epochs", "1", "--max-steps", "5", "--hidden", "4",
             "--layers", "1", "--windows", "12", "--batch-sizes", "64", "--cells", "lstm", "--trials", "1",
             "--workers", "1"]
    code, out, _ = run(["tune", str(hours), *small, "--max-ram-kb", "2", "-o", str(tmp_path / "t"), "--json"], capsys)
    assert code == 4 and "No trial meets the budget" in json.loads(out)["error"]["message"]
    code, out, err = run(["tune", str(hours), *small, "-o", str(tmp_path / "ok"), "--json"], capsys)
    assert code == 0, err
    trial = json.loads(out)["trials"][0]
    assert trial["feasible"] and trial["arena_kb"] > 2, trial  # measured on TFLite Micro
    report = json.loads((tmp_path / "ok" / "export" / "report.json").read_text())
    assert [a["runtime"] for a in report["profile"]["artifacts"]] == ["tflm"]


def test_pruning_rules(hours: Path) -> None:
    from edge_lstm import dataset
    from edge_lstm.train import TrainConfig
    from edge_lstm.tune_prune import PruningProgress

    study = optuna.create_study(directions=["minimize"] * 3)
    table = dataset.read_table(hours)
    cfg = TrainConfig(dataset.DataOptions(target_column="temp", window=12), hidden=8, layers=1, epochs=4)
    done = study.ask()
    done.set_user_attr("measured", {"feasible": True})
    done.set_user_attr("cost_proxy", {"params": 1, "macs": 1})
    done.set_user_attr("val_curve", [0.5, 0.01])
    study.tell(done, [1.0, 1.0, 1.0])
    prog = PruningProgress(study.ask(), cfg, table)
    prog.epoch_end({"val_loss": 0.2})  # epoch 1: never pruned
    prog.epoch_end({"val_loss": 0.0105})  # within 10% of trial 0 at epoch 2: goes on
    late = PruningProgress(study.ask(), cfg, table)
    late.epoch_end({"val_loss": 0.2})
    with pytest.raises(optuna.TrialPruned, match="dominated at epoch 2: trial 0"):
        late.epoch_end({"val_loss": 0.02})
    hopeless = PruningProgress(study.ask(), cfg, table)
    hopeless.epoch_end({"val_loss": 10.0})
    with pytest.raises(optuna.TrialPruned, match="no better than a constant"):
        hopeless.epoch_end({"val_loss": 10.0})


def _tune_process(hours: Path, url: str, out: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    args = [sys.executable, "-m", "edge_lstm.cli", "tune", str(hours), *SMALL, "--trials", "5", "--workers", "1",
            "--storage", url, "--study", "shared", "--heartbeat", "2", "-o", str(out)]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _running_trial_of(url: str, pid: int, timeout: float = 300.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            study = optuna.load_study(study_name="shared", storage=url)
            for t in study.get_trials(states=(optuna.trial.TrialState.RUNNING,)):
                if (t.user_attrs.get("worker") or {}).get("pid") == pid:
                    return t.number
        except KeyError:
            pass  # the study is not created yet
        time.sleep(0.3)
    raise AssertionError(f"process {pid} never ran a trial")


@pytest.mark.slow
def test_two_processes_share_a_postgresql_study_and_survive_a_killed_worker(hours: Path, tmp_path: Path) -> None:
    from pg_helper import postgres_server

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    with postgres_server() as url:
        victim = _tune_process(hours, url, tmp_path / "a", env)
        killed = _running_trial_of(url, victim.pid)
        survivor = _tune_process(hours, url, tmp_path / "b", env)
        os.kill(victim.pid, signal.SIGKILL)  # mid-trial: no chance to clean up
        victim.wait(timeout=60)
        log, _ = survivor.communicate(timeout=900)
        assert survivor.returncode == 0, log
        study = optuna.load_study(study_name="shared", storage=url)
        trials = {t.number: t for t in study.get_trials()}
        assert trials[killed].state == optuna.trial.TrialState.FAIL  # marked failed by the heartbeat
        finished = [t for t in trials.values() if t.state.name in ("COMPLETE", "PRUNED")]
        assert len(finished) >= 5 and any(t.number > killed for t in finished)  # the study went on
        s = json.loads((tmp_path / "b" / "report.json").read_text())
        assert s["storage"].startswith("postgresql://") and s["chosen"]["reproduced_bit_exact"] is True
        assert not (tmp_path / "a").exists()  # the killed process published nothing


def test_joining_with_other_settings_is_refused(hours: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    from edge_lstm import dataset, tune, tune_workers
    from edge_lstm.train import TrainConfig

    base = TrainConfig(dataset.DataOptions(target_column="temp", window=24), epochs=2)
    tune_workers.open_study(tune.TuneConfig(hours, base, trials=3), url, "s")
    code, _, err = run(["tune", str(hours), *SMALL, "--trials", "3", "--storage", url, "--study", "s",
                        "-o", str(tmp_path / "t")], capsys)
    assert code == 2 and "other settings" in err
