"""The experiment a command's runs go to, and how the MLflow UI opens it.

Each dataset gets its own experiment, `spatial-ae-<dataset>` unless the parameter `experiment_name` (or MLflow's
own `--experiment-name` / MLFLOW_EXPERIMENT_NAME / MLFLOW_EXPERIMENT_ID) names another. The experiment carries a
description and a saved runs-table view of the headline metrics (`UI_VIEW`); `ui_url` opens it.

The MLflow UI opens an experiment in the view of its sidebar switch (GenAI or Machine learning), or the one the
URL names (`workflowType=machine_learning`, which `ui_url` adds), not the one of the experiment tag
`mlflow.experimentKind`; the tag is still set for tools that read it.
"""
from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from spatial_ae.names import EMBEDDING_DNN, MFCC_CNN, NOTE_TAG

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT_ID = "0"  # MLflow's "Default"
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"
UI_VIEW = "headline"  # the runs-table view saved on the experiment (tag mlflow.sharedViewState.<UI_VIEW>)
HEADLINE_METRICS = (f"mean_{EMBEDDING_DNN}_accuracy", f"mean_{MFCC_CNN}_accuracy", "mean_accuracy_difference",
                    f"{EMBEDDING_DNN}_accuracy", f"{MFCC_CNN}_accuracy", f"{EMBEDDING_DNN}_validation_accuracy")
HEADLINE_PARAMS = ("recipe",)  # few columns: the UI shows them (in its own order) beside the run names
DESCRIPTION = """Spatial AE (Humayun et al. 2021) on the dataset `{dataset}`.

Each `main` run is the parent of a `featurize` run and of `simulation-NN` runs (pretrain the auto-encoder, then
evaluate its embeddings with a DNN against the MFCC-CNN benchmark on the same clips). Headline metrics: the
parents' `mean_*_accuracy` and `mean_accuracy_difference` (with its p-value), the simulations'
`embedding_dnn_accuracy`, `mfcc_cnn_accuracy`, `mfcc_dnn_accuracy`; per-word precision and recall are under
`per_word/` and in the table `evaluation/per_class_metrics.json`. The parent's `summary/` holds the statistics
(95% confidence intervals) and figures. Registered models: `spatial-ae-encoder` (aliases `champion`, `newest`).
"""


def default_name(dataset: str) -> str:
    """`spatial-ae-<dataset>`: a built-in dataset's name, a folder's name, or the scheme of `fsdd:/...`."""
    name = dataset.split(":", 1)[0] if re.match(r"^[a-z]+:", dataset) else Path(dataset.rstrip("/")).name
    return f"spatial-ae-{name or 'dataset'}"


def use_experiment(experiment_name: str | None, dataset: str) -> str:
    """Point this process's runs at the dataset's experiment (see the module docstring); returns its id.

    Under `mlflow run`, MLflow has already started the run in the experiment it was given (Default without one):
    when that is not the one wanted, this step's runs start in the wanted experiment instead (runs cannot move
    between experiments) and the project run stays behind as a pointer to them (`mlflow run` sets its status at
    the end, and fails on a deleted run)."""
    client = MlflowClient()
    project_run_id = os.environ.get("MLFLOW_RUN_ID")
    project_experiment_id = client.get_run(project_run_id).info.experiment_id if project_run_id else None
    chosen = project_experiment_id or os.environ.get("MLFLOW_EXPERIMENT_ID") or os.environ.get("MLFLOW_EXPERIMENT_NAME")
    if experiment_name or chosen in (None, DEFAULT_EXPERIMENT_ID):
        experiment_id = _get_or_create(client, experiment_name or default_name(dataset))
    elif project_run_id:
        experiment_id = chosen
    else:
        experiment_id = mlflow.tracking.fluent._get_experiment_id()
    if project_run_id and project_experiment_id != experiment_id:
        _leave_project_run(client, project_run_id, experiment_id)
    os.environ["MLFLOW_EXPERIMENT_ID"] = experiment_id
    os.environ.pop("MLFLOW_EXPERIMENT_NAME", None)
    mlflow.set_experiment(experiment_id=experiment_id)
    if experiment_id != DEFAULT_EXPERIMENT_ID:
        describe(client, experiment_id, dataset)
    return experiment_id


def _get_or_create(client: MlflowClient, name: str) -> str:
    """The id of experiment `name`, created if missing (also when another process creates it at the same time)."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name, artifact_location=_artifact_location(name))
        except mlflow.exceptions.MlflowException:
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    return experiment.experiment_id


def _artifact_location(name: str) -> str | None:
    """For a SQLite store, `mlruns/<name>` beside its file (MLflow's default, `./mlruns`, depends on the folder a
    command happens to start in); None (the server's or store's default) otherwise."""
    uri = mlflow.get_tracking_uri()
    if not uri.startswith("sqlite:///"):
        return None
    folder = re.sub(r"[^A-Za-z0-9._-]+", "_", name)
    return (Path(uri[len("sqlite:///"):]).resolve().parent / "mlruns" / folder).as_uri()


def _leave_project_run(client: MlflowClient, run_id: str, experiment_id: str) -> None:
    """Turn the run `mlflow run` started in another experiment into a pointer to where the work goes."""
    name = client.get_experiment(experiment_id).name
    from_name = client.get_experiment(client.get_run(run_id).info.experiment_id).name
    client.set_tag(run_id, "mlflow.runName", f"launcher: runs in {name}")
    client.set_tag(run_id, NOTE_TAG, f"Launcher only: this step's runs are in experiment '{name}' (id {experiment_id}). "
                                     f"`mlflow run --experiment-name {name}` starts there without this run.")
    os.environ.pop("MLFLOW_RUN_ID", None)
    log.info("runs go to experiment '%s' (`mlflow run` started run %s in '%s' before this step could choose: pass "
             "--experiment-name %s to start there)", name, run_id, from_name, name)


def describe(client: MlflowClient, experiment_id: str, dataset: str) -> None:
    """The experiment's description (unless it has one), kind and saved headline view; written only where the
    experiment lacks them or differs, so that every command after the first writes nothing."""
    tags = client.get_experiment(experiment_id).tags
    wanted = {KIND_TAG: KIND, f"mlflow.sharedViewState.{UI_VIEW}": json.dumps(headline_view())}
    if not tags.get(NOTE_TAG):
        wanted[NOTE_TAG] = DESCRIPTION.format(dataset=dataset)
    for key, value in wanted.items():
        if tags.get(key) != value:
            _set_experiment_tag(client, experiment_id, key, value)


def _set_experiment_tag(client: MlflowClient, experiment_id: str, key: str, value: str) -> None:
    """Set an experiment tag, also when another process sets it at the same moment: MLflow's SQL store inserts a
    tag it did not find, so the second of two simultaneous first writes fails on the unique key; the retry updates."""
    for attempt in range(3):
        try:
            client.set_experiment_tag(experiment_id, key, value)
            return
        except mlflow.exceptions.MlflowException as error:
            if "UNIQUE constraint" not in str(error) and "duplicate key" not in str(error) or attempt == 2:
                raise


def headline_view() -> dict:
    """The runs table with the headline metrics and parameters as its columns (the UI's shared-view format)."""
    columns = [f"metrics.`{name}`" for name in HEADLINE_METRICS] + [f"params.`{name}`" for name in HEADLINE_PARAMS]
    return {"selectedColumns": columns, "orderByKey": "attributes.start_time",
            "orderByAsc": False}


def ui_url(experiment_id: str) -> str:
    """The UI address of the experiment's runs in the headline view: on the tracking server, or on
    `mlflow ui` (http://127.0.0.1:5000) for a local store."""
    uri = mlflow.get_tracking_uri()
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    return (f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
            f"&viewStateShareKey={UI_VIEW}")


def where_to_look(experiment_id: str) -> str:
    """One line saying how to see the experiment's runs in the UI."""
    uri = mlflow.get_tracking_uri()
    start = "" if uri.startswith(("http://", "https://")) else f"`mlflow ui --backend-store-uri {uri}`, then "
    return f"the runs in the MLflow UI: {start}{ui_url(experiment_id)}"


STEP_NOTES = {  # step -> the description its runs show in the UI (the main run's gets the results: summarize.py)
    "main": "The whole experiment: featurize, then simulations of pretrain + evaluate, then the summary.",
    "featurize": "The corpus' clips drawn and featurized (MFCC of every clip, mel of the unlabelled ones): artifact `features/`.",
    "simulation": "One simulation: an auto-encoder pretrained from this seed (registered as spatial-ae-encoder), "
                  "then its embeddings + DNN against the MFCC-CNN benchmark on the same labelled and test clips.",
    "pretrain": "The auto-encoder with the position head trained on the unlabelled clips; its encoder registered.",
    "evaluate": "A DNN on the encoder's embeddings against the MFCC-CNN benchmark on the same clips.",
    "sweep": "A grid of recipe x position weight x labelled clips per word: `sweep.csv`, `label_efficiency.png`.",
    "sweep_cell": "One cell of the sweep's grid: its simulations are the child runs.",
    "kws": "A keyword spotter trained on a registered encoder's embeddings, registered as spatial-ae-kws.",
    "predict": "Words predicted for WAV files by a registered keyword spotter: `predictions/`.",
}
