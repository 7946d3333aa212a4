"""MLflow plumbing shared by the steps: runs, reuse of finished runs, reachability, artifacts."""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import mlflow
from mlflow.entities import Param, RunStatus
from mlflow.tracking import MlflowClient

from spatial_ae import lifecycle
from spatial_ae.errors import UserError
from spatial_ae.mlflow_io.experiment import STEP_NOTES
from spatial_ae.names import (DIGEST_TAG, INTERRUPTED_TAG, KEY_TAG, NOTE_TAG, PROCESS_TAG, SIMULATION, SIMULATION_TAG,
                              STEP_TAG, WORKFLOW_TAG)

log = logging.getLogger(__name__)


def check_tracking_server() -> None:
    """Stop at once, before any work, when an HTTP tracking server is down or unreachable, or a local SQLite store
    is read-only; a new SQLite store is created under a lock (see prepare_sqlite_store)."""
    uri = mlflow.get_tracking_uri()
    if uri.startswith("sqlite:///"):
        prepare_sqlite_store(Path(uri[len("sqlite:///"):]))
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=10) as response:
            response.read()
    except (urllib.error.URLError, OSError) as error:
        raise UserError(
            f"the MLflow tracking server {uri} is not reachable ({error}). Start it "
            f"(e.g. `mlflow server --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000`) "
            f"or unset MLFLOW_TRACKING_URI to use the local SQLite store."
        ) from None


def check_artifact_location(experiment_id: str) -> None:
    """A local artifact folder that is not writable stops the command before its first run, with one error
    (rather than a "disk I/O error" traceback per artifact and runs left RUNNING)."""
    location = MlflowClient().get_experiment(experiment_id).artifact_location
    if location.startswith("file:"):
        folder = Path(urllib.parse.urlparse(location).path)
    elif "://" in location:
        return  # a server or object store: its own errors
    else:
        folder = Path(location)
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is not None and not os.access(existing, os.W_OK):
        raise UserError(f"the artifact folder {folder} of experiment {experiment_id} is read-only ({existing} is not "
                        f"writable): make it writable, or use an experiment whose artifact location is writable")


_prepared_stores: set[Path] = set()


def prepare_sqlite_store(path: Path) -> None:
    """Check that the SQLite file and its folder are writable (one clear error rather than a traceback per write),
    then create or migrate the store holding `<file>.lock`: two processes creating one store at once would collide
    in MLflow's schema migration."""
    path = path.resolve()
    if path in _prepared_stores:
        return
    read_only = [p for p in (path, path.parent) if p.exists() and not os.access(p, os.W_OK)]
    if read_only:
        raise UserError(f"the MLflow store {path} is read-only ({read_only[0]} is not writable): make the file and "
                        f"its folder writable, or set MLFLOW_TRACKING_URI to a writable store")
    if path.parent.is_dir():
        with open(path.with_name(path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when closed, also if this process dies
            MlflowClient().search_experiments(max_results=1)  # creates the tables or migrates them
    _prepared_stores.add(path)


def find_finished_run(step: str, key: str, experiment_id: str | None = None) -> mlflow.entities.Run | None:
    """The newest finished run of `step` whose reuse key (parameters and data identity) equals `key`."""
    experiment_id = experiment_id or current_experiment_id()
    runs = MlflowClient().search_runs(
        [experiment_id],
        filter_string=f"tags.`{STEP_TAG}` = '{step}' and tags.`{KEY_TAG}` = '{key}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


def current_experiment_id() -> str:
    active = mlflow.active_run()
    if active:
        return active.info.experiment_id
    return mlflow.tracking.fluent._get_experiment_id()


@contextlib.contextmanager
def step_run(step: str, params: dict[str, Any], run_name: str | None = None, key: str | None = None,
             tags: dict[str, str] | None = None, parent_run_id: str | None = None) -> Iterator[mlflow.ActiveRun]:
    """A run for one step: nested under the active run if there is one (or under `parent_run_id`, a run of
    another process); FAILED on error, KILLED on interruption.

    Reuses the run MLflow Projects started for this process (MLFLOW_RUN_ID) when no run is active.
    """
    nested = mlflow.active_run() is not None
    if not nested and parent_run_id is None:  # a command's first step (a worker's steps need not repeat it)
        check_artifact_location(current_experiment_id())
        lifecycle.close_runs_of_ended_processes(current_experiment_id())
    with contextlib.nullcontext() if nested else lifecycle.raised_as_exceptions():
        run = mlflow.start_run(run_name=run_name, nested=nested, parent_run_id=parent_run_id)
        try:
            mlflow.set_tags({STEP_TAG: step, PROCESS_TAG: lifecycle.this_process(), **({KEY_TAG: key} if key else {}),
                             **_note(step), **(tags or {})})
            log_params(run, params)
            yield run
        except KeyboardInterrupt as interruption:
            _end_killed(str(interruption) or "SIGINT")
            raise
        except BaseException as error:
            signum = lifecycle.received()
            if signum:  # the interruption came back as another exception (e.g. from TensorFlow)
                _end_killed(f"received signal {signum}")
                raise lifecycle.Terminated(f"received signal {signum} ({type(error).__name__}: {error})") from error
            mlflow.end_run(RunStatus.to_string(RunStatus.FAILED))
            raise
        else:
            mlflow.end_run(RunStatus.to_string(RunStatus.FINISHED))
            lifecycle.stop_if_interrupted()  # the work finished but the interruption was not raised: stop now


def _note(step: str) -> dict[str, str]:
    """The description tag of a run of `step` (what the UI shows above its metrics)."""
    return {NOTE_TAG: STEP_NOTES[step]} if step in STEP_NOTES else {}


def _end_killed(reason: str) -> None:
    """End the active run KILLED, saying why in the tag INTERRUPTED_TAG (`mlflow run` turns an interrupted project
    run FAILED after its entry point exits, whatever the entry point set: the tag still tells)."""
    mlflow.set_tag(INTERRUPTED_TAG, reason)
    mlflow.end_run(RunStatus.to_string(RunStatus.KILLED))


def log_params(run: mlflow.ActiveRun, params: dict[str, Any]) -> None:
    """Log parameters; where `mlflow run` already logged the raw command-line value ('1' for 1.0, '' for
    a preset's default), keep it and log the value actually used as `resolved_<name>`."""
    already = mlflow.get_run(run.info.run_id).data.params
    values = {name: _param_value(value) for name, value in params.items()}
    mlflow.log_params({name if name not in already else f"resolved_{name}": value
                       for name, value in values.items() if already.get(name) != value})


def _param_value(value: Any) -> str:
    return str(value)[:6000]


@contextlib.contextmanager
def claimed(key: str) -> Iterator[None]:
    """Hold an exclusive claim on `key` (e.g. one simulation of one workflow) for the block, so that a second
    identical workflow waits for the first and then finds its finished run instead of running it again.

    SQLite stores only: an `fcntl.flock` in `<db>.claims/` beside the file (released if the holder dies). Other
    stores (HTTP server) are not claimed: identical workflows on a server may still duplicate simulations."""
    uri = mlflow.get_tracking_uri()
    if not uri.startswith("sqlite:///"):
        yield
        return
    folder = Path(uri[len("sqlite:///"):]).resolve()
    folder = folder.with_name(folder.name + ".claims")
    folder.mkdir(exist_ok=True)
    with open(folder / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


CACHE_RUNS_VARIABLE = "SPATIAL_AE_ARTIFACT_CACHE_RUNS"  # how many runs' artifacts the local cache keeps
CACHE_RUNS_DEFAULT = 8
CACHE_IN_USE_SECONDS = 600  # folders used this recently are kept beyond the bound (a summary or another process)


def folder_digest(folder: Path) -> str:
    """sha256 over the relative names and contents of the files under `folder` (the cache marker excluded)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.name != ".complete"):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with open(path, "rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def log_folder_digest(folder: Path, artifact_path: str) -> None:
    """Tag the active run with the digest of `folder`, logged as `artifact_path`, so cached copies can be checked."""
    mlflow.set_tag(DIGEST_TAG + artifact_path, folder_digest(folder))


def artifact_cache() -> Path:
    return Path(tempfile.gettempdir()) / f"spatial_ae-artifacts-{os.getuid()}"


def download_run_artifacts(run_id: str, artifact_path: str) -> Path:
    """Local copy of a run's artifact folder, cached per run so simulations download it once.

    A copy that does not match the digest the run logged (edited, truncated) is downloaded again; the cache keeps
    the newest SPATIAL_AE_ARTIFACT_CACHE_RUNS runs (default 8) and evicts the least recently used."""
    cache = artifact_cache() / run_id / artifact_path
    expected = MlflowClient().get_run(run_id).data.tags.get(DIGEST_TAG + artifact_path)
    for _ in range(2):  # a mismatching copy is downloaded once more
        if not (cache / ".complete").exists():
            _download_into(cache, run_id, artifact_path)
        if expected is None or folder_digest(cache) == expected:
            break
        log.warning("cached artifacts %s do not match run %s's digest: downloading them again", cache, run_id)
        shutil.rmtree(cache, ignore_errors=True)
    else:
        raise UserError(f"artifacts '{artifact_path}' of run {run_id} do not match the digest the run logged: "
                        "the store's copy changed after it was logged")
    os.utime(cache.parent)  # recently used: evicted last
    _evict_cache(keep=cache.parent)
    return cache


def _download_into(cache: Path, run_id: str, artifact_path: str) -> None:
    cache.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=cache.parent))
    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path, dst_path=str(staging))
    (Path(local) / ".complete").touch()
    try:
        os.replace(local, cache)
    except OSError:  # another process placed it first
        pass
    shutil.rmtree(staging, ignore_errors=True)


def _evict_cache(keep: Path) -> None:
    """Remove the least recently used run folders beyond the cache's bound (never `keep`, nor one used in the last
    CACHE_IN_USE_SECONDS: a summary may download more runs' folders than the bound before it reads them all)."""
    limit = max(1, int(os.environ.get(CACHE_RUNS_VARIABLE) or CACHE_RUNS_DEFAULT))
    used = {}
    for folder in artifact_cache().iterdir():
        try:  # another process may remove a folder at any moment
            if folder.is_dir() and folder != keep:
                used[folder] = folder.stat().st_mtime
        except OSError:
            continue
    for old in sorted(used, key=used.get, reverse=True)[limit - 1:]:
        if time.time() - used[old] > CACHE_IN_USE_SECONDS:
            shutil.rmtree(old, ignore_errors=True)


def start_child_run(parent_run_id: str, step: str, params: dict[str, Any], run_name: str, key: str) -> str:
    """A RUNNING child run of `parent_run_id` that stays open while other processes nest runs under it (the
    caller ends it with `MlflowClient().set_terminated`); returns its id."""
    client = MlflowClient()
    parent = client.get_run(parent_run_id)
    run = client.create_run(parent.info.experiment_id, run_name=run_name,
                            tags={"mlflow.parentRunId": parent_run_id, STEP_TAG: step, KEY_TAG: key,
                                  PROCESS_TAG: lifecycle.this_process(), **_note(step)})
    client.log_batch(run.info.run_id, params=[Param(name, _param_value(value)) for name, value in params.items()])
    return run.info.run_id


def get_finished_run(run_id: str, step: str) -> mlflow.entities.Run:
    """The run `run_id`, checked to be a finished run of `step`, with a clear error otherwise."""
    try:
        run = MlflowClient().get_run(run_id)
    except mlflow.exceptions.MlflowException:
        raise UserError(f"run {run_id!r} was not found in {mlflow.get_tracking_uri()}; pass the id of a finished {step} run") from None
    if run.data.tags.get(STEP_TAG) != step:
        raise UserError(f"run {run_id} is not a {step} run (its step tag is {run.data.tags.get(STEP_TAG)!r})")
    if run.info.status != "FINISHED":
        raise UserError(f"{step} run {run_id} is {run.info.status}, not FINISHED; run {step} again")
    return run


def simulation_runs(parent_run_id: str) -> list[mlflow.entities.Run]:
    """The finished simulation runs of a main run's configuration (its own and reused ones), one per index."""
    parent = mlflow.get_run(parent_run_id)
    key = parent.data.tags.get(WORKFLOW_TAG)
    if key is None:
        raise UserError(f"run {parent_run_id} is not a main run (it has no {WORKFLOW_TAG} tag)")
    runs = MlflowClient().search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`{WORKFLOW_TAG}` = '{key}' and tags.`{STEP_TAG}` = '{SIMULATION}' "
                      f"and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time ASC"], max_results=10000)
    by_index = {}
    for run in runs:
        by_index[int(run.data.tags[SIMULATION_TAG])] = run  # newest wins
    return [by_index[index] for index in sorted(by_index)]
