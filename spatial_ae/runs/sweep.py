"""The sweep step: a grid of recipe x position_loss_weight x labelled clips per word, each cell a child run
holding `num_simulations` simulations (the workflow's), on one shared featurize run.

An encoder is pretrained once per (recipe, weight, simulation) and evaluated at every labelled size (the plain
auto-encoders, weight 0, of recipes that differ only in their position options are one); the MFCC
baselines are trained once per (labelled size, simulation) and their metrics logged in every cell. With
`parallel_simulations` > 1 (default: one worker process per core) worker k runs simulation k of every cell,
so that reuse holds there too.
Output, written to `results_path/<run name>-<id>/` (`results_path/latest` names the newest) and logged on the
sweep's run: `sweep.csv` (one row per recipe, weight, labelled_per_word, simulation and model, with its accuracy)
and `label_efficiency.png` (mean accuracy against labelled clips per word with 95% t confidence bands over the
simulations).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient

from spatial_ae.method.recipes import resolve_recipe
from spatial_ae.errors import SimulationsFailed
from spatial_ae.mlflow_io import tracking
from spatial_ae.names import EMBEDDING_DNN, MODELS
from spatial_ae.runs import parallel
from spatial_ae.runs.simulations import (Cache, Outcome, Simulation, configuration_key,
                                         run_groups)
from spatial_ae.settings import EvaluateSettings, PretrainSettings, SweepSettings
from spatial_ae.steps.featurize import featurize
from spatial_ae.steps.pretrain import check_anchors_of_run
from spatial_ae.steps.summarize import describe, run_results_folder

log = logging.getLogger(__name__)

SWEEP, CELL = "sweep", "sweep_cell"
CSV_NAME, FIGURE_NAME = "sweep.csv", "label_efficiency.png"
COLUMNS = ["recipe", "weight", "labelled_per_word", "simulation", "model", "accuracy"]


@dataclass(frozen=True)
class Cell:
    """One cell of the grid: its coordinates, the settings of its simulations and its reuse key."""
    recipe: str
    weight: float
    labelled_per_word: int
    pretrain: PretrainSettings
    evaluate: EvaluateSettings
    key: str

    @property
    def name(self) -> str:
        return f"{self.recipe}-w{self.weight:g}-lpw{self.labelled_per_word}"

    @property
    def coordinates(self) -> dict:
        return dict(recipe=self.recipe, weight=self.weight, labelled_per_word=self.labelled_per_word)

    def params(self, seed: int) -> dict:
        return self.pretrain.params() | self.evaluate.params() | {"seed": seed}

    def simulation(self, featurize_run_id: str, index: int, seed: int, parent_run_id: str) -> Simulation:
        return Simulation(featurize_run_id, self.pretrain, self.evaluate, self.key, index, seed + index - 1,
                          parent_run_id, label=f"{self.name} simulation {index}")


def sweep(settings: SweepSettings, cluster=None) -> str:
    """Run the grid; returns the sweep's run id. `cluster` (runs.spark.Cluster): featurize and the simulations
    run there, task k = simulation k of every cell; else worker k (or this process) does."""
    master = "" if cluster is None else cluster.master
    processes = parallel.simulation_processes(settings.parallel_simulations, settings.num_simulations)
    tracking.check_tracking_server()
    with tracking.step_run(SWEEP, settings.params() | {"spark_master": master}, run_name="sweep") as parent:
        featurize_run_id = featurize(settings.featurize, cluster)
        mlflow.set_tag("featurize_run_id", featurize_run_id)
        cells = grid_cells(featurize_run_id, settings)
        check_anchors_of_run(featurize_run_id, [cell.pretrain.recipe for cell in cells])  # before any training
        if processes > 1 or master:
            rows, failed = _run_in_workers(parent.info.run_id, featurize_run_id, cells, settings, processes, master)
        else:
            rows, failed = _run_here(featurize_run_id, cells, settings)
        if not rows:
            raise SimulationsFailed("no simulation of the sweep finished: " + "; ".join(failed))
        table = (pd.DataFrame(rows, columns=COLUMNS)
                 .sort_values(["recipe", "weight", "labelled_per_word", "simulation"], kind="stable"))
        folder = run_results_folder(settings.results_path, mlflow.get_run(parent.info.run_id))
        table.to_csv(folder / CSV_NAME, index=False)
        from spatial_ae.steps.plots import save_png

        save_png(label_efficiency_figure(table), folder / FIGURE_NAME)
        mlflow.log_artifact(str(folder / CSV_NAME))
        mlflow.log_artifact(str(folder / FIGURE_NAME))
        log.info("sweep: %d rows, results in %s", len(table), folder)
        if failed:
            raise SimulationsFailed(f"{len(failed)} simulations failed: " + "; ".join(failed))
        return parent.info.run_id


def grid_cells(featurize_run_id: str, settings: SweepSettings) -> list[Cell]:
    """The cells of recipe x weight x labelled clips per word, with the settings of their simulations."""
    cells = []
    for recipe in settings.recipes:
        for weight in settings.position_loss_weights:
            pretrain = replace(settings.pretrain, recipe=resolve_recipe(
                recipe, **(dict(settings.given) | {"position_loss_weight": weight})))
            for per_word in settings.labelled_per_word:
                evaluate = replace(settings.evaluate, labelled_per_word=per_word)
                key = configuration_key(featurize_run_id, pretrain.params() | evaluate.params()
                                        | {"seed": settings.featurize.seed})
                cells.append(Cell(recipe, weight, per_word, pretrain, evaluate, key))
    return cells


def _rows(cells: list[Cell], outcomes: list[Outcome]) -> tuple[list[dict], list[str]]:
    """The accuracy rows of the finished simulations (read from their runs) and the failures."""
    by_key = {cell.key: cell for cell in cells}
    client = MlflowClient()
    rows = []
    for outcome in outcomes:
        if outcome.run_id is not None:
            metrics = client.get_run(outcome.run_id).data.metrics
            rows += [{**by_key[outcome.simulation.key].coordinates, "simulation": outcome.simulation.index,
                      "model": model, "accuracy": metrics[f"{model}_accuracy"]} for model in MODELS]
    return rows, [outcome.failure for outcome in outcomes if outcome.failure is not None]


def _cell_means(rows: list[dict]) -> dict[str, float]:
    table = pd.DataFrame(rows)
    if table.empty:
        return {}
    return {f"mean_{model}_accuracy": group.mean() for model, group in table.groupby("model")["accuracy"]}


def _run_here(featurize_run_id: str, cells: list[Cell], settings: SweepSettings):
    """Every cell one after the other in this process, each a child run holding its simulations; one cache, so
    that an encoder or a baseline is trained once for all the cells that share it."""
    parallel.configure_threads(1)
    cache = Cache()
    rows, failed = [], []
    progress = parallel.Progress(len(cells) * settings.num_simulations, "cell simulation")
    for cell in cells:
        seed = settings.featurize.seed
        with tracking.step_run(CELL, cell.params(seed), run_name=cell.name, key=cell.key) as run:
            groups = {index: [cell.simulation(featurize_run_id, index, seed, run.info.run_id)]
                      for index in range(1, settings.num_simulations + 1)}
            cell_rows, cell_failed = _rows(cells, run_groups(groups, 1, progress=progress, cache=cache))
            mlflow.log_metrics(_cell_means(cell_rows))
        rows += cell_rows
        failed += cell_failed
    return rows, failed


def _run_in_workers(sweep_run_id: str, featurize_run_id: str, cells: list[Cell], settings: SweepSettings,
                    processes: int, master: str = ""):
    """The cells' runs opened here; worker (or Spark task) k runs simulation k of every cell (so it reuses its
    encoders and baselines across cells), nested under the cells' runs, which close when all are done."""
    client = MlflowClient()
    seed = settings.featurize.seed
    cell_runs = {cell.name: tracking.start_child_run(sweep_run_id, CELL, cell.params(seed), cell.name, cell.key)
                 for cell in cells}
    groups = {index: [cell.simulation(featurize_run_id, index, seed, cell_runs[cell.name]) for cell in cells]
              for index in range(1, settings.num_simulations + 1)}
    status = "FAILED"
    try:
        progress = parallel.Progress(settings.num_simulations, f"simulation (of all {len(cells)} cells)")
        rows, failed = _rows(cells, run_groups(groups, processes, master, progress))
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
