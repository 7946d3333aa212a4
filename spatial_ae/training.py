"""Training loop shared by the auto-encoder, the DNN probe and the CNN: seeded, early-stopped, logged per epoch.

Two ways to feed `model.fit`, with the same maths (batch size, optimiser, losses, shuffling every epoch,
early stopping on the validation loss with the best weights restored, per-epoch logging):

- `"fast"` (default): float32 inputs, one `tf.data` pipeline per fit (built once, cached, reshuffled every
  epoch, prefetched), validation in batches of `VALIDATION_BATCH_SIZE` (the mean loss does not depend on the
  batch size: BatchNormalization and Dropout are in inference mode) and `STEPS_PER_EXECUTION` training
  steps per call of the compiled function (callbacks only act per epoch here).
- `"plain"`: the straightforward Keras call (NumPy arrays into `model.fit`, validation in batches of
  `batch_size`, no compilation options), kept as the reference for `benchmarks/`. Beware: after
  `keras.utils.set_random_seed`, Keras 3.15 shuffles NumPy arrays once and repeats that order every epoch
  (the fast path reshuffles every epoch; see benchmarks/README.md).

Pick one with the environment variable `SPATIAL_AE_TRAINING=fast|plain` (read at import) or by setting
`spatial_ae.training.TRAINING_PATH` (read at every `fit`). XLA (`jit_compile=True`) is not used: on this
CPU-only machine an auto-encoder epoch took as long with it as without, and compiling took about 3 times
longer than tracing, which every fit pays (see benchmarks/README.md).
"""
from __future__ import annotations

import logging
import math
import os

import keras
import mlflow
import numpy as np

log = logging.getLogger(__name__)

TRAINING_PATHS = ("fast", "plain")
TRAINING_PATH = os.environ.get("SPATIAL_AE_TRAINING", "fast")
VALIDATION_BATCH_SIZE = 1024
STEPS_PER_EXECUTION = 16


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
    if TRAINING_PATH not in TRAINING_PATHS:
        raise ValueError(f"SPATIAL_AE_TRAINING / TRAINING_PATH must be one of {TRAINING_PATHS}, not {TRAINING_PATH!r}")
    stopper = keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)
    callbacks = [stopper, EpochLogger(prefix, epochs)]
    if TRAINING_PATH == "plain":
        history = model.fit(x, y, validation_data=validation, epochs=epochs, batch_size=batch_size, shuffle=True,
                            callbacks=callbacks, verbose=0)
    else:
        if model.train_function is None:  # not trained yet: the compiled train function is built by this fit
            model.steps_per_execution = STEPS_PER_EXECUTION
        train = _dataset(x, y, batch_size, shuffle=True)
        val = _dataset(*validation, max(batch_size, VALIDATION_BATCH_SIZE), shuffle=False)
        history = model.fit(train, validation_data=val, epochs=epochs, shuffle=False, callbacks=callbacks,
                            verbose=0)  # shuffle=False: the dataset reshuffles itself
    epochs_run = len(history.history["loss"])
    best_epoch = int(np.argmin(history.history["val_loss"])) + 1
    if mlflow.active_run():
        mlflow.log_metrics({f"{prefix}_epochs_run": epochs_run, f"{prefix}_best_epoch": best_epoch})
    log.info("%s: %d epochs, best epoch %d", prefix, epochs_run, best_epoch)
    return history


def _as_float32(values):
    """Float arrays (also inside dicts) as float32; other dtypes (integer labels) unchanged."""
    if isinstance(values, dict):
        return {name: _as_float32(value) for name, value in values.items()}
    values = np.asarray(values)
    return values.astype(np.float32, copy=False) if values.dtype.kind == "f" else values


def _dataset(x, y, batch_size: int, shuffle: bool):
    """A cached, batched, prefetched `tf.data` pipeline over (x, y); reshuffled every epoch when `shuffle`."""
    import tensorflow as tf

    x, y = _as_float32(x), _as_float32(y)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).cache()
    if shuffle:
        dataset = dataset.shuffle(len(x), reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
