"""The main workflow: featurize (reused when cached) -> simulations x (pretrain -> evaluate) -> summarize.

Everything is nested under one parent run. Finished simulations of the same configuration are reused, so a
stopped workflow resumes where it stopped; a failed simulation does not lose the others, but marks the parent run
failed. Simulations run in worker processes (`parallel_simulations`), as Spark tasks, or one after the other here.
"""
from __future__ import annotations

import logging

import mlflow

from spatial_ae.errors import SimulationsFailed
from spatial_ae.mlflow_io import tracking
from spatial_ae.names import WORKFLOW_TAG
from spatial_ae.runs import parallel
from spatial_ae.runs.simulations import Simulation, configuration_key, run_groups
from spatial_ae.settings import MainSettings
from spatial_ae.steps.featurize import featurize
from spatial_ae.steps.pretrain import check_anchors_of_run
from spatial_ae.steps.summarize import summarize_workflow

log = logging.getLogger(__name__)


def main(settings: MainSettings, cluster=None) -> str:
    """Run the whole experiment; returns the parent run id. `cluster` (runs.spark.Cluster): featurize and the
    simulations run there instead of here and in worker processes."""
    master = "" if cluster is None else cluster.master
    tracking.check_tracking_server()
    with tracking.step_run("main", settings.params() | {"spark_master": master}, run_name="main") as parent:
        featurize_run_id = featurize(settings.featurize, cluster)
        check_anchors_of_run(featurize_run_id, [settings.pretrain.recipe])  # before any training
        seed = settings.featurize.seed
        key = configuration_key(featurize_run_id, settings.pretrain.params() | settings.evaluate.params()
                                | {"seed": seed})
        mlflow.set_tags({"featurize_run_id": featurize_run_id, WORKFLOW_TAG: key})
        simulations = [Simulation(featurize_run_id, settings.pretrain, settings.evaluate, key, index,
                                  seed + index - 1, parent.info.run_id, label=f"simulation {index}")
                       for index in range(1, settings.num_simulations + 1)]
        groups = {simulation.index: [simulation] for simulation in simulations if simulation.finished_run() is None}
        processes = parallel.simulation_processes(settings.parallel_simulations, len(groups))
        outcomes = run_groups(groups, processes, master)
        failed = [outcome.failure for outcome in outcomes if outcome.failure is not None]
        summarize_workflow(parent.info.run_id, settings.results_path, failures=failed)
        if failed:
            raise SimulationsFailed(f"{len(failed)} of {settings.num_simulations} simulations failed: "
                                    + "; ".join(failed))
        return parent.info.run_id
