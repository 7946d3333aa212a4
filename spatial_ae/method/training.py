"""Training loop shared by the auto-encoder, the DNN probe and the CNN: seeded, early-stopped, logged per epoch.

Two ways to feed `model.fit`, with the same maths (batch size, optimiser, losses, shuffling every epoch,
early stopping on the validation loss with the best weights restored, per-epoch logging):

- `"fast"` (default): float32 inputs, one `tf.data` pipeline per fit (built once, cached, reshuffled every
  epoch, not autotuned), validation in batches of `VALIDATION_BATCH_SIZE` (the mean loss does not depend on the
  batch size: BatchNormalization and Dropout are in inference mode) and `STEPS_PER_EXECUTION` training
  steps per call of the compiled function (callbacks only act per epoch here).
- `"plain"`: the straightforward Keras call (NumPy arrays into `model.fit`, validation in batches of
  `batch_size`, no compilation options), kept as the reference for `benchmarks/`. Beware: after
  `keras.utils.set_random_seed`, Keras 3.15 shuffles NumPy arrays once and repeats that order every epoch
  (the fast path reshuffles every epoch; see benchmarks/README.md).

The fast path also reuses, within a process, the traced training functions of an earlier fit of the same
architecture and compile settings: the model's variables (weights, random-generator states) and fresh optimizer
state are copied into a "twin" compiled in an earlier fit, the twin is trained, and its final variables and
optimizer state are copied back. Tracing Keras's train and test steps costs 3-8 s per fit here (four fits per
simulation); the results are the same as training the model itself (`REUSE_TRACED = False` turns it off).

The fast path also updates Adamax's variables with TensorFlow's fused `ApplyAdaMax` kernel (`FusedAdamax`, the
same update in one pass over each variable instead of Keras's dozen element-wise operations): x1.56 less CPU
per auto-encoder epoch (benchmarks/adamax_kernel.py). Compile with `optimizer(name)` to get it (the plain path
gets Keras's own Adamax).

Pick one with the environment variable `SPATIAL_AE_TRAINING=fast|plain` (read at import) or by setting
`spatial_ae.method.training.TRAINING_PATH` (read at every `fit`). XLA (`jit_compile=True`) is not used: on this
CPU-only machine its steady epochs were no faster (auto-encoder and CNN), and compiling takes longer than
tracing (see benchmarks/README.md).
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import tempfile
import time

import keras
import mlflow
import numpy as np

from spatial_ae import lifecycle

log = logging.getLogger(__name__)

TRAINING_PATHS = ("fast", "plain")
TRAINING_PATH = os.environ.get("SPATIAL_AE_TRAINING", "fast")
VALIDATION_BATCH_SIZE = 1024
STEPS_PER_EXECUTION = 16
REUSE_TRACED = True
TENSORBOARD_VARIABLE = "SPATIAL_AE_TENSORBOARD"  # "1": TensorBoard logs of every fit (the tensorboard parameter)
MAX_TWINS = 8  # compiled twins kept per process (a few MB each)
_twins: dict[str, keras.Model] = {}


@keras.saving.register_keras_serializable(package="spatial_ae")
class FusedAdamax(keras.optimizers.Adamax):
    """Keras's Adamax whose update is TensorFlow's fused `ResourceApplyAdaMax` kernel: m += (g - m)(1 - beta_1),
    u = max(beta_2 u, |g|), w -= lr / (1 - beta_1^t) * m / (u + epsilon): Keras's update up to rounding."""

    def update_step(self, gradient, variable, learning_rate):
        import tensorflow as tf

        if isinstance(gradient, tf.IndexedSlices):  # no fused sparse kernel: Keras's own update
            return super().update_step(gradient, variable, learning_rate)
        index = self._get_variable_index(variable)
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        tf.raw_ops.ResourceApplyAdaMax(
            var=variable.handle, m=self._m[index].handle, v=self._u[index].handle,
            beta1_power=tf.pow(tf.cast(self.beta_1, dtype), step), lr=tf.cast(learning_rate, dtype),
            beta1=tf.cast(self.beta_1, dtype), beta2=tf.cast(self.beta_2, dtype),
            epsilon=tf.cast(self.epsilon, dtype), grad=tf.cast(gradient, dtype))


def optimizer(name: str) -> keras.optimizers.Optimizer:
    """A fresh Keras optimizer by name ("Adamax", "Nadam", ...); Adamax is `FusedAdamax` on the fast path."""
    if name.lower() == "adamax" and TRAINING_PATH == "fast":
        return FusedAdamax()
    return keras.optimizers.get(name)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow for one training."""
    keras.utils.set_random_seed(int(seed))


class EpochLogger(keras.callbacks.Callback):
    """Logs every epoch's losses and metrics to the active MLflow run as `<prefix>_epoch_<name>` (step = epoch),
    and a line: DEBUG (SPATIAL_AE_LOG_LEVEL=DEBUG shows them), INFO at most every PROGRESS_SECONDS (a long fit shows
    progress, a short one adds no lines); once the step is interrupted, ends the fit at the next batch or epoch
    boundary (the signal's exception waits outside Keras: see `interruptions`)."""

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
    if TRAINING_PATH not in TRAINING_PATHS:
        raise ValueError(f"SPATIAL_AE_TRAINING / TRAINING_PATH must be one of {TRAINING_PATHS}, not {TRAINING_PATH!r}")
    stopper = keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True,
                                            start_from_epoch=min_epochs)
    board = _tensorboard()
    callbacks = [stopper, EpochLogger(prefix, epochs), *board]
    if TRAINING_PATH == "plain":
        trainee = model
        history = model.fit(x, y, validation_data=validation, epochs=epochs, batch_size=batch_size, shuffle=True,
                            callbacks=callbacks, verbose=0)
    else:
        trainee = _trainee(model)
        if trainee.train_function is None:  # not trained yet: the compiled train function is built by this fit
            trainee.steps_per_execution = STEPS_PER_EXECUTION
        train = _dataset(x, y, batch_size, shuffle=True)
        val = _dataset(*validation, max(batch_size, VALIDATION_BATCH_SIZE), shuffle=False)
        history = trainee.fit(train, validation_data=val, epochs=epochs, shuffle=False, callbacks=callbacks,
                              verbose=0)  # shuffle=False: the dataset reshuffles itself
    for callback in board:
        mlflow.log_artifacts(callback.log_dir, f"tensorboard/{prefix}")
        shutil.rmtree(callback.log_dir, ignore_errors=True)
    lifecycle.stop_if_interrupted()  # EpochLogger ended the fit early: the step stops here
    if trainee is not model:  # the model ends as if trained itself
        _copy_training_state(trainee, model)
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


def _trainee(model: keras.Model) -> keras.Model:
    """The model to train: with `REUSE_TRACED`, this process's compiled twin of `model` (same architecture and
    compile settings, created on first use) holding `model`'s training state, so that Keras's functions traced
    in the twin's earlier fits are reused; `model` itself when reuse is off or its layers cannot be rebuilt."""
    if not REUSE_TRACED:
        return model
    config, compile_config = model.get_config(), model.get_compile_config()
    optimizer_config = dict(compile_config["optimizer"]["config"], name=None)  # "adamax_3": numbered per instance
    key = json.dumps([config, compile_config | {"optimizer": optimizer_config}], sort_keys=True, default=str)
    twin = _twins.pop(key, None)
    if twin is None:
        python_random = random.getstate()  # building the twin draws default seeds: leave the caller's RNG as it was
        try:
            twin = model.__class__.from_config(config)
            twin.compile_from_config(compile_config)
        except (TypeError, ValueError):  # e.g. a custom layer without a complete get_config
            return model
        finally:
            random.setstate(python_random)
    _twins[key] = twin  # most recently used last
    while len(_twins) > MAX_TWINS:
        _twins.pop(next(iter(_twins)))
    _copy_training_state(model, twin)
    return twin


def _copy_training_state(source: keras.Model, target: keras.Model) -> None:
    """Copy the variables (weights, normalisation statistics, random-generator states) and the optimizer state
    (fresh when `source` is untrained); both optimizers are built first, as Keras's fit does."""
    for model in (source, target):
        model.optimizer.build(model.trainable_variables)
    sources = source.variables + source.optimizer.variables
    targets = target.variables + target.optimizer.variables
    if len(sources) != len(targets) or any(s.shape != t.shape for s, t in zip(sources, targets)):
        raise RuntimeError("training twin does not match its model's variables")
    for value, variable in zip(sources, targets):
        variable.assign(value)


def _as_float32(values):
    """Float arrays (also inside dicts) as float32; other dtypes (integer labels) unchanged."""
    if isinstance(values, dict):
        return {name: _as_float32(value) for name, value in values.items()}
    values = np.asarray(values)
    return values.astype(np.float32, copy=False) if values.dtype.kind == "f" else values


def _dataset(x, y, batch_size: int, shuffle: bool):
    """A cached, batched `tf.data` pipeline over (x, y), reshuffled every epoch when `shuffle`.

    No prefetching and no tf.data autotuning: a batch of 32 rows is a cheap copy, made in the training thread;
    with autotuning on, two worker processes left ~17 % of the two cores idle (benchmarks/README.md).
    """
    import tensorflow as tf

    x, y = _as_float32(x), _as_float32(y)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).cache()
    if shuffle:
        dataset = dataset.shuffle(len(x), reshuffle_each_iteration=True)
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.batch(batch_size).with_options(options)
