"""The encoder pyfunc refuses what is not audio: paths unless confined to SPATIAL_AE_AUDIO_ROOT, FIFOs,
devices, absurd samples, oversized requests; served, each refusal is a 400 without server paths or traces."""
import json
import os
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile
from mlflow.exceptions import MlflowException

from spatial_ae.data.audio import AudioError
from spatial_ae.mlflow_io.pyfunc import AudioEncoder, InputRefused, clips_from_input


class FakeEncoder:
    """Stands for the Keras encoder: the mean of the MFCC, so equal clips give equal embeddings."""
    output_shape = (None, 1)

    def predict(self, mfcc, verbose=0):
        return np.asarray(mfcc, np.float64).mean(axis=1, keepdims=True)


def pyfunc():
    model = AudioEncoder()
    model.encoder = FakeEncoder()
    return model


def in_thread(function, seconds=10.0):
    """function() in a thread: a regression that blocks fails the test instead of hanging it."""
    outcome = {}

    def target():
        try:
            outcome["value"] = function()
        except BaseException as error:  # noqa: BLE001 - reported to the test
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    return outcome


@pytest.fixture
def audio_root(tmp_path, monkeypatch):
    root = tmp_path / "allowed"
    root.mkdir()
    rng = np.random.default_rng(0)
    soundfile.write(root / "ok.wav", rng.normal(0, 0.1, 16000), 16000, subtype="PCM_16")
    os.mkfifo(root / "fifo.wav")
    (root / "folder.wav").mkdir()
    (root / "zero.wav").symlink_to("/dev/zero")
    (root / "escape.wav").symlink_to("/etc/passwd")
    (tmp_path / "outside.wav").write_bytes((root / "ok.wav").read_bytes())
    monkeypatch.setenv("SPATIAL_AE_AUDIO_ROOT", str(root))
    return root


def test_int16_pcm_is_scaled_like_the_wav_reader():
    pcm = (np.random.default_rng(0).normal(0, 0.1, (2, 16000)) * 32767).astype(np.int16)
    as_float = pcm.astype(np.float32) / 32768
    np.testing.assert_array_equal(clips_from_input(pcm), as_float)
    np.testing.assert_array_equal(clips_from_input([pcm[0], pcm[1]]), as_float)
    np.testing.assert_array_equal(clips_from_input(pcm.astype(np.int32) << 16), as_float)  # int32 / 2**31
    model = pyfunc()
    np.testing.assert_allclose(model.predict(None, pcm), model.predict(None, as_float), rtol=1e-6)


@pytest.mark.parametrize("samples, message", [
    (np.full((1, 16000), 1e20, np.float32), "not audio"),
    ([[0.0, 1e20, 0.0]], "not audio"),
    (np.full((1, 16000), np.nan), "NaN or infinite"),
    ([[0.0, float("inf")]], "NaN or infinite"),
    ([["a", "b"]], "not numbers"),
])
def test_absurd_samples_are_refused(samples, message):
    with pytest.raises(InputRefused, match=message) as error:
        pyfunc().predict(None, samples)
    assert error.value.get_http_status_code() == 400 and isinstance(error.value, AudioError)


def test_request_size_caps_are_checked_before_featurizing(monkeypatch):
    import spatial_ae.mlflow_io.pyfunc as encoder_model

    monkeypatch.setattr(encoder_model, "mfcc_only", lambda clips: pytest.fail("featurized"))
    with pytest.raises(InputRefused, match="1001 clips in one request, more than 1000 .SPATIAL_AE_MAX_CLIPS"):
        pyfunc().predict(None, np.zeros((1001, 100), np.float32))
    with pytest.raises(InputRefused, match="160001 samples, more than 160000 .SPATIAL_AE_MAX_SAMPLES"):
        pyfunc().predict(None, [np.zeros(10), np.zeros(160001)])
    monkeypatch.setenv("SPATIAL_AE_MAX_CLIPS", "2")
    monkeypatch.setenv("SPATIAL_AE_MAX_SAMPLES", "16000")
    with pytest.raises(InputRefused, match="3 clips in one request, more than 2"):
        pyfunc().predict(None, [np.zeros(10)] * 3)
    with pytest.raises(InputRefused, match="16001 samples, more than 16000"):
        pyfunc().predict(None, np.zeros((1, 16001), np.float32))


def test_paths_are_refused_by_default(tmp_path, monkeypatch):
    monkeypatch.delenv("SPATIAL_AE_AUDIO_ROOT", raising=False)
    wav = tmp_path / "ok.wav"
    soundfile.write(wav, np.zeros(16000), 16000, subtype="PCM_16")
    for model_input in ([str(wav)], pd.DataFrame({"path": [str(wav)]}), str(wav)):
        with pytest.raises(InputRefused, match="does not read file paths.*SPATIAL_AE_AUDIO_ROOT"):
            pyfunc().predict(None, model_input)
    from spatial_ae.data.audio import load_clip  # trusted in-process callers (kws predict) read files directly
    assert clips_from_input([str(wav)], load_path=load_clip).shape == (1, 16000)


def test_paths_are_confined_to_the_audio_root(audio_root, tmp_path):
    model = pyfunc()
    assert model.predict(None, [str(audio_root / "ok.wav")]).shape == (1, 1)
    assert model.predict(None, ["ok.wav"]).shape == (1, 1)  # relative: under the root
    assert model.predict(None, pd.DataFrame({"path": [str(audio_root / "ok.wav")]})).shape == (1, 1)
    refused = ["/etc/shadow", "/etc/passwd", "/nonexistent/x.wav", "/etc", "/dev/zero", str(tmp_path / "outside.wav"),
               str(audio_root / "missing.wav"), str(audio_root / "fifo.wav"), str(audio_root / "folder.wav"),
               str(audio_root / "zero.wav"), str(audio_root / "escape.wav"), "../outside.wav",
               str(audio_root / ".." / "outside.wav")]
    for path in refused:
        outcome = in_thread(lambda: model.predict(None, [path]), 5)
        error = outcome.get("error")
        assert isinstance(error, InputRefused), (path, outcome)
        # the same words whatever the path is (missing, folder, device, outside): nothing learnt about it
        assert error.message == (f"clip {path!r}: not an accepted audio file. Fix: pass a WAV file under the "
                                 "folder the server allows (SPATIAL_AE_AUDIO_ROOT), or send the samples instead.")


def test_served_model_refuses_bad_paths_with_400_and_no_trace(sqlite_tracking, speech_commands_sample, tmp_path,
                                                              audio_root):
    from tests.test_kws import registered_encoder
    from tests.test_serve import start_server, stop_server, wait_for_ping

    registered_encoder(speech_commands_sample, ae_epochs=1)
    secret = tmp_path / "secret.wav"  # chmod 000, outside the root
    secret.write_bytes((audio_root / "ok.wav").read_bytes())
    secret.chmod(0)
    server, log, url = start_server(tmp_path)
    try:
        wait_for_ping(server, url, tmp_path)
        for path in ["/dev/zero", str(audio_root / "fifo.wav"), "/etc/shadow", str(secret),
                     str(audio_root / "zero.wav")]:
            body = json.dumps({"dataframe_split": {"columns": ["path"], "data": [[path]]}}).encode()
            request = urllib.request.Request(f"{url}/invocations", body, {"Content-Type": "application/json"})
            start = time.time()
            with pytest.raises(urllib.error.HTTPError) as answer:
                urllib.request.urlopen(request, timeout=30)
            assert time.time() - start < 1.0, path
            assert answer.value.code == 400, path
            text = answer.value.read().decode()
            reply = json.loads(text)
            assert reply["error_code"] == "INVALID_PARAMETER_VALUE" and "stack_trace" not in reply, text
            assert "not an accepted audio file" in reply["message"], text
            for server_path in (str(audio_root), "/root", "site-packages", "Traceback", os.getcwd()):
                assert server_path not in text.replace(path, "<sent>"), (server_path, text)
        # too many clips (10,000), and samples that are not audio: 400 too, within a second
        for body in ({"inputs": np.zeros((10_000, 10)).tolist()}, {"inputs": [[0.0, 1e20]]}):
            request = urllib.request.Request(f"{url}/invocations", json.dumps(body).encode(),
                                             {"Content-Type": "application/json"})
            start = time.time()
            with pytest.raises(urllib.error.HTTPError) as answer:
                urllib.request.urlopen(request, timeout=30)
            assert time.time() - start < 1.0
            assert answer.value.code == 400 and "stack_trace" not in answer.value.read().decode()
        assert server_memory_bytes(server.pid) < 2**30  # the server and its workers, after every request above
    finally:
        stop_server(server, log)


def server_memory_bytes(session_id: int) -> int:
    """Resident memory of every process in the session `session_id` (the server and its uvicorn workers)."""
    total = 0
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == session_id:  # field 6 of /proc/pid/stat: the session id
                total += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")  # field 24: resident pages
        except (OSError, IndexError, ValueError):
            continue  # a process that ended meanwhile
    assert total > 0, f"no process of session {session_id} found"
    return total
