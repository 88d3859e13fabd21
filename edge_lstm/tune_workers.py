"""Where a study lives and who works on it: Optuna storages, worker processes, dead workers.

A study is kept in an Optuna RDB storage: a SQLite file for one machine, or a
PostgreSQL database that workers on many machines reach. Every ``edge-lstm tune
--storage URL --study NAME`` process joins the same study and runs trials until
the study holds ``trials`` finished ones. Liveness has two guards:

- Optuna's heartbeat: each running trial's worker records a heartbeat; a trial
  whose heartbeat is older than the grace period is marked FAIL by the next
  worker that looks, on any machine;
- the local parent: a worker process started by this ``tune`` that dies has its
  running trial marked FAIL at once (matched by host and process id).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_lstm.errors import UsageError

if TYPE_CHECKING:
    import optuna

    from edge_lstm.tune import Context, TuneConfig

SETTINGS_KEY = "edge_lstm_settings"
DIRECTIONS: list[Any] = ["minimize", "minimize", "minimize"]


def storage(url: str, heartbeat_s: int) -> optuna.storages.RDBStorage:
    """An RDB storage with heartbeats; ``postgresql://`` and ``sqlite:///`` URLs (SQLAlchemy's form)."""
    import warnings

    import optuna
    import sqlalchemy.exc

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

    if not url.startswith(("sqlite:///", "postgresql://", "postgresql+", "mysql")):
        raise UsageError(f"Unsupported --storage '{url}'.",
                         "Use sqlite:///path/study.db (one machine) or postgresql://user@host:port/db.")
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 60}  # several local workers share one file
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=heartbeat_s,
                                          grace_period=2 * heartbeat_s)
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as e:
        raise UsageError(f"Cannot open the study storage '{_redact(url)}': {str(e).splitlines()[0]}",
                         "Check the URL, that the database server runs and accepts this user, and that the "
                         "database exists.") from e


def _redact(url: str) -> str:
    """The URL without a password."""
    if "@" in url and ":" in url.split("@")[0].split("//")[-1]:
        scheme, rest = url.split("//", 1)
        user = rest.split("@")[0].split(":")[0]
        return f"{scheme}//{user}:***@{rest.split('@', 1)[1]}"
    return url


def open_study(cfg: TuneConfig, url: str, name: str, seed: int = 0) -> optuna.Study:
    """Create the study or join it; a joining process must bring the same settings."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(4, cfg.trials // 3))
    study = optuna.create_study(storage=storage(url, cfg.heartbeat_s), study_name=name, directions=DIRECTIONS,
                                sampler=sampler, load_if_exists=True)
    mine = json.loads(json.dumps(cfg.settings()))  # as the storage keeps it (tuples become lists)
    theirs = study.user_attrs.get(SETTINGS_KEY)
    if theirs is None:
        study.set_user_attr(SETTINGS_KEY, mine)
    elif theirs != mine:
        diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        raise UsageError(f"Study '{name}' was created with other settings ({', '.join(diff)} differ).",
                         "Join it with the same data options, target, budgets and search space, or pass a new "
                         "--study name.")
    return study


def counts(study: optuna.Study) -> dict[str, int]:
    """Trials by state."""
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def done(study: optuna.Study, trials: int) -> bool:
    """True once the study holds ``trials`` finished (complete or pruned) trials, or has failed as many."""
    c = counts(study)
    return c.get("COMPLETE", 0) + c.get("PRUNED", 0) >= trials or c.get("FAIL", 0) >= trials


def busy(study: optuna.Study, trials: int) -> bool:
    """True when the running trials will take the study to ``trials`` if they finish."""
    c = counts(study)
    return c.get("COMPLETE", 0) + c.get("PRUNED", 0) + c.get("RUNNING", 0) >= trials


def work(ctx: Context, url: str, name: str, seed: int) -> None:
    """Run trials until the study is done: one at a time, waiting while others run the last ones."""
    from optuna.storages import fail_stale_trials

    from edge_lstm.tune import TrialFailed, objective

    study = open_study(ctx.cfg, url, name, seed)
    while not done(study, ctx.cfg.trials):
        fail_stale_trials(study)
        if busy(study, ctx.cfg.trials):
            time.sleep(ctx.cfg.heartbeat_s)  # a running trial may yet fail: then this worker takes its place
            continue
        study.optimize(lambda t: objective(t, ctx), n_trials=1, catch=(TrialFailed,), gc_after_trial=True)


def worker_main(cfg: TuneConfig, url: str, name: str, workdir: str, index: int, quiet: bool) -> None:
    """The entry point of one worker process (spawned: a fresh interpreter, one thread)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from edge_lstm import dataset
    from edge_lstm.tune import Context, resolve_target, write_export_data

    ctx = Context(cfg, dataset.read_table(cfg.data), resolve_target(cfg.target), Path(workdir), quiet)
    write_export_data(ctx)
    work(ctx, url, name, cfg.base.seed + 1000 * (index + 1))


def run_workers(cfg: TuneConfig, url: str, name: str, workdir: Path, quiet: bool) -> list[int]:
    """Start ``workers`` processes (or work in this one for ``--workers 1``); fail the trials of any that die."""
    n = cfg.workers or (os.cpu_count() or 1)
    if n == 1:
        worker_main(cfg, url, name, str(workdir), 0, quiet)
        return [0]
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=worker_main, args=(cfg, url, name, str(workdir), i, quiet), daemon=False)
             for i in range(n)]
    for p in procs:
        p.start()
    if not quiet:
        print(f"tune: {n} worker processes ({', '.join(str(p.pid) for p in procs)}) on study '{name}'",
              file=sys.stderr, flush=True)
    try:
        _watch(procs, url, cfg, name)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join()
    return [int(p.exitcode or 0) for p in procs]


def _watch(procs: list[Any], url: str, cfg: TuneConfig, name: str) -> None:
    """Wait for the workers; the moment one dies, mark its running trial failed so the others go on."""
    handled: set[int] = set()
    while any(p.is_alive() for p in procs):
        time.sleep(0.5)
        for p in procs:
            if not p.is_alive() and p.pid not in handled:
                handled.add(p.pid)
                if p.exitcode:
                    fail_trials_of(url, cfg, name, p.pid, f"worker process {p.pid} died (exit code {p.exitcode})")


def fail_trials_of(url: str, cfg: TuneConfig, name: str, pid: int, why: str) -> list[int]:
    """Mark FAIL every running trial of worker ``pid`` on this host; return their numbers."""
    import optuna

    study = optuna.load_study(study_name=name, storage=storage(url, cfg.heartbeat_s))
    host, failed = socket.gethostname(), []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        w = t.user_attrs.get("worker") or {}
        if w.get("host") == host and w.get("pid") == pid:
            study._storage.set_trial_user_attr(t._trial_id, "failure", why)
            try:
                study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
                failed.append(t.number)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # it finished (or another process failed it) in the meantime
    return failed
