"""The registered encoder as a pyfunc on raw audio and WAV paths, and served for real by `mlflow models serve`."""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from tests.conftest import FSDD, free_port
from tests.test_kws import registered_encoder

CHAMPION = "models:/spatial-ae-encoder@champion"


def fsdd_or_sample_wavs(speech_commands_sample, count=3):
    """A few real WAV files: FSDD's 8 kHz digits when present, else Speech Commands clips."""
    folder = FSDD / "recordings" if (FSDD / "recordings").is_dir() else speech_commands_sample / "yes"
    return [str(path) for path in sorted(folder.glob("*.wav"))[:count]]


def check_pyfunc_inputs(model, wav_paths):
    """Waveforms (2-D array, list of 1-D arrays), WAV paths and a DataFrame with `path` give the same embeddings."""
    waveforms = np.random.default_rng(0).normal(0, 0.1, (3, 16000)).astype(np.float32)
    batch = model.predict(waveforms)
    assert batch.shape == (3, 75) and batch.dtype == np.float32
    as_list = model.predict([waveforms[0], waveforms[1][:8000], waveforms[2]])  # 0.5 s clip: zero-padded
    assert np.allclose(as_list[[0, 2]], batch[[0, 2]], atol=1e-5)
    padded = waveforms[1].copy()
    padded[8000:] = 0
    assert np.allclose(as_list[1], model.predict(padded[None, :])[0], atol=1e-5)
    from_paths = model.predict(wav_paths)
    assert from_paths.shape == (len(wav_paths), 75)
    assert np.allclose(model.predict(pd.DataFrame({"path": wav_paths})), from_paths, atol=1e-5)
    assert model.predict([]).shape == (0, 75)


def post(url, body):
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return np.asarray(json.loads(response.read())["predictions"], dtype=np.float32)


def start_server(tmp_path):
    """`mlflow models serve` of the champion in this environment (its env: SPATIAL_AE_AUDIO_ROOT...)."""
    port = free_port()
    log = open(tmp_path / "serve.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", CHAMPION, "--env-manager", "local",
         "--host", "127.0.0.1", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy(), start_new_session=True)
    return server, log, f"http://127.0.0.1:{port}"


def wait_for_ping(server, url, tmp_path, seconds=180):
    deadline = time.time() + seconds
    while True:
        assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
        assert time.time() < deadline, f"mlflow models serve did not answer /ping in {seconds} s"
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(1)


def stop_server(server, log):
    os.killpg(server.pid, signal.SIGTERM)  # the server and its uvicorn worker
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
    log.close()


def test_pyfunc_and_mlflow_models_serve(sqlite_tracking, speech_commands_sample, tmp_path, monkeypatch):
    registered_encoder(speech_commands_sample, ae_epochs=2)
    paths = fsdd_or_sample_wavs(speech_commands_sample)
    monkeypatch.setenv("SPATIAL_AE_AUDIO_ROOT", os.path.dirname(paths[0]))  # paths are opt-in and confined
    server, log, url = start_server(tmp_path)
    try:
        model = mlflow.pyfunc.load_model(CHAMPION)  # checked while the server starts
        check_pyfunc_inputs(model, paths)
        wait_for_ping(server, url, tmp_path)
        waveforms = np.random.default_rng(1).normal(0, 0.1, (2, 16000)).astype(np.float32)
        served = post(f"{url}/invocations", {"inputs": waveforms.tolist()})
        assert served.shape == (2, 75)
        assert np.allclose(served, model.predict(waveforms), atol=1e-4)
        served = post(f"{url}/invocations", {"dataframe_split": {"columns": ["path"], "data": [[p] for p in paths]}})
        assert served.shape == (len(paths), 75)
        assert np.allclose(served, model.predict(paths), atol=1e-4)
    finally:
        stop_server(server, log)


def test_registered_encoder_loads_without_unpickling(sqlite_tracking, speech_commands_sample):
    """Issue 22 item 5: the pyfunc is models-from-code with `.keras` weights; no pickle in the artifact."""
    import yaml

    registered_encoder(speech_commands_sample, ae_epochs=1)
    folder = Path(mlflow.artifacts.download_artifacts(CHAMPION))
    pickles = [p.name for p in folder.rglob("*") if p.suffix in (".pkl", ".pickle", ".cloudpickle")]
    assert not pickles, pickles
    flavor = yaml.safe_load((folder / "MLmodel").read_text())["flavors"]["python_function"]
    assert flavor.get("model_code_path", "").endswith("encoder.py") and "python_model" not in flavor, flavor
    assert sorted(p.suffix for p in (folder / "artifacts").iterdir()) == [".keras"]
    assert mlflow.pyfunc.load_model(CHAMPION).predict(np.zeros((1, 16000), np.float32)).shape == (1, 75)
