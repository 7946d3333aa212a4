"""Spark as the engine (`spark_master`) and shared tracking on PostgreSQL (issue 25).

Real components: a PostgreSQL server started for the session in a temporary folder, a real `mlflow server` on it
(artifacts served by the server), and a two-executor Spark cluster `local-cluster[2,1,1024]` (the executors are
JVMs of their own with their own Python workers, not threads of the driver as with local[n]). Skipped, with the
reason, where pyspark, Java or PostgreSQL are missing (`.ci/run` installs them).
"""
from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from spatial_ae.errors import UserError
from spatial_ae.params import STEPS, arguments, parse_step_params
from spatial_ae.mlflow_io.registry import CHAMPION, ENCODER_NAME, NEWEST
from spatial_ae.names import PROCESS_TAG, STEP_TAG
from tests.conftest import REPO, _use_tracking, experiment_of_this_test, free_port, start_mlflow_server
from tests.test_workflow import TINY

MASTER = "local-cluster[2,1,1024]"


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or [shutil.which("initdb")]
    return Path(found[-1]).parent if found[-1] else None


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server on a free local port, data in a temporary folder (as the `postgres` user when
    the tests run as root: initdb refuses root). `stop()` and `start()` for the outage test."""
    pytest.importorskip("psycopg", reason="psycopg missing: pip install -e '.[spark]'")
    binaries = _postgres_bin()
    if binaries is None:
        pytest.skip("PostgreSQL not installed (apt-get install postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="spatial_ae-pg-"))
    as_owner = []
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
        as_owner = ["runuser", "-u", "postgres", "--"]
    data, port = folder / "data", free_port()

    def pg(tool: str, *args: str) -> None:
        subprocess.run([*as_owner, str(binaries / tool), *args], check=True, capture_output=True, timeout=120)

    pg("initdb", "-D", str(data), "-A", "trust", "-U", "postgres")
    server = SimpleNamespace(
        url=f"postgresql://postgres@127.0.0.1:{port}/mlflow",
        start=lambda: pg("pg_ctl", "-D", str(data), "-l", str(folder / "log"), "-w", "start", "-o",
                         f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={folder}"),
        stop=lambda: pg("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop"))
    server.start()
    pg("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "mlflow")
    yield server
    try:
        server.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server(postgres, tmp_path_factory):
    """The team setup: `mlflow server --backend-store-uri postgresql://... --serve-artifacts`."""
    port = free_port()
    process = start_mlflow_server(tmp_path_factory.mktemp("pg_mlflow"), port, postgres.url)
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="session")
def cluster():
    """A Spark cluster of two executor JVMs on this machine, for the whole session."""
    pytest.importorskip("pyspark", reason="pyspark missing: pip install -e '.[spark]'")
    if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
        pytest.skip("no Java runtime (Spark needs Java 17+)")
    from spatial_ae.runs import spark

    session = spark.session(MASTER)
    yield MASTER
    session.stop()


@pytest.fixture
def postgres_tracking(postgres_server, monkeypatch, request):
    """This test's own experiment on the PostgreSQL-backed server."""
    yield from experiment_of_this_test(postgres_server, monkeypatch, request)


SHARED_EXPERIMENT = "main-on-spark"  # the tests that run `main` share it: one featurize run, reused


@pytest.fixture
def main_tracking(postgres_server, monkeypatch):
    """The experiment of the tests that run `main` on the PostgreSQL-backed server (each with settings of its own,
    so that no test reuses another's simulations)."""
    previous = mlflow.get_tracking_uri()
    yield {"uri": postgres_server,
           "experiment_id": _use_tracking(postgres_server, None, monkeypatch, experiment=SHARED_EXPERIMENT)}
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(previous)


def runs_of(experiment_id: str, where: str = "") -> list:
    return MlflowClient().search_runs([experiment_id], where, max_results=1000)


def simulations_of(parent_run_id: str, experiment_id: str) -> list:
    return runs_of(experiment_id, f"tags.mlflow.parentRunId = '{parent_run_id}' and tags.`{STEP_TAG}` = 'simulation'")


def assert_nothing_running(experiment_id: str) -> None:
    running = [(r.info.run_name, r.info.run_id) for r in runs_of(experiment_id, "attributes.status = 'RUNNING'")]
    assert running == []


def executor_jvm_of(pid: int) -> int:
    """The executor JVM (CoarseGrainedExecutorBackend) above a Python worker process."""
    while pid > 1:
        if b"CoarseGrainedExecutorBackend" in Path(f"/proc/{pid}/cmdline").read_bytes():
            return pid
        pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    raise AssertionError("no executor JVM above the simulation's process")


def when_a_simulation_runs(experiment_id: str, action) -> threading.Thread:
    """A thread that calls action(run) once a simulation run of the experiment is RUNNING (polling the server)."""
    def watch():
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                running = runs_of(experiment_id, f"tags.`{STEP_TAG}` = 'simulation' and attributes.status = 'RUNNING'")
            except Exception:  # noqa: BLE001 - the server may be busy
                running = []
            if running:
                action(running[0])
                return
            time.sleep(0.3)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.fixture(scope="module")
def main_on_spark(cluster, postgres_server, small_synthetic_corpus, tmp_path_factory):
    """`main` with two simulations as Spark tasks on the two-executor cluster, tracking on PostgreSQL."""
    results = tmp_path_factory.mktemp("spark_results")
    with pytest.MonkeyPatch.context() as monkeypatch:
        experiment_id = _use_tracking(postgres_server, None, monkeypatch, experiment=SHARED_EXPERIMENT)
        parent_id = main(TINY | {"spark_master": MASTER, "results_path": str(results)})
    return SimpleNamespace(parent_id=parent_id, experiment_id=experiment_id, results=results)


def main(raw: dict) -> str:
    from spatial_ae.runs.workflow import main as workflow_main

    return workflow_main(**arguments("main", raw))


def test_main_on_a_spark_cluster_with_tracking_on_postgresql(main_on_spark, postgres, main_tracking):
    """Featurize and both simulations ran on the executors (other processes, at the same time) and logged to the
    PostgreSQL-backed server: child runs, metrics, figures, results.csv, registry versions and aliases."""
    client = MlflowClient()
    experiment_id = main_on_spark.experiment_id
    parent = client.get_run(main_on_spark.parent_id)
    assert parent.info.status == "FINISHED" and parent.data.params["spark_master"] == MASTER
    featurize = runs_of(experiment_id, f"tags.mlflow.parentRunId = '{parent.info.run_id}' and tags.`{STEP_TAG}` = 'featurize'")
    assert [r.data.tags.get("spark_master") for r in featurize] == [MASTER]
    simulations = sorted(simulations_of(parent.info.run_id, experiment_id),
                         key=lambda r: int(r.data.tags["spatial_ae.simulation"]))
    assert [r.info.status for r in simulations] == ["FINISHED", "FINISHED"]
    pids = {int(r.data.tags[PROCESS_TAG].split(":")[1]) for r in simulations}
    assert os.getpid() not in pids and len(pids) == 2  # executors' Python workers, not this process
    first, second = simulations
    assert second.info.start_time < first.info.end_time and first.info.start_time < second.info.end_time
    for run in simulations:
        assert 0 <= run.data.metrics["embedding_dnn_accuracy"] <= 1 and "mfcc_cnn_accuracy" in run.data.metrics
        assert client.get_metric_history(run.info.run_id, "ae_epoch_reconstruction_loss")
        version = run.data.tags["encoder_uri"].rsplit("/", 1)[1]
        assert client.get_model_version(ENCODER_NAME, version).tags["featurize_run_id"] == featurize[0].info.run_id
    for alias in (CHAMPION, NEWEST):
        assert client.get_model_version_by_alias(ENCODER_NAME, alias)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert "results.csv" in artifacts
    assert "summary/training_curves.png" in {a.path for a in client.list_artifacts(parent.info.run_id, "summary")}
    assert len(pd.read_csv(main_on_spark.results / "latest" / "results.csv")) == 2
    assert_nothing_running(experiment_id)

    import psycopg  # the runs really are rows of PostgreSQL

    with psycopg.connect(postgres.url) as connection, connection.cursor() as cursor:
        ids = [parent.info.run_id, featurize[0].info.run_id, *(r.info.run_id for r in simulations)]
        cursor.execute("select count(*) from runs where run_uuid = any(%s) and status = 'FINISHED'", (ids,))
        assert cursor.fetchone()[0] == 4  # main, featurize, 2 simulations


def test_featurize_on_spark_equals_local(cluster, small_synthetic_corpus, tmp_path):
    """The clip list in chunks as Spark tasks: the same features, the same skipped clips as in this process."""
    from spatial_ae.data.features import featurize_files
    from spatial_ae.runs import spark

    files = sorted(small_synthetic_corpus.rglob("*.wav"))[:40]
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "text.wav").write_text("not audio")
    files[5:5] = [tmp_path / "empty.wav"]
    files[30:30] = [tmp_path / "text.wav"]
    keep = np.arange(len(files)) % 3 == 0
    here = featurize_files(files, workers=0, chunk_size=8, progress=False, keep_mel=keep)
    there = featurize_files(files, chunk_size=8, progress=False, keep_mel=keep,
                            map_chunks=spark.Cluster(cluster).map_chunks)
    assert here.ok.sum() == len(files) - 2 and np.array_equal(here.ok, there.ok)
    np.testing.assert_allclose(there.mfcc, here.mfcc, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(there.mel, here.mel, rtol=1e-6, atol=1e-8)
    assert [name for name, _ in there.errors] == [name for name, _ in here.errors] == \
        [str(tmp_path / "empty.wav"), str(tmp_path / "text.wav")]
    active = featurize_files(files[:8], chunk_size=4, progress=False,
                             map_chunks=spark.Cluster("active").map_chunks)  # the running session
    np.testing.assert_allclose(active.mfcc, here.mfcc[:8], rtol=1e-6, atol=1e-5)


def test_embed_on_spark_equals_in_process_and_skips_unreadable_clips(main_on_spark, cluster, postgres_tracking,
                                                                     small_synthetic_corpus, tmp_path):
    """`embed` with spark_udf on the cluster and with the pyfunc here: the same rows and embeddings; unreadable
    clips skipped, counted and listed; `word` from the folder."""
    from spatial_ae.runs import spark
    from spatial_ae.steps.embed import embed

    corpus = tmp_path / "corpus"
    for word in ("yes", "no"):
        (corpus / word).mkdir(parents=True)
        for clip in sorted((small_synthetic_corpus / word).glob("*.wav"))[:3]:
            shutil.copy(clip, corpus / word / clip.name)
    (corpus / "yes" / "empty.wav").write_bytes(b"")
    (corpus / "no" / "text.wav").write_text("not audio")
    encoder_uri = MlflowClient().get_run(simulations_of(main_on_spark.parent_id, main_on_spark.experiment_id)[0]
                                         .info.run_id).data.tags["encoder_uri"]
    tables = {}
    for master in ("", cluster):
        (tmp_path / f"out{bool(master)}").mkdir()  # an empty folder is a new output, here and on Spark
        output = embed(encoder_uri, str(corpus), str(tmp_path / f"out{bool(master)}"), spark.cluster(master))
        tables[master] = pd.read_parquet(output).sort_values("path", ignore_index=True)
        run = runs_of(postgres_tracking["experiment_id"], f"tags.`{STEP_TAG}` = 'embed' and params.spark_master = '{master}'")[0]
        assert run.info.status == "FINISHED"
        assert run.data.metrics["embedded_clips"] == 6 and run.data.metrics["skipped_clips"] == 2
        assert run.data.metrics["clips_per_second"] > 0
        listed = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=run.info.run_id,
                                                                 artifact_path="embed/skipped_clips.csv"))
        assert sorted(Path(p).name for p in listed["path"]) == ["empty.wav", "text.wav"]
    here, there = tables[""], tables[cluster]
    assert list(here.columns) == list(there.columns) == ["path", "embedding", "word"]
    assert here["path"].tolist() == there["path"].tolist() and len(here) == 6
    assert here["word"].tolist() == [Path(p).parent.name for p in here["path"]]
    np.testing.assert_allclose(np.stack(there["embedding"]), np.stack(here["embedding"]), rtol=1e-4, atol=1e-5)
    assert np.stack(here["embedding"]).shape == (6, 75)


def test_sweep_on_spark(cluster, postgres_tracking, small_synthetic_corpus, tmp_path):
    """Sweep cells' simulations as Spark tasks, task k = simulation k of every cell: each task pretrains its
    encoder once for both labelled sizes; sweep.csv complete, nothing left RUNNING."""
    from spatial_ae.runs.sweep import sweep

    raw = {name: value for name, value in TINY.items() if name in {spec.name for spec in STEPS["sweep"]}}
    run_id = sweep(**arguments("sweep", raw | {
        "recipes": "paper", "position_loss_weights": "1", "labelled_per_word": "1,2", "num_simulations": 2,
        "spark_master": cluster, "results_path": str(tmp_path / "sweep")}))
    experiment_id = postgres_tracking["experiment_id"]
    assert MlflowClient().get_run(run_id).info.status == "FINISHED"
    cells = runs_of(experiment_id, "tags.`spatial_ae.step` = 'sweep_cell'")
    assert sorted(c.info.run_name for c in cells) == ["paper-w1-lpw1", "paper-w1-lpw2"]
    simulations = runs_of(experiment_id, "tags.`spatial_ae.step` = 'simulation'")
    assert len(simulations) == 4 and {r.info.status for r in simulations} == {"FINISHED"}
    assert os.getpid() not in {int(r.data.tags[PROCESS_TAG].split(":")[1]) for r in simulations}
    assert len({r.data.tags["encoder_uri"] for r in simulations}) == 2  # one pretraining per simulation index
    assert len(pd.read_csv(tmp_path / "sweep" / "latest" / "sweep.csv")) == 2 * 2 * 3
    assert_nothing_running(experiment_id)


def test_bad_masters_and_unreachable_stores_are_refused_before_any_work(sqlite_tracking, monkeypatch, tmp_path):
    """An unreachable or malformed master, yarn without its configuration, and a tracking store on this machine
    with executors elsewhere: one UserError naming the fix, before any run."""
    pytest.importorskip("pyspark", reason="pyspark missing: pip install -e '.[spark]'")
    monkeypatch.delenv("HADOOP_CONF_DIR", raising=False)
    monkeypatch.delenv("YARN_CONF_DIR", raising=False)
    closed = free_port()
    listening = socket.create_server(("127.0.0.1", 0))
    reachable = f"k8s://https://127.0.0.1:{listening.getsockname()[1]}"
    cases = {f"spark://127.0.0.1:{closed}": "is not reachable", f"k8s://https://127.0.0.1:{closed}": "is not reachable",
             "localhost[2]": "is not a Spark master URL", "yarn": "HADOOP_CONF_DIR",
             reachable: "is on this machine only", "active": "is on this machine only"}  # SQLite, executors elsewhere
    with listening:
        for master, message in cases.items():
            with pytest.raises(UserError, match=message):
                main(TINY | {"spark_master": master, "results_path": str(tmp_path)})
        monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
        mlflow.set_tracking_uri("http://127.0.0.1:5999")  # a server on this machine, executors elsewhere
        from spatial_ae.runs import spark

        with pytest.raises(UserError, match="is on this machine only"):
            spark.check(reachable)
        mlflow.set_tracking_uri(sqlite_tracking["uri"])
    assert runs_of(sqlite_tracking["experiment_id"]) == []

    result = subprocess.run([sys.executable, "-m", "spatial_ae", "featurize", "--spark_master",
                             f"spark://127.0.0.1:{closed}"], capture_output=True, text=True, cwd=REPO, timeout=120,
                            env={**os.environ, "MLFLOW_TRACKING_URI": sqlite_tracking["uri"]})
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "is not reachable" in errors[0] and "Fix:" in errors[0], result.stderr[-2000:]
    assert runs_of(sqlite_tracking["experiment_id"]) == []


def test_an_executor_killed_mid_simulation_is_retried_by_spark(cluster, main_tracking, small_synthetic_corpus,
                                                               tmp_path):
    """SIGKILL to the executor JVM running a simulation: Spark retries the task, the killed attempt's run ends
    FAILED with a note, each simulation has one FINISHED run and results.csv one row each."""
    experiment_id = main_tracking["experiment_id"]
    killed = []

    def kill(run):
        killed.append(run.info.run_id)
        os.kill(executor_jvm_of(int(run.data.tags[PROCESS_TAG].split(":")[1])), signal.SIGKILL)

    watcher = when_a_simulation_runs(experiment_id, kill)
    parent_id = main(TINY | {"spark_master": cluster, "results_path": str(tmp_path), "ae_epochs": 8})
    watcher.join(timeout=5)
    assert len(killed) == 1, "no simulation ran long enough to be killed"
    lost = MlflowClient().get_run(killed[0])
    assert lost.info.status == "FAILED" and "lost" in lost.data.tags["mlflow.note.content"]
    finished = [r for r in simulations_of(parent_id, experiment_id) if r.info.status == "FINISHED"]
    assert sorted(r.data.tags["spatial_ae.simulation"] for r in finished) == ["1", "2"]
    assert MlflowClient().get_run(parent_id).info.status == "FINISHED"
    assert len(pd.read_csv(tmp_path / "latest" / "results.csv")) == 2
    assert_nothing_running(experiment_id)


def test_postgresql_stopped_for_20_seconds_mid_run(cluster, postgres, main_tracking, small_synthetic_corpus,
                                                   tmp_path):
    """PostgreSQL down for 20 s while a simulation runs: the workflow survives (clients retry) or fails cleanly;
    either way nothing is left RUNNING, and a rerun finishes, reusing the finished simulations."""
    experiment_id = main_tracking["experiment_id"]
    outage = []

    def stop_for_20_seconds(run):
        postgres.stop()
        outage.append(run.info.run_id)
        time.sleep(20)
        postgres.start()

    watcher = when_a_simulation_runs(experiment_id, stop_for_20_seconds)
    raw = TINY | {"spark_master": cluster, "results_path": str(tmp_path), "ae_epochs": 6}
    try:
        parent_id = main(raw)
    except Exception as error:  # noqa: BLE001 - failing cleanly is allowed; checked below
        print(f"main failed during the outage: {error}")
        parent_id = None
    watcher.join(timeout=60)
    assert outage, "no simulation ran during the test"
    assert_nothing_running(experiment_id)
    if parent_id is None:
        parent_id = main(raw)  # resumes: the simulations that finished are reused
    key = MlflowClient().get_run(parent_id).data.tags["spatial_ae.workflow_key"]
    finished = runs_of(experiment_id, f"tags.`spatial_ae.workflow_key` = '{key}' and "
                                      f"tags.`{STEP_TAG}` = 'simulation' and attributes.status = 'FINISHED'")
    assert sorted(r.data.tags["spatial_ae.simulation"] for r in finished) == ["1", "2"]  # one each, no duplicate
    assert MlflowClient().get_run(parent_id).info.status == "FINISHED"
    assert len(pd.read_csv(tmp_path / "latest" / "results.csv")) == 2
    assert_nothing_running(experiment_id)


def test_embed_refuses_a_missing_corpus_and_an_existing_output(tmp_path):
    """`embed` checks its paths with its parameters, before any work: nothing is ever overwritten."""
    (tmp_path / "corpus").mkdir()
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "part-0.parquet").write_text("earlier output")
    with pytest.raises(UserError, match="does not exist"):
        parse_step_params("embed", {"corpus": str(tmp_path / "nowhere"), "output_path": str(tmp_path / "new")})
    with pytest.raises(UserError, match="already exists"):
        parse_step_params("embed", {"corpus": str(tmp_path / "corpus"), "output_path": str(tmp_path / "taken")})
    assert parse_step_params("embed", {"corpus": str(tmp_path / "corpus"), "output_path": str(tmp_path / "new")})
    with pytest.raises(UserError, match="only a Spark cluster writes"):  # not a local folder named "s3a:"
        parse_step_params("embed", {"corpus": str(tmp_path / "corpus"), "output_path": "s3a://bucket/embeddings"})
