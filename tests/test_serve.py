"""The registered encoder as a pyfunc on raw audio and WAV paths, and served for real by `mlflow models serve`."""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

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


def test_pyfunc_and_mlflow_models_serve(sqlite_tracking, speech_commands_sample, tmp_path):
    registered_encoder(speech_commands_sample, ae_epochs=2)
    port = free_port()
    log = open(tmp_path / "serve.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", CHAMPION, "--env-manager", "local",
         "--host", "127.0.0.1", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy(), start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        model = mlflow.pyfunc.load_model(CHAMPION)  # checked while the server starts
        paths = fsdd_or_sample_wavs(speech_commands_sample)
        check_pyfunc_inputs(model, paths)
        deadline = time.time() + 180
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.time() < deadline, "mlflow models serve did not answer /ping in 180 s"
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2):
                    break
            except (urllib.error.URLError, OSError):
                time.sleep(1)
        waveforms = np.random.default_rng(1).normal(0, 0.1, (2, 16000)).astype(np.float32)
        served = post(f"{url}/invocations", {"inputs": waveforms.tolist()})
        assert served.shape == (2, 75)
        assert np.allclose(served, model.predict(waveforms), atol=1e-4)
        served = post(f"{url}/invocations", {"dataframe_split": {"columns": ["path"], "data": [[p] for p in paths]}})
        assert served.shape == (len(paths), 75)
        assert np.allclose(served, model.predict(paths), atol=1e-4)
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and its uvicorn worker
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()
