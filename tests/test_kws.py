"""Keyword spotting: real spoken digits (FSDD) classified with an encoder pretrained on another corpus
(the Speech Commands sample), against the MFCC-CNN benchmark on the same clips; predictions to CSV; bad inputs."""
import shutil
import subprocess
import sys

import keras
import mlflow
import numpy as np
import pandas as pd
import pytest
import soundfile
from mlflow.tracking import MlflowClient

from spatial_ae.cli import main as cli_main
from spatial_ae.data.audio import wav_files
from spatial_ae.errors import UserError
from spatial_ae.steps.evaluate import train_and_test
from spatial_ae.steps.kws import KWS_NAME, load_labelled_set, predict_keywords, train_keyword_spotter
from spatial_ae.method.models import build_mfcc_cnn
from spatial_ae.params import arguments
from spatial_ae.settings import FeaturizeSettings
from spatial_ae.mlflow_io.registry import ENCODER_NAME, registered_version
from spatial_ae.method.training import seed_everything

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TRAIN_SPEAKERS = ("george", "jackson", "lucas", "nicolas")  # takes 5-9 train, takes 10-11 early stopping
TEST_SPEAKERS = ("theo", "yweweler")  # held out: their takes 0-4 are the test clips
TRAIN_TAKES, STOP_TAKES, TEST_TAKES = range(5, 10), range(10, 12), range(0, 5)


def registered_encoder(corpus_dir, ae_epochs: int = 5) -> str:
    """Featurize `corpus_dir`, pretrain a small encoder on it and make it the champion; returns its version URI.

    The 'balanced' recipe (standardised MFCC in): the paper's recipe, 5 epochs on the 205 unlabelled clips of
    the sample, gives FSDD accuracies near 0.2-0.35 here."""
    from spatial_ae.steps.featurize import featurize
    from spatial_ae.steps.pretrain import pretrain

    run_id = featurize(FeaturizeSettings(str(corpus_dir), unlabeled_set_size=12000, lbl_trai_size=3000,
                                         lbl_test_size=6000))
    uri = pretrain(**arguments("pretrain", {"featurize_run_id": run_id, "ae_epochs": ae_epochs, "recipe": "balanced"}))
    MlflowClient().set_registered_model_alias(ENCODER_NAME, "champion", registered_version(uri)[1])
    return uri


def fsdd_digit_folder(fsdd, root):
    """Link FSDD takes into <root>/<digit word>/ with Speech Commands lists: the test speakers' takes in
    testing_list.txt, the training speakers' early-stopping takes in validation_list.txt."""
    lists = {"validation_list.txt": [], "testing_list.txt": []}
    for digit, word in enumerate(DIGITS):
        (root / word).mkdir(parents=True)
        for speakers, takes, list_name in ((TRAIN_SPEAKERS, TRAIN_TAKES, None),
                                           (TRAIN_SPEAKERS, STOP_TAKES, "validation_list.txt"),
                                           (TEST_SPEAKERS, TEST_TAKES, "testing_list.txt")):
            for speaker in speakers:
                for take in takes:
                    name = f"{digit}_{speaker}_{take}.wav"
                    (root / word / name).symlink_to(fsdd / "recordings" / name)
                    if list_name:
                        lists[list_name].append(f"{word}/{name}")
    for list_name, lines in lists.items():
        (root / list_name).write_text("\n".join(lines) + "\n")
    return root


def test_keyword_spotter_on_fsdd_digits(sqlite_tracking, speech_commands_sample, fsdd, tmp_path):
    registered_encoder(speech_commands_sample)
    data_dir = fsdd_digit_folder(fsdd, tmp_path / "digits")
    (data_dir / "one" / "broken.wav").write_bytes(b"RIFF0000WAVEnot audio")  # skipped and counted

    kws_uri = train_keyword_spotter("models:/spatial-ae-encoder@champion", str(data_dir), dnn_epochs=100,
                                    patience=10, seed=0)
    client = MlflowClient()
    version = client.get_model_version(KWS_NAME, kws_uri.rsplit("/", 1)[1])
    assert version.tags["encoder_uri"] == "models:/spatial-ae-encoder@champion"
    assert version.tags["encoder_version_uri"] == f"models:/{ENCODER_NAME}/1"
    assert client.get_model_version_by_alias(KWS_NAME, "champion").version == version.version
    run = client.get_run(version.tags["kws_run_id"])
    metrics = run.data.metrics
    assert (metrics["train_clips"], metrics["early_stopping_clips"], metrics["test_clips"]) == (200, 80, 100)
    assert metrics["skipped_clips"] == 1
    assert metrics["kws_wer"] == pytest.approx(1 - metrics["kws_accuracy"])
    assert {"per_word/kws_precision_seven", "per_word/kws_recall_seven", "kws_weighted_precision"} <= set(metrics)
    summary = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/model_summary/keyword_classifier.txt")
    assert "Total params" in summary
    outputs = mlflow.models.get_model_info(f"models:/{KWS_NAME}/{version.version}").signature.outputs.input_names()
    assert outputs == ["word", "confidence"]

    # the MFCC-CNN benchmark on the same takes
    data = load_labelled_set(data_dir, seed=0)
    seed_everything(0)
    baseline = train_and_test(build_mfcc_cnn(len(DIGITS)), keras.optimizers.Adamax(), data.mfcc, data.labels,
                               data.train, data.stop, data.test, 30, 5, data.words, "mfcc_cnn")
    client.log_metric(run.info.run_id, "mfcc_cnn_accuracy", baseline.accuracy)
    print(f"\nFSDD digits, test speakers {', '.join(TEST_SPEAKERS)} (held out): encoder + DNN accuracy "
          f"{metrics['kws_accuracy']:.3f}, MFCC-CNN accuracy {baseline.accuracy:.3f} (chance 0.100)")
    assert metrics["kws_accuracy"] >= 0.3

    new_clips = tmp_path / "new"
    new_clips.mkdir()
    for name in ("3_theo_40.wav", "7_yweweler_41.wav", "9_george_42.wav"):
        shutil.copy(fsdd / "recordings" / name, new_clips / name)
    (new_clips / "empty.wav").write_bytes(b"")
    soundfile.write(new_clips / "loud.wav", np.full(16000, 1e20, np.float32), 16000, subtype="FLOAT")  # not audio
    output = predict_keywords("models:/spatial-ae-kws@champion", str(new_clips), str(tmp_path / "out.csv"))
    predictions = pd.read_csv(output)
    assert list(predictions.columns) == ["file", "word", "confidence"] and len(predictions) == 3
    assert predictions["word"].isin(DIGITS).all() and predictions["confidence"].between(0, 1).all()
    predict_run = mlflow.search_runs(filter_string="tags.`spatial_ae.step` = 'predict'", output_format="list")[0]
    assert predict_run.data.metrics["skipped_clips"] == 2  # the empty file and the loud one, not the batch


def jackson_digits(fsdd, root, takes: int):
    """A plain labelled folder <digit>/<clip>.wav of jackson's first `takes` takes of 0 and 1 (links into FSDD)."""
    for digit in (0, 1):
        (root / str(digit)).mkdir(parents=True)
        for take in range(takes):
            name = f"{digit}_jackson_{take}.wav"
            (root / str(digit) / name).symlink_to(fsdd / "recordings" / name)
    return root


def test_a_clip_whose_features_overflow_is_skipped_not_trained_on(fsdd, tmp_path):
    """A float WAV of huge samples reads, but its MFCC is infinite: featurize_files skips it for every caller
    (the kws step used to train on it, and stopped on NaN losses)."""
    root = jackson_digits(fsdd, tmp_path / "loud", takes=10)
    soundfile.write(root / "1" / "loud.wav", np.full(16000, 1e30, np.float32), 16000, subtype="FLOAT")
    data = load_labelled_set(root, seed=0)
    assert [name for name, _ in data.skipped] == ["1/loud.wav"] and "infinite" in data.skipped[0][1]
    assert np.isfinite(data.mfcc).all() and len(data.mfcc) == 20


def test_plain_folder_is_split_per_word_and_unreadable_clips_are_skipped(fsdd, tmp_path):
    root = jackson_digits(fsdd, tmp_path / "plain", takes=20)
    (root / "1" / "truncated.wav").write_bytes((fsdd / "recordings" / "1_jackson_0.wav").read_bytes()[:30])
    data = load_labelled_set(root, seed=3)
    assert data.words == ("0", "1") and len(data.skipped) == 1 and "truncated.wav" in data.skipped[0][0]
    for word in (0, 1):
        sizes = [int((data.labels[rows] == word).sum()) for rows in (data.train, data.stop, data.test)]
        assert sizes == [14, 3, 3]
    assert len(set(data.train) | set(data.stop) | set(data.test)) == 40
    again = load_labelled_set(root, seed=3)
    assert np.array_equal(again.test, data.test)


def test_bad_inputs_name_the_path(tmp_path, capsys):
    with pytest.raises(UserError, match="does not exist"):
        load_labelled_set(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no word folders"):
        load_labelled_set(tmp_path / "empty")
    (tmp_path / "only" / "yes").mkdir(parents=True)
    (tmp_path / "only" / "yes" / "a.wav").write_bytes(b"")
    with pytest.raises(UserError, match="at least two"):
        load_labelled_set(tmp_path / "only")
    with pytest.raises(UserError, match="has no .wav files"):
        wav_files(tmp_path / "empty")
    assert cli_main("predict", ["--inputs", str(tmp_path / "nowhere")]) == 2
    assert "nowhere does not exist" in capsys.readouterr().err


def test_missing_paths_are_refused_before_tensorflow_is_imported(tmp_path):
    """`kws` and `predict` given a path that does not exist stop with one `error:` line each, in a process that
    has not imported TensorFlow (importing it took 12 s before the error came)."""
    script = ("import sys; from spatial_ae.cli import main; "
              "codes = [main('kws', ['--data_dir', sys.argv[1]]), main('predict', ['--inputs', sys.argv[1]])]; "
              "print(codes, 'tensorflow' in sys.modules)")
    missing = tmp_path / "nowhere"
    result = subprocess.run([sys.executable, "-c", script, str(missing)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300)
    assert result.stdout.split() == ["[2,", "2]", "False"], result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    kws_error, predict_error = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert f"data_dir={str(missing)!r} is not a folder" in kws_error and "-P data_dir=" in kws_error
    assert f"{missing} does not exist" in predict_error and "-P inputs=" in predict_error
