"""Keyword spotting with a registered encoder: train a classifier on a labelled folder, register it, predict files.

`train_keyword_spotter` (entry point `kws`) embeds the clips of a labelled folder with the encoder, trains the
paper's DNN probe (on standardised embeddings) with early stopping and registers `spatial-ae-kws`: a pyfunc
taking raw audio or WAV paths and returning a DataFrame with `word` and `confidence`, the encoder inside.
`predict_keywords` (entry point `predict`) writes such predictions for files or a folder to a CSV.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import keras
import mlflow
import numpy as np
import pandas as pd

from spatial_ae.mlflow_io import registry
from spatial_ae.mlflow_io import tracking
from spatial_ae.mlflow_io.pyfunc import CLIPS_PER_CALL
from spatial_ae.method import training
from spatial_ae.data.audio import MAX_ABS_SAMPLE, AudioError, load_clip, wav_files
from spatial_ae.data.corpus import LIST_FILES, TEST, TRAIN, UNLABELLED, read_corpus_dir
from spatial_ae.errors import UserError
from spatial_ae.method.metrics import check_word_metric_names
from spatial_ae.steps.evaluate import train_and_test
from spatial_ae.data.features import featurize_files
from spatial_ae.method.models import build_dnn_probe
from spatial_ae.method.training import seed_everything
from spatial_ae.names import KWS as PREFIX

log = logging.getLogger(__name__)

KWS_NAME = os.environ.get("SPATIAL_AE_KWS_NAME", "spatial-ae-kws")  # the registered keyword spotter
STOP_FRACTION, TEST_FRACTION = 0.15, 0.15  # of each word's clips, for a folder without split lists


@dataclass
class LabelledSet:
    """The readable clips of a labelled folder: MFCC, labels and the train / early-stopping / test indices."""

    root: Path
    words: tuple[str, ...]
    files: list[Path]
    mfcc: np.ndarray
    labels: np.ndarray
    train: np.ndarray
    stop: np.ndarray
    test: np.ndarray
    split_rule: str
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)


def load_labelled_set(data_dir, seed: int = 0) -> LabelledSet:
    """Read `<data_dir>/<word>/*.wav` and split it.

    With `validation_list.txt` and `testing_list.txt` (Speech Commands layout): train on the clips in neither
    list, early-stop on the validation list, test on the testing list. Without them: a seeded split of each
    word's clips, 70% train, 15% early stopping, 15% test. Unreadable clips are skipped and counted.
    """
    corpus = read_corpus_dir(Path(data_dir), hash_splits_if_unlisted=False)
    check_word_metric_names(corpus.words, str(corpus.root))
    if len(corpus.words) < 2:
        raise UserError(f"{corpus.root} has one word folder ({corpus.words[0]}); a keyword spotter needs at least two. "
                        f"Fix: add one folder of WAV clips per word.")
    table = featurize_files([clip.file for clip in corpus.clips], [clip.path for clip in corpus.clips],
                            progress=False, keep_mel=np.zeros(len(corpus.clips), dtype=bool))
    for _, reason in table.errors:
        log.warning("skipped %s", reason)
    clips = [clip for clip, ok in zip(corpus.clips, table.ok) if ok]
    if not clips:
        raise UserError(f"none of the {len(corpus.clips)} clips of {corpus.root} could be read (e.g. "
                        f"{table.errors[0][1]}). Fix: re-export them as 16-bit PCM WAV.")
    word_index = {word: i for i, word in enumerate(corpus.words)}
    labels = np.array([word_index[clip.word] for clip in clips], dtype=np.int32)
    if all((corpus.root / name).is_file() for name in LIST_FILES.values()):
        splits = np.array([clip.split for clip in clips])
        train, stop, test = (np.flatnonzero(splits == name) for name in (UNLABELLED, TRAIN, TEST))
        rule = "Speech Commands lists: train = in neither list, early stopping = validation list, test = testing list"
    else:
        train, stop, test = stratified_split(labels, corpus.words, seed)
        rule = f"no split lists: seeded split of each word, {1 - STOP_FRACTION - TEST_FRACTION:.0%} train, " \
               f"{STOP_FRACTION:.0%} early stopping, {TEST_FRACTION:.0%} test"
    for part, rows in (("training", train), ("early-stopping", stop), ("test", test)):
        if len(rows) == 0:
            raise UserError(f"{corpus.root}: the {part} split is empty ({rule}). Fix: add clips, or fix "
                            f"validation_list.txt / testing_list.txt, or remove both lists to split each word.")
    log.info("kws: %s: %d words, %d train / %d early-stopping / %d test clips, %d skipped (%s)", corpus.root,
             len(corpus.words), len(train), len(stop), len(test), len(table.errors), rule)
    return LabelledSet(root=corpus.root, words=corpus.words, files=[clip.file for clip in clips],
                       mfcc=table.mfcc[table.ok], labels=labels, train=train, stop=stop, test=test, split_rule=rule,
                       skipped=list(table.errors))


def stratified_split(labels: np.ndarray, words: tuple[str, ...],
                     seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded train / early-stopping / test indices, each word split 70 / 15 / 15 (at least one clip each)."""
    rng = np.random.default_rng(seed)
    train, stop, test = [], [], []
    for label, word in enumerate(words):
        rows = rng.permutation(np.flatnonzero(labels == label))
        if len(rows) < 3:
            raise UserError(f"word folder {word!r} has {len(rows)} readable clip(s); at least 3 are needed (train, "
                            f"early stopping, test). Fix: add clips to it or remove it.")
        n_stop = max(1, round(STOP_FRACTION * len(rows)))
        n_test = max(1, round(TEST_FRACTION * len(rows)))
        stop.append(rows[:n_stop])
        test.append(rows[n_stop:n_stop + n_test])
        train.append(rows[n_stop + n_test:])
    return tuple(np.sort(np.concatenate(part)) for part in (train, stop, test))


def train_keyword_spotter(encoder_uri: str, data_dir: str, dnn_epochs: int = 500, patience: int = 5,
                          seed: int = 0) -> str:
    """Train the DNN probe on the encoder's embeddings of a labelled folder, log its test metrics and register it
    as `spatial-ae-kws` (aliases `newest`, and `champion` for the best test accuracy); returns its URI."""
    params = dict(encoder_uri=encoder_uri, data_dir=data_dir, dnn_epochs=dnn_epochs, patience=patience, seed=seed)
    tracking.check_tracking_server()
    encoder = registry.load_keras_encoder(encoder_uri)
    data = load_labelled_set(data_dir, seed)
    with tracking.step_run("kws", params, run_name=f"kws-seed{seed}") as run:
        mlflow.log_metrics({"train_clips": len(data.train), "early_stopping_clips": len(data.stop),
                            "test_clips": len(data.test), "skipped_clips": len(data.skipped), "words": len(data.words)})
        mlflow.set_tag("split_rule", data.split_rule)
        embeddings = np.asarray(encoder.predict(data.mfcc, batch_size=1024, verbose=0), dtype=np.float32)
        seed_everything(seed)
        classifier = standardized_probe(embeddings[data.train], len(data.words))
        report = train_and_test(classifier, training.optimizer("Nadam"), embeddings, data.labels, data.train,
                                data.stop, data.test, dnn_epochs, patience, data.words, PREFIX)
        mlflow.log_metrics(report.summary_metrics(PREFIX))
        mlflow.log_table(report.per_class_table(PREFIX), "kws/per_class_metrics.json")
        with tempfile.TemporaryDirectory() as tmp:
            report.confusion_table().to_csv(Path(tmp) / "confusion.csv")
            pd.DataFrame(data.skipped, columns=["path", "reason"]).to_csv(Path(tmp) / "skipped_clips.csv", index=False)
            mlflow.log_artifacts(tmp, "kws")
        model_uri = _log_keyword_spotter(encoder, classifier, data.words)
        encoder_version = registry.registered_version(encoder_uri)  # the version an alias points at now
        uri = registry.register(model_uri, name=KWS_NAME, tags={
            "encoder_uri": encoder_uri, "kws_run_id": run.info.run_id, "data_dir": str(data.root),
            "words": ",".join(data.words),
            "encoder_version_uri": "models:/{}/{}".format(*encoder_version) if encoder_version else encoder_uri})
        registry.record_accuracy(uri, report.accuracy, report.validation_accuracy)
    message = f"kws: {uri} test accuracy {report.accuracy:.3f} (WER {report.wer:.3f}) on {len(data.test)} clips"
    log.info(message)
    print(message, flush=True)
    return uri


def standardized_probe(train_embeddings: np.ndarray, num_classes: int) -> keras.Model:
    """The paper's DNN probe behind a Normalization layer holding the training embeddings' mean and variance
    (embeddings of unstandardised encoders are large; the DNN then learns far worse)."""
    inputs = keras.Input((train_embeddings.shape[1],), name="embedding")
    probe = build_dnn_probe(train_embeddings.shape[1], num_classes)
    normalizer = keras.layers.Normalization(mean=train_embeddings.mean(axis=0), variance=train_embeddings.var(axis=0))
    return keras.Model(inputs, probe(normalizer(inputs)), name="keyword_classifier")


def _log_keyword_spotter(encoder: keras.Model, classifier: keras.Model, words: tuple[str, ...]) -> str:
    """Log the raw-audio keyword-spotter pyfunc (encoder, classifier and words inside); returns its model URI."""
    with tempfile.TemporaryDirectory() as tmp:
        files = {"keras_encoder": Path(tmp) / "encoder.keras", "keras_classifier": Path(tmp) / "classifier.keras",
                 "words": Path(tmp) / "words.json"}
        encoder.save(files["keras_encoder"])
        classifier.save(files["keras_classifier"])
        files["words"].write_text(json.dumps(list(words)))
        registry.log_model_summary(classifier, "keyword_classifier")
        return registry.log_audio_model("keyword_spotter", "keyword_spotter.py", files, registry.KWS_OUTPUTS)


def predict_keywords(kws_uri: str, inputs, output_csv: str = "results/predictions.csv") -> Path:
    """Write `file, word, confidence` for every readable WAV of `inputs` to `output_csv`; unreadable ones are
    skipped and counted. Returns the CSV's path."""
    params = dict(kws_uri=kws_uri, inputs=inputs, output_csv=output_csv)
    tracking.check_tracking_server()
    files = wav_files(inputs)
    model = registry.load(kws_uri, mlflow.pyfunc.load_model,
                  "train one with `mlflow run . -e kws -P data_dir=...` or pass -P kws_uri=models:/spatial-ae-kws/N")
    output = Path(output_csv).expanduser().resolve()
    frames, skipped = [], []
    with tracking.step_run("predict", params, run_name="predict"):
        for start in range(0, len(files), CLIPS_PER_CALL):
            readable, clips = [], []
            for file in files[start:start + CLIPS_PER_CALL]:
                try:
                    clips.append(load_clip(file, max_abs=MAX_ABS_SAMPLE))
                    readable.append(str(file.absolute()))
                except AudioError as error:
                    log.warning("skipped %s", error)
                    skipped.append(str(file))
            if clips:
                frames.append(model.predict(np.stack(clips)).assign(file=readable))
        if not frames:
            raise UserError(f"none of the {len(files)} input files could be read (e.g. {skipped[0]}). "
                            f"Fix: pass 16-bit PCM WAV files.")
        output.parent.mkdir(parents=True, exist_ok=True)
        pd.concat(frames, ignore_index=True)[["file", "word", "confidence"]].to_csv(output, index=False)
        mlflow.log_metrics({"predicted_clips": len(files) - len(skipped), "skipped_clips": len(skipped)})
        mlflow.log_artifact(str(output), "predictions")
    message = f"predict: {len(files) - len(skipped)} clips -> {output} ({len(skipped)} unreadable, skipped)"
    log.info(message)
    print(message, flush=True)
    return output
