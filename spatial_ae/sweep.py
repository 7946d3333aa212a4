"""The sweep step: a grid of recipe x position_loss_weight x labelled clips per word, each cell a child run
holding `num_simulations` simulations (the workflow's), on one shared featurize run.

An encoder is pretrained once per (recipe, weight, simulation) and evaluated at every labelled size; the MFCC
baselines are trained once per (labelled size, simulation) and their metrics logged in every cell.
Output, written to `results_path` and logged on the sweep's run: `sweep.csv` (one row per recipe, weight,
labelled_per_word, simulation and model, with its accuracy) and `label_efficiency.png` (mean accuracy
against labelled clips per word with 95% t confidence bands over the simulations).
"""
from __future__ import annotations

import logging
from pathlib import Path

import mlflow
import pandas as pd

from . import tracking
from .evaluate import EMBEDDING_DNN, MFCC_CNN, MFCC_DNN
from .featurize import featurize, load_feature_set
from .recipes import resolve_recipe
from .summarize import describe
from .workflow import SimulationsFailed, run_simulation, workflow_key

log = logging.getLogger(__name__)

SWEEP, CELL = "sweep", "sweep_cell"
MODELS = (EMBEDDING_DNN, MFCC_DNN, MFCC_CNN)
CSV_NAME, FIGURE_NAME = "sweep.csv", "label_efficiency.png"


def parse_list(text: str, kind: type, name: str) -> list:
    """`a,b,c` as a list of `kind`."""
    try:
        values = [kind(item.strip()) for item in str(text).split(",") if item.strip()]
    except ValueError:
        raise ValueError(f"{name}={text!r}: expected a comma-separated list of {kind.__name__}") from None
    if not values:
        raise ValueError(f"{name} is empty")
    return values


def sweep(dataset: str, unlabeled_set_size: int, lbl_trai_size: int, lbl_test_size: int,
          synthetic_clips_per_word: int, seed: int, embedding_dim: int, ae_epochs: int, patience: int,
          optimizer: str, batch_size: int, dnn_epochs: int, cnn_epochs: int, recipes: str,
          position_loss_weights: str, labelled_per_word: str, num_simulations: int, results_path: str,
          standardize_inputs: bool | None = None, standardize_positions: bool | None = None,
          position_features: str | None = None, num_anchors: int | None = None,
          balance_losses: bool | None = None) -> str:
    """Run the grid; returns the sweep's run id. Options given explicitly override every recipe's."""
    params = dict(locals())
    grid = (parse_list(recipes, str, "recipes"), parse_list(position_loss_weights, float, "position_loss_weights"),
            parse_list(labelled_per_word, int, "labelled_per_word"))
    overrides = dict(standardize_inputs=standardize_inputs, standardize_positions=standardize_positions,
                     position_features=position_features, num_anchors=num_anchors, balance_losses=balance_losses)
    tracking.check_tracking_server()
    with tracking.step_run(SWEEP, params, run_name="sweep") as parent:
        featurize_run_id = featurize(dataset, unlabeled_set_size, lbl_trai_size, lbl_test_size,
                                     synthetic_clips_per_word, seed)
        mlflow.set_tag("featurize_run_id", featurize_run_id)
        feature_set = load_feature_set(featurize_run_id)
        cache: dict = {}  # one pretraining per (recipe, weight, simulation); MFCC baselines once per sample
        rows, failed = [], []
        for recipe in grid[0]:
            for weight in grid[1]:
                options = resolve_recipe(recipe, position_loss_weight=weight, **overrides)
                pretrain_settings = dict(embedding_dim=embedding_dim, ae_epochs=ae_epochs, patience=patience,
                                         optimizer=optimizer, batch_size=batch_size, **options)
                for per_word in grid[2]:
                    evaluate_settings = dict(dnn_epochs=dnn_epochs, cnn_epochs=cnn_epochs, patience=patience,
                                             lbl_trai_size=lbl_trai_size, labelled_per_word=per_word)
                    cell = dict(recipe=recipe, weight=weight, labelled_per_word=per_word)
                    rows += _run_cell(feature_set, featurize_run_id, cell, pretrain_settings, evaluate_settings,
                                      num_simulations, seed, cache, failed)
        if not rows:
            raise SimulationsFailed("no simulation of the sweep finished: " + "; ".join(failed))
        table = pd.DataFrame(rows, columns=["recipe", "weight", "labelled_per_word", "simulation", "model",
                                            "accuracy"])
        folder = Path(results_path)
        folder.mkdir(parents=True, exist_ok=True)
        table.to_csv(folder / CSV_NAME, index=False)
        from .plots import save_png

        save_png(label_efficiency_figure(table), folder / FIGURE_NAME)
        mlflow.log_artifact(str(folder / CSV_NAME))
        mlflow.log_artifact(str(folder / FIGURE_NAME))
        log.info("sweep: %d rows, results in %s", len(table), folder)
        if failed:
            raise SimulationsFailed(f"{len(failed)} simulations failed: " + "; ".join(failed))
        return parent.info.run_id


def _run_cell(feature_set, featurize_run_id, cell, pretrain_settings, evaluate_settings, num_simulations, seed,
              cache, failed) -> list[dict]:
    """One grid cell (a child run): its simulations; returns their accuracy rows."""
    key = workflow_key(featurize_run_id, pretrain_settings | evaluate_settings | {"seed": seed})
    name = f"{cell['recipe']}-w{cell['weight']:g}-lpw{cell['labelled_per_word']}"
    rows = []
    with tracking.step_run(CELL, pretrain_settings | evaluate_settings | {"seed": seed}, run_name=name, key=key):
        for index in range(1, num_simulations + 1):
            try:
                run_id = run_simulation(feature_set, featurize_run_id, key, index, seed + index - 1,
                                        pretrain_settings, evaluate_settings, cache)
            except Exception as error:  # noqa: BLE001 - keep the other simulations
                log.exception("%s simulation %d failed", name, index)
                failed.append(f"{name} simulation {index}: {type(error).__name__}: {error}")
                continue
            metrics = mlflow.get_run(run_id).data.metrics
            rows += [{**cell, "simulation": index, "model": model, "accuracy": metrics[f"{model}_accuracy"]}
                     for model in MODELS]
        cell_table = pd.DataFrame(rows)
        if len(cell_table):
            mlflow.log_metrics({f"mean_{model}_accuracy": group.mean()
                                for model, group in cell_table.groupby("model")["accuracy"]})
    return rows


def efficiency_table(table: pd.DataFrame) -> pd.DataFrame:
    """Mean accuracy and 95% t CI per line (each AE configuration, and each baseline pooled over the cells,
    as its samples are the same in every cell) and labelled clips per word."""
    encoders = table[table["model"] == EMBEDDING_DNN].assign(
        line=lambda t: t["recipe"] + " AE, position weight " + t["weight"].map("{:g}".format))
    baselines = (table[table["model"] != EMBEDDING_DNN]
                 .groupby(["model", "labelled_per_word", "simulation"], as_index=False)["accuracy"].mean()
                 .assign(line=lambda t: t["model"]))
    lines = pd.concat([encoders, baselines], ignore_index=True)
    return pd.DataFrame([{"line": line, "labelled_per_word": per_word, **describe(group["accuracy"])}
                         for (line, per_word), group in lines.groupby(["line", "labelled_per_word"])])


def label_efficiency_figure(table: pd.DataFrame):
    """Accuracy against labelled clips per word, one line per configuration, 95% t bands."""
    import matplotlib.pyplot as plt

    stats = efficiency_table(table)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for line, group in stats.groupby("line"):
        group = group.sort_values("labelled_per_word")
        ax.errorbar(group["labelled_per_word"], group["mean"], marker="o", capsize=3, label=line,
                    yerr=[group["mean"] - group["ci95_low"], group["ci95_high"] - group["mean"]])
        ax.fill_between(group["labelled_per_word"], group["ci95_low"], group["ci95_high"], alpha=0.2)
    ax.set_xlabel("labelled training clips per word")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"label efficiency ({int(table['simulation'].nunique())} simulations, 95% t bands)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
