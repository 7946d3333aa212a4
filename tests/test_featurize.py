"""The featurize entry point through `mlflow run`, its logged artifact, and reuse of a finished run."""
import os
import subprocess
import sys

import mlflow
from mlflow.tracking import MlflowClient

from spatial_ae.data.corpus import TEST, TRAIN, UNLABELLED
from spatial_ae.settings import FeaturizeSettings
from spatial_ae.steps.featurize import featurize, load_feature_set
from tests.conftest import REPO, SMALL_CLIPS_PER_WORD

SMALL = dict(unlabeled_set_size=200, lbl_trai_size=20, lbl_test_size=30, synthetic_clips_per_word=SMALL_CLIPS_PER_WORD, seed=0)


def mlflow_run(entry_point: str, params: dict) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "mlflow", "run", str(REPO), "-e", entry_point, "--env-manager", "local",
               "--experiment-id", os.environ["MLFLOW_EXPERIMENT_ID"]]
    for name, value in params.items():
        command += ["-P", f"{name}={value}"]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=os.environ.copy())


def test_mlflow_run_featurize_then_reuse(sqlite_tracking, small_synthetic_corpus):
    first = mlflow_run("featurize", {"dataset": "synthetic", **SMALL})
    assert first.returncode == 0, first.stderr[-3000:]
    client = MlflowClient()
    runs = client.search_runs([sqlite_tracking["experiment_id"]])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    run = runs[0]
    assert run.data.params["dataset"] == "synthetic" and run.data.params["unlabeled_set_size"] == "200"
    assert run.data.metrics["clips_unlabelled"] == 200 and run.data.metrics["clips_test"] == 30
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "features")}
    assert {"features/mfcc.npy", "features/clips.csv", "features/counts_per_word.csv"} <= artifacts
    assert {path for path in artifacts if path.endswith(".npy")} == {
        "features/mfcc.npy", "features/labels.npy", "features/unlabelled_mel.npy"}  # positions: per recipe, in pretrain
    inputs = run.inputs.dataset_inputs
    assert len(inputs) == 1 and str(small_synthetic_corpus.resolve()) in inputs[0].dataset.source

    features = load_feature_set(run.info.run_id)
    assert features.mfcc.shape[1] == 640 and features.unlabelled_mel.shape == (200, 4096)
    assert (features.unlabelled_mel.sum(axis=1) > 0).all()  # every unlabelled clip has a position
    assert set(features.splits) == {UNLABELLED, TRAIN, TEST}
    assert features.words[0] == "bed" and len(features.words) == 30

    second = mlflow_run("featurize", {"dataset": "synthetic", **SMALL})
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"reusing finished run {run.info.run_id}" in second.stdout + second.stderr
    runs = client.search_runs([sqlite_tracking["experiment_id"]])
    reused = [r for r in runs if r.info.run_id != run.info.run_id]
    assert len(reused) == 1 and reused[0].data.tags["spatial_ae.reused_run_id"] == run.info.run_id
    assert not client.list_artifacts(reused[0].info.run_id)  # nothing recomputed


def test_featurize_real_speech_commands_sample(sqlite_tracking, speech_commands_sample):
    run_id = featurize(FeaturizeSettings(str(speech_commands_sample), unlabeled_set_size=12000, lbl_trai_size=3000,
                                          lbl_test_size=6000))
    run = mlflow.get_run(run_id)
    assert run.data.metrics["clips_unlabelled"] == 205 and run.data.metrics["clips_train"] == 44
    assert run.data.metrics["clips_test"] == 51
    warnings = (MlflowClient().download_artifacts(run_id, "features/warnings.txt"))
    text = open(warnings).read()
    assert "fewer than the 12000" in text and "testing_list.txt" in text
    assert featurize(FeaturizeSettings(str(speech_commands_sample), 12000, 3000, 6000, 100, 0)) == run_id  # reused
