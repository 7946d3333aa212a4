"""Issue 22, items 10-14: worker processes, the feature cache and stores (see docs/RELIABILITY.md, round 2)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import REPO, SMALL_CLIPS_PER_WORD

ORPHAN_PARENT = """
import os, sys, time
from spatial_ae.runs import parallel

def task(pid_file):
    open(pid_file, "w").write(str(os.getpid()))
    time.sleep(120)  # a long simulation

if __name__ == "__main__":
    import logging
    setup = (sys.argv[1], "0", "fast", 1, logging.INFO)
    parallel.run_in_processes({0: (sys.argv[2],)}, task, 1, parallel.start_worker, setup, lambda k, f: None)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is dead
        return stat.read().split(") ")[-1][0] != "Z"


def test_workers_die_when_main_alone_is_sigkilled(tmp_path):
    """Item 10: SIGKILL of the parent only (not its group) must not leave its worker running as an orphan."""
    script, pid_file = tmp_path / "parent.py", tmp_path / "worker.pid"
    script.write_text(ORPHAN_PARENT)
    parent = subprocess.Popen([sys.executable, str(script), f"sqlite:///{tmp_path / 'mlflow.db'}", str(pid_file)],
                              cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not (pid_file.is_file() and pid_file.read_text()) and time.monotonic() < deadline:
            assert parent.poll() is None, "parent ended before its worker started"
            time.sleep(0.5)
        worker = int(pid_file.read_text())
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 15
        while alive(worker) and time.monotonic() < deadline:
            time.sleep(0.2)
        gone = not alive(worker)
        if not gone:
            os.kill(worker, signal.SIGKILL)
        assert gone, "worker outlived its SIGKILLed parent"
    finally:
        if parent.poll() is None:
            parent.kill()


def test_feature_cache_is_checked_against_the_run_and_bounded(sqlite_tracking, small_synthetic_corpus, tmp_path,
                                                              monkeypatch):
    """Item 13: an edited cached labels.npy is replaced by the logged one; the cache keeps a bounded number of runs."""
    import tempfile

    import numpy as np

    from spatial_ae.mlflow_io import tracking
    from spatial_ae.settings import FeaturizeSettings
    from spatial_ae.steps.featurize import featurize, load_feature_set

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # never evict the user's own cache
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv(tracking.CACHE_RUNS_VARIABLE, "2")
    run_id = featurize(FeaturizeSettings("synthetic", unlabeled_set_size=60, lbl_trai_size=10, lbl_test_size=10,
                                         synthetic_clips_per_word=SMALL_CLIPS_PER_WORD))
    labels = load_feature_set(run_id).labels
    cached = tracking.artifact_cache() / run_id / "features" / "labels.npy"
    np.save(cached, np.zeros_like(labels) + 7)  # edited in place
    assert np.array_equal(load_feature_set(run_id).labels, labels)

    for age, name in enumerate(["old-a", "old-b", "old-c"]):
        stale = tracking.artifact_cache() / name
        stale.mkdir()
        os.utime(stale, (time.time() - 1000 * (age + 1),) * 2)
    load_feature_set(run_id)
    assert sorted(p.name for p in tracking.artifact_cache().iterdir()) == sorted([run_id, "old-a"])


STORE_USER = """
import sys, time
import mlflow
from spatial_ae.mlflow_io import tracking
mlflow.set_tracking_uri(sys.argv[1])
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # all start together
tracking.check_tracking_server()
mlflow.set_experiment("e")
"""


def test_processes_creating_one_sqlite_store_at_once_all_succeed(tmp_path):
    """Item 12: a fresh SQLite store created by several processes at once (migrations serialised by a lock)."""
    uri, start = f"sqlite:///{tmp_path / 'mlflow.db'}", time.time() + 8
    users = [subprocess.Popen([sys.executable, "-c", STORE_USER, uri, str(start)], cwd=REPO, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(4)]
    outputs = [user.communicate(timeout=240)[0] for user in users]
    assert all(user.returncode == 0 for user in users), "\n".join(o[-1500:] for o in outputs)


def test_identical_workflows_at_once_run_each_simulation_once(sqlite_tracking, small_synthetic_corpus, tmp_path):
    """Item 12, second half: two identical `main` at once on one store share featurize and every simulation
    (the second waits on the first's claim and reuses its runs) instead of running everything twice."""
    from mlflow.tracking import MlflowClient

    from spatial_ae.names import SIMULATION_TAG

    arguments = ["--dataset", "synthetic", "--unlabeled_set_size", "60", "--lbl_trai_size", "20",
                 "--lbl_test_size", "20", "--synthetic_clips_per_word", str(SMALL_CLIPS_PER_WORD), "--ae_epochs", "2",
                 "--dnn_epochs", "1", "--cnn_epochs", "1", "--num_simulations", "2", "--parallel_simulations", "1"]
    mains = [subprocess.Popen([sys.executable, "-m", "spatial_ae", "main", *arguments, "--results_path",
                               str(tmp_path / f"results{k}")], cwd=REPO, env=os.environ.copy(), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for k in range(2)]
    outputs = [main.communicate(timeout=600)[0] for main in mains]
    assert [main.returncode for main in mains] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    runs = MlflowClient().search_runs([sqlite_tracking["experiment_id"]])
    finished = [run for run in runs if run.info.status == "FINISHED"]
    steps = sorted(run.data.tags.get("spatial_ae.step", "") for run in finished)
    assert steps.count("featurize") == 1 and steps.count("main") == 2, steps
    simulations = sorted(run.data.tags[SIMULATION_TAG] for run in finished
                         if run.data.tags.get("spatial_ae.step") == "simulation")
    assert simulations == ["1", "2"], simulations


def test_a_read_only_store_stops_with_one_error_line(sqlite_tracking, monkeypatch):
    """Item 14: a read-only SQLite store (chmod does not stop root, so os.access reports it): one clear error
    naming the file and the fix, before any run is started."""
    import mlflow
    import pytest

    from spatial_ae.mlflow_io import tracking
    from spatial_ae.errors import UserError

    db = sqlite_tracking["root"] / "mlflow.db"
    real_access = os.access
    monkeypatch.setattr(tracking.os, "access", lambda p, mode: False if Path(p) == db else real_access(p, mode))
    monkeypatch.setattr(tracking, "_prepared_stores", set())
    with pytest.raises(UserError, match=f"the MLflow store {db} is read-only .*make the file and its folder writable"):
        tracking.check_tracking_server()
    assert not mlflow.search_runs(search_all_experiments=True, output_format="list")


def test_a_read_only_artifact_folder_stops_before_the_first_run(sqlite_tracking, monkeypatch):
    """Item 14: a read-only local artifact folder: one error naming it, no run left RUNNING (none started)."""
    import mlflow
    import pytest

    from spatial_ae.mlflow_io import tracking
    from spatial_ae.errors import UserError

    artifacts = sqlite_tracking["root"] / "artifacts"
    real_access = os.access
    monkeypatch.setattr(tracking.os, "access",
                        lambda p, mode: False if Path(p) in (artifacts, *artifacts.parents) else real_access(p, mode))
    with pytest.raises(UserError, match=f"the artifact folder {artifacts} .* is read-only"):
        with tracking.step_run("featurize", {}):
            pass
    assert not mlflow.search_runs(search_all_experiments=True, output_format="list")


# Item 11 (parent-death watch of the step under `mlflow run`, spatial_ae/lifecycle.py:die_with_launcher).

def child_pids(pid: int) -> list[int]:
    try:
        return [int(p) for p in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        return []


def test_step_stops_when_the_mlflow_run_cli_is_sigtermed(sqlite_tracking, small_synthetic_corpus, tmp_path):
    """Item 11: SIGTERM to the `mlflow run` CLI (which exits without cancelling its entry point) must not leave
    `python entrypoints/main.py` training as an orphan: it stops within seconds and its run ends KILLED."""
    from mlflow.tracking import MlflowClient

    params = dict(dataset="synthetic", unlabeled_set_size=240, lbl_trai_size=30, lbl_test_size=60,
                  synthetic_clips_per_word=12, ae_epochs=400, patience=400, dnn_epochs=1, cnn_epochs=1,
                  num_simulations=2, parallel_simulations=1, results_path=str(tmp_path / "results"))
    command = [sys.executable, "-m", "mlflow", "run", str(REPO), "-e", "main", "--env-manager", "local",
               "--experiment-id", sqlite_tracking["experiment_id"]]
    for name, value in params.items():
        command += ["-P", f"{name}={value}"]
    cli = subprocess.Popen(command, cwd=REPO, env=os.environ.copy(), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    client, step = MlflowClient(), None
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # until the entry point trains its first simulation
            assert cli.poll() is None, "mlflow run ended before the entry point trained"
            step = step or next((p for p in child_pids(cli.pid)
                                 if b"entrypoints/main.py" in open(f"/proc/{p}/cmdline", "rb").read()), None)
            if step and client.search_runs([sqlite_tracking["experiment_id"]],
                                           "tags.`spatial_ae.step` = 'simulation' and attributes.status = 'RUNNING'"):
                break
            time.sleep(0.5)
        assert step, "the entry point did not start"
        time.sleep(3)  # well inside the auto-encoder's epochs
        cli.send_signal(signal.SIGTERM)
        cli.wait(30)
        deadline = time.monotonic() + 15
        while alive(step) and time.monotonic() < deadline:
            time.sleep(0.2)
        gone = not alive(step)
        if not gone:
            os.kill(step, signal.SIGKILL)
        assert gone, "the entry point outlived the SIGTERMed `mlflow run`"
        runs = client.search_runs([sqlite_tracking["experiment_id"]], "tags.`spatial_ae.step` = 'main'")
        assert [run.info.status for run in runs] == ["KILLED"]
        assert not client.search_runs([sqlite_tracking["experiment_id"]], "attributes.status = 'RUNNING'")
    finally:
        if cli.poll() is None:
            cli.kill()
