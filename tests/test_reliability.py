"""GitHub issue 7: interruptions, resume, atomic results, concurrent workflows and an unreachable server.

The workflows run as real subprocesses (`python entrypoints/main.py ...`) with tiny sizes on the session's
small synthetic corpus (used as a corpus folder, so no corpus is generated per seed).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from spatial_ae.names import SIMULATION_TAG, STEP_TAG as STEP
from spatial_ae.steps import summarize
from tests.conftest import REPO, free_port

TINY = dict(unlabeled_set_size=100, lbl_trai_size=10, lbl_test_size=20, embedding_dim=8, dnn_epochs=2, cnn_epochs=2)


def main_command(corpus: Path, results: Path, step: str = "main", **params) -> list[str]:
    arguments = {"dataset": str(corpus), "results_path": str(results), **TINY, **params}
    command = [sys.executable, f"entrypoints/{step}.py"]
    for name, value in arguments.items():
        command += [f"--{name}", str(value)]
    return command


def start_main(command: list[str], log: Path, new_session: bool = False, **env) -> subprocess.Popen:
    """The command in the background, its output in `log`; in a process group of its own with `new_session`.
    Its log level is DEBUG: the tests watch for the epoch lines (" ae epoch "), also from worker processes."""
    return subprocess.Popen(command, cwd=REPO, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            env={**os.environ, "SPATIAL_AE_LOG_LEVEL": "DEBUG", **env}, start_new_session=new_session)


def runs_of(experiment_id: str, step: str) -> list:
    for attempt in range(5):  # the workflow may hold the SQLite write lock for a moment
        try:
            return MlflowClient().search_runs([experiment_id], filter_string=f"tags.`{STEP}` = '{step}'",
                                              order_by=["attributes.start_time ASC"], max_results=1000)
        except Exception:  # noqa: BLE001
            time.sleep(0.5)
    raise RuntimeError("tracking store not readable")


def simulation_status(experiment_id: str) -> list[tuple[int, str, str]]:
    """(index, status, run id) of every simulation run, oldest first."""
    return [(int(run.data.tags[SIMULATION_TAG]), run.info.status, run.info.run_id)
            for run in runs_of(experiment_id, "simulation")]


def interrupt_during(process: subprocess.Popen, experiment_id: str, finished: int, signum: int, log: Path,
                     timeout: float = 240) -> dict[int, str]:
    """Send `signum` while simulation `finished + 1` is pretraining, then wait for the process to exit.

    The signal goes when simulation `finished` is FINISHED in the store and the log shows an auto-encoder epoch of
    simulation `finished + 1` (its pretraining lasts seconds, not a fixed sleep's guess).
    Returns {index: run id} of the finished simulations seen before the signal."""
    started = f"simulation {finished + 1} (seed "  # the line announcing its pretraining
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert process.poll() is None, log.read_text()[-3000:]
        text = log.read_text()
        if started in text and " ae epoch " in text.split(started, 1)[1]:
            done = {index: run_id for index, state, run_id in simulation_status(experiment_id)
                    if state == "FINISHED"}
            assert finished in done, text[-3000:]
            process.send_signal(signum)
            process.wait(timeout=120)
            return done
        time.sleep(0.1)
    process.kill()
    raise AssertionError(f"simulation {finished + 1} never started: {log.read_text()[-3000:]}")


def assert_stopped_in_simulation_2(process: subprocess.Popen, log: Path) -> None:
    """The interrupted workflow stopped at once: it neither went on to simulation 3 nor summarized."""
    text = log.read_text()
    assert process.returncode != 0, text[-3000:]
    assert "simulation 3 (seed 2)" not in text and "summarize:" not in text, text[-3000:]
    assert "interrupted (received signal" in text and "run the same command again to resume" in text, text[-3000:]


def test_interrupted_workflow_resumes_where_it_stopped(sqlite_tracking, small_synthetic_corpus, tmp_path):
    """Ctrl-C (SIGINT), then SIGTERM, in the middle of simulation 2 of 3; the third run does only 2 and 3."""
    experiment = sqlite_tracking["experiment_id"]
    results = tmp_path / "results"
    command = main_command(small_synthetic_corpus, results, num_simulations=3, ae_epochs=150, patience=1000,
                           parallel_simulations=1)
    env = {"SPATIAL_AE_ENCODER_NAME": f"resume-{uuid.uuid4().hex[:8]}"}
    client = MlflowClient()

    first = start_main(command, tmp_path / "sigint.log", **env)
    finished = interrupt_during(first, experiment, 1, signal.SIGINT, tmp_path / "sigint.log")
    assert_stopped_in_simulation_2(first, tmp_path / "sigint.log")
    status = simulation_status(experiment)
    assert [(index, state) for index, state, _ in status] == [(1, "FINISHED"), (2, "KILLED")]
    assert [p.info.status for p in runs_of(experiment, "main")] == ["KILLED"]
    assert runs_of(experiment, "main")[0].data.tags["spatial_ae.interrupted"] == "received signal 2"
    assert [r.info.status for r in runs_of(experiment, "featurize")] == ["FINISHED"]
    simulation_1 = finished[1]

    second = start_main(command, tmp_path / "sigterm.log", **env)
    interrupt_during(second, experiment, 1, signal.SIGTERM, tmp_path / "sigterm.log")
    assert_stopped_in_simulation_2(second, tmp_path / "sigterm.log")
    assert f"simulation 1: reusing finished run {simulation_1}" in (tmp_path / "sigterm.log").read_text()
    status = simulation_status(experiment)
    assert [(index, state) for index, state, _ in status] == [(1, "FINISHED"), (2, "KILLED"), (2, "KILLED")]
    assert [p.info.status for p in runs_of(experiment, "main")] == ["KILLED", "KILLED"]

    third = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=500,
                           env={**os.environ, **env})
    assert third.returncode == 0, third.stderr[-3000:]
    output = third.stdout + third.stderr
    assert "featurize: reusing finished run" in output
    assert f"simulation 1: reusing finished run {simulation_1}" in output
    assert "simulation 1 (seed 0): pretraining" not in output
    assert "simulation 2 (seed 1): pretraining" in output and "simulation 3 (seed 2): pretraining" in output
    status = simulation_status(experiment)
    assert [(index, state) for index, state, _ in status] == [
        (1, "FINISHED"), (2, "KILLED"), (2, "KILLED"), (2, "FINISHED"), (3, "FINISHED")]
    assert status[0][2] == simulation_1  # the same run, not re-run
    parents = runs_of(experiment, "main")
    assert [p.info.status for p in parents] == ["KILLED", "KILLED", "FINISHED"]
    assert [r.info.status for r in runs_of(experiment, "featurize")] == ["FINISHED"]  # computed once, reused
    table = pd.read_csv(results / "latest" / "results.csv")
    assert len(table) == 3 and table.notna().all().all()
    assert client.get_run(parents[2].info.run_id).data.metrics["simulations_finished"] == 3
    assert "RUNNING" not in {r.info.status for r in client.search_runs([experiment], max_results=1000)}


def test_an_interruption_python_swallowed_stops_training_after_the_epoch(sqlite_tracking):
    """SIGINT whose KeyboardInterrupt Python dropped ("Exception ignored in ... _get_module_lock"), seen once on CI:
    the fit stops at the next batch or epoch boundary and the step's run is KILLED, instead of training on to the end."""
    import keras
    import numpy as np

    from spatial_ae.mlflow_io import tracking
    from spatial_ae.method.training import fit

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    x = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
    with pytest.raises(KeyboardInterrupt, match="received signal 2"):
        with tracking.step_run("pretrain", {}) as run:
            try:  # the step's signal handler runs, and its exception is lost, as in a weakref callback
                signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
            except KeyboardInterrupt:
                pass
            fit(model, x, x[:, :1], (x, x[:, :1]), epochs=50, patience=50, batch_size=8, prefix="ae")
    client = MlflowClient()
    assert client.get_run(run.info.run_id).info.status == "KILLED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "ae_epoch_loss")] == [0]  # one epoch only
    fit(model, x, x[:, :1], (x, x[:, :1]), epochs=2, patience=2, batch_size=8, prefix="ae")  # the next step trains


def test_a_signal_landing_inside_keras_is_raised_after_the_fit(sqlite_tracking):
    """SIGINT arriving while Keras trains is not raised inside Keras or TensorFlow (an exception there once crashed
    the process, SIGSEGV, on CI): the fit ends after the batch and the exception comes from our code."""
    import keras
    import numpy as np

    from spatial_ae.mlflow_io import tracking
    from spatial_ae.method.training import fit

    sent = []

    class InterruptWhenTraced(keras.layers.Layer):
        """Identity that sends SIGINT to this process when Keras's fit traces it (first batch), once armed."""

        def call(self, inputs):
            if sent == ["armed"]:
                sent.append(signal.SIGINT)
                os.kill(os.getpid(), signal.SIGINT)
            return inputs

    model = keras.Sequential([keras.Input((4,)), InterruptWhenTraced(), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    x = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
    with pytest.raises(KeyboardInterrupt, match="received signal 2") as raised:
        with tracking.step_run("pretrain", {}) as run:
            sent.append("armed")
            fit(model, x, x[:, :1], (x, x[:, :1]), epochs=50, patience=50, batch_size=8, prefix="ae")
    assert sent == ["armed", signal.SIGINT]
    assert not [entry for entry in raised.traceback if "/keras/" in str(entry.path) or "/tensorflow/" in str(entry.path)]
    client = MlflowClient()
    assert client.get_run(run.info.run_id).info.status == "KILLED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "ae_epoch_loss")] == [0]


def test_a_signal_landing_inside_an_sqlite_write_is_raised_once_it_is_done(sqlite_tracking):
    """SIGINT arriving inside the tracking store's SQLite write (SQLAlchemy) is raised just after the write, at once,
    not at the step's end: the write is whole and the run closes KILLED (an exception raised inside the write once
    left the database locked, so that the runs could not be closed)."""
    import mlflow
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from spatial_ae.mlflow_io import tracking

    sent, waited_to_the_end = [], []

    def interrupt_once(*args):
        if not sent:
            sent.append(signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt, match="received signal 2") as raised:
        with tracking.step_run("pretrain", {}) as run:
            event.listen(Engine, "before_cursor_execute", interrupt_once)
            try:
                mlflow.log_metric("written", 1.0)
            finally:
                event.remove(Engine, "before_cursor_execute", interrupt_once)
            for _ in range(3000):  # 30 s of other work
                time.sleep(0.01)
            waited_to_the_end.append(True)
    assert sent and not waited_to_the_end
    assert not [entry for entry in raised.traceback if "/sqlalchemy/" in str(entry.path)]
    finished = MlflowClient().get_run(run.info.run_id)
    assert finished.info.status == "KILLED" and finished.data.metrics["written"] == 1.0


def test_a_crash_prints_where_python_was_and_the_next_start_closes_its_runs(sqlite_tracking,
                                                                           small_synthetic_corpus, tmp_path):
    """A segmentation fault (as TensorFlow's, once on CI) prints Python's stack (faulthandler), not a bare exit -11;
    the runs the crashed process could not close are marked FAILED when the next step starts."""
    experiment = sqlite_tracking["experiment_id"]
    command = main_command(small_synthetic_corpus, tmp_path / "results", num_simulations=1, ae_epochs=5000,
                           patience=10000, parallel_simulations=1)
    env = {"SPATIAL_AE_ENCODER_NAME": f"crash-{uuid.uuid4().hex[:8]}"}
    log = tmp_path / "crash.log"
    crashed = start_main(command, log, **env)
    deadline = time.time() + 240
    while " ae epoch " not in log.read_text() and time.time() < deadline:
        assert crashed.poll() is None, log.read_text()[-3000:]
        time.sleep(0.1)
    crashed.send_signal(signal.SIGSEGV)
    crashed.wait(timeout=120)
    text = log.read_text()
    assert crashed.returncode == -signal.SIGSEGV, text[-3000:]
    assert "Fatal Python error: Segmentation fault" in text and "spatial_ae/method/training.py" in text, text[-3000:]
    left_open = [run for run in MlflowClient().search_runs([experiment]) if run.info.status == "RUNNING"]
    assert {run.data.tags[STEP] for run in left_open} == {"main", "simulation"}

    again = subprocess.run(main_command(small_synthetic_corpus, tmp_path / "results", num_simulations=1,
                                        ae_epochs=2, parallel_simulations=1),
                           cwd=REPO, capture_output=True, text=True, timeout=500, env={**os.environ, **env})
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"process {crashed.pid}, which ended without closing it" in again.stderr
    for run in left_open:
        closed = MlflowClient().get_run(run.info.run_id)
        assert closed.info.status == "FAILED"
        assert f"process {crashed.pid} on " in closed.data.tags["mlflow.note.content"]
    assert "RUNNING" not in {run.info.status for run in MlflowClient().search_runs([experiment])}


def worker_processes(parent_pid: int) -> list[int]:
    """The simulation worker processes of a main process (its children running Python)."""
    children = Path(f"/proc/{parent_pid}/task/{parent_pid}/children").read_text().split()
    return [int(pid) for pid in children if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text()]


def wait_for_two_running_simulations(process: subprocess.Popen, experiment_id: str, log: Path) -> None:
    deadline = time.time() + 300
    while time.time() < deadline:
        assert process.poll() is None, log.read_text()[-3000:]
        if [state for _, state, _ in simulation_status(experiment_id)].count("RUNNING") == 2:
            time.sleep(3)  # well inside the simulations: training
            return
        time.sleep(0.5)
    process.kill()
    raise AssertionError(f"the simulations never ran together: {log.read_text()[-3000:]}")


def test_parallel_simulations_stopped_or_crashed_are_never_left_running(sqlite_tracking, small_synthetic_corpus,
                                                                       tmp_path):
    """SIGTERM to the main process stops its worker processes (runs KILLED), and no worker takes the queued third
    simulation; a worker killed outright (as by the out-of-memory killer) has its run marked FAILED by the main
    process, which fails too."""
    experiment = sqlite_tracking["experiment_id"]
    command = main_command(small_synthetic_corpus, tmp_path / "results", num_simulations=3, ae_epochs=5000,
                           patience=10000, parallel_simulations=2)  # trains until stopped: no simulation finishes
    env = {"SPATIAL_AE_ENCODER_NAME": f"parallel-{uuid.uuid4().hex[:8]}"}

    stopped = start_main(command, tmp_path / "sigterm.log", **env)
    wait_for_two_running_simulations(stopped, experiment, tmp_path / "sigterm.log")
    assert len(worker_processes(stopped.pid)) == 2
    stopped.send_signal(signal.SIGTERM)
    stopped.wait(timeout=120)
    assert stopped.returncode == 130, (tmp_path / "sigterm.log").read_text()[-3000:]
    assert [state for _, state, _ in simulation_status(experiment)] == ["KILLED", "KILLED"]
    assert [p.info.status for p in runs_of(experiment, "main")] == ["KILLED"]

    crashed = start_main(command, tmp_path / "sigkill.log", **env)
    wait_for_two_running_simulations(crashed, experiment, tmp_path / "sigkill.log")
    os.kill(worker_processes(crashed.pid)[0], signal.SIGKILL)
    crashed.wait(timeout=180)
    text = (tmp_path / "sigkill.log").read_text()
    assert crashed.returncode == 2, text[-3000:]  # nothing to summarise: a user error, no traceback at the end
    assert "no simulation of main run" in text and "a worker process died" in text
    states = [state for _, state, _ in simulation_status(experiment)]
    assert "RUNNING" not in states and states[2:].count("FINISHED") == 0 and "FAILED" in states[2:], states
    assert [p.info.status for p in runs_of(experiment, "main")] == ["KILLED", "FAILED"]


def test_parallel_sweep_stopped_leaves_nothing_running(sqlite_tracking, small_synthetic_corpus, tmp_path):
    """Ctrl-C in a terminal (SIGINT to the process group: the sweep and its workers) while the simulations run in
    worker processes: the sweep, its cells and their simulations all end KILLED."""
    experiment = sqlite_tracking["experiment_id"]
    command = main_command(small_synthetic_corpus, tmp_path / "sweep", step="sweep", num_simulations=2,
                           parallel_simulations=2, recipes="balanced", position_loss_weights="0,1",
                           labelled_per_word="1", ae_epochs=5000, patience=10000)
    log = tmp_path / "sweep.log"
    stopped = start_main(command, log, new_session=True, SPATIAL_AE_ENCODER_NAME=f"sweep-{uuid.uuid4().hex[:8]}")
    wait_for_two_running_simulations(stopped, experiment, log)
    os.killpg(stopped.pid, signal.SIGINT)
    stopped.wait(timeout=120)
    assert stopped.returncode == 130, log.read_text()[-3000:]
    assert [state for _, state, _ in simulation_status(experiment)] == ["KILLED", "KILLED"]
    assert [run.info.status for run in runs_of(experiment, "sweep_cell")] == ["KILLED", "KILLED"]
    assert [run.info.status for run in runs_of(experiment, "sweep")] == ["KILLED"]


def test_results_csv_is_replaced_atomically(tmp_path, monkeypatch):
    path = tmp_path / "results.csv"
    old = pd.DataFrame({"wercm": [0.5]})
    summarize._write_csv(old, path)
    before = path.read_bytes()

    def crash_midway(self, target, *args, **kwargs):
        Path(target).write_text("wercm,cmpresi\n0.1,")  # half a file, then the disk fills up
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", crash_midway)
    with pytest.raises(OSError, match="No space"):
        summarize._write_csv(pd.DataFrame({"wercm": [0.1, 0.2]}), path)
    assert path.read_bytes() == before  # the old results are intact
    with pytest.raises(OSError, match="No space"):
        summarize._write_csv(pd.DataFrame({"wercm": [0.1]}), tmp_path / "new.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]  # no partial or temporary file


def test_results_files_get_the_mode_open_gives_them(tmp_path):
    """0666 less the umask, as for any file `open` creates (they were 0600, mkstemp's mode, whatever the umask)."""
    for mask in (0o022, 0o027):
        previous = os.umask(mask)
        try:
            written = summarize._write_csv(pd.DataFrame({"wercm": [0.5]}), tmp_path / f"results-{mask:o}.csv")
        finally:
            os.umask(previous)
        assert oct(written.stat().st_mode & 0o777) == oct(0o666 & ~mask)


def test_four_concurrent_workflows_on_one_server(server_tracking, small_synthetic_corpus, tmp_path):
    experiment = server_tracking["experiment_id"]
    name = f"concurrent-{uuid.uuid4().hex[:8]}"
    processes = [start_main(main_command(small_synthetic_corpus, tmp_path / f"results{seed}", seed=seed,
                                         num_simulations=1, ae_epochs=2, patience=2, dnn_epochs=1, cnn_epochs=1),
                            tmp_path / f"main{seed}.log", SPATIAL_AE_ENCODER_NAME=name)
                 for seed in range(4)]
    deadline = time.time() + 900  # 4 workflows on 2 cores: minutes when the machine is busy
    for seed, process in enumerate(processes):
        try:
            process.wait(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            for other in processes:
                other.kill()
        assert process.returncode == 0, (tmp_path / f"main{seed}.log").read_text()[-3000:]

    parents = runs_of(experiment, "main")
    simulations = runs_of(experiment, "simulation")
    featurize_runs = runs_of(experiment, "featurize")
    assert [p.info.status for p in parents] == ["FINISHED"] * 4
    assert [s.info.status for s in simulations] == ["FINISHED"] * 4
    assert [f.info.status for f in featurize_runs] == ["FINISHED"] * 4  # one per seed
    assert {s.data.tags["mlflow.parentRunId"] for s in simulations} == {p.info.run_id for p in parents}
    assert sorted(p.data.params["seed"] for p in parents) == ["0", "1", "2", "3"]

    client = MlflowClient()
    versions = client.search_model_versions(f"name='{name}'")
    assert sorted(int(v.version) for v in versions) == [1, 2, 3, 4]
    assert len({v.run_id for v in versions}) == 4  # one per simulation
    assert {v.run_id for v in versions} == {s.info.run_id for s in simulations}
    accuracy = {int(v.version): float(v.tags["validation_accuracy"]) for v in versions}
    best = max(accuracy, key=lambda version: (accuracy[version], -version))  # ties: the older version
    assert int(client.get_model_version_by_alias(name, "champion").version) == best


def test_unreachable_tracking_server_stops_main_at_once(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    start = time.time()  # baseline: the imports alone (TensorFlow) take seconds, more on a busy machine
    subprocess.run([sys.executable, "-c", "import spatial_ae.runs.workflow"], cwd=REPO, capture_output=True, timeout=300)
    imports = time.time() - start
    start = time.time()
    result = subprocess.run(main_command(tmp_path / "corpus", tmp_path / "results", num_simulations=1),
                            cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "MLFLOW_TRACKING_URI": uri})
    elapsed = time.time() - start
    assert result.returncode == 2
    assert elapsed < imports + 20, f"took {elapsed:.0f} s, the imports alone {imports:.0f} s"  # no retries
    assert "Traceback" not in result.stderr and "pretraining" not in result.stderr
    assert "Retrying" not in result.stderr and "featurize" not in result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert uri in line and "not reachable" in line and "mlflow server" in line and "unset MLFLOW_TRACKING_URI" in line


def test_mlflow_run_against_a_down_server_fails_fast_with_the_documented_variables(tmp_path):
    """`mlflow run` creates the project's run before any code of ours runs, retrying for 4 min 15 s by default; with
    MLFLOW_HTTP_REQUEST_MAX_RETRIES=0 and MLFLOW_HTTP_REQUEST_TIMEOUT=5 (README) it fails in seconds. With them set,
    `python -m spatial_ae` still reports the server in one line."""
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
           "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    start = time.time()
    result = subprocess.run([sys.executable, "-m", "mlflow", "run", str(REPO), "-e", "summarize", "--env-manager",
                             "local", "-P", "parent_run_id=0"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=400, env=env)
    assert time.time() - start < 60, result.stderr[-3000:]  # MLflow's default retries: 255 s
    assert result.returncode != 0 and uri.split("//")[1] in result.stderr and "Connection refused" in result.stderr
    ours = subprocess.run([sys.executable, "-m", "spatial_ae", "summarize", "--parent_run_id", "0"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env=env)
    assert ours.returncode == 2 and "Traceback" not in ours.stderr, ours.stderr[-3000:]
    [line] = [line for line in ours.stderr.splitlines() if line.startswith("error: ")]
    assert uri in line and "not reachable" in line


def test_simultaneous_first_descriptions_of_an_experiment_do_not_fail(server_tracking):
    """Four workflows starting at once all describe their fresh experiment: the SQL store's insert of a tag it did
    not find fails on the unique key for all but one of them, unless the write is retried (CI failure, stop 29)."""
    from concurrent.futures import ThreadPoolExecutor

    from spatial_ae.mlflow_io.experiment import KIND, KIND_TAG, NOTE_TAG, describe

    client = MlflowClient()
    for _ in range(5):
        experiment_id = client.create_experiment(f"describe-race-{uuid.uuid4().hex[:8]}")
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda _: describe(MlflowClient(), experiment_id, "synthetic"), range(8)))
        tags = client.get_experiment(experiment_id).tags
        assert tags[KIND_TAG] == KIND and "synthetic" in tags[NOTE_TAG]
