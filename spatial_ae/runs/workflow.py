"""The main workflow: featurize (reused when cached) -> simulations x (pretrain -> evaluate) -> summarize.

Everything is nested under one parent run. Finished simulations of the same configuration are reused,
so a stopped workflow resumes where it stopped; a failed simulation does not lose the others, but marks
the parent run failed. Simulations run in parallel worker processes (`parallel_simulations`, see
`spatial_ae.runs.parallel`) or one after the other in this process.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool

import mlflow

from spatial_ae.runs import parallel
from spatial_ae.mlflow_io import tracking
from spatial_ae.method import training
from spatial_ae.errors import UserError
from spatial_ae.steps.evaluate import evaluate_encoder
from spatial_ae.steps.featurize import featurize, load_feature_set
from spatial_ae.params import AE_MIN_EPOCHS
from spatial_ae.steps.pretrain import check_anchors_of_run, train_and_register
from spatial_ae.method.recipes import encoder_identity, resolve_recipe

log = logging.getLogger(__name__)

SIMULATION = "simulation"
WORKFLOW_TAG = "spatial_ae.workflow_key"
SIMULATION_TAG = "spatial_ae.simulation"


class SimulationsFailed(RuntimeError):
    """Some simulations failed; the others' results are kept and summarised."""


def workflow_key(featurize_run_id: str, settings: dict) -> str:
    text = json.dumps({"featurize_run_id": featurize_run_id, **settings}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:20]


def main(dataset: str, unlabeled_set_size: int, lbl_trai_size: int, lbl_test_size: int,
         synthetic_clips_per_word: int, seed: int, ae_epochs: int, patience: int,
         optimizer: str, batch_size: int, dnn_epochs: int, cnn_epochs: int, num_simulations: int,
         results_path: str, recipe: str = "paper", labelled_per_word: int = 0, parallel_simulations: int = 0,
         include_unknown_silence: bool = False, ae_min_epochs: int = AE_MIN_EPOCHS, spark_master: str = "",
         **recipe_options) -> str:
    """Run the whole experiment; returns the parent run id. The recipe's options are resolved (and logged)
    here; explicit options override the recipe. `parallel_simulations`: worker processes (0 = one per core);
    `spark_master`: featurize and the simulations run on that Spark cluster instead (spatial_ae.runs.spark)."""
    from spatial_ae.runs import spark
    from spatial_ae.steps.summarize import summarize_workflow

    options = resolve_recipe(recipe, **recipe_options)
    params = {name: value for name, value in locals().items()
              if name not in ("summarize_workflow", "options", "recipe_options")} | options
    tracking.check_tracking_server()
    spark.check(spark_master)
    with tracking.step_run("main", params, run_name="main") as parent:
        featurize_run_id = featurize(dataset, unlabeled_set_size, lbl_trai_size, lbl_test_size,
                                     synthetic_clips_per_word, seed, include_unknown_silence, spark_master)
        check_anchors_of_run(featurize_run_id, [options])  # before any training
        pretrain_settings = dict(ae_epochs=ae_epochs, ae_min_epochs=ae_min_epochs, patience=patience,
                                 optimizer=optimizer, batch_size=batch_size, **options)
        evaluate_settings = dict(dnn_epochs=dnn_epochs, cnn_epochs=cnn_epochs, patience=patience,
                                 lbl_trai_size=lbl_trai_size, labelled_per_word=labelled_per_word)
        key = workflow_key(featurize_run_id, pretrain_settings | evaluate_settings | {"seed": seed})
        mlflow.set_tags({"featurize_run_id": featurize_run_id, WORKFLOW_TAG: key})
        simulations = {index: (featurize_run_id, key, index, seed + index - 1, pretrain_settings, evaluate_settings)
                       for index in range(1, num_simulations + 1)
                       if finished_simulation(key, index) is None}
        failed = run_simulations(parent.info.run_id, simulations,
                                 parallel.simulation_processes(parallel_simulations, len(simulations)), spark_master)
        summarize_workflow(parent.info.run_id, results_path, failures=failed)
        if failed:
            raise SimulationsFailed(f"{len(failed)} of {num_simulations} simulations failed: " + "; ".join(failed))
        return parent.info.run_id


def run_simulations(parent_run_id: str, simulations: dict[int, tuple], processes: int,
                    spark_master: str = "") -> list[str]:
    """Run the simulations {index: (featurize_run_id, key, index, seed, pretrain_settings, evaluate_settings)}
    under the parent run, here (processes = 1), in worker processes or as Spark tasks (`spark_master`); returns
    the failures, one line each."""
    if processes > 1 or spark_master:
        log.info("running %d simulations %s", len(simulations),
                 f"on Spark {spark_master}" if spark_master else f"in {processes} worker processes")
        tasks = {index: (*arguments, parent_run_id) for index, arguments in simulations.items()}
        return run_in_workers(tasks, _simulation_in_worker, processes, [parent_run_id], Progress(len(tasks)),
                              spark_master=spark_master)
    parallel.configure_threads(1)
    failed = []
    progress = Progress(len(simulations))
    for index, arguments in simulations.items():
        try:
            run_simulation(feature_set_of(arguments[0]), *arguments)
        except Exception as error:  # noqa: BLE001 - keep the other simulations
            failed.append(failure_line(f"simulation {index}", error))
            progress.finished(failures=1)
        else:
            progress.finished()
    return failed


class Progress:
    """The workflow's progress, one log line per finished simulation in the process that runs them (workers log
    their epochs at DEBUG only): "simulation 3/10 done (1 failed), elapsed 1:12, ETA 2:40"."""

    def __init__(self, total: int, what: str = "simulation"):
        self.total, self.what, self.done, self.failures = total, what, 0, 0
        self.start = time.monotonic()

    def finished(self, failures: int = 0) -> None:
        self.done += 1
        self.failures += failures
        elapsed = time.monotonic() - self.start
        failed = f" ({self.failures} failed)" if self.failures else ""
        log.info("%s %d/%d done%s, elapsed %s, ETA %s", self.what, self.done, self.total, failed, _clock(elapsed),
                 _clock(elapsed / self.done * (self.total - self.done)))


def _clock(seconds: float) -> str:
    """Seconds as m:ss, or h:mm:ss from an hour."""
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


def failure_line(what: str, error: BaseException, hint: str = "") -> str:
    """Log a failure with its traceback; returns it as one line for the run's summary."""
    log.error("%s failed%s", what, hint, exc_info=error)
    return f"{what}: {type(error).__name__}: {error}{hint}"


WORKER_DIED = (" (a worker process died: killed from outside or out of memory? Run the same command again to "
               "resume; parallel_simulations=1 needs the least memory)")


def run_in_workers(tasks: dict[int, tuple], function, processes: int, parent_run_ids: list[str],
                   progress: Progress, on_result=None, spark_master: str = "") -> list[str]:
    """`function(*tasks[index])` in worker processes set up as this one (store, experiment, training path, log
    level, thread pools); `on_result(index, value)` for each that returns, returning the failures counted inside
    it, if any; `progress` told of each. Returns the failures, one line each. With `spark_master` each task is a
    Spark task instead, on an executor set up the same way (spatial_ae.runs.spark).
    Runs that a dead or stopped worker left RUNNING under `parent_run_ids` are closed (FAILED, or KILLED)."""
    failed = []

    def collect(index: int, future: Future) -> None:
        try:
            value = future.result()
        except Exception as error:  # noqa: BLE001 - keep the other simulations
            hint = WORKER_DIED if isinstance(error, BrokenProcessPool) else ""
            failed.append(failure_line(f"simulation {index}", error, hint))
            progress.finished(failures=1)
        else:
            progress.finished(failures=on_result(index, value) if on_result else 0)

    worker_setup = (mlflow.get_tracking_uri(), mlflow.active_run().info.experiment_id, training.TRAINING_PATH,
                    processes, logging.getLogger("spatial_ae").getEffectiveLevel())
    interrupted = False
    try:
        if spark_master:  # one Spark task per task, on executors set up as the workers
            from spatial_ae.runs.spark import run_in_spark

            run_in_spark(spark_master, tasks, function, _start_worker, worker_setup, collect, parent_run_ids)
        else:
            parallel.run_in_processes(tasks, function, processes, _start_worker, worker_setup, collect)
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:  # a worker that died (killed, out of memory) could not close its run
        for parent_run_id in parent_run_ids:
            tracking.close_running_children(parent_run_id, "KILLED" if interrupted else "FAILED")
    return failed


_FEATURE_SETS: dict = {}  # featurize run id -> FeatureSet, loaded once per process


def feature_set_of(featurize_run_id: str):
    """The feature set of a featurize run, loaded once per process."""
    if featurize_run_id not in _FEATURE_SETS:
        _FEATURE_SETS[featurize_run_id] = load_feature_set(featurize_run_id)
    return _FEATURE_SETS[featurize_run_id]


def _start_worker(tracking_uri: str, experiment_id: str, training_path: str, processes: int,
                  log_level: int) -> None:
    """Set up a worker process: the parent's store and experiment, its log level, training path and threads."""
    from spatial_ae.cli import LOG_FORMAT, configure_logging, enable_crash_reports

    parallel.die_with_parent()  # no orphan may take queued simulations after `main` was killed
    os.environ.pop("MLFLOW_RUN_ID", None)  # the parent's run (under `mlflow run`) is not this process's run
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment_id=experiment_id)
    configure_logging(log_level, LOG_FORMAT.replace("%(name)s", "%(processName)s %(name)s"))
    # TensorFlow, imported with this module while the root logger had no handler, gave its logger a handler of
    # its own: without this its messages would come twice
    logging.getLogger("tensorflow").handlers.clear()
    enable_crash_reports()
    training.TRAINING_PATH = training_path
    parallel.configure_threads(processes)


def _simulation_in_worker(featurize_run_id: str, key: str, index: int, seed: int, pretrain_settings: dict,
                          evaluate_settings: dict, parent_run_id: str) -> str:
    """One simulation in a worker process, nested under the parent run of the main process."""
    return run_simulation(feature_set_of(featurize_run_id), featurize_run_id, key, index, seed,
                          pretrain_settings, evaluate_settings, parent_run_id=parent_run_id)


def finished_simulation(key: str, index: int) -> mlflow.entities.Run | None:
    """The finished run of simulation `index` of the workflow `key`, if there is one (logged as reused)."""
    previous = tracking.find_finished_run(SIMULATION, f"{key}-{index}")
    if previous is not None:
        log.info("simulation %d: reusing finished run %s", index, previous.info.run_id)
    return previous


def run_simulation(feature_set, featurize_run_id: str, key: str, index: int, seed: int,
                   pretrain_settings: dict, evaluate_settings: dict, cache: dict | None = None,
                   parent_run_id: str | None = None) -> str:
    """One simulation (a child run): pretrain a fresh auto-encoder, evaluate it; reused if already finished.

    `cache` (optional, kept by the caller across simulations of one feature set) holds the registered encoder
    of each (pretrain settings, seed) and the MFCC baselines of each labelled sample: an encoder pretrained by
    an earlier simulation with the same settings and seed is evaluated again instead of retrained, and the
    baselines are not retrained. `parent_run_id`: the main run, when this runs in a worker process.
    """
    simulation_key = f"{key}-{index}"
    with tracking.claimed(simulation_key):  # the same simulation of an identical workflow at once: wait, reuse
        previous = finished_simulation(key, index)
        if previous is not None:
            return previous.info.run_id
        params = {"simulation": index, "seed": seed, "featurize_run_id": featurize_run_id,
                  **pretrain_settings, **evaluate_settings}
        with tracking.step_run(SIMULATION, params, run_name=f"simulation-{index:02d}", key=simulation_key,
                               tags={WORKFLOW_TAG: key, SIMULATION_TAG: str(index)}, parent_run_id=parent_run_id) as run:
            encoder_key = json.dumps({**encoder_identity(pretrain_settings), "seed": seed}, sort_keys=True)
            encoder_uri = (cache or {}).get(encoder_key)
            if encoder_uri is None:
                log.info("simulation %d (seed %d): pretraining", index, seed)
                encoder_uri = train_and_register(feature_set, featurize_run_id=featurize_run_id, seed=seed,
                                                 **pretrain_settings)
                if cache is not None:
                    cache[encoder_key] = encoder_uri
            mlflow.set_tag("encoder_uri", encoder_uri)
            log.info("simulation %d: evaluating %s", index, encoder_uri)
            evaluate_encoder(feature_set, featurize_run_id=featurize_run_id, encoder_uri=encoder_uri, seed=seed,
                             baselines=cache, **evaluate_settings)
            return run.info.run_id


def simulation_runs(parent_run_id: str) -> list[mlflow.entities.Run]:
    """The finished simulation runs of a main run's configuration (its own and reused ones), one per index."""
    parent = mlflow.get_run(parent_run_id)
    key = parent.data.tags.get(WORKFLOW_TAG)
    if key is None:
        raise UserError(f"run {parent_run_id} is not a main run (it has no {WORKFLOW_TAG} tag)")
    runs = mlflow.tracking.MlflowClient().search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`{WORKFLOW_TAG}` = '{key}' and tags.`{tracking.STEP_TAG}` = '{SIMULATION}' "
                      f"and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time ASC"], max_results=10000)
    by_index = {}
    for run in runs:
        by_index[int(run.data.tags[SIMULATION_TAG])] = run  # newest wins
    return [by_index[index] for index in sorted(by_index)]
