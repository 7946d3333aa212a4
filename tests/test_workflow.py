"""The whole experiment end to end: simulations as child runs, metrics, registry and aliases, summary.

One test runs `main` in-process on a SQLite store; one runs `mlflow run .` against a real tracking server.
"""
import logging
import os
import re

import mlflow
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from spatial_ae.params import arguments
from spatial_ae.mlflow_io.registry import CHAMPION, ENCODER_NAME, NEWEST
from spatial_ae.names import ACCURACY_TAG, SELECTION_TAG
from spatial_ae.runs.workflow import main
from tests.conftest import SMALL_CLIPS_PER_WORD
from tests.test_featurize import mlflow_run

TINY = dict(dataset="synthetic", unlabeled_set_size=240, lbl_trai_size=30, lbl_test_size=60,
            synthetic_clips_per_word=SMALL_CLIPS_PER_WORD, ae_epochs=4, patience=2, dnn_epochs=4, cnn_epochs=2,
            num_simulations=2)


def children(parent_run_id: str, experiment_id: str):
    return MlflowClient().search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'")


def check_registry(client: MlflowClient, versions_expected: int) -> None:
    versions = client.search_model_versions(f"name='{ENCODER_NAME}'")
    assert sorted(int(v.version) for v in versions) == list(range(1, versions_expected + 1))
    accuracies = {str(v.version): float(v.tags[SELECTION_TAG]) for v in versions}  # chosen on validation
    assert all(ACCURACY_TAG in v.tags for v in versions)  # the test accuracy is reported too
    best = max(accuracies.values())
    champion = client.get_model_version_by_alias(ENCODER_NAME, CHAMPION)
    assert accuracies[str(champion.version)] == best
    assert min(v for v, a in accuracies.items() if a == best) == str(champion.version)  # ties go to the older one
    assert str(client.get_model_version_by_alias(ENCODER_NAME, NEWEST).version) == str(versions_expected)


def test_two_simulations_in_two_worker_processes(sqlite_tracking, small_synthetic_corpus, tmp_path, caplog, capfd):
    """`main` called in-process; its two simulations run at the same time in two spawned worker processes, which
    log at this process's level (here DEBUG: every epoch)."""
    caplog.set_level(logging.DEBUG, logger="spatial_ae")
    results = tmp_path / "results"
    parent_id = main(**arguments("main", TINY | {"results_path": str(results), "parallel_simulations": 2}))
    assert len(re.findall(r"SpawnProcess-\d+ spatial_ae\.method\.training: ae epoch 1/4 ", capfd.readouterr().err)) == 2
    client = MlflowClient()
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED"
    runs = children(parent_id, sqlite_tracking["experiment_id"])
    steps = sorted(r.data.tags["spatial_ae.step"] for r in runs)
    assert steps == ["featurize", "simulation", "simulation"]
    simulations = sorted((r for r in runs if r.data.tags["spatial_ae.step"] == "simulation"),
                         key=lambda r: int(r.data.tags["spatial_ae.simulation"]))
    assert [r.data.params["seed"] for r in simulations] == ["0", "1"]
    first, second = simulations
    assert second.info.start_time < first.info.end_time and first.info.start_time < second.info.end_time
    for run in simulations:
        metrics = run.data.metrics
        assert run.info.status == "FINISHED"
        for model in ("embedding_dnn", "mfcc_cnn"):
            assert 0 <= metrics[f"{model}_accuracy"] <= 1
            assert np.isclose(metrics[f"{model}_wer"], 1 - metrics[f"{model}_accuracy"])
            assert f"per_word/{model}_precision_yes" in metrics and f"per_word/{model}_recall_zero" in metrics
        history = client.get_metric_history(run.info.run_id, "ae_epoch_position_loss")
        assert 1 <= len(history) <= TINY["ae_epochs"]
        version = run.data.tags["encoder_uri"].rsplit("/", 1)[1]
        assert client.get_model_version(ENCODER_NAME, version).tags["featurize_run_id"] == parent.data.tags["featurize_run_id"]
    check_registry(client, versions_expected=2)

    encoder = mlflow.pyfunc.load_model(f"models:/{ENCODER_NAME}@{CHAMPION}")
    waveforms = np.random.default_rng(0).normal(scale=0.1, size=(3, 16000)).astype(np.float32)
    embeddings = encoder.predict(waveforms)
    assert embeddings.shape == (3, 75) and np.isfinite(embeddings).all()

    table = pd.read_csv(results / "latest" / "results.csv")
    assert len(table) == 2
    assert np.allclose(table["wercm"], [1 - r.data.metrics["mfcc_cnn_accuracy"] for r in simulations])


def test_main_through_mlflow_run_against_a_tracking_server(server_tracking, small_synthetic_corpus, tmp_path,
                                                           monkeypatch):
    """`mlflow run .` with a real `mlflow server` (SQLite backend, artifacts served by the server); its output at the
    default log level: one progress line per simulation, no epoch lines, no download bars or TensorFlow banner."""
    assert os.environ["MLFLOW_TRACKING_URI"].startswith("http://127.0.0.1:")
    monkeypatch.delenv("SPATIAL_AE_LOG_LEVEL", raising=False)
    result = mlflow_run("main", TINY | {"results_path": str(tmp_path / "results")})
    assert result.returncode == 0, result.stderr[-4000:]
    output = result.stdout + result.stderr
    for done in (1, 2):
        assert re.search(rf"spatial_ae.runs.parallel: simulation {done}/2 done, elapsed \d+:\d\d, ETA \d+:\d\d", output)
    assert " epoch 1/" not in output and "ae: " in output  # the workers log, but not every epoch
    for noise in ("Downloading artifacts", "cpu_feature_guard", "tf.function retracing"):
        assert noise not in output, noise
    client = MlflowClient()
    parents = client.search_runs([server_tracking["experiment_id"]], "tags.`spatial_ae.step` = 'main'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    assert parent.data.params["num_simulations"] == "2"
    assert parent.data.metrics["simulations_finished"] == 2
    runs = children(parent.info.run_id, server_tracking["experiment_id"])
    assert len([r for r in runs if r.data.tags["spatial_ae.step"] == "simulation"]) == 2
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert "results.csv" in artifacts
    local = mlflow.artifacts.download_artifacts(run_id=parent.info.run_id, artifact_path="results.csv")
    assert list(pd.read_csv(local).columns) == ["wercm", "cmpresi", "cmrecal", "cmavpresi", "cmavrecal",
                                                "wer_v_p", "appresi", "aprecal", "apavpresi", "apavrecal"]
    summary = {a.path for a in client.list_artifacts(parent.info.run_id, "summary")}
    assert {"summary/pca_mfcc.png", "summary/pca_embedding.png", "summary/training_curves.png"} <= summary
    check_registry(client, versions_expected=2)
    encoder = mlflow.pyfunc.load_model(f"models:/{ENCODER_NAME}@{CHAMPION}")
    assert encoder.predict(np.zeros((1, 16000), np.float32)).shape == (1, 75)
