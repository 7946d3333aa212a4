"""Tests for spatial_ae.steps.summarize on fake-but-real MLflow runs (SQLite store in a temporary folder, no training)."""

import json
import os
import uuid
from pathlib import Path

import matplotlib.image
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from scipy import stats

from spatial_ae.errors import UserError
from spatial_ae.method.metrics import metric_safe
from spatial_ae.names import COMPARED, SIMULATION_RUNS_TAG
from spatial_ae.steps.summarize import RESULTS_COLUMNS, summarize, summarize_workflow

WORDS = ("yes", "no", "up", "down")  # the corpus' order, deliberately not alphabetical
COUNTS = {"yes": 40, "no": 10, "up": 25, "down": 20}
MODELS = COMPARED
FIGURES = ("pca_mfcc.png", "pca_embedding.png", "per_word_precision_recall.png", "difference_vs_counts.png",
           "training_curves.png", "confusion_embedding_dnn.png", "confusion_mfcc_cnn.png")
ACCURACIES = {1: {"embedding_dnn": 0.80, "mfcc_cnn": 0.70},
              2: {"embedding_dnn": 0.75, "mfcc_cnn": 0.72},
              3: {"embedding_dnn": 0.90, "mfcc_cnn": 0.71}}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A SQLite tracking store with one experiment and one featurize run; the tracking URI is restored after."""
    root = tmp_path_factory.mktemp("mlflow")
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
    try:
        client = MlflowClient()
        experiment_id = client.create_experiment("summarize-test", artifact_location=(root / "artifacts").as_uri())
        featurize_run = client.create_run(experiment_id, tags={"spatial_ae.step": "featurize"})
        folder = root / "features"
        folder.mkdir()
        (folder / "words.json").write_text(json.dumps({"format": "1", "words": list(WORDS)}))
        pd.DataFrame({"word": WORDS, "unlabelled": 1, "train": 2, "test": 3,
                      "corpus_total": [COUNTS[w] for w in WORDS]}).to_csv(folder / "counts_per_word.csv", index=False)
        client.log_artifacts(featurize_run.info.run_id, str(folder), "features")
        client.set_terminated(featurize_run.info.run_id)
        yield client, experiment_id, featurize_run.info.run_id, root
    finally:
        mlflow.set_tracking_uri(previous)  # None also unsets the environment variable


def per_class_values(index: int, model: str) -> tuple[np.ndarray, np.ndarray]:
    """Known precision and recall per word (in WORDS order) of a simulation's model."""
    offset = 0.1 if model == "embedding_dnn" else 0.0
    precision = np.round(np.array([0.5, 0.25, 0.125, 0.8]) + offset * index / 3, 6)
    recall = np.round(np.array([0.3, 0.6, 0.9, 0.45]) + offset / index, 6)
    return precision, recall


def make_parent(client, experiment_id, featurize_run_id, num_simulations, key=None):
    key = key or uuid.uuid4().hex[:20]
    parent = client.create_run(experiment_id, tags={"spatial_ae.step": "main", "featurize_run_id": featurize_run_id,
                                                    "spatial_ae.workflow_key": key})
    client.log_param(parent.info.run_id, "num_simulations", num_simulations)
    return parent.info.run_id, key


def make_simulation(client, experiment_id, parent_id, key, index, root, status="FINISHED"):
    """A simulation run with the metrics, histories, tags and artifacts evaluate and pretrain log."""
    run = client.create_run(experiment_id, tags={
        "spatial_ae.step": "simulation", "spatial_ae.workflow_key": key, "spatial_ae.simulation": str(index),
        "mlflow.parentRunId": parent_id, "encoder_uri": f"models:/spatial-ae-encoder/{index}"})
    run_id = run.info.run_id
    client.log_param(run_id, "seed", index - 1)
    if status != "FINISHED":  # a simulation that failed before evaluating
        client.set_terminated(run_id, status)
        return run_id
    folder = root / run_id / "evaluation"
    folder.mkdir(parents=True)
    per_class, metrics = [], {}
    for model in MODELS:
        accuracy = ACCURACIES[index][model]
        precision, recall = per_class_values(index, model)
        metrics |= {f"{model}_accuracy": accuracy, f"{model}_wer": 1 - accuracy,
                    f"{model}_weighted_precision": accuracy + 0.01, f"{model}_weighted_recall": accuracy - 0.01}
        for word, p, r in zip(WORDS, precision, recall):
            metrics |= {f"per_word/{model}_precision_{metric_safe(word)}": p,
                        f"per_word/{model}_recall_{metric_safe(word)}": r}
        per_class.append(pd.DataFrame({"model": model, "word": WORDS, "precision": precision, "recall": recall,
                                       "support": [5, 6, 7, 8]}))
        confusion = np.diag([5, 6, 7, 8]) + index
        pd.DataFrame(confusion, index=pd.Index(WORDS, name="true"), columns=WORDS).to_csv(folder / f"confusion_{model}.csv")
    metrics["accuracy_difference"] = ACCURACIES[index]["embedding_dnn"] - ACCURACIES[index]["mfcc_cnn"]
    for name, value in metrics.items():
        client.log_metric(run_id, name, value)
    for epoch in range(4):
        for name in ("ae_epoch_loss", "ae_epoch_val_loss", "embedding_dnn_epoch_val_accuracy",
                     "mfcc_cnn_epoch_val_accuracy"):
            value = 1 / (epoch + index) if "loss" in name else 1 - 1 / (epoch + 2)
            client.log_metric(run_id, name, value, step=epoch)
    # rows shuffled: summarize must put them into the corpus' word order
    pd.concat(per_class).iloc[::-1].to_csv(folder / "per_class_metrics.csv", index=False)
    rng = np.random.default_rng(index)
    for name, size in (("mfcc", 640), ("embedding", 75)):
        pd.DataFrame(rng.normal(size=(len(WORDS), size)), index=pd.Index(WORDS, name="word")).to_csv(
            folder / f"mean_{name}_per_word.csv")
    client.log_artifacts(run_id, str(folder), "evaluation")
    client.set_terminated(run_id, status)
    return run_id


@pytest.fixture(scope="module")
def summarized(store):
    """A finished main run with 3 finished simulations and a failed 4th, summarised by the entry point."""
    client, experiment_id, featurize_run_id, root = store
    parent_id, key = make_parent(client, experiment_id, featurize_run_id, num_simulations=4)
    for index in (1, 2, 3):
        make_simulation(client, experiment_id, parent_id, key, index, root)
    make_simulation(client, experiment_id, parent_id, key, 4, root, status="FAILED")
    client.set_terminated(parent_id)
    path = summarize(parent_id, str(root / "results"))
    return client, parent_id, path.parent, path


def parse_vector(text: str) -> np.ndarray:
    assert "\n" not in text and text.startswith("[") and text.endswith("]")
    return np.fromstring(text.strip("[]"), sep=" ")


def test_results_csv_has_the_original_columns_and_the_logged_values(summarized):
    _, _, results, path = summarized
    assert path == results / "results.csv" and results.parent.name == "results"
    assert (results.parent / "latest").resolve() == results.resolve()
    assert path.read_text().splitlines()[0] == ",".join(RESULTS_COLUMNS)
    table = pd.read_csv(path)
    assert tuple(table.columns) == RESULTS_COLUMNS and len(table) == 3
    for row, index in zip(table.itertuples(), (1, 2, 3)):
        accuracies = ACCURACIES[index]
        assert row.wercm == pytest.approx(1 - accuracies["mfcc_cnn"])
        assert row.wer_v_p == pytest.approx(1 - accuracies["embedding_dnn"])
        assert row.cmavpresi == pytest.approx(accuracies["mfcc_cnn"] + 0.01)
        assert row.cmavrecal == pytest.approx(accuracies["mfcc_cnn"] - 0.01)
        assert row.apavpresi == pytest.approx(accuracies["embedding_dnn"] + 0.01)
        assert row.apavrecal == pytest.approx(accuracies["embedding_dnn"] - 0.01)
        for model, short in (("mfcc_cnn", "cm"), ("embedding_dnn", "ap")):
            precision, recall = per_class_values(index, model)
            np.testing.assert_array_equal(parse_vector(getattr(row, f"{short}presi")), precision)
            np.testing.assert_array_equal(parse_vector(getattr(row, f"{short}recal")), recall)


def test_no_temporary_files_are_left(summarized):
    _, _, results, _ = summarized
    names = {p.name for p in results.iterdir()}
    assert not [name for name in names if name.startswith(".") or name.endswith(".tmp")]
    assert {"results.csv", "per_class.csv", "summary.csv", "failures.txt", "summary.md", "simulations.csv",
            *FIGURES} == names


def test_per_class_csv_is_tidy(summarized):
    _, _, results, _ = summarized
    table = pd.read_csv(results / "per_class.csv")
    assert list(table.columns) == ["simulation", "model", "word", "precision", "recall", "support"]
    assert len(table) == 3 * 2 * len(WORDS)
    row = table[(table.simulation == 2) & (table.model == "embedding_dnn") & (table.word == "up")].iloc[0]
    precision, recall = per_class_values(2, "embedding_dnn")
    assert (row.precision, row.recall, row.support) == (precision[2], recall[2], 7)


def test_summary_statistics_match_numpy_and_scipy(summarized):
    _, _, results, _ = summarized
    summary = pd.read_csv(results / "summary.csv")
    n = 3
    t = stats.t.ppf(0.975, n - 1)
    for model in MODELS:
        values = np.array([ACCURACIES[i][model] for i in (1, 2, 3)])
        row = summary[(summary.model == model) & (summary.metric == "accuracy")].iloc[0]
        half = t * values.std(ddof=1) / np.sqrt(n)
        assert row.n == n
        assert row["mean"] == pytest.approx(values.mean())
        assert row["std"] == pytest.approx(values.std(ddof=1))
        assert (row.ci95_low, row.ci95_high) == pytest.approx((values.mean() - half, values.mean() + half))
        wer = summary[(summary.model == model) & (summary.metric == "wer")].iloc[0]
        assert wer["mean"] == pytest.approx(1 - values.mean())
    embedding = np.array([ACCURACIES[i]["embedding_dnn"] for i in (1, 2, 3)])
    mfcc = np.array([ACCURACIES[i]["mfcc_cnn"] for i in (1, 2, 3)])
    difference = summary[summary.metric == "accuracy_difference"].iloc[0]
    assert difference.model == "embedding_dnn - mfcc_cnn"
    assert difference["mean"] == pytest.approx((embedding - mfcc).mean())
    assert difference["std"] == pytest.approx((embedding - mfcc).std(ddof=1))
    assert difference.p_value_paired_t == pytest.approx(stats.ttest_rel(embedding, mfcc).pvalue)
    assert np.isnan(difference.p_value_wilcoxon)  # fewer than 6 simulations


def test_parent_run_gets_metrics_and_artifacts_and_keeps_its_status(summarized):
    client, parent_id, _, _ = summarized
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED"
    metrics = parent.data.metrics
    embedding = np.array([ACCURACIES[i]["embedding_dnn"] for i in (1, 2, 3)])
    mfcc = np.array([ACCURACIES[i]["mfcc_cnn"] for i in (1, 2, 3)])
    assert metrics["mean_embedding_dnn_accuracy"] == pytest.approx(embedding.mean())
    assert metrics["std_embedding_dnn_accuracy"] == pytest.approx(embedding.std(ddof=1))
    assert metrics["mean_mfcc_cnn_accuracy"] == pytest.approx(mfcc.mean())
    assert metrics["mean_accuracy_difference"] == pytest.approx((embedding - mfcc).mean())
    assert metrics["accuracy_difference_p_value"] == pytest.approx(stats.ttest_rel(embedding, mfcc).pvalue)
    assert metrics["simulations_finished"] == 3 and metrics["simulations_failed"] == 1
    root = {a.path for a in client.list_artifacts(parent_id)}
    assert {"results.csv", "summary"} <= root
    logged = {a.path.split("/")[-1] for a in client.list_artifacts(parent_id, "summary")}
    assert {"results.csv", "per_class.csv", "summary.csv", "failures.txt", "summary.md", *FIGURES} <= logged


def test_figures_are_real_pngs(summarized):
    _, _, results, _ = summarized
    for name in FIGURES:
        image = matplotlib.image.imread(results / name)
        assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 300, name


def test_failures_and_report_name_the_missing_simulation(summarized):
    _, _, results, _ = summarized
    failures = (results / "failures.txt").read_text()
    assert "simulation 4" in failures and "simulation 3" not in failures
    report = (results / "summary.md").read_text()
    assert "simulation 4" in report and "paired t-test p =" in report and "±" in report


def test_workflow_summary_inside_the_active_parent_run(store, tmp_path):
    client, experiment_id, featurize_run_id, root = store
    parent_id, key = make_parent(client, experiment_id, featurize_run_id, num_simulations=2)
    make_simulation(client, experiment_id, parent_id, key, 1, root)
    make_simulation(client, experiment_id, parent_id, key, 2, root)
    with mlflow.start_run(run_id=parent_id, experiment_id=experiment_id):
        path = summarize_workflow(parent_id, str(tmp_path / "out"), failures=[])
        assert mlflow.active_run().info.run_id == parent_id
    assert len(pd.read_csv(path)) == 2
    assert (tmp_path / "out" / "latest" / "failures.txt").read_text().startswith("none")
    assert client.get_run(parent_id).data.metrics["simulations_failed"] == 0


def test_a_second_run_never_overwrites_the_first_and_links_what_it_reused(store, tmp_path):
    """Issue 23 item 3: one results folder per main run, `latest` on the newest; a parent that reuses simulations
    of an earlier identical run names them (tag and summary/simulations.csv)."""
    client, experiment_id, featurize_run_id, root = store
    first, key = make_parent(client, experiment_id, featurize_run_id, num_simulations=2)
    simulations = [make_simulation(client, experiment_id, first, key, index, root) for index in (1, 2)]
    first_csv = summarize(first, str(tmp_path / "results"))
    before = first_csv.read_bytes()
    second, _ = make_parent(client, experiment_id, featurize_run_id, num_simulations=1, key=key)
    second_csv = summarize(second, str(tmp_path / "results"))
    assert second_csv.parent != first_csv.parent and first_csv.read_bytes() == before
    assert (tmp_path / "results" / "latest").resolve() == second_csv.parent.resolve()
    table = pd.read_csv(second_csv.parent / "simulations.csv")
    assert table.to_dict("records") == [{"simulation": 1, "run_id": simulations[0], "parent_run_id": first,
                                         "reused": True}]
    assert client.get_run(second).data.tags[SIMULATION_RUNS_TAG] == simulations[0]


def test_more_simulations_than_the_artifact_cache_keeps(store, tmp_path, monkeypatch):
    """The cache's bound (SPATIAL_AE_ARTIFACT_CACHE_RUNS, default 8) evicted the first simulations' evaluation folders
    before summarize read them: the default 10 simulations failed at the summary (FileNotFoundError)."""
    import tempfile

    from spatial_ae.mlflow_io import tracking

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # never evict the user's own cache
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv(tracking.CACHE_RUNS_VARIABLE, "1")
    client, experiment_id, featurize_run_id, root = store
    parent, key = make_parent(client, experiment_id, featurize_run_id, num_simulations=3)
    for index in (1, 2, 3):
        make_simulation(client, experiment_id, parent, key, index, root)
    assert len(pd.read_csv(summarize(parent, str(tmp_path / "results")))) == 3


def test_one_simulation_gives_nan_spread_without_crashing(store, tmp_path):
    client, experiment_id, featurize_run_id, root = store
    parent_id, key = make_parent(client, experiment_id, featurize_run_id, num_simulations=1)
    make_simulation(client, experiment_id, parent_id, key, 1, root)
    path = summarize(parent_id, str(tmp_path / "one"))
    assert len(pd.read_csv(path)) == 1
    summary = pd.read_csv(tmp_path / "one" / "latest" / "summary.csv")
    assert summary["n"].eq(1).all()
    assert summary[["std", "ci95_low", "ci95_high", "p_value_paired_t", "p_value_wilcoxon"]].isna().all().all()
    assert summary[summary.metric == "accuracy"]["mean"].tolist() == pytest.approx([0.80, 0.70])
    assert np.isnan(client.get_run(parent_id).data.metrics["std_embedding_dnn_accuracy"])


def test_zero_simulations_raise_a_user_error_and_still_write_failures(store, tmp_path):
    client, experiment_id, featurize_run_id, root = store
    parent_id, key = make_parent(client, experiment_id, featurize_run_id, num_simulations=2)
    make_simulation(client, experiment_id, parent_id, key, 1, root, status="FAILED")
    with pytest.raises(UserError, match=f"no simulation of main run {parent_id} finished"):
        summarize(parent_id, str(tmp_path / "none"))
    messages = ["simulation 1: ValueError: boom", "simulation 2: FloatingPointError: nan"]
    with pytest.raises(UserError, match=parent_id):
        summarize_workflow(parent_id, str(tmp_path / "workflow"), failures=messages)
    assert (tmp_path / "workflow" / "latest" / "failures.txt").read_text().splitlines() == messages
    assert not (tmp_path / "workflow" / "latest" / "results.csv").exists()
    assert client.get_run(parent_id).data.metrics["simulations_failed"] == 2


def test_sweep_report_pairs_within_each_file_when_pooling(tmp_path):
    """benchmarks/sweep_report.py pools sweeps (e.g. FSDD speaker pairs): simulation 1 of one file is not
    simulation 1 of another, so 2 files x 2 simulations are 4 paired differences, and the files' means 2 more."""
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "sweep_report.py"
    spec = importlib.util.spec_from_file_location("sweep_report", script)
    sweep_report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep_report)
    paths = []
    for name, plain, gain in (("a", (0.30, 0.40), 0.05), ("b", (0.50, 0.60), 0.10)):
        rows = [dict(recipe="dtw", weight=weight, labelled_per_word=2, simulation=simulation, model="embedding_dnn",
                     accuracy=accuracy + gain * weight)
                for weight in (0.0, 1.0) for simulation, accuracy in enumerate(plain, start=1)]
        paths.append(str(tmp_path / f"{name}.csv"))
        pd.DataFrame(rows).to_csv(paths[-1], index=False)
    lines = sweep_report.report(paths).splitlines()
    assert "| spatial AE (dtw) | 2 | 4 | 0.525 [" in "\n".join(lines)
    [difference] = [line for line in lines if line.startswith("| spatial AE (dtw) - plain AE (standardised) |")]
    pooled, over_files = [cell.strip() for cell in difference.strip("|").split("|")[2:]]
    low, high = (float(bound) for bound in pooled.split("[")[1].rstrip("]").split(","))
    assert pooled.startswith("0.075 [") and low < 0.04 and high > 0.11  # t interval of 0.05, 0.05, 0.10, 0.10
    expected = stats.t.ppf(0.975, 1) * np.std([0.05, 0.10], ddof=1) / np.sqrt(2)
    assert over_files == f"0.075 [{0.075 - expected:.3f}, {0.075 + expected:.3f}]"
    assert "over files' means" in lines[lines.index(difference) - 2]
    assert lines[-4] == "| file | spatial AE (dtw) - plain AE (standardised), 2 per word |"
    assert lines[-2:] == ["| a | +0.050 |", "| b | +0.100 |"]
    sweep_report.pooled_figure(paths, str(tmp_path / "pooled.png"))
    assert matplotlib.image.imread(tmp_path / "pooled.png").shape[2] in (3, 4)


def test_parent_gets_a_summary_table_and_a_description_with_the_headline(summarized):
    """Issue 23 item 5: the summary as an MLflow table (the UI's evaluation view shows it) and the headline result
    with its confidence interval as the parent's description."""
    client, parent_id, _, _ = summarized
    logged = json.loads(client.get_run(parent_id).data.tags["mlflow.loggedArtifacts"])  # what the UI lists as tables
    assert {"path": "summary/summary_table.json", "type": "table"} in logged
    table = json.loads(Path(client.download_artifacts(parent_id, "summary/summary_table.json")).read_text())
    models = {row[table["columns"].index("model")] for row in table["data"]}
    assert {"embedding_dnn", "mfcc_cnn", "embedding_dnn - mfcc_cnn"} <= models
    note = client.get_run(parent_id).data.tags["mlflow.note.content"]
    mean = np.mean([ACCURACIES[index]["embedding_dnn"] for index in (1, 2, 3)])
    assert f"{mean:.4f} [" in note and "95% CI] over 3 simulations" in note


def test_figures_show_every_simulation_and_keep_legends_off_the_data():
    """Issue 23 item 5: training_curves.png showed simulations 1-3 of 10; a legend covered bars."""
    from spatial_ae.steps import plots

    epochs = np.arange(1, 8)
    histories = {k: {"ae_epoch_loss": (epochs, 1 / epochs), "ae_epoch_val_loss": (epochs, 2 / epochs)}
                 for k in range(1, 11)}
    per_class = pd.DataFrame([{"simulation": 1, "model": model, "word": word, "precision": 1.0, "recall": 1.0}
                              for model in MODELS for word in WORDS])
    figures = (plots.training_curves_figure(histories, (("loss", "loss", (("ae_epoch_loss", "-"),
                                                                          ("ae_epoch_val_loss", "--"))),)),
               plots.per_word_precision_recall_figure(per_class, WORDS, {m: m for m in MODELS}))
    for figure in figures:
        figure.canvas.draw()
        renderer = figure.canvas.get_renderer()
        legend = figure.legends[0].get_window_extent(renderer)
        for ax in figure.axes:
            assert ax.get_legend() is None
            assert legend.y0 >= ax.get_window_extent(renderer).y1  # above every panel, so it covers nothing
    assert len(figures[0].axes[0].lines) == 20
    assert [t.get_text() for t in figures[0].legends[0].get_texts()] == [f"simulation {k}" for k in range(1, 11)]
