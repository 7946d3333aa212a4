"""The summarize step: tables, statistics and figures over the simulations of a main run.

Everything is written into `results_path/<run name>-<id>/` (`results_path/latest` names the newest: a
second run never overwrites the first's) and logged on the main (parent) run: the folder `summary/`, and
`results.csv` also at the root of its artifacts. The parent's status is never changed.
results.csv has the original's columns: cm = MFCC + CNN (benchmark), ap = encoder embeddings + DNN;
WER is a fraction; per-word precision and recall are bracketed, space-separated lists in the corpus' word order.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Iterator

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from scipy import stats

from spatial_ae.steps import plots
from spatial_ae.mlflow_io import tracking
from spatial_ae.mlflow_io.experiment import NOTE_TAG, STEP_NOTES
from spatial_ae.errors import UserError
from spatial_ae.names import (COMPARED, DIFFERENCE_TITLE, EMBEDDING_DNN, EVALUATION_DIR, FEATURES_DIR, MFCC_CNN,
                              MODEL_TITLES, SIMULATION_RUNS_TAG, SIMULATION_TAG)

log = logging.getLogger(__name__)

RESULTS_COLUMNS = ("wercm", "cmpresi", "cmrecal", "cmavpresi", "cmavrecal",
                   "wer_v_p", "appresi", "aprecal", "apavpresi", "apavrecal")
COMPARED_TITLES = {model: MODEL_TITLES[model] for model in COMPARED}  # the pair of results.csv and the figures
SUMMARY_METRICS = ("accuracy", "wer", "weighted_precision", "weighted_recall")
DIFFERENCE = f"{EMBEDDING_DNN} - {MFCC_CNN}"
MIN_WILCOXON = 6  # below 6 pairs the two-sided Wilcoxon p-value cannot fall under 0.05
ARTIFACT_DIR = "summary"


def summarize(parent_run_id: str, results_path: str) -> Path:
    """The summarize entry point: summarise a main run's simulations; returns the results.csv path."""
    tracking.check_tracking_server()
    return _summarize_parent(parent_run_id, results_path, failures=None)


def summarize_workflow(parent_run_id: str, results_path: str, failures: list[str] = ()) -> Path:
    """Summarise at the end of the workflow; `failures` are the messages of the failed simulations."""
    return _summarize_parent(parent_run_id, results_path, failures=list(failures))


def _summarize_parent(parent_run_id: str, results_path: str, failures: list[str] | None) -> Path:
    """Shared by both entry points; failures=None finds the failed simulations in the tracking store."""
    client = MlflowClient()
    try:
        parent = client.get_run(parent_run_id)
    except mlflow.exceptions.MlflowException:
        raise UserError(f"run {parent_run_id!r} was not found in {mlflow.get_tracking_uri()}; "
                        f"pass the id of a main run") from None
    runs = tracking.simulation_runs(parent_run_id)
    wanted = parent.data.params.get("num_simulations")
    if wanted is not None:  # finished runs of a larger earlier workflow with the same key are not this run's
        runs = [run for run in runs if int(run.data.tags[SIMULATION_TAG]) <= int(wanted)]
    if failures is None:
        failures = _missing_simulations(runs, int(wanted) if wanted is not None else 0)
    folder = run_results_folder(results_path, parent)
    _link_simulations(client, parent, runs, folder)

    if not runs:
        failures_file = _write_failures(folder, failures)
        client.log_artifact(parent_run_id, str(failures_file), ARTIFACT_DIR)
        _log_metrics(client, parent_run_id, {"simulations_finished": 0, "simulations_failed": len(failures)})
        raise UserError(f"no simulation of main run {parent_run_id} finished, nothing to summarize"
                        + (f"; failed: {'; '.join(failures)}" if failures else ""))

    featurize_run_id = parent.data.tags.get("featurize_run_id")
    if featurize_run_id is None:
        raise UserError(f"run {parent_run_id} has no featurize_run_id tag; pass the id of a main run")
    words, counts = _corpus_words_and_counts(featurize_run_id)
    summary = summarize_runs(runs, words, folder, counts_per_word=counts, failures=failures)
    for path in summary["files"]:
        client.log_artifact(parent_run_id, str(path), ARTIFACT_DIR)
    client.log_artifact(parent_run_id, str(folder / "results.csv"))
    _log_metrics(client, parent_run_id, summary["metrics"])
    mlflow.log_table(summary["summary"], f"{ARTIFACT_DIR}/summary_table.json", run_id=parent_run_id)  # compare view
    headline = headline_text(summary["summary"])
    client.set_tag(parent_run_id, NOTE_TAG, f"{STEP_NOTES['main']}\n\n{headline} Details: `summary/summary.md`.")
    _record_confidence_intervals(runs, headline)
    log.info("summarize: %d simulations, results in %s", len(runs), folder)
    return folder / "results.csv"


LATEST = "latest"


def run_results_folder(results_path: str, run: mlflow.entities.Run) -> Path:
    """`<results_path>/<run name>-<run id prefix>/`, with `<results_path>/latest` pointed at it: a second run
    never overwrites an earlier run's results."""
    root = Path(results_path)
    folder = root / f"{run.info.run_name or 'run'}-{run.info.run_id[:8]}"
    folder.mkdir(parents=True, exist_ok=True)
    link = root / LATEST
    if link.exists() and not link.is_symlink():
        log.warning("%s is not a link (a folder of an older layout?): left as it is", link)
        return folder
    temporary = root / f".{LATEST}-{os.getpid()}"
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(folder.name, target_is_directory=True)
    os.replace(temporary, link)  # atomic: `latest` always names a complete folder name
    return folder


def _link_simulations(client: MlflowClient, parent: mlflow.entities.Run, runs: list, folder: Path) -> None:
    """Say which simulation runs a main run stands on, also those it reused from an earlier identical run
    (they are children of that run): a tag and the table `summary/simulations.csv`."""
    rows = [{"simulation": int(run.data.tags[SIMULATION_TAG]), "run_id": run.info.run_id,
             "parent_run_id": run.data.tags.get("mlflow.parentRunId", ""),
             "reused": run.data.tags.get("mlflow.parentRunId") != parent.info.run_id} for run in runs]
    table = pd.DataFrame(rows, columns=["simulation", "run_id", "parent_run_id", "reused"])
    table.to_csv(folder / "simulations.csv", index=False)
    client.log_artifact(parent.info.run_id, str(folder / "simulations.csv"), ARTIFACT_DIR)
    client.set_tag(parent.info.run_id, SIMULATION_RUNS_TAG, ",".join(table.run_id)[:5000])


def summarize_runs(runs: list[mlflow.entities.Run], words: tuple[str, ...], results_path: Path,
                   counts_per_word: pd.Series | None = None, failures: list[str] = ()) -> dict:
    """Write the tables, statistics and figures of finished simulation runs into `results_path`.

    counts_per_word: corpus clips per word (difference_vs_counts.png is skipped without it).
    Returns {"metrics": key numbers for the parent run, "files": paths written, "summary": the statistics table}.
    """
    if not runs:
        raise UserError("no finished simulation run to summarize")
    folder = Path(results_path)
    folder.mkdir(parents=True, exist_ok=True)
    words = tuple(words)
    runs = sorted(runs, key=_simulation_index)
    evaluations = {_simulation_index(run): tracking.download_run_artifacts(run.info.run_id, EVALUATION_DIR)
                   for run in runs}
    per_class = pd.concat(
        [pd.read_csv(path / "per_class_metrics.csv", keep_default_na=False, na_values=[""])
         .assign(simulation=index) for index, path in evaluations.items()], ignore_index=True)
    per_class = per_class[["simulation", "model", "word", "precision", "recall", "support"]]

    results = results_table(runs, per_class, words)
    summary = summary_table(runs)
    files = [_write_csv(results, folder / "results.csv"),
             _write_csv(per_class, folder / "per_class.csv"),
             _write_csv(summary, folder / "summary.csv"),
             _write_failures(folder, failures),
             _write_text(folder / "summary.md", summary_markdown(summary, failures))]
    files += _figures(runs, evaluations, per_class, words, counts_per_word, folder)

    difference = summary[summary["model"] == DIFFERENCE].iloc[0]
    metrics = {"simulations_finished": len(runs), "simulations_failed": len(failures),
               "mean_accuracy_difference": difference["mean"],
               "accuracy_difference_p_value": difference["p_value_paired_t"],
               "accuracy_difference_wilcoxon_p_value": difference["p_value_wilcoxon"]}
    for model in summary.loc[summary["metric"] == "accuracy", "model"]:
        row = summary[(summary["model"] == model) & (summary["metric"] == "accuracy")].iloc[0]
        metrics |= {f"mean_{model}_accuracy": row["mean"], f"std_{model}_accuracy": row["std"]}
    return {"metrics": metrics, "files": files, "summary": summary}


def headline_text(summary: pd.DataFrame) -> str:
    """Each model's mean test accuracy with its 95% CI, and the paired difference, in one paragraph."""
    def interval(row) -> str:
        return f"{row['mean']:.4f} [{row['ci95_low']:.4f}, {row['ci95_high']:.4f}]"

    accuracy = summary[summary["metric"] == "accuracy"]
    parts = [f"{MODEL_TITLES[row['model']]}: {interval(row)}" for _, row in accuracy.iterrows()]
    difference = summary[summary["model"] == DIFFERENCE].iloc[0]
    return (f"Test accuracy, mean [95% CI] over {int(difference['n'])} simulations: " + "; ".join(parts)
            + f". Difference ({DIFFERENCE_TITLE}): {interval(difference)}, "
              f"paired t-test p = {difference['p_value_paired_t']:.3g}.")


def _record_confidence_intervals(runs: list[mlflow.entities.Run], headline: str) -> None:
    """Put the summary's accuracy line on the model cards of the encoders the simulations registered."""
    from spatial_ae.mlflow_io.registry import record_confidence_interval

    for run in runs:
        if run.data.tags.get("encoder_uri"):
            record_confidence_interval(run.data.tags["encoder_uri"], headline)


def results_table(runs: list[mlflow.entities.Run], per_class: pd.DataFrame, words: tuple[str, ...]) -> pd.DataFrame:
    """The original's results.csv: one row per simulation, columns RESULTS_COLUMNS."""
    rows = []
    for run in runs:
        metrics, index = run.data.metrics, _simulation_index(run)
        row = {}
        for model, short, wer_column in ((MFCC_CNN, "cm", "wercm"), (EMBEDDING_DNN, "ap", "wer_v_p")):
            table = per_class[(per_class["simulation"] == index) & (per_class["model"] == model)].set_index("word")
            table = table.reindex(list(words))
            row[wer_column] = metrics[f"{model}_wer"]
            row[f"{short}presi"] = format_vector(table["precision"].to_numpy(float))
            row[f"{short}recal"] = format_vector(table["recall"].to_numpy(float))
            row[f"{short}avpresi"] = metrics[f"{model}_weighted_precision"]
            row[f"{short}avrecal"] = metrics[f"{model}_weighted_recall"]
        rows.append(row)
    return pd.DataFrame(rows, columns=list(RESULTS_COLUMNS))


def format_vector(values: np.ndarray) -> str:
    """`[0.81 0.5 1. 0.]`: one line, shortest exact digits; read back with np.fromstring(s.strip("[]"), sep=" ")."""
    return "[" + " ".join(np.format_float_positional(value) for value in np.asarray(values, float)) + "]"


def describe(values) -> dict[str, float]:
    """n, mean, std (ddof=1) and the t-distribution 95% confidence interval of the mean; NaN where n < 2."""
    values = np.asarray(values, dtype=float)
    n = len(values)
    mean = float(np.mean(values)) if n else float("nan")
    if n < 2:
        return {"n": n, "mean": mean, "std": float("nan"), "ci95_low": float("nan"), "ci95_high": float("nan")}
    std = float(np.std(values, ddof=1))
    half_width = float(stats.t.ppf(0.975, n - 1)) * std / np.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci95_low": mean - half_width, "ci95_high": mean + half_width}


def paired_p_values(first, second) -> tuple[float, float]:
    """Paired t-test and Wilcoxon signed-rank p-values (Wilcoxon only with >= MIN_WILCOXON pairs); NaN if undefined."""
    first, second = np.asarray(first, float), np.asarray(second, float)
    t_p = wilcoxon_p = float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # identical values: the p-values are NaN
        if len(first) >= 2:
            t_p = float(stats.ttest_rel(first, second).pvalue)
        if len(first) >= MIN_WILCOXON:
            try:
                wilcoxon_p = float(stats.wilcoxon(first, second).pvalue)
            except ValueError:
                pass
    return t_p, wilcoxon_p


def summary_table(runs: list[mlflow.entities.Run]) -> pd.DataFrame:
    """Per model and metric: n, mean, std, 95% CI; plus the paired accuracy comparison row. The compared pair
    first, then every other model that all the runs have."""
    def values(key):
        return [run.data.metrics[key] for run in runs]

    models = [*COMPARED, *(model for model in MODEL_TITLES if model not in COMPARED
                           and all(f"{model}_accuracy" in run.data.metrics for run in runs))]
    rows = [{"model": model, "metric": metric, **describe(values(f"{model}_{metric}"))}
            for model in models for metric in SUMMARY_METRICS]
    embedding, mfcc = values(f"{EMBEDDING_DNN}_accuracy"), values(f"{MFCC_CNN}_accuracy")
    t_p, wilcoxon_p = paired_p_values(embedding, mfcc)
    rows.append({"model": DIFFERENCE, "metric": "accuracy_difference",
                 **describe(np.subtract(embedding, mfcc)), "p_value_paired_t": t_p, "p_value_wilcoxon": wilcoxon_p})
    return pd.DataFrame(rows, columns=["model", "metric", "n", "mean", "std", "ci95_low", "ci95_high",
                                       "p_value_paired_t", "p_value_wilcoxon"])


def summary_markdown(summary: pd.DataFrame, failures: list[str]) -> str:
    """A human-readable report of the summary table and the failed simulations."""
    def number(value, digits=4):
        return "n/a" if pd.isna(value) else f"{value:.{digits}f}"

    lines = ["# Summary of the simulations", "",
             "| model | metric | n | mean ± std | 95% CI |", "|---|---|---|---|---|"]
    for row in summary.itertuples():
        lines.append(f"| {MODEL_TITLES.get(row.model, row.model)} | {row.metric} | {row.n} | "
                     f"{number(row.mean)} ± {number(row.std)} | [{number(row.ci95_low)}, {number(row.ci95_high)}] |")
    difference = summary[summary["model"] == DIFFERENCE].iloc[0]
    lines += ["", f"Accuracy difference ({DIFFERENCE_TITLE}, paired by simulation): "
                  f"mean {number(difference['mean'])}, 95% CI [{number(difference['ci95_low'])}, "
                  f"{number(difference['ci95_high'])}], paired t-test p = {number(difference['p_value_paired_t'])}, "
                  f"Wilcoxon signed-rank p = {number(difference['p_value_wilcoxon'])} "
                  f"(computed with at least {MIN_WILCOXON} simulations).", "", "## Failed simulations", ""]
    lines += [f"- {failure}" for failure in failures] or ["none"]
    return "\n".join(lines) + "\n"


def _figures(runs, evaluations: dict[int, Path], per_class: pd.DataFrame, words: tuple[str, ...],
             counts_per_word: pd.Series | None, folder: Path) -> list[Path]:
    """Save the summary figures as PNG; returns their paths."""
    figures = {}
    mfcc = pd.concat([_read_word_table(path / "mean_mfcc_per_word.csv") for path in evaluations.values()])
    mfcc = mfcc.groupby(level=0).mean().reindex(list(words)).dropna()
    figures["pca_mfcc.png"] = plots.pca_figure(
        mfcc.to_numpy(), mfcc.index, f"PCA of the per-word mean MFCC of the test clips (mean over {len(runs)} simulations)")
    first_index, first_path = next(iter(evaluations.items()))
    embedding = _read_word_table(first_path / "mean_embedding_per_word.csv").reindex(list(words)).dropna()
    figures["pca_embedding.png"] = plots.pca_figure(
        embedding.to_numpy(), embedding.index,
        f"PCA of the per-word mean embedding of the test clips, simulation {first_index} only\n"
        f"(the embedding spaces of different simulations are not aligned, so they are not averaged)")
    figures["per_word_precision_recall.png"] = plots.per_word_precision_recall_figure(per_class, words,
                                                                                      COMPARED_TITLES)
    if counts_per_word is not None:
        figures["difference_vs_counts.png"] = _difference_vs_counts(per_class, words, counts_per_word, len(runs))
    figures["training_curves.png"] = _training_curves(runs)
    for model, title in COMPARED_TITLES.items():
        confusion = sum(pd.read_csv(path / f"confusion_{model}.csv", index_col=0, keep_default_na=False)
                        .reindex(index=list(words), columns=list(words), fill_value=0).to_numpy()
                        for path in evaluations.values())
        accuracy = np.trace(confusion) / max(confusion.sum(), 1)
        figures[f"confusion_{model}.png"] = plots.confusion_figure(
            confusion, words, f"{title}\nsummed over {len(runs)} simulations, accuracy {accuracy:.3f}")
    paths = []
    for name, figure in figures.items():
        with _atomic_path(folder / name) as temporary:
            plots.save_png(figure, temporary)
        paths.append(folder / name)
    return paths


def _difference_vs_counts(per_class: pd.DataFrame, words, counts_per_word: pd.Series, simulations: int):
    means = per_class.groupby(["model", "word"])[["precision", "recall"]].mean()
    difference = (means.loc[EMBEDDING_DNN] - means.loc[MFCC_CNN]).reindex(list(words))
    counts = counts_per_word.reindex(list(words)).astype(float)
    order = np.argsort(counts.to_numpy(), kind="stable")
    return plots.difference_vs_counts_figure(
        np.asarray(words)[order], difference["precision"].to_numpy()[order], difference["recall"].to_numpy()[order],
        counts.to_numpy()[order],
        f"Per-word difference of precision and recall (mean over {simulations} simulations) against clip counts")


def _training_curves(runs):
    client = MlflowClient()
    panels = (("auto-encoder loss", "loss", (("ae_epoch_loss", "-"), ("ae_epoch_val_loss", "--"))),
              (f"{MODEL_TITLES[EMBEDDING_DNN]}: validation accuracy", "accuracy",
               ((f"{EMBEDDING_DNN}_epoch_val_accuracy", "-"),)),
              (f"{MODEL_TITLES[MFCC_CNN]}: validation accuracy", "accuracy", ((f"{MFCC_CNN}_epoch_val_accuracy", "-"),)))
    histories = {}
    for run in runs:
        curves = {}
        for _, _, keys in panels:
            for key, _ in keys:
                history = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
                if history:
                    curves[key] = (np.array([m.step + 1 for m in history]), np.array([m.value for m in history]))
        histories[_simulation_index(run)] = curves
    return plots.training_curves_figure(histories, panels)


def _corpus_words_and_counts(featurize_run_id: str) -> tuple[tuple[str, ...], pd.Series | None]:
    """The corpus' word order and clips per word (corpus_total), from the featurize run's small artifacts."""
    with tempfile.TemporaryDirectory() as tmp:
        words_file = mlflow.artifacts.download_artifacts(
            run_id=featurize_run_id, artifact_path=f"{FEATURES_DIR}/words.json", dst_path=tmp)
        words = tuple(json.loads(Path(words_file).read_text())["words"])
        try:
            counts_file = mlflow.artifacts.download_artifacts(
                run_id=featurize_run_id, artifact_path=f"{FEATURES_DIR}/counts_per_word.csv", dst_path=tmp)
        except (mlflow.exceptions.MlflowException, OSError):
            log.warning("featurize run %s has no counts_per_word.csv; skipping difference_vs_counts.png", featurize_run_id)
            return words, None
        counts = pd.read_csv(counts_file, keep_default_na=False).set_index("word")["corpus_total"]
    return words, counts


def _missing_simulations(runs, wanted: int) -> list[str]:
    """Messages for the simulations 1..wanted without a finished run."""
    finished = {_simulation_index(run) for run in runs}
    return [f"simulation {index}: no finished run (failed, killed or not run)"
            for index in range(1, wanted + 1) if index not in finished]


def _simulation_index(run) -> int:
    return int(run.data.tags.get(SIMULATION_TAG, 0))


def _read_word_table(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, index_col="word", keep_default_na=False, na_values=[""])


def _write_failures(folder: Path, failures: list[str]) -> Path:
    text = "".join(f"{failure}\n" for failure in failures) or "none: every simulation finished\n"
    return _write_text(folder / "failures.txt", text)


def _write_csv(table: pd.DataFrame, path: Path) -> Path:
    with _atomic_path(path) as temporary:
        table.to_csv(temporary, index=False)
    return path


def _write_text(path: Path, text: str) -> Path:
    with _atomic_path(path) as temporary:
        temporary.write_text(text)
    return path


@contextlib.contextmanager
def _atomic_path(path: Path) -> Iterator[Path]:
    """A temporary file beside `path` that replaces it once written; removed on error. Created with mode 0666 less
    the umask, as `open` creates files (mkstemp's 0600 would leave the results readable by their owner alone)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _log_metrics(client: MlflowClient, run_id: str, metrics: dict[str, float]) -> None:
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(key, float(value), now, 0) for key, value in metrics.items()])
