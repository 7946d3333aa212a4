"""GitHub issue 7, bad input at the level of the featurize step and the command line.

Every bad input is either handled (resampled, mixed down, trimmed) or skipped and counted in the run
(`clips_skipped`, `features/skipped_clips.csv`, `features/warnings.txt`), or stops early with a one-line
error naming the file or parameter and the fix: never a TensorFlow/librosa traceback, never a silently
wrong result. The unit-level cases are in tests/test_audio.py, tests/test_corpus.py and tests/test_params.py.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile
from mlflow.tracking import MlflowClient

from spatial_ae.steps.featurize import featurize, load_feature_set
from spatial_ae.settings import FeaturizeSettings
from tests.conftest import REPO

WORDS = ("no", "yes")
GOOD_PER_WORD = 8  # 2 validation, 2 testing, 4 unlabelled per word

# handled: read, converted to 1 s 16 kHz mono and featurized (word "no", unlabelled)
HANDLED = {
    "stereo.wav": dict(rate=16000, channels=2, subtype="PCM_16"),
    "rate_8000.wav": dict(rate=8000, subtype="PCM_16"),
    "rate_22050.wav": dict(rate=22050, subtype="PCM_16"),
    "rate_44100.wav": dict(rate=44100, subtype="PCM_16"),
    "rate_48000.wav": dict(rate=48000, subtype="PCM_16"),
    "long_3s.wav": dict(rate=16000, seconds=3.0, subtype="PCM_16"),
    "float32.wav": dict(rate=16000, subtype="FLOAT"),
    "pcm24.wav": dict(rate=16000, subtype="PCM_24"),
}
# skipped: file name -> words its reason must contain (word "yes", unlabelled)
SKIPPED = {
    "truncated.wav": "truncated WAV",
    "empty.wav": "empty file",
    "notes.wav": "not a readable WAV",
    "nan.wav": "NaN",
    "inf.wav": "infinite",
    "silent.wav": "silent",
    "overflow.wav": "NaN or infinite features",
}


def tone(frequency: float, seconds: float, rate: int, seed: int = 0, noise: float = 0.02) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    noise = noise * np.random.default_rng(seed).standard_normal(len(t))
    return (0.3 * np.sin(2 * np.pi * frequency * t) + noise).astype(np.float32)


def good_corpus(root: Path, per_word: int = GOOD_PER_WORD, lists: bool = True) -> Path:
    """A clean corpus: two words of noisy tones, speakers spk0..spkN, the split lists."""
    validation, testing = [], []
    for w, word in enumerate(WORDS):
        (root / word).mkdir(parents=True, exist_ok=True)
        for i in range(per_word):
            name = f"{word}/spk{i:02d}aa_nohash_0.wav"
            soundfile.write(root / name, tone(300 + 400 * w + 10 * i, 1.0, 16000, seed=i), 16000, subtype="PCM_16")
            (validation if i < 2 else testing if i < 4 else []).append(name)
    if lists:
        (root / "validation_list.txt").write_text("\n".join(validation) + "\n")
        (root / "testing_list.txt").write_text("\n".join(testing) + "\n")
    return root


def bad_corpus(root: Path) -> Path:
    """The good corpus plus every kind of awkward or broken clip, an empty word folder and a stale list entry."""
    good_corpus(root)
    for name, spec in HANDLED.items():
        wave = tone(440, spec.get("seconds", 1.0), spec["rate"], noise=0.0)
        if spec.get("channels") == 2:
            wave = np.stack([wave, 0.5 * wave], axis=1)
        soundfile.write(root / "no" / name, wave, spec["rate"], subtype=spec["subtype"])
    bad = root / "yes"
    soundfile.write(bad / "full.tmp", tone(440, 1.0, 16000), 16000, subtype="PCM_16", format="WAV")
    data = (bad / "full.tmp").read_bytes()
    (bad / "full.tmp").unlink()
    (bad / "truncated.wav").write_bytes(data[: len(data) // 2])
    (bad / "empty.wav").write_bytes(b"")
    (bad / "notes.wav").write_text("meeting notes, not audio\n" * 40)
    wave = tone(440, 1.0, 16000)
    wave[100] = np.nan
    soundfile.write(bad / "nan.wav", wave, 16000, subtype="FLOAT")
    wave[100] = np.inf
    soundfile.write(bad / "inf.wav", wave, 16000, subtype="FLOAT")
    soundfile.write(bad / "silent.wav", np.zeros(16000), 16000, subtype="PCM_16")
    soundfile.write(bad / "overflow.wav", np.full(16000, 1e30, np.float32), 16000, subtype="FLOAT")
    (root / "empty_word").mkdir()
    with open(root / "validation_list.txt", "a") as lists:
        lists.write("no/deleted_nohash_0.wav\n")
    return root


def artifact_text(run_id: str, path: str) -> str:
    return Path(MlflowClient().download_artifacts(run_id, path)).read_text()


def test_featurize_skips_and_counts_every_bad_clip(sqlite_tracking, tmp_path):
    root = bad_corpus(tmp_path / "corpus")
    run_id = featurize(FeaturizeSettings(str(root), unlabeled_set_size=1000, lbl_trai_size=2, lbl_test_size=1000))
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["clips_skipped"] == len(SKIPPED)
    assert run.data.metrics["clips_unlabelled"] == 2 * (GOOD_PER_WORD - 4) + len(HANDLED)

    skipped = pd.read_csv(MlflowClient().download_artifacts(run_id, "features/skipped_clips.csv"))
    reasons = dict(zip(skipped["path"], skipped["reason"]))
    assert set(reasons) == {f"yes/{name}" for name in SKIPPED}
    for name, words in SKIPPED.items():
        assert words in reasons[f"yes/{name}"] and "Fix:" in reasons[f"yes/{name}"], reasons[f"yes/{name}"]
        assert name in reasons[f"yes/{name}"]

    features = load_feature_set(run_id)
    assert {f"no/{name}" for name in HANDLED} <= set(features.paths)  # resampled, mixed down, trimmed, converted
    assert not set(features.paths) & {f"yes/{name}" for name in SKIPPED}
    for array in (features.mfcc, features.unlabelled_mel):
        assert np.isfinite(array).all()  # nothing NaN or infinite reaches the training
    paths = list(features.paths)
    reference = features.mfcc[paths.index("no/float32.wav")]  # the 440 Hz tone at 16 kHz, mono, 1 s
    for name in HANDLED:  # every other format gives (nearly) the features of the same tone
        correlation = np.corrcoef(features.mfcc[paths.index(f"no/{name}")], reference)[0, 1]
        assert correlation > 0.99, (name, correlation)

    warnings = artifact_text(run_id, "features/warnings.txt")
    assert "empty_word" in warnings and "has no .wav clips" in warnings  # empty word folder
    assert "1 of 5 entries" in warnings and "no/deleted_nohash_0.wav" in warnings  # stale list entry
    assert "fewer than the 1000 asked for" in warnings  # sizes larger than the corpus: all clips used
    assert "empty_word" not in features.words


def test_missing_split_lists_fall_back_at_the_featurize_step(sqlite_tracking, tmp_path):
    root = good_corpus(tmp_path / "corpus", per_word=30, lists=False)
    run_id = featurize(FeaturizeSettings(str(root), unlabeled_set_size=1000, lbl_trai_size=2, lbl_test_size=1000))
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["clips_skipped"] == 0
    assert min(run.data.metrics[f"clips_{split}"] for split in ("unlabelled", "train", "test")) > 0
    warnings = artifact_text(run_id, "features/warnings.txt")
    assert "validation_list.txt, testing_list.txt not found" in warnings and "speaker" in warnings


def run_cli(step: str, *arguments: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, f"entrypoints/{step}.py", *arguments], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env=os.environ.copy())


def assert_one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-3000:]
    for word in words:
        assert word in errors[0], errors[0]


@pytest.mark.parametrize("arguments, words", [
    (["--num_simulations", "ten"], ["num_simulations='ten'", "not a number", "-P num_simulations=10"]),
    (["--num_simulations", "0"], ["num_simulations='0'", "below its minimum 1"]),
    (["--ae_epochs", "2.5"], ["ae_epochs='2.5'", "whole number"]),
    (["--position_loss_weight", "nan"], ["position_loss_weight='nan'", "finite"]),
    (["--optimizer", "Adagrad"], ["optimizer='Adagrad'", "Adamax"]),
])
def test_bad_parameters_on_the_command_line(arguments, words):
    result = run_cli("main", *arguments, timeout=120)
    assert result.returncode == 2
    assert_one_line_error(result, *words)


def test_a_log_level_that_is_not_one(monkeypatch):
    monkeypatch.setenv("SPATIAL_AE_LOG_LEVEL", "LOUD")
    result = run_cli("featurize", timeout=120)
    assert result.returncode == 2
    assert_one_line_error(result, "SPATIAL_AE_LOG_LEVEL='LOUD' is not a log level", "DEBUG, INFO, WARNING, ERROR")


def test_corpus_path_that_does_not_exist(sqlite_tracking, tmp_path):
    result = run_cli("featurize", "--dataset", str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert_one_line_error(result, str(tmp_path / "nowhere"), "Fix:", "dataset=/path/to/folder")
    assert not MlflowClient().search_runs([sqlite_tracking["experiment_id"]])  # stopped before any run


def test_corpus_without_one_readable_clip_fails_the_open_run(sqlite_tracking, tmp_path):
    root = good_corpus(tmp_path / "corpus")
    for wav in root.glob("*/*.wav"):
        wav.write_bytes(b"not audio at all")
    result = run_cli("featurize", "--dataset", str(root), "--lbl_trai_size", "2")
    assert result.returncode == 2
    assert_one_line_error(result, "could be read", str(root))
    assert "Fix:" in result.stderr  # each skipped clip was logged with its fix
    runs = MlflowClient().search_runs([sqlite_tracking["experiment_id"]])
    assert [run.info.status for run in runs] == ["FAILED"]


def test_bad_parameter_through_mlflow_run_fails_the_project_run(sqlite_tracking):
    command = [sys.executable, "-m", "mlflow", "run", str(REPO), "-e", "main", "--env-manager", "local",
               "--experiment-id", sqlite_tracking["experiment_id"], "-P", "num_simulations=ten"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert result.returncode != 0
    assert "error: parameter num_simulations='ten' is not a number; pass e.g. -P num_simulations=10" in result.stderr
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    runs = MlflowClient().search_runs([sqlite_tracking["experiment_id"]])
    assert [run.info.status for run in runs] == ["FAILED"]
