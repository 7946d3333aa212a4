"""The project's first hour in the MLflow UI (issue 23 items 5, 6, 9): an experiment per dataset that opens on its
runs, descriptions, model signatures and cards, MLproject parameters, TensorBoard logs."""
import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import yaml
from mlflow.tracking import MlflowClient

from spatial_ae.mlflow_io.experiment import HEADLINE_METRICS, KIND, KIND_TAG, NOTE_TAG, UI_VIEW, default_name, ui_url
from spatial_ae.params import mlproject_text
from tests.conftest import REPO
from tests.test_featurize import SMALL


def run_featurize(*launcher: str, **params) -> subprocess.CompletedProcess:
    """The featurize step on the small synthetic corpus, through `python -m spatial_ae` or `mlflow run`."""
    values = {"dataset": "synthetic", **SMALL, **params}
    if launcher[0] == "mlflow":
        command = [sys.executable, "-m", "mlflow", "run", str(REPO), "-e", "featurize", "--env-manager", "local",
                   *launcher[1:], *(arg for name, value in values.items() for arg in ("-P", f"{name}={value}"))]
    else:
        command = [sys.executable, "-m", "spatial_ae", "featurize",
                   *(arg for name, value in values.items() for arg in (f"--{name}", str(value)))]
    store_folder = Path(mlflow.get_tracking_uri().removeprefix("sqlite:///")).parent  # not the checkout: MLflow's
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=os.environ.copy(),  # ./mlruns
                          cwd=store_folder)


def test_runs_go_to_the_datasets_experiment_which_opens_on_its_runs(sqlite_tracking, small_synthetic_corpus,
                                                                    monkeypatch):
    """Issue 23 item 5: nothing lands in Default; `experiment_name` works with `python -m` and `mlflow run`."""
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID")  # no experiment chosen: the dataset's
    client = MlflowClient()
    first = run_featurize("python")
    assert first.returncode == 0, first.stderr[-3000:]
    experiment = client.get_experiment_by_name(default_name("synthetic"))
    assert experiment.artifact_location == (sqlite_tracking["root"] / "mlruns" / experiment.name).as_uri()
    assert experiment.tags[KIND_TAG] == KIND and "synthetic" in experiment.tags[NOTE_TAG]
    view = json.loads(experiment.tags[f"mlflow.sharedViewState.{UI_VIEW}"])
    assert view["selectedColumns"][:len(HEADLINE_METRICS)] == [f"metrics.`{m}`" for m in HEADLINE_METRICS]
    url = ui_url(experiment.experiment_id)
    assert f"/#/experiments/{experiment.experiment_id}/runs?workflowType=machine_learning" in url
    assert url in first.stderr  # the command says where to look
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.tags[NOTE_TAG].startswith("The corpus' clips")

    second = run_featurize("mlflow")  # MLflow starts its run in Default before the step chooses
    assert second.returncode == 0, second.stderr[-3000:]
    (launcher,) = client.search_runs(["0"])  # the run MLflow started there only points to the experiment
    assert launcher.info.status == "FINISHED" and default_name("synthetic") in launcher.data.tags[NOTE_TAG]
    assert "reusing finished run" in second.stdout  # found in the dataset's experiment: the same one
    assert len(client.search_runs([experiment.experiment_id])) == 1

    third = run_featurize("mlflow", "--experiment-name", "chosen-by-mlflow", experiment_name="named")
    assert third.returncode == 0, third.stderr[-3000:]
    named = client.get_experiment_by_name("named")
    (run,) = client.search_runs([named.experiment_id])
    assert run.data.params["dataset"] == "synthetic" and "experiment_name" not in run.data.params
    chosen = client.get_experiment_by_name("chosen-by-mlflow").experiment_id
    assert [run.info.run_name for run in client.search_runs([chosen])] == ["launcher: runs in named"]

    fourth = run_featurize("mlflow", "--experiment-name", "chosen-by-mlflow")  # respected without the parameter
    assert fourth.returncode == 0, fourth.stderr[-3000:]
    runs = client.search_runs([chosen], "tags.`spatial_ae.step` = 'featurize'")
    assert len(runs) == 1 and runs[0].data.params["dataset"] == "synthetic"


def test_mlproject_declares_numbers_as_numbers_and_logs_no_empty_options(tmp_path):
    """Issue 23 item 9: no number with a string default and no empty optional value; an optional option given with
    -P still reaches the step (MLflow appends undeclared parameters as `--name value`)."""
    from mlflow.projects._project_spec import load_project

    declared = yaml.safe_load(mlproject_text())["entry_points"]
    for step, entry in declared.items():
        for name, spec in entry["parameters"].items():
            if spec["type"] == "float" and "default" in spec:
                assert isinstance(spec["default"], (int, float)), (step, name, spec)
        assert "num_anchors" not in entry["parameters"] and "position_loss_weight" not in entry["parameters"]
    (tmp_path / "MLproject").write_text(mlproject_text())
    (tmp_path / "python_env.yaml").write_text((REPO / "python_env.yaml").read_text())
    main = load_project(str(tmp_path)).get_entry_point("main")
    assert main.compute_command({"num_anchors": "8"}, None).endswith(" --num_anchors 8")
    logged, extra = main.compute_parameters({"num_anchors": "8"}, None)  # what `mlflow run` logs
    assert extra == {"num_anchors": "8"} and "" not in logged.values() and "position_loss_weight" not in logged


def test_registered_encoder_has_signature_descriptions_card_and_summary(sqlite_tracking, speech_commands_sample):
    """Issue 23 item 6 and the model summary: outputs in the signature, the inputs described, a model card with
    data, recipe and accuracy (its CI once summarised), `model.summary()` text, no type-hint warning on load."""
    from spatial_ae.mlflow_io.registry import ENCODER_NAME, record_accuracy, record_confidence_interval
    from tests.test_kws import registered_encoder

    uri = registered_encoder(speech_commands_sample, ae_epochs=1)
    client = MlflowClient()
    assert "Inputs: Raw audio" in client.get_registered_model(ENCODER_NAME).description
    outputs = mlflow.models.get_model_info(uri).signature.outputs.to_dict()
    assert outputs == [{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": (-1, 75)}, "name": "embedding"}]
    version = uri.rsplit("/", 1)[1]
    card = client.get_model_version(ENCODER_NAME, version).description
    assert "**Data**" in card and "- recipe: balanced" in card and "**Accuracy**\n- not known yet" in card
    record_accuracy(uri, 0.75, 0.5)
    record_confidence_interval(uri, "0.7 [0.6, 0.8] over 3 simulations")
    card = client.get_model_version(ENCODER_NAME, version).description
    assert "this simulation): 0.750000" in card and "0.7 [0.6, 0.8] over 3 simulations" in card
    run_id = client.get_model_version(ENCODER_NAME, version).tags["pretrain_run_id"]
    summary = mlflow.artifacts.load_text(f"runs:/{run_id}/model_summary/encoder.txt")
    assert "Total params" in summary
    loaded = subprocess.run([sys.executable, "-W", "always", "-c", f"import mlflow; mlflow.pyfunc.load_model({uri!r})"],
                            capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert loaded.returncode == 0 and "type hints" not in loaded.stderr, loaded.stderr[-2000:]


def test_tensorboard_logs_are_run_artifacts_when_asked(sqlite_tracking, monkeypatch):
    """The tensorboard setting (off by default) logs each training's TensorBoard folder to the run."""
    import keras

    from spatial_ae.method import training

    def train(prefix):
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        model.compile(optimizer="adam", loss="mse")
        x = np.random.default_rng(0).normal(size=(16, 3)).astype(np.float32)
        training.fit(model, x, x[:, :1], (x, x[:, :1]), epochs=2, patience=1, batch_size=8, prefix=prefix)

    with mlflow.start_run() as run:
        train("off")
        monkeypatch.setenv(training.TENSORBOARD_VARIABLE, "1")
        train("on")
    client = MlflowClient()
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["tensorboard"]
    assert [a.path for a in client.list_artifacts(run.info.run_id, "tensorboard")] == ["tensorboard/on"]
    files = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="tensorboard/on")
    assert any(name.startswith("events.out.tfevents") for _, _, names in os.walk(files) for name in names)
