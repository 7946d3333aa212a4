"""Shared fixtures: the real speech beside the repository, tracking stores, one session-wide MLflow server."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # before any test module imports mlflow (see spatial_ae)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SPATIAL_AE_SHARED_DATA", REPO.parent / "shared" / "data"))
SPEECH_COMMANDS_SAMPLE = SHARED_DATA / "speech_commands_v0.01_sample"
FSDD = SHARED_DATA / "fsdd"
SPEECH_COMMANDS_DEV = SHARED_DATA / "speech_commands_v0.02_dev"

# Small sizes that keep the suite fast; the paper's sizes are the parameters' defaults.
SMALL_CLIPS_PER_WORD = 12


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Every test session gets its own cache (synthetic corpora, downloads), never the user's."""
    cache = tmp_path_factory.mktemp("spatial_ae_cache")
    previous = os.environ.get("SPATIAL_AE_CACHE")
    os.environ["SPATIAL_AE_CACHE"] = str(cache)
    yield cache
    if previous is None:
        os.environ.pop("SPATIAL_AE_CACHE", None)
    else:
        os.environ["SPATIAL_AE_CACHE"] = previous


@pytest.fixture(scope="session")
def speech_commands_sample() -> Path:
    if not SPEECH_COMMANDS_SAMPLE.is_dir():
        pytest.skip(f"real Speech Commands sample not found at {SPEECH_COMMANDS_SAMPLE}")
    return SPEECH_COMMANDS_SAMPLE


@pytest.fixture(scope="session")
def speech_commands_dev() -> Path:
    if not (SPEECH_COMMANDS_DEV / "testing_list.txt").is_file():
        pytest.skip(f"Speech Commands v0.02 dev subset not found at {SPEECH_COMMANDS_DEV}")
    return SPEECH_COMMANDS_DEV


@pytest.fixture(scope="session")
def fsdd() -> Path:
    if not (FSDD / "recordings").is_dir():
        pytest.skip(f"Free Spoken Digit Dataset not found at {FSDD}")
    return FSDD


@pytest.fixture(scope="session")
def small_synthetic_corpus(isolated_cache) -> Path:
    from spatial_ae.data.synthetic import synthetic_corpus

    return synthetic_corpus(clips_per_word=SMALL_CLIPS_PER_WORD, seed=0, progress=False)


def _use_tracking(uri: str, artifact_root: Path, monkeypatch, experiment: str = "tests") -> str:
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    client = mlflow.tracking.MlflowClient(uri)
    existing = client.get_experiment_by_name(experiment)
    experiment_id = existing.experiment_id if existing else client.create_experiment(
        experiment, artifact_location=artifact_root.as_uri() if artifact_root else None)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", experiment_id)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


@pytest.fixture
def sqlite_tracking(tmp_path, monkeypatch):
    """A real SQLite-backed MLflow store in a temporary folder, artifacts beside it."""
    import mlflow

    previous = mlflow.get_tracking_uri()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment_id = _use_tracking(uri, tmp_path / "artifacts", monkeypatch)
    yield {"uri": uri, "experiment_id": experiment_id, "root": tmp_path}
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(previous)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mlflow_server(folder: Path, port: int, backend_store_uri: str | None = None) -> subprocess.Popen:
    """A real `mlflow server` on 127.0.0.1 with a SQLite backend (or `backend_store_uri`), artifacts served by
    the server."""
    folder.mkdir(parents=True, exist_ok=True)
    log = open(folder / "server.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
         backend_store_uri or f"sqlite:///{folder / 'mlflow.db'}", "--serve-artifacts",
         "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    deadline = time.time() + 300
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited: {(folder / 'server.log').read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return process
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"mlflow server did not start: {(folder / 'server.log').read_text()[-3000:]}")


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """One tracking server for the whole session; tests use their own experiments on it."""
    port = free_port()
    process = start_mlflow_server(tmp_path_factory.mktemp("mlflow_server"), port)
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture
def server_tracking(mlflow_server, monkeypatch, request):
    """Use the session's tracking server with an experiment of this test's own."""
    yield from experiment_of_this_test(mlflow_server, monkeypatch, request)


def experiment_of_this_test(server_uri: str, monkeypatch, request):
    """Use the server `server_uri` with an experiment named for this test (a fixture's body: yield from it)."""
    import mlflow

    previous = mlflow.get_tracking_uri()
    experiment_id = _use_tracking(server_uri, None, monkeypatch, experiment=request.node.name[:200])
    yield {"uri": server_uri, "experiment_id": experiment_id}
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(previous)
