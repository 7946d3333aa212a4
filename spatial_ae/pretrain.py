"""The pretrain step: train the auto-encoder with the position head on the unlabelled clips, register its encoder."""
from __future__ import annotations

import logging

import keras
import mlflow
import numpy as np

from . import registry, tracking
from .corpus import UNLABELLED
from .featurize import load_feature_set
from .models import build_autoencoder
from .training import fit, seed_everything

log = logging.getLogger(__name__)

VALIDATION_FRACTION = 0.1  # of the unlabelled clips, held out for early stopping


def pretrain(featurize_run_id: str, embedding_dim: int, ae_epochs: int, patience: int, optimizer: str,
             batch_size: int, position_loss_weight: float, seed: int) -> str:
    """Run the pretrain step; returns the registered encoder's `models:/spatial-ae-encoder/N` URI."""
    params = dict(featurize_run_id=featurize_run_id, embedding_dim=embedding_dim, ae_epochs=ae_epochs,
                  patience=patience, optimizer=optimizer, batch_size=batch_size,
                  position_loss_weight=position_loss_weight, seed=seed)
    tracking.check_tracking_server()
    feature_set = load_feature_set(featurize_run_id)
    with tracking.step_run("pretrain", params, run_name=f"pretrain-seed{seed}"):
        return train_and_register(feature_set, **params)


def train_and_register(feature_set, featurize_run_id: str, embedding_dim: int, ae_epochs: int, patience: int,
                       optimizer: str, batch_size: int, position_loss_weight: float, seed: int) -> str:
    """Train an auto-encoder in the active run, log and register its encoder; returns the registered URI."""
    x = feature_set.mfcc[feature_set.indices(UNLABELLED)]
    positions = feature_set.positions.reshape(-1, 1)
    with_position = position_loss_weight > 0
    seed_everything(seed)
    autoencoder, encoder = build_autoencoder(embedding_dim, with_position_head=with_position)
    losses = {"reconstruction": "mse"} | ({"position": "mse"} if with_position else {})
    weights = {"reconstruction": 1.0} | ({"position": position_loss_weight} if with_position else {})
    autoencoder.compile(optimizer=keras.optimizers.get(optimizer), loss=losses, loss_weights=weights)

    order = np.random.default_rng(seed).permutation(len(x))
    n_val = max(1, int(round(VALIDATION_FRACTION * len(x))))
    val, train = order[:n_val], order[n_val:]

    def targets(rows):
        return {"reconstruction": x[rows]} | ({"position": positions[rows]} if with_position else {})

    fit(autoencoder, x[train], targets(train), (x[val], targets(val)), epochs=ae_epochs, patience=patience,
        batch_size=batch_size, prefix="ae")
    audio_uri, keras_uri = registry.log_encoder(encoder, x[:5])
    dataset = mlflow.get_run(featurize_run_id).data.tags.get("dataset", "")
    return registry.register(audio_uri, tags={
        "featurize_run_id": featurize_run_id, "dataset": dataset, "position_loss_weight": position_loss_weight,
        "keras_model_uri": keras_uri, "pretrain_run_id": mlflow.active_run().info.run_id, "seed": seed})
