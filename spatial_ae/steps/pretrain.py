"""The pretrain step: train the auto-encoder with the position head on the unlabelled clips, register its encoder."""
from __future__ import annotations

import logging

import keras
import mlflow
import numpy as np

from spatial_ae.mlflow_io import registry
from spatial_ae.mlflow_io import tracking
from spatial_ae.method import training
from spatial_ae.data.corpus import UNLABELLED
from spatial_ae.errors import UserError
from spatial_ae.data.features import MEL_SHAPE, MFCC_SHAPE
from spatial_ae.steps.featurize import load_feature_set
from spatial_ae.method.models import build_autoencoder
from spatial_ae.method.positions import mfcc_statistics, position_loss_scale, position_targets
from spatial_ae.settings import PretrainSettings, Recipe
from spatial_ae.method.training import fit, seed_everything

log = logging.getLogger(__name__)

VALIDATION_FRACTION = 0.1  # of the unlabelled clips, held out for early stopping


def check_anchors(unlabelled_clips: int, recipe: Recipe, where: str = "") -> None:
    """Refuse, before any training, more anchors (k-means centres or DTW exemplars) than unlabelled clips."""
    if recipe.with_position and recipe.num_anchors > unlabelled_clips:
        raise UserError(f"num_anchors={recipe.num_anchors}{where} is more than the {unlabelled_clips} unlabelled "
                        f"clips of the feature set (each anchor is a k-means centre of them). Fix: pass "
                        f"-P num_anchors={max(1, unlabelled_clips)} or less, or a larger unlabeled_set_size/corpus")


def check_anchors_of_run(featurize_run_id: str, recipes: list[Recipe]) -> None:
    """`check_anchors` for each recipe, with the unlabelled count the featurize run logged."""
    metrics = mlflow.get_run(featurize_run_id).data.metrics
    if f"clips_{UNLABELLED}" in metrics:
        for recipe in recipes:
            check_anchors(int(metrics[f"clips_{UNLABELLED}"]), recipe, f" (recipe {recipe.name})")


def pretrain(featurize_run_id: str, settings: PretrainSettings, seed: int) -> str:
    """Run the pretrain step; returns the registered encoder's `models:/spatial-ae-encoder/N` URI."""
    tracking.check_tracking_server()
    feature_set = load_feature_set(featurize_run_id)
    check_anchors(len(feature_set.indices(UNLABELLED)), settings.recipe)
    params = {"featurize_run_id": featurize_run_id} | settings.params() | {"seed": seed}
    with tracking.step_run("pretrain", params, run_name=f"pretrain-seed{seed}"):
        return train_and_register(feature_set, featurize_run_id, settings, seed)[0]


def input_normalizer(unlabelled_mfcc: np.ndarray) -> keras.layers.Normalization:
    """A Normalization layer holding the unlabelled set's per-coefficient mean and variance (`mfcc_statistics`)."""
    mean, variance = mfcc_statistics(unlabelled_mfcc)
    return keras.layers.Normalization(mean=mean, variance=variance, name="input_standardization")


def shifted_frames(features: np.ndarray, shape: tuple[int, int], shifts: np.ndarray) -> np.ndarray:
    """Flattened (bands x frames) features with each clip's frames moved by its shift (positive = later),
    the edge frame repeated into the gap: the same clip said a little earlier or later."""
    grid = features.reshape(len(features), *shape)
    frames = np.arange(shape[1])
    source = np.clip(frames[None, :] - shifts[:, None], 0, shape[1] - 1)  # (clips, frames)
    return np.take_along_axis(grid, source[:, None, :], axis=2).reshape(len(features), -1)


def added_clips(feature_set, rows: np.ndarray, recipe: Recipe, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """MFCC and power mel of the clips a recipe adds to the unlabelled training `rows`: as many synthetic-voice
    clips (`extra_unlabelled`), then `augment_shifts` time-shifted copies of the rows and those clips."""
    mfcc = feature_set.mfcc[feature_set.indices(UNLABELLED)][rows]
    mel = feature_set.unlabelled_mel[rows]
    rng = np.random.default_rng(seed)
    added_mfcc, added_mel = [np.empty((0, mfcc.shape[1]), np.float32)], [np.empty((0, mel.shape[1]), np.float32)]
    if recipe.extra_unlabelled == "synthetic":
        extra_mfcc, extra_mel = synthetic_voices(len(rows), rng)
        added_mfcc.append(extra_mfcc)
        added_mel.append(extra_mel)
        mfcc, mel = np.concatenate([mfcc, extra_mfcc]), np.concatenate([mel, extra_mel])
    for _ in range(recipe.augment_shifts):
        shifts = rng.integers(1, 5, len(mfcc)) * rng.choice([-1, 1], len(mfcc))
        added_mfcc.append(shifted_frames(mfcc, MFCC_SHAPE, shifts))
        added_mel.append(shifted_frames(mel, MEL_SHAPE, shifts))
    return np.concatenate(added_mfcc).astype(np.float32), np.concatenate(added_mel).astype(np.float32)


def synthetic_voices(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """MFCC and power mel of `count` clips drawn from the embedded synthetic corpus (all words and splits; eSpeak
    NG voices), generated once into the cache."""
    from spatial_ae.data.features import featurize_files
    from spatial_ae.data.synthetic import synthetic_corpus

    paths = sorted(synthetic_corpus(progress=False).glob("[!_]*/*.wav"))
    chosen = [paths[i] for i in sorted(rng.choice(len(paths), size=min(count, len(paths)), replace=False))]
    table = featurize_files(chosen, workers=0, progress=False)
    return table.mfcc[table.ok], table.mel[table.ok]


def train_and_register(feature_set, featurize_run_id: str, settings: PretrainSettings,
                       seed: int) -> tuple[str, keras.Model]:
    """Train an auto-encoder in the active run, log and register its encoder; returns the registered URI and the
    encoder itself (MFCC in), so that a caller evaluates it without loading it back.

    The recipe decides the inputs, the position targets and the loss weights. Early stopping watches 10% of the
    feature set's unlabelled clips, never augmented or extra clips.
    """
    recipe = settings.recipe
    unlabelled = feature_set.mfcc[feature_set.indices(UNLABELLED)]
    check_anchors(len(unlabelled), recipe)
    order = np.random.default_rng(seed).permutation(len(unlabelled))
    n_val = max(1, int(round(VALIDATION_FRACTION * len(unlabelled))))
    val, train = order[:n_val], order[n_val:]
    added_mfcc, added_mel = added_clips(feature_set, train, recipe, seed)
    x = np.concatenate([unlabelled, added_mfcc])
    mel = np.concatenate([feature_set.unlabelled_mel, added_mel])
    if len(added_mfcc):
        log.info("pretrain: %d training clips: %d unlabelled and %d added by the recipe", len(train) + len(added_mfcc),
                 len(train), len(added_mfcc))
        train = np.concatenate([train, np.arange(len(unlabelled), len(x))])
    normalizer = input_normalizer(unlabelled) if recipe.standardize_inputs else None
    reconstruction = x if normalizer is None else np.asarray(normalizer(x), dtype=np.float32)
    with_position = recipe.with_position
    if with_position:
        log.info("pretrain: position targets of %d clips (%s, %d anchors)", len(x), recipe.position_features,
                 recipe.num_anchors)
        positions = position_targets(mel, x, recipe.position_features, recipe.num_anchors,
                                     recipe.standardize_positions, seed)
        scale = position_loss_scale(reconstruction, positions, recipe.balance_losses)
        mlflow.log_params({"position_loss_scale": f"{scale:.6g}",
                           "effective_position_loss_weight": f"{scale * recipe.position_loss_weight:.6g}"})
    seed_everything(seed)
    autoencoder, encoder = build_autoencoder(recipe.embedding_dim, with_position_head=with_position,
                                             position_dim=positions.shape[1] if with_position else 1,
                                             input_normalization=normalizer)
    losses = {"reconstruction": "mse"} | ({"position": "mse"} if with_position else {})
    weights = {"reconstruction": 1.0} | (
        {"position": scale * recipe.position_loss_weight} if with_position else {})
    autoencoder.compile(optimizer=training.optimizer(settings.optimizer), loss=losses, loss_weights=weights)

    def targets(rows):
        return {"reconstruction": reconstruction[rows]} | ({"position": positions[rows]} if with_position else {})

    fit(autoencoder, x[train], targets(train), (x[val], targets(val)), epochs=settings.ae_epochs,
        patience=settings.patience, batch_size=settings.batch_size, prefix="ae", min_epochs=settings.ae_min_epochs)
    audio_uri, keras_uri = registry.log_encoder(encoder, x[:5])
    dataset = mlflow.get_run(featurize_run_id).data.tags.get("dataset", "")
    uri = registry.register(audio_uri, tags={
        "featurize_run_id": featurize_run_id, "dataset": dataset, **recipe.params(),
        "keras_model_uri": keras_uri, "pretrain_run_id": mlflow.active_run().info.run_id, "seed": seed})
    return uri, encoder
