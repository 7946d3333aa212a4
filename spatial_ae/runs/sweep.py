"""The sweep step: a grid of recipe x position_loss_weight x labelled clips per word, each cell a child run
holding `num_simulations` simulations (the workflow's), on one shared featurize run.

An encoder is pretrained once per (recipe, weight, simulation) and evaluated at every labelled size (the plain
auto-encoders, weight 0, of recipes that differ only in their position options are one); the MFCC
baselines are trained once per (labelled size, simulation) and their metrics logged in every cell. With
`parallel_simulations` > 1 (default: one worker process per core) worker k runs simulation k of every cell,
so that reuse holds there too.
Output, written to `results_path/<run name>-<id>/` (`results_path/latest` names the newest) and logged on the sweep's run: `sweep.csv` (one row per recipe, weight,
labelled_per_word, simulation and model, with its accuracy) and `label_efficiency.png` (mean accuracy
against labelled clips per word with 95% t confidence bands over the simulations).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient

from spatial_ae.runs import parallel
from spatial_ae.runs import spark
from spatial_ae.mlflow_io import tracking
from spatial_ae.steps.evaluate import EMBEDDING_DNN, MFCC_CNN, MFCC_DNN
from spatial_ae.steps.featurize import featurize
from spatial_ae.params import AE_MIN_EPOCHS
from spatial_ae.steps.pretrain import check_anchors_of_run
from spatial_ae.method.recipes import resolve_recipe
from spatial_ae.steps.summarize import describe, run_results_folder
from spatial_ae.runs.workflow import (Progress, SimulationsFailed, failure_line, feature_set_of, run_in_workers, run_simulation,
                       workflow_key)

log = logging.getLogger(__name__)

SWEEP, CELL = "sweep", "sweep_cell"
MODELS = (EMBEDDING_DNN, MFCC_DNN, MFCC_CNN)
CSV_NAME, FIGURE_NAME = "sweep.csv", "label_efficiency.png"


GRID_PARAMS = ("recipes", "position_loss_weights", "labelled_per_word")


def parse_list(text, name: str) -> list:
    """The grid parameter `name` (`a,b,c` or a list) as a checked list, by its declaration in params.py
    (ParameterError, a one-line `error:`, for a bad item)."""
    return _grid_spec(name).parse(text)


def _grid_spec(name: str):
    from spatial_ae.params import STEPS

    return next(spec for spec in STEPS[SWEEP] if spec.name == name)


@dataclass(frozen=True)
class Cell:
    """One cell of the grid: its coordinates, the settings of its simulations and its reuse key."""
    recipe: str
    weight: float
    labelled_per_word: int
    pretrain_settings: dict
    evaluate_settings: dict
    key: str

    @property
    def name(self) -> str:
        return f"{self.recipe}-w{self.weight:g}-lpw{self.labelled_per_word}"

    @property
    def coordinates(self) -> dict:
        return dict(recipe=self.recipe, weight=self.weight, labelled_per_word=self.labelled_per_word)


def sweep(dataset: str, unlabeled_set_size: int, lbl_trai_size: int, lbl_test_size: int,
          synthetic_clips_per_word: int, seed: int, ae_epochs: int, patience: int,
          optimizer: str, batch_size: int, dnn_epochs: int, cnn_epochs: int, recipes: list[str] | str,
          position_loss_weights: list[float] | str, labelled_per_word: list[int] | str, num_simulations: int,
          results_path: str, parallel_simulations: int = 0, include_unknown_silence: bool = False,
          ae_min_epochs: int = AE_MIN_EPOCHS, spark_master: str = "", **recipe_options) -> str:
    """Run the grid; returns the sweep's run id. Options given explicitly override every recipe's.
    `parallel_simulations`: worker processes (0 = one per core); worker k runs simulation k of every cell.
    `spark_master`: featurize and the simulations run on that Spark cluster, task k = simulation k of every cell."""
    params = {name: value for name, value in locals().items() if name != "recipe_options"} | recipe_options
    overrides = recipe_options
    grid = tuple(parse_list(params[name], name) for name in GRID_PARAMS)
    params.update({name: _grid_spec(name).text(values) for name, values in zip(GRID_PARAMS, grid)})  # logged as given
    settings = dict(ae_epochs=ae_epochs, ae_min_epochs=ae_min_epochs, patience=patience,
                    optimizer=optimizer, batch_size=batch_size, dnn_epochs=dnn_epochs, cnn_epochs=cnn_epochs, lbl_trai_size=lbl_trai_size)
    processes = parallel.simulation_processes(parallel_simulations, num_simulations)
    tracking.check_tracking_server()
    spark.check(spark_master)
    with tracking.step_run(SWEEP, params, run_name="sweep") as parent:
        featurize_run_id = featurize(dataset, unlabeled_set_size, lbl_trai_size, lbl_test_size,
                                     synthetic_clips_per_word, seed, include_unknown_silence, spark_master)
        mlflow.set_tag("featurize_run_id", featurize_run_id)
        cells = grid_cells(featurize_run_id, grid, settings, overrides, seed)
        check_anchors_of_run(featurize_run_id, [cell.pretrain_settings for cell in cells])  # before any training
        if processes > 1 or spark_master:
            rows, failed = _run_in_workers(parent.info.run_id, featurize_run_id, cells, num_simulations, seed,
                                           processes, spark_master)
        else:
            rows, failed = _run_here(featurize_run_id, cells, num_simulations, seed)
        if not rows:
            raise SimulationsFailed("no simulation of the sweep finished: " + "; ".join(failed))
        table = (pd.DataFrame(rows, columns=["recipe", "weight", "labelled_per_word", "simulation", "model",
                                             "accuracy"])
                 .sort_values(["recipe", "weight", "labelled_per_word", "simulation"], kind="stable"))
        folder = run_results_folder(results_path, mlflow.get_run(parent.info.run_id))
        table.to_csv(folder / CSV_NAME, index=False)
        from spatial_ae.steps.plots import save_png

        save_png(label_efficiency_figure(table), folder / FIGURE_NAME)
        mlflow.log_artifact(str(folder / CSV_NAME))
        mlflow.log_artifact(str(folder / FIGURE_NAME))
        log.info("sweep: %d rows, results in %s", len(table), folder)
        if failed:
            raise SimulationsFailed(f"{len(failed)} simulations failed: " + "; ".join(failed))
        return parent.info.run_id


def grid_cells(featurize_run_id: str, grid: tuple[list, list, list], settings: dict, overrides: dict,
               seed: int) -> list[Cell]:
    """The cells of recipe x weight x labelled clips per word, with the settings of their simulations."""
    cells = []
    for recipe in grid[0]:
        for weight in grid[1]:
            options = resolve_recipe(recipe, position_loss_weight=weight, **overrides)
            pretrain_settings = {name: settings[name] for name in
                                 ("ae_epochs", "ae_min_epochs", "patience", "optimizer",
                                  "batch_size")} | options
            for per_word in grid[2]:
                evaluate_settings = {name: settings[name] for name in
                                     ("dnn_epochs", "cnn_epochs", "patience", "lbl_trai_size")}
                evaluate_settings["labelled_per_word"] = per_word
                key = workflow_key(featurize_run_id, pretrain_settings | evaluate_settings | {"seed": seed})
                cells.append(Cell(recipe, weight, per_word, pretrain_settings, evaluate_settings, key))
    return cells


def _cell_params(cell: Cell, seed: int) -> dict:
    return cell.pretrain_settings | cell.evaluate_settings | {"seed": seed}


def _cell_means(rows: list[dict]) -> dict[str, float]:
    table = pd.DataFrame(rows)
    if table.empty:
        return {}
    return {f"mean_{model}_accuracy": group.mean() for model, group in table.groupby("model")["accuracy"]}


def _cell_simulation(feature_set, featurize_run_id: str, cell: Cell, index: int, seed: int, cache: dict,
                     parent_run_id: str | None = None) -> tuple[list[dict], list[str]]:
    """Simulation `index` of a cell (a child run of the cell's run); returns its accuracy rows, or its failure.
    `cache` keeps the encoders and MFCC baselines of this simulation's seed across cells."""
    try:
        run_id = run_simulation(feature_set, featurize_run_id, cell.key, index, seed + index - 1,
                                cell.pretrain_settings, cell.evaluate_settings, cache, parent_run_id=parent_run_id)
    except Exception as error:  # noqa: BLE001 - keep the other simulations
        return [], [failure_line(f"{cell.name} simulation {index}", error)]
    metrics = MlflowClient().get_run(run_id).data.metrics
    return [{**cell.coordinates, "simulation": index, "model": model, "accuracy": metrics[f"{model}_accuracy"]}
            for model in MODELS], []


def _run_here(featurize_run_id: str, cells: list[Cell], num_simulations: int, seed: int):
    """Every cell one after the other in this process, each a child run holding its simulations."""
    parallel.configure_threads(1)
    feature_set = feature_set_of(featurize_run_id)
    cache: dict = {}  # one pretraining per (recipe, weight, simulation); MFCC baselines once per sample
    rows, failed = [], []
    progress = Progress(len(cells) * num_simulations, "cell simulation")
    for cell in cells:
        with tracking.step_run(CELL, _cell_params(cell, seed), run_name=cell.name, key=cell.key):
            cell_rows = []
            for index in range(1, num_simulations + 1):
                new_rows, failures = _cell_simulation(feature_set, featurize_run_id, cell, index, seed, cache)
                cell_rows += new_rows
                failed += failures
                progress.finished(failures=len(failures))
            mlflow.log_metrics(_cell_means(cell_rows))
        rows += cell_rows
    return rows, failed


def _run_in_workers(sweep_run_id: str, featurize_run_id: str, cells: list[Cell], num_simulations: int, seed: int,
                    processes: int, spark_master: str = ""):
    """The cells' runs opened here; worker k runs simulation k of every cell (so it reuses its encoders and
    baselines across cells), nested under the cells' runs, which close when all workers are done."""
    client = MlflowClient()
    cell_runs = {cell.name: tracking.start_child_run(sweep_run_id, CELL, _cell_params(cell, seed), cell.name,
                                                     cell.key) for cell in cells}
    rows, failed = [], []

    def collect(index: int, result: tuple[list[dict], list[str]]) -> int:
        rows.extend(result[0])
        failed.extend(result[1])
        return len(result[1])

    log.info("running simulations 1-%d of %d cells %s", num_simulations, len(cells),
             f"on Spark {spark_master}" if spark_master else f"in {processes} worker processes")
    tasks = {index: (featurize_run_id, cells, cell_runs, index, seed) for index in range(1, num_simulations + 1)}
    status = "FAILED"
    try:
        failed += run_in_workers(tasks, _simulations_in_worker, processes, list(cell_runs.values()),
                                 Progress(num_simulations, f"simulation (of all {len(cells)} cells)"), collect,
                                 spark_master=spark_master)
        for cell in cells:
            cell_rows = [row for row in rows if {name: row[name] for name in cell.coordinates} == cell.coordinates]
            for name, value in _cell_means(cell_rows).items():
                client.log_metric(cell_runs[cell.name], name, value)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        for run_id in cell_runs.values():
            client.set_terminated(run_id, status)
    return rows, failed


def _simulations_in_worker(featurize_run_id: str, cells: list[Cell], cell_runs: dict[str, str], index: int,
                           seed: int) -> tuple[list[dict], list[str]]:
    """Simulation `index` of every cell, in a worker process."""
    feature_set = feature_set_of(featurize_run_id)
    cache: dict = {}
    rows, failed = [], []
    for cell in cells:
        new_rows, failures = _cell_simulation(feature_set, featurize_run_id, cell, index, seed, cache,
                                              parent_run_id=cell_runs[cell.name])
        rows += new_rows
        failed += failures
    return rows, failed


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
    """Accuracy against labelled clips per word, one line per configuration (configurations whose accuracies
    are identical, such as the plain AEs that recipes share, drawn once), 95% t bands; legend beside the axes."""
    import matplotlib.pyplot as plt

    stats = efficiency_table(table)
    lines, seen = [], {}
    for line, group in stats.groupby("line"):
        group = group.sort_values("labelled_per_word")
        values = tuple(group["mean"].round(12))
        if values in seen:
            seen[values][1].append(line)
        else:
            seen[values] = (group, [line])
            lines.append(values)
    fig, ax = plt.subplots(figsize=(10, 5))
    colours = plt.get_cmap("tab20").colors
    for number, values in enumerate(lines):
        group, names = seen[values]
        colour = colours[number % len(colours)]
        ax.errorbar(group["labelled_per_word"], group["mean"], marker="o", capsize=3, color=colour,
                    label="\n= ".join(names), yerr=[group["mean"] - group["ci95_low"], group["ci95_high"] - group["mean"]])
        ax.fill_between(group["labelled_per_word"], group["ci95_low"], group["ci95_high"], alpha=0.12, color=colour)
    ax.set_xlabel("labelled training clips per word")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"label efficiency ({int(table['simulation'].nunique())} simulations, 95% t bands)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.subplots_adjust(left=0.08, right=0.68, bottom=0.11, top=0.92)
    return fig
