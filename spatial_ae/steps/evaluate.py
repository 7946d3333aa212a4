"""The evaluate step: a DNN on an encoder's embeddings against the MFCC-CNN benchmark, on the same clips.

Each simulation draws its own labelled sample from its seed: 2 x lbl_trai_size clips of the labelled pool
(or 2 x labelled_per_word clips of each word), half to train, half for early stopping. A third model,
the same DNN probe on the standardised MFCC (`mfcc_dnn`), separates the representation from the classifier.
All models are tested on the same test clips.
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import keras
import mlflow
import numpy as np
import pandas as pd

from spatial_ae.mlflow_io import registry
from spatial_ae.mlflow_io import tracking
from spatial_ae.method import training
from spatial_ae.data.corpus import TEST, TRAIN
from spatial_ae.steps.featurize import FeatureSet, load_feature_set
from spatial_ae.method.metrics import ClassificationReport, classification_report
from spatial_ae.method.models import CATALOGUE, EMBEDDINGS, MFCC, ModelSpec
from spatial_ae.names import EMBEDDING_DNN, EVALUATION_DIR, MFCC_CNN, MODEL_TITLES
from spatial_ae.steps.plots import confusion_figure
from spatial_ae.method.positions import standardized_mfcc
from spatial_ae.method.training import fit, seed_everything
from spatial_ae.settings import EvaluateSettings

log = logging.getLogger(__name__)

CLASSIFIER_BATCH_SIZE = 32


def evaluate(featurize_run_id: str, encoder_uri: str, settings: EvaluateSettings, seed: int) -> dict[str, float]:
    """Run the evaluate step; returns the summary metrics of the models."""
    params = {"featurize_run_id": featurize_run_id, "encoder_uri": encoder_uri} | settings.params() | {"seed": seed}
    tracking.check_tracking_server()
    encoder = registry.load_keras_encoder(encoder_uri)
    feature_set = load_feature_set(featurize_run_id)
    with tracking.step_run("evaluate", params, run_name=f"evaluate-seed{seed}"):
        return evaluate_encoder(feature_set, encoder_uri, settings, seed, encoder=encoder)


def labelled_sample(feature_set: FeatureSet, lbl_trai_size: int, seed: int,
                    labelled_per_word: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """This simulation's labelled training clips and early-stopping clips (indices into the feature set).

    labelled_per_word > 0: up to 2 x labelled_per_word clips of each word, half to train, half to stop.
    """
    rng = np.random.default_rng(seed)
    pool = feature_set.indices(TRAIN)
    if labelled_per_word <= 0:
        drawn = rng.permutation(pool)[: 2 * lbl_trai_size]
        half = len(drawn) // 2
        return drawn[:half], drawn[half:]
    train, stop = [], []
    for word in range(len(feature_set.words)):
        drawn = rng.permutation(pool[feature_set.labels[pool] == word])[: 2 * labelled_per_word]
        half = (len(drawn) + word % 2) // 2  # an odd clip goes to training for every other word
        train.append(drawn[:half])
        stop.append(drawn[half:])
    return np.concatenate(train), np.concatenate(stop)


def evaluate_encoder(feature_set: FeatureSet, encoder_uri: str, settings: EvaluateSettings, seed: int,
                     baselines: dict | None = None, encoder: keras.Model | None = None) -> dict[str, float]:
    """Train and test the classifiers of CATALOGUE in the active run; log metrics, tables and figures.

    `baselines` (optional) keeps the baseline (MFCC) models' reports by sample settings: an evaluation with the same
    seed and labelled sample reuses them instead of retraining (they do not depend on the encoder).
    """
    train, stop = labelled_sample(feature_set, settings.lbl_trai_size, seed, settings.labelled_per_word)
    test = feature_set.indices(TEST)
    if len(train) == 0 or len(stop) == 0:
        raise ValueError(f"the labelled pool has {len(feature_set.indices(TRAIN))} clips: too few to train and early-stop")
    mlflow.log_metrics({"labelled_train_clips": len(train), "early_stopping_clips": len(stop), "test_clips": len(test)})
    encoder = registry.load_keras_encoder(encoder_uri) if encoder is None else encoder
    embeddings = np.asarray(encoder.predict(feature_set.mfcc, batch_size=1024, verbose=0), dtype=np.float32)
    num_classes = len(feature_set.words)
    labels = feature_set.labels

    inputs = {EMBEDDINGS: embeddings, MFCC: feature_set.mfcc}

    def train_model(spec: ModelSpec) -> ClassificationReport:
        seed_everything(seed)
        model = spec.build(input_dim=inputs[spec.inputs].shape[1], num_classes=num_classes)
        optimizer = training.optimizer(spec.optimizer)
        x = standardized_mfcc(inputs[spec.inputs], train) if spec.standardize else inputs[spec.inputs]
        return train_and_test(model, optimizer, x, labels, train, stop, test, getattr(settings, spec.epochs), settings.patience,
                              feature_set.words, spec.name)

    own = {spec.name: train_model(spec) for spec in CATALOGUE if not spec.baseline}
    baseline_key = (seed, settings)  # the MFCC models depend on the labelled sample and the training settings
    if baselines is not None and baseline_key in baselines:
        mlflow.set_tag("baselines_reused", "true")
    else:
        baselines = {} if baselines is None else baselines
        baselines[baseline_key] = {spec.name: train_model(spec) for spec in CATALOGUE if spec.baseline}
    reports = {spec.name: (baselines[baseline_key] if spec.baseline else own)[spec.name] for spec in CATALOGUE}
    summary = {}
    for model, report in reports.items():
        summary |= report.summary_metrics(model)
    summary["accuracy_difference"] = reports[EMBEDDING_DNN].accuracy - reports[MFCC_CNN].accuracy
    summary[f"{EMBEDDING_DNN}_validation_accuracy"] = reports[EMBEDDING_DNN].validation_accuracy
    mlflow.log_metrics(summary)
    _log_tables(reports, feature_set, embeddings)
    registry.record_accuracy(encoder_uri, reports[EMBEDDING_DNN].accuracy, reports[EMBEDDING_DNN].validation_accuracy)
    log.info("evaluate: %s", ", ".join(f"{model} accuracy {report.accuracy:.3f}" for model, report in reports.items()))
    return summary


def train_and_test(model: keras.Model, optimizer, inputs: np.ndarray, labels: np.ndarray, train, stop, test,
                   epochs: int, patience: int, words, prefix: str) -> ClassificationReport:
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    fit(model, inputs[train], labels[train], (inputs[stop], labels[stop]), epochs=epochs, patience=patience,
        batch_size=CLASSIFIER_BATCH_SIZE, prefix=prefix)
    predicted = np.argmax(model.predict(inputs[test], batch_size=1024, verbose=0), axis=1)
    report = classification_report(labels[test], predicted, words)
    stopped = np.argmax(model.predict(inputs[stop], batch_size=1024, verbose=0), axis=1)
    report.validation_accuracy = float(np.mean(stopped == labels[stop]))
    return report


def _log_tables(reports: dict[str, ClassificationReport], feature_set: FeatureSet, embeddings: np.ndarray) -> None:
    per_class = pd.concat([report.per_class_table(model) for model, report in reports.items()], ignore_index=True)
    mlflow.log_table(per_class, f"{EVALUATION_DIR}/per_class_metrics.json")
    words = np.asarray(feature_set.words)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        per_class.to_csv(folder / "per_class_metrics.csv", index=False)
        for model, report in reports.items():
            report.confusion_table().to_csv(folder / f"confusion_{model}.csv")
        # per-word mean vectors of the test clips, for the summary's PCA figures
        test = feature_set.indices(TEST)
        for name, vectors in (("mfcc", feature_set.mfcc), ("embedding", embeddings)):
            frame = pd.DataFrame(vectors[test]).groupby(words[feature_set.labels[test]]).mean()
            frame.rename_axis("word").to_csv(folder / f"mean_{name}_per_word.csv")
        mlflow.log_artifacts(str(folder), EVALUATION_DIR)
    for model, report in reports.items():
        figure = confusion_figure(report.confusion, feature_set.words, f"{MODEL_TITLES[model]}: accuracy {report.accuracy:.3f}")
        mlflow.log_figure(figure, f"{EVALUATION_DIR}/confusion_{model}.png")
        import matplotlib.pyplot as plt

        plt.close(figure)
