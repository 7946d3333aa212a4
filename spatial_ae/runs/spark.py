"""Apache Spark as the engine of `spark_master`: simulations and sweep simulations as tasks, featurize chunks,
batch embedding.

With a master URL (local[2], local-cluster[2,1,1024], spark://host:7077, yarn, k8s://https://host:443) a step
hands its parallel work to that cluster: Spark schedules, ships and retries it, nothing of ours does. Each task
runs the same code as a local worker process and logs to the driver's tracking server, so the executors must
reach it: a SQLite file (or a server on 127.0.0.1) with a master on other machines is refused before any work.
pyspark is the optional extra `spatial_ae[spark]` and needs a Java 17+ runtime; without a master nothing here runs.
"""
from __future__ import annotations

import importlib
import logging
import os
import pickle
import re
import shutil
import socket
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlparse

from spatial_ae import lifecycle
from spatial_ae.runs import parallel
from spatial_ae.errors import UserError
from spatial_ae.mlflow_io.pyfunc import CLIPS_PER_CALL

log = logging.getLogger(__name__)

MASTER_FORMS = "local[2], local-cluster[2,1,1024], spark://host:7077, yarn, k8s://https://host:443 or active"
ACTIVE = "active"  # the session the environment provides: spark-submit --master ..., a Databricks cluster
_ON_THIS_MACHINE = re.compile(r"local(\[(\*|\d+)(,\d+)?\])?|local-cluster\[\d+,\d+,\d+\]")
SHIPPED_PREFIXES = ("SPATIAL_AE_", "MLFLOW_")  # the driver's settings the executors' tasks run with
RETRY_NOTE = ("Marked FAILED: Spark attempt {old} of this task was lost (its executor died or was killed); "
              "attempt {new} runs the simulation again.")


def check(master: str) -> None:
    """Before any work: pyspark and Java present, `master` well formed and reachable, and the tracking store
    reachable from its executors. A UserError (one line naming the fix) otherwise; nothing for an empty master."""
    if not master:
        return
    try:
        import pyspark  # noqa: F401
    except ImportError:
        raise UserError(f"spark_master={master!r} needs pyspark, which is not installed. Fix: pip install -e "
                        f"'.[spark]' (and a Java 17+ runtime), or leave spark_master empty to run here") from None
    if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
        raise UserError(f"spark_master={master!r} needs a Java 17+ runtime, and none was found (no java on PATH, "
                        f"JAVA_HOME unset). Fix: install one (e.g. apt-get install openjdk-17-jre-headless)")
    if master.startswith(("spark://", "k8s://")):
        for host, port in _hosts(master):
            try:
                socket.create_connection((host, port), timeout=5).close()
            except OSError as error:
                raise UserError(f"the Spark master {master} is not reachable ({host}:{port}: {error}). Fix: start "
                                f"it, or pass the right -P spark_master=..., or leave it empty to run here") from None
    elif master == ACTIVE:
        pass  # spark-submit or the platform names the master; its executors are taken to be elsewhere
    elif master == "yarn":
        if not (os.environ.get("HADOOP_CONF_DIR") or os.environ.get("YARN_CONF_DIR")):
            raise UserError("spark_master=yarn needs HADOOP_CONF_DIR or YARN_CONF_DIR naming the cluster's "
                            "configuration folder. Fix: export HADOOP_CONF_DIR=/etc/hadoop/conf")
    elif not _ON_THIS_MACHINE.fullmatch(master):
        raise UserError(f"spark_master={master!r} is not a Spark master URL. Fix: pass one of {MASTER_FORMS}, "
                        f"or leave it empty to run here")
    import mlflow

    mlflow.set_tracking_uri(executor_tracking_uri(master))  # the same store, as the executors will name it


def _hosts(master: str) -> list[tuple[str, int]]:
    """(host, port) of a spark:// master (several, comma-separated, for standby masters) or a k8s:// API server."""
    if master.startswith("k8s://"):
        rest = master[len("k8s://"):]
        url = urlparse(rest if "://" in rest else "https://" + rest)
        return [(url.hostname or "", url.port or (80 if url.scheme == "http" else 443))]
    hosts = []
    for item in master[len("spark://"):].split(","):
        host, _, port = item.rpartition(":")
        hosts.append((host, int(port) if port.isdigit() else 7077))
    return hosts


def on_this_machine(master: str) -> bool:
    """Whether every executor of `master` runs on this machine (local masters, spark:// on a loopback address)."""
    if _ON_THIS_MACHINE.fullmatch(master):
        return True
    return master.startswith("spark://") and all(_loopback(host) for host, _ in _hosts(master))


def _loopback(host: str) -> bool:
    return host in ("localhost", "") or host.startswith("127.") or host == "::1"


def executor_tracking_uri(master: str) -> str:
    """The driver's tracking URI as the executors must use it (a relative SQLite path made absolute: executors
    run in folders of their own); refused when the executors of `master` cannot reach it."""
    import mlflow

    uri = mlflow.get_tracking_uri()
    url = urlparse(uri)
    is_file = url.scheme in ("sqlite", "file") or (url.scheme == "" and not uri.startswith("databricks"))
    if (is_file or (url.scheme in ("http", "https") and _loopback(url.hostname or ""))) \
            and not on_this_machine(master):
        raise UserError(f"the tracking store {uri} is on this machine only, and the executors of {master} cannot "
                        f"reach it. Fix: run a tracking server they can reach (mlflow server --backend-store-uri "
                        f"postgresql://... --artifacts-destination <shared folder or bucket> --serve-artifacts "
                        f"--host 0.0.0.0) and set MLFLOW_TRACKING_URI=http://<its host>:5000 (docs/SCALE.md)")
    if uri.startswith("sqlite:///") and not os.path.isabs(uri[len("sqlite:///"):]):
        return "sqlite:///" + os.path.abspath(uri[len("sqlite:///"):])
    if url.scheme == "" and not uri.startswith("databricks"):
        return os.path.abspath(uri)
    return uri


def session(master: str):
    """The SparkSession on `master`, started once per process and kept for later steps (a new master stops it)."""
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    if master == ACTIVE:  # spark-submit's or the platform's session and settings, as they are
        spark = SparkSession.builder.getOrCreate()
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(CLIPS_PER_CALL))
        return spark
    active = SparkContext._active_spark_context
    if active is not None and active.master != master:
        SparkSession.builder.getOrCreate().stop()
    if on_this_machine(master):  # executors here run this interpreter, where spatial_ae is installed
        os.environ["PYSPARK_PYTHON"] = sys.executable
    else:
        os.environ.setdefault("PYSPARK_PYTHON", "python3")  # the cluster's; it must have spatial_ae installed
    if master.startswith("local-cluster"):  # not the default, a folder inside the pyspark package
        os.environ.setdefault("SPARK_WORKER_DIR", str(Path(tempfile.gettempdir()) / f"spatial_ae-spark-{os.getuid()}"))
    spark = (SparkSession.builder.master(master).appName("spatial_ae")
             .config("spark.speculation", "false")  # never two attempts of one simulation at once
             .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(CLIPS_PER_CALL))
             .config("spark.ui.showConsoleProgress", "false")
             .getOrCreate())
    spark.sparkContext.setLogLevel("WARN")
    return spark


def shipped_environment(master: str) -> dict[str, str]:
    """The driver's SPATIAL_AE_* and MLFLOW_* settings for the tasks (not its own run), the tracking URI as
    the executors reach it."""
    env = {name: value for name, value in os.environ.items() if name.startswith(SHIPPED_PREFIXES)}
    env.pop("MLFLOW_RUN_ID", None)
    env["MLFLOW_TRACKING_URI"] = executor_tracking_uri(master)
    return env


def run_in_spark(master: str, tasks: dict[int, tuple], function: Callable, initializer: Callable, initargs: tuple,
                 on_result: Callable, parent_run_ids: list[str]) -> None:
    """`function(*tasks[k])` as one Spark task each (a job each, so that each result and failure comes back on
    its own), the executor's Python set up by `initializer(*initargs)`; `on_result(k, future)` as each ends.
    A task lost with its executor is retried by Spark; the retry first marks FAILED the runs the lost attempt
    left RUNNING under `parent_run_ids`. On an interruption the jobs are cancelled and it re-raises."""
    if not tasks:
        return
    context = session(master).sparkContext
    env = shipped_environment(master)
    functions = (_reference(function), _reference(initializer))  # imported on the executor once env is set
    log.info("running %d tasks on Spark %s (%d cores)", len(tasks), master, context.defaultParallelism)

    def job(index: int, arguments: tuple):
        from py4j.protocol import Py4JJavaError

        context.setJobDescription(f"spatial_ae task {index}")
        rdd = context.parallelize([(index, pickle.dumps(arguments))], 1)
        try:
            ok, value = rdd.map(lambda item: _task(item, *functions, initargs, env, parent_run_ids)).collect()[0]
        except Py4JJavaError as error:  # Spark gave up (lost more than spark.task.maxFailures times), or cancelled
            lines = str(error.java_exception).splitlines()
            raise SparkTaskFailed(f"Spark gave up on the task: {lines[0] if lines else error}. Run the same "
                                  f"command again to resume") from None
        if not ok:
            raise value
        return value

    pool = ThreadPoolExecutor(len(tasks), thread_name_prefix="spark-job")
    pending = {pool.submit(job, index, arguments): index for index, arguments in tasks.items()}
    try:
        parallel.collect_as_done(pending, on_result)
    except BaseException:
        context.cancelAllJobs()
        raise
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


class SparkTaskFailed(RuntimeError):
    """A task that Spark gave up on (lost with its executor more often than spark.task.maxFailures)."""


def _reference(function: Callable) -> str:
    return f"{function.__module__}:{function.__qualname__}"


def _resolve(reference: str) -> Callable:
    module, name = reference.split(":")
    return getattr(importlib.import_module(module), name)


def _task(item: tuple, function: str, initializer: str, initargs: tuple, env: dict,
          parent_run_ids: list[str]) -> tuple[bool, object]:
    """On an executor: one task, as a worker process runs it; returns (True, value) or (False, exception), so
    that Spark retries only lost tasks, never a simulation that failed by itself. The functions are named and the
    arguments pickled apart: both are imported only after the driver's settings apply (SPATIAL_AE_ENCODER_NAME is
    read on import)."""
    from pyspark import TaskContext

    index, arguments = item
    os.environ.update(env)
    cpus = str(TaskContext.get().cpus())  # TensorFlow's pools sized to the task's share of the executor
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", cpus)
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", str(min(2, int(cpus))))
    _resolve(initializer)(*initargs)
    attempt = TaskContext.get().attemptNumber()
    if attempt > 0:
        close_lost_attempts(parent_run_ids, index, attempt)
    try:
        return True, _resolve(function)(*pickle.loads(arguments))
    except Exception as error:  # noqa: BLE001 - returned: the driver reports it, Spark must not retry it
        log.exception("task %d failed", index)
        try:
            pickle.dumps(error)
        except Exception:  # noqa: BLE001 - an exception that cannot travel goes as its text
            error = RuntimeError(f"{type(error).__name__}: {error}")
        return False, error


def close_lost_attempts(parent_run_ids: list[str], index: int, attempt: int) -> None:
    """Mark FAILED, with a note, the simulation runs `index` under `parent_run_ids` still RUNNING: an earlier
    attempt of this task left them (Spark runs one attempt at a time, speculation off; task k runs simulation k)."""
    for parent_run_id in parent_run_ids:
        lifecycle.close_running_children(parent_run_id, "FAILED", simulation=index, left_by="a lost Spark attempt",
                                         note=RETRY_NOTE.format(old=attempt - 1, new=attempt))


@dataclass(frozen=True)
class Cluster:
    """The Spark cluster `master` that a step hands its parallel work to (`cluster` makes it checked)."""
    master: str

    def map_chunks(self, function: Callable, chunks: list[tuple]) -> Iterator:
        """function(*chunk) for chunk in chunks, one Spark task per chunk, in order (featurize's chunks); the
        results come back as they are read, never all of them in the driver at once."""
        context = session(self.master).sparkContext
        context.setJobDescription(f"spatial_ae: {len(chunks)} chunks")
        results = context.parallelize(chunks, max(1, len(chunks))).map(lambda chunk: function(*chunk))
        return results.toLocalIterator(prefetchPartitions=True)  # a chunk at a time, not all at once

    def embed_files(self, encoder_uri: str, files: list[str], words: list[str] | None,
                    output: str) -> list[tuple[str, str]]:
        """The embed step on Spark: executors read the clips (mapInPandas, audio.load_clip) and embed them with
        `mlflow.pyfunc.spark_udf` (CLIPS_PER_CALL clips per call); Parquet written to `output`. Returns the skipped
        clips (path, reason)."""
        import mlflow.pyfunc
        from pyspark import StorageLevel
        from pyspark.sql import functions as F

        spark = session(self.master)
        rows = list(zip(files, words or [None] * len(files)))
        partitions = max(1, -(-len(rows) // CLIPS_PER_CALL))
        paths = spark.createDataFrame(spark.sparkContext.parallelize(rows, partitions), "path string, word string")
        clips = paths.mapInPandas(_read_clips, "path string, word string, samples array<float>, error string")
        encoder = mlflow.pyfunc.spark_udf(spark, encoder_uri, result_type="array<float>", env_manager="local")
        result = (clips.withColumn("embedded", encoder("samples"))  # unreadable clips are zeros here, dropped below
                  .select("path", "word", F.when(F.col("error").isNull(), F.col("embedded")).alias("embedding"),
                          "error")
                  .persist(StorageLevel.DISK_ONLY))  # computed once: written, then its errors collected
        try:
            columns = ["path", "embedding"] + (["word"] if words else [])
            result.filter("error is null").select(*columns).write.parquet(output)
            return [(row.path, row.error)
                    for row in result.filter("error is not null").select("path", "error").collect()]
        finally:
            result.unpersist()


def cluster(master: str) -> Cluster | None:
    """The cluster of a `spark_master` parameter, checked before any work (`check`); None (work here) for an
    empty one."""
    if not master:
        return None
    check(master)
    return Cluster(master)


def _read_clips(batches):
    """mapInPandas: each path's 16 kHz clip, or zeros and the reason it could not be read."""
    import numpy as np

    from spatial_ae.data.audio import CLIP_SAMPLES, MAX_ABS_SAMPLE, AudioError, load_clip

    for batch in batches:
        samples, errors = [], []
        for path in batch["path"]:
            try:
                samples.append(load_clip(path, max_abs=MAX_ABS_SAMPLE))
                errors.append(None)
            except AudioError as error:
                samples.append(np.zeros(CLIP_SAMPLES, np.float32))
                errors.append(str(error))
        yield batch.assign(samples=samples, error=errors)
