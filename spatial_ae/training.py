"""Training loop shared by the auto-encoder, the DNN probe and the CNN: seeded, early-stopped, logged per epoch."""
from __future__ import annotations

import logging
import math

import keras
import mlflow
import numpy as np

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow for one training."""
    keras.utils.set_random_seed(int(seed))


class EpochLogger(keras.callbacks.Callback):
    """Logs every epoch's losses and metrics to the active MLflow run as `<prefix>_epoch_<name>` (step = epoch),
    and a progress line."""

    def __init__(self, prefix: str, max_epochs: int):
        super().__init__()
        self.prefix = prefix
        self.max_epochs = max_epochs

    def on_epoch_end(self, epoch, logs=None):
        values = {f"{self.prefix}_epoch_{name}": float(value) for name, value in (logs or {}).items()}
        if not all(math.isfinite(value) for value in values.values()):
            raise FloatingPointError(
                f"{self.prefix}: a loss became NaN or infinite in epoch {epoch + 1} ({values}); check the features "
                f"for NaN/inf values or lower the learning rate")
        if mlflow.active_run():
            mlflow.log_metrics(values, step=epoch)
        shown = " ".join(f"{name}={value:.4g}" for name, value in sorted(values.items()))
        log.info("%s epoch %d/%d %s", self.prefix, epoch + 1, self.max_epochs, shown)


def fit(model: keras.Model, x, y, validation: tuple, *, epochs: int, patience: int, batch_size: int,
        prefix: str) -> keras.callbacks.History:
    """Fit with early stopping on the validation loss (best weights restored) and per-epoch MLflow logging."""
    stopper = keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)
    history = model.fit(x, y, validation_data=validation, epochs=epochs, batch_size=batch_size, shuffle=True,
                        callbacks=[stopper, EpochLogger(prefix, epochs)], verbose=0)
    epochs_run = len(history.history["loss"])
    best_epoch = int(np.argmin(history.history["val_loss"])) + 1
    if mlflow.active_run():
        mlflow.log_metrics({f"{prefix}_epochs_run": epochs_run, f"{prefix}_best_epoch": best_epoch})
    log.info("%s: %d epochs, best epoch %d", prefix, epochs_run, best_epoch)
    return history
