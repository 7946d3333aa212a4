"""Training loop shared by the auto-encoder, the DNN probe and the CNN: seeded, early-stopped, logged per epoch.

`fit` trains on one of two paths, with the same maths (batch size, optimiser, losses, shuffling every epoch,
early stopping on the validation loss with the best weights restored, per-epoch logging):

- `"fast"` (default): `speed.fit`, the same training for less CPU, and `speed.FusedAdamax` for Adamax;
- `"plain"`: the straightforward Keras call (NumPy arrays into `model.fit`, Keras's optimizers), the reference for
  `benchmarks/`. After `keras.utils.set_random_seed`, Keras shuffles NumPy arrays once and repeats that order every
  epoch (the fast path reshuffles every epoch).

Pick one with the environment variable `SPATIAL_AE_TRAINING=fast|plain` (read at import) or by setting
`spatial_ae.method.training.TRAINING_PATH` (read at every `fit` and `optimizer`).
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time

import keras
import mlflow
import numpy as np

from spatial_ae import lifecycle
from spatial_ae.method import speed
from spatial_ae.names import TENSORBOARD_VARIABLE

log = logging.getLogger(__name__)

TRAINING_PATHS = ("fast", "plain")
TRAINING_PATH = os.environ.get("SPATIAL_AE_TRAINING", "fast")


def _fast_path() -> bool:
    """True when `TRAINING_PATH` is "fast" (train through `speed`), False when "plain"; any other value is refused."""
    if TRAINING_PATH not in TRAINING_PATHS:
        raise ValueError(f"SPATIAL_AE_TRAINING / TRAINING_PATH must be one of {TRAINING_PATHS}, not {TRAINING_PATH!r}")
    return TRAINING_PATH == "fast"


def optimizer(name: str) -> keras.optimizers.Optimizer:
    """A fresh Keras optimizer by name ("Adamax", "Nadam", ...); Adamax is `speed.FusedAdamax` on the fast path."""
    if name.lower() == "adamax" and _fast_path():
        return speed.FusedAdamax()
    return keras.optimizers.get(name)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow for one training."""
    keras.utils.set_random_seed(int(seed))


class EpochLogger(keras.callbacks.Callback):
    """Logs every epoch's losses and metrics to the active MLflow run as `<prefix>_epoch_<name>` (step = epoch),
    and a line: DEBUG (SPATIAL_AE_LOG_LEVEL=DEBUG shows them), INFO at most every PROGRESS_SECONDS (a long fit shows
    progress, a short one adds no lines); once the step is interrupted, ends the fit at the next batch or epoch
    boundary (the signal's exception waits outside Keras: see `lifecycle`)."""

    PROGRESS_SECONDS = 60

    def __init__(self, prefix: str, max_epochs: int):
        super().__init__()
        self.prefix = prefix
        self.max_epochs = max_epochs
        self.last_info = time.monotonic()  # made just before its fit

    def on_epoch_end(self, epoch, logs=None):
        values = {f"{self.prefix}_epoch_{name}": float(value) for name, value in (logs or {}).items()}
        if not all(math.isfinite(value) for value in values.values()):
            raise FloatingPointError(
                f"{self.prefix}: a loss became NaN or infinite in epoch {epoch + 1} ({values}); check the features "
                f"for NaN/inf values or lower the learning rate")
        if mlflow.active_run():
            mlflow.log_metrics(values, step=epoch)
        shown = " ".join(f"{name}={value:.4g}" for name, value in sorted(values.items()))
        level = logging.INFO if time.monotonic() - self.last_info >= self.PROGRESS_SECONDS else logging.DEBUG
        if level == logging.INFO:
            self.last_info = time.monotonic()
        log.log(level, "%s epoch %d/%d %s", self.prefix, epoch + 1, self.max_epochs, shown)
        self._stop_if_interrupted()

    def on_train_batch_begin(self, batch, logs=None):  # not _end: Keras would then wait for each batch's logs
        self._stop_if_interrupted()

    def _stop_if_interrupted(self):
        if lifecycle.received():
            self.model.stop_training = True


def fit(model: keras.Model, x, y, validation: tuple, *, epochs: int, patience: int, batch_size: int,
        prefix: str, min_epochs: int = 0) -> keras.callbacks.History:
    """Fit with early stopping on the validation loss (best weights restored; not before `min_epochs`) and
    per-epoch MLflow logging."""
    fast = _fast_path()
    stopper = keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True,
                                            start_from_epoch=min_epochs)
    board = _tensorboard()
    callbacks = [stopper, EpochLogger(prefix, epochs), *board]
    if fast:
        history = speed.fit(model, x, y, validation, epochs=epochs, batch_size=batch_size, callbacks=callbacks)
    else:
        history = model.fit(x, y, validation_data=validation, epochs=epochs, batch_size=batch_size, shuffle=True,
                            callbacks=callbacks, verbose=0)
    for callback in board:
        mlflow.log_artifacts(callback.log_dir, f"tensorboard/{prefix}")
        shutil.rmtree(callback.log_dir, ignore_errors=True)
    lifecycle.stop_if_interrupted()  # EpochLogger ended the fit early: the step stops here
    epochs_run = len(history.history["loss"])
    best_epoch = int(np.argmin(history.history["val_loss"])) + 1
    if mlflow.active_run():
        mlflow.log_metrics({f"{prefix}_epochs_run": epochs_run, f"{prefix}_best_epoch": best_epoch})
    log.info("%s: %d epochs, best epoch %d", prefix, epochs_run, best_epoch)
    return history


def _tensorboard() -> list[keras.callbacks.Callback]:
    """[a TensorBoard callback writing to a new temporary folder] when SPATIAL_AE_TENSORBOARD is 1 and a run is
    active (fit logs the folder to the run as tensorboard/<prefix>/ and removes it), else []."""
    if os.environ.get(TENSORBOARD_VARIABLE) != "1" or not mlflow.active_run():
        return []
    return [keras.callbacks.TensorBoard(tempfile.mkdtemp(prefix="spatial_ae-tensorboard-"), write_graph=False)]
