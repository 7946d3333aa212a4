"""The pretrain step: train the auto-encoder with the position head on the unlabelled clips, register its encoder."""
from __future__ import annotations

import logging

import keras
import mlflow
import numpy as np

from . import registry, tracking, training
from .corpus import UNLABELLED
from .errors import UserError
from .featurize import load_feature_set
from .models import build_autoencoder
from .recipes import mfcc_statistics, position_loss_scale, position_targets, resolve_recipe
from .training import fit, seed_everything

log = logging.getLogger(__name__)

VALIDATION_FRACTION = 0.1  # of the unlabelled clips, held out for early stopping


def check_anchors(unlabelled_clips: int, options: dict, where: str = "") -> None:
    """Refuse, before any training, more anchors (k-means centres or DTW exemplars) than unlabelled clips."""
    if options["position_loss_weight"] > 0 and options["num_anchors"] > unlabelled_clips:
        raise UserError(f"num_anchors={options['num_anchors']}{where} is more than the {unlabelled_clips} unlabelled "
                        f"clips of the feature set (each anchor is a k-means centre of them). Fix: pass "
                        f"-P num_anchors={max(1, unlabelled_clips)} or less, or a larger unlabeled_set_size/corpus")


def check_anchors_of_run(featurize_run_id: str, options_list: list[dict]) -> None:
    """`check_anchors` for each of `options_list`, with the unlabelled count the featurize run logged."""
    metrics = mlflow.get_run(featurize_run_id).data.metrics
    if f"clips_{UNLABELLED}" in metrics:
        for options in options_list:
            check_anchors(int(metrics[f"clips_{UNLABELLED}"]), options,
                          f" (recipe {options['recipe']})" if "recipe" in options else "")


def pretrain(featurize_run_id: str, embedding_dim: int, ae_epochs: int, patience: int, optimizer: str,
             batch_size: int, recipe: str, standardize_inputs: bool | None, standardize_positions: bool | None,
             position_features: str | None, num_anchors: int | None, position_loss_weight: float | None,
             balance_losses: bool | None, seed: int, ae_min_epochs: int = 0) -> str:
    """Run the pretrain step; returns the registered encoder's `models:/spatial-ae-encoder/N` URI."""
    options = resolve_recipe(recipe, standardize_inputs=standardize_inputs,
                             standardize_positions=standardize_positions, position_features=position_features,
                             num_anchors=num_anchors, position_loss_weight=position_loss_weight,
                             balance_losses=balance_losses)
    params = dict(featurize_run_id=featurize_run_id, embedding_dim=embedding_dim, ae_epochs=ae_epochs,
                  ae_min_epochs=ae_min_epochs, patience=patience, optimizer=optimizer, batch_size=batch_size, seed=seed, **options)
    tracking.check_tracking_server()
    feature_set = load_feature_set(featurize_run_id)
    check_anchors(len(feature_set.indices(UNLABELLED)), options)
    with tracking.step_run("pretrain", params, run_name=f"pretrain-seed{seed}"):
        return train_and_register(feature_set, **params)


def input_normalizer(unlabelled_mfcc: np.ndarray) -> keras.layers.Normalization:
    """A Normalization layer holding the unlabelled set's per-coefficient mean and variance (`mfcc_statistics`)."""
    mean, variance = mfcc_statistics(unlabelled_mfcc)
    return keras.layers.Normalization(mean=mean, variance=variance, name="input_standardization")


def train_and_register(feature_set, featurize_run_id: str, embedding_dim: int, ae_epochs: int, patience: int,
                       optimizer: str, batch_size: int, seed: int, recipe: str = "paper",
                       standardize_inputs: bool | None = None, standardize_positions: bool | None = None,
                       position_features: str | None = None, num_anchors: int | None = None,
                       position_loss_weight: float | None = None, balance_losses: bool | None = None,
                       ae_min_epochs: int = 0) -> str:
    """Train an auto-encoder in the active run, log and register its encoder; returns the registered URI.

    The recipe's options (overridden by those given) decide the inputs, the position targets and the loss weights.
    """
    options = resolve_recipe(recipe, standardize_inputs=standardize_inputs,
                             standardize_positions=standardize_positions, position_features=position_features,
                             num_anchors=num_anchors, position_loss_weight=position_loss_weight,
                             balance_losses=balance_losses)
    x = feature_set.mfcc[feature_set.indices(UNLABELLED)]
    check_anchors(len(x), options)
    normalizer = input_normalizer(x) if options["standardize_inputs"] else None
    reconstruction = x if normalizer is None else np.asarray(normalizer(x), dtype=np.float32)
    with_position = options["position_loss_weight"] > 0
    if with_position:
        log.info("pretrain: position targets of %d clips (%s, %d anchors)", len(x), options["position_features"],
                 options["num_anchors"])
        positions = position_targets(feature_set.unlabelled_mel, x, options["position_features"],
                                     options["num_anchors"], options["standardize_positions"], seed)
        scale = position_loss_scale(reconstruction, positions, options["balance_losses"])
        mlflow.log_params({"position_loss_scale": f"{scale:.6g}",
                           "effective_position_loss_weight": f"{scale * options['position_loss_weight']:.6g}"})
    seed_everything(seed)
    autoencoder, encoder = build_autoencoder(embedding_dim, with_position_head=with_position,
                                             position_dim=positions.shape[1] if with_position else 1,
                                             input_normalization=normalizer)
    losses = {"reconstruction": "mse"} | ({"position": "mse"} if with_position else {})
    weights = {"reconstruction": 1.0} | (
        {"position": scale * options["position_loss_weight"]} if with_position else {})
    autoencoder.compile(optimizer=training.optimizer(optimizer), loss=losses, loss_weights=weights)

    order = np.random.default_rng(seed).permutation(len(x))
    n_val = max(1, int(round(VALIDATION_FRACTION * len(x))))
    val, train = order[:n_val], order[n_val:]

    def targets(rows):
        return {"reconstruction": reconstruction[rows]} | ({"position": positions[rows]} if with_position else {})

    fit(autoencoder, x[train], targets(train), (x[val], targets(val)), epochs=ae_epochs, patience=patience,
        batch_size=batch_size, prefix="ae", min_epochs=ae_min_epochs)
    audio_uri, keras_uri = registry.log_encoder(encoder, x[:5])
    dataset = mlflow.get_run(featurize_run_id).data.tags.get("dataset", "")
    return registry.register(audio_uri, tags={
        "featurize_run_id": featurize_run_id, "dataset": dataset, **options,
        "keras_model_uri": keras_uri, "pretrain_run_id": mlflow.active_run().info.run_id, "seed": seed})
