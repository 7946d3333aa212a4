"""Worker processes: set up as the process that starts them (store, experiment, log level, training path),
TensorFlow's thread pools sized for the processes sharing the cores, stopped with their parent; and the progress
and failure lines of the tasks they run.

Spawned processes, not threads: the MLflow active run and TensorFlow's thread pools are per process, and the
models are too small for one process to keep several cores busy (benchmarks/README.md).
"""
from __future__ import annotations

import logging
import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context
from typing import Callable

import mlflow

from spatial_ae import lifecycle

log = logging.getLogger(__name__)

THREAD_VARIABLES = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


def simulation_processes(requested: int, num_simulations: int) -> int:
    """How many worker processes run the simulations: `requested`, or with 0 one per CPU core, never more
    than there are simulations; 1 means in this process."""
    cores = os.cpu_count() or 1
    return max(1, min(requested or cores, num_simulations))


def configure_threads(processes: int = 1) -> None:
    """Size TensorFlow's thread pools for `processes` processes sharing the CPU cores: per process,
    inter-op threads = min(2, its share of the cores) and intra-op threads = half of its share (at least 1).

    Must run before TensorFlow executes anything; later (e.g. a test process that already trained a model)
    it changes nothing. TF_NUM_INTRAOP_THREADS / TF_NUM_INTEROP_THREADS, when set, win.
    """
    if any(os.environ.get(name) for name in THREAD_VARIABLES):
        return
    import tensorflow as tf

    share = max(1, (os.cpu_count() or 1) // max(1, processes))
    try:
        tf.config.threading.set_inter_op_parallelism_threads(min(2, share))
        tf.config.threading.set_intra_op_parallelism_threads(max(1, share // 2))
    except RuntimeError:  # TensorFlow already started in this process
        log.debug("TensorFlow already initialised: thread pools left as they are")


def run_in_processes(tasks: dict[int, tuple], function: Callable, processes: int,
                     initializer: Callable, initargs: tuple,
                     on_result: Callable[[int, Future], None]) -> None:
    """Run `function(*tasks[k])` for every k in `processes` spawned workers, calling `on_result(k, future)`
    as each finishes. On an interruption (SIGINT, SIGTERM) the workers are terminated, then it re-raises."""
    context = get_context("spawn")  # not fork: this process holds TensorFlow and BLAS threads
    with ProcessPoolExecutor(processes, mp_context=context, initializer=initializer, initargs=initargs) as pool:
        pending = {pool.submit(_task, function, *arguments): key for key, arguments in tasks.items()}
        try:
            collect_as_done(pending, on_result)
        except BaseException:
            _terminate(pool)
            raise


def _task(function: Callable, *arguments):
    """`function(*arguments)` in a worker; an interruption (SIGTERM from `_terminate`, Ctrl-C) ends the worker
    once the task has closed its runs, instead of letting it take the next queued task."""
    try:
        return function(*arguments)
    except KeyboardInterrupt:
        logging.shutdown()
        os._exit(130)


def _terminate(pool: ProcessPoolExecutor) -> None:
    """SIGTERM every worker (each marks its open run KILLED), wait for them a little, drop queued tasks."""
    workers = list((pool._processes or {}).values())  # the executor has no public terminate before 3.14
    for process in workers:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + 30
    for process in workers:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
    pool.shutdown(wait=False, cancel_futures=True)


def collect_as_done(pending: dict, on_result) -> None:
    """Call `on_result(key, future)` for each of the futures `pending` ({future: key}) as it finishes; the 1 s
    wait lets a signal handler run in between."""
    while pending:
        done, _ = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
        for future in done:
            on_result(pending.pop(future), future)


def worker_setup(processes: int) -> tuple:
    """What `start_worker` needs to set a worker up as this process: store, experiment, training path, the
    number of processes sharing the cores, log level."""
    from spatial_ae.method import training

    return (mlflow.get_tracking_uri(), mlflow.active_run().info.experiment_id, training.TRAINING_PATH, processes,
            logging.getLogger("spatial_ae").getEffectiveLevel())


def start_worker(tracking_uri: str, experiment_id: str, training_path: str, processes: int, log_level: int) -> None:
    """Set up a worker process (or a Spark executor's Python) as `worker_setup` described its parent."""
    from spatial_ae.method import training

    lifecycle.die_with_parent()  # no orphan may take queued tasks after its parent was killed
    os.environ.pop("MLFLOW_RUN_ID", None)  # the parent's run (under `mlflow run`) is not this process's run
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment_id=experiment_id)
    lifecycle.configure_logging(log_level, lifecycle.LOG_FORMAT.replace("%(name)s", "%(processName)s %(name)s"))
    # TensorFlow, imported while the root logger had no handler, gave its logger a handler of its own: without
    # this its messages would come twice
    logging.getLogger("tensorflow").handlers.clear()
    lifecycle.enable_crash_reports()
    training.TRAINING_PATH = training_path
    configure_threads(processes)


class Progress:
    """Progress of many tasks, one log line per finished one in the process that runs them (workers log their
    epochs at DEBUG only): "simulation 3/10 done (1 failed), elapsed 1:12, ETA 2:40"."""

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
