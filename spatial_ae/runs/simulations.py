"""Simulations, the one path `main` and `sweep` share: a simulation pretrains a fresh auto-encoder and evaluates
it in a child run, reused when an identical one finished; many run here, in worker processes or as Spark tasks.
"""
from __future__ import annotations

import hashlib
import json
import logging
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

import mlflow

from spatial_ae import lifecycle
from spatial_ae.mlflow_io import tracking
from spatial_ae.names import SIMULATION, SIMULATION_TAG, WORKFLOW_TAG
from spatial_ae.runs import parallel
from spatial_ae.settings import EvaluateSettings, PretrainSettings
from spatial_ae.steps.evaluate import evaluate_encoder
from spatial_ae.steps.featurize import FeatureSet, load_feature_set
from spatial_ae.steps.pretrain import train_and_register

log = logging.getLogger(__name__)

WORKER_DIED = (" (a worker process died: killed from outside or out of memory? Run the same command again to "
               "resume; parallel_simulations=1 needs the least memory)")


def configuration_key(featurize_run_id: str, params: dict) -> str:
    """The digest that names a configuration of simulations (its finished simulations are reused by it)."""
    text = json.dumps({"featurize_run_id": featurize_run_id, **params}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class Simulation:
    """Simulation `index` of the configuration `key`, with its own seed; picklable, so that a worker can run it.
    `parent_run_id`: the run it nests under (the main run, or a sweep cell's); `label` names it in failures."""
    featurize_run_id: str
    pretrain: PretrainSettings
    evaluate: EvaluateSettings
    key: str
    index: int
    seed: int
    parent_run_id: str
    label: str = ""

    def params(self) -> dict:
        return ({"simulation": self.index, "seed": self.seed, "featurize_run_id": self.featurize_run_id}
                | self.pretrain.params() | self.evaluate.params())

    def finished_run(self) -> mlflow.entities.Run | None:
        """This simulation's finished run, if an earlier (or concurrent) workflow made it (logged as reused)."""
        previous = tracking.find_finished_run(SIMULATION, f"{self.key}-{self.index}")
        if previous is not None:
            log.info("simulation %d: reusing finished run %s", self.index, previous.info.run_id)
        return previous


@dataclass
class Cache:
    """What the simulations of one process share within one workflow: the encoder pretrained for each (pretrain
    identity, seed) with its registered URI, retrained never, and the MFCC baselines of each labelled sample."""
    encoders: dict[str, tuple] = field(default_factory=dict)  # identity -> (registered URI, Keras encoder)
    baselines: dict = field(default_factory=dict)


_FEATURE_SETS: dict[str, FeatureSet] = {}  # featurize run id -> feature set, loaded once per process


def feature_set_of(featurize_run_id: str) -> FeatureSet:
    if featurize_run_id not in _FEATURE_SETS:
        _FEATURE_SETS[featurize_run_id] = load_feature_set(featurize_run_id)
    return _FEATURE_SETS[featurize_run_id]


def run_simulation(simulation: Simulation, cache: Cache) -> str:
    """Run one simulation (a child run of its parent): pretrain, or take the cached encoder, and evaluate;
    returns its run id (an identical finished simulation's, when there is one)."""
    key = f"{simulation.key}-{simulation.index}"
    with tracking.claimed(key):  # the same simulation of an identical workflow at once: wait, then reuse
        previous = simulation.finished_run()
        if previous is not None:
            return previous.info.run_id
        feature_set = feature_set_of(simulation.featurize_run_id)
        active = mlflow.active_run()
        nested_here = active is not None and active.info.run_id == simulation.parent_run_id
        with tracking.step_run(SIMULATION, simulation.params(), run_name=f"simulation-{simulation.index:02d}",
                               key=key, tags={WORKFLOW_TAG: simulation.key, SIMULATION_TAG: str(simulation.index)},
                               parent_run_id=None if nested_here else simulation.parent_run_id) as run:
            encoder_key = json.dumps({**simulation.pretrain.identity(), "seed": simulation.seed}, sort_keys=True)
            if encoder_key not in cache.encoders:
                log.info("simulation %d (seed %d): pretraining", simulation.index, simulation.seed)
                cache.encoders[encoder_key] = train_and_register(
                    feature_set, simulation.featurize_run_id, simulation.pretrain, simulation.seed)
            encoder_uri, encoder = cache.encoders[encoder_key]
            mlflow.set_tag("encoder_uri", encoder_uri)
            log.info("simulation %d: evaluating %s", simulation.index, encoder_uri)
            evaluate_encoder(feature_set, encoder_uri, simulation.evaluate, simulation.seed,
                             baselines=cache.baselines, encoder=encoder)
            return run.info.run_id


@dataclass(frozen=True)
class Outcome:
    """What became of a simulation: its run, or the one-line failure."""
    simulation: Simulation
    run_id: str | None = None
    failure: str | None = None


def run_group(simulations: list[Simulation], cache: Cache | None = None) -> list[Outcome]:
    """Run simulations one after the other sharing one cache; a failure does not stop the others."""
    cache = Cache() if cache is None else cache
    outcomes = []
    for simulation in simulations:
        try:
            outcomes.append(Outcome(simulation, run_id=run_simulation(simulation, cache)))
        except Exception as error:  # noqa: BLE001 - keep the other simulations
            outcomes.append(Outcome(simulation, failure=parallel.failure_line(simulation.label, error)))
    return outcomes


def run_groups(groups: dict[int, list[Simulation]], processes: int, spark_master: str = "",
               progress: parallel.Progress | None = None, cache: Cache | None = None) -> list[Outcome]:
    """Run the groups of simulations: here one after the other (processes = 1, sharing `cache`), else group k as
    task k of worker processes or of the Spark cluster `spark_master`, each group sharing its worker's cache.
    Runs that a dead or stopped worker left RUNNING under the simulations' parents are closed."""
    progress = progress or parallel.Progress(len(groups))
    outcomes: list[Outcome] = []
    if processes <= 1 and not spark_master:
        cache = Cache() if cache is None else cache
        for group in groups.values():
            found = run_group(group, cache)
            outcomes += found
            progress.finished(failures=sum(outcome.failure is not None for outcome in found))
        return outcomes

    def collect(index: int, future: Future) -> None:
        try:
            found = future.result()
        except Exception as error:  # noqa: BLE001 - keep the other groups
            hint = WORKER_DIED if isinstance(error, BrokenProcessPool) else ""
            found = [Outcome(simulation, failure=parallel.failure_line(simulation.label, error, hint))
                     for simulation in groups[index]]
        outcomes.extend(found)
        progress.finished(failures=sum(outcome.failure is not None for outcome in found))

    log.info("running %d simulations as %d tasks %s", sum(map(len, groups.values())), len(groups),
             f"on Spark {spark_master}" if spark_master else f"of {processes} worker processes")
    parents = sorted({simulation.parent_run_id for group in groups.values() for simulation in group})
    tasks = {index: (group,) for index, group in groups.items()}
    interrupted = False
    try:
        if spark_master:
            from spatial_ae.runs.spark import run_in_spark

            run_in_spark(spark_master, tasks, run_group, parallel.start_worker, parallel.worker_setup(processes),
                         collect, parents)
        else:
            parallel.run_in_processes(tasks, run_group, processes, parallel.start_worker,
                                      parallel.worker_setup(processes), collect)
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:  # a worker that died (killed, out of memory) could not close its run
        for parent_run_id in parents:
            lifecycle.close_running_children(parent_run_id, "KILLED" if interrupted else "FAILED")
    return outcomes
