"""The speed machinery behind `training.fit`'s default "fast" path: the same training as Keras's plain
`model.fit` (batch size, optimiser, losses, a new shuffle every epoch, callbacks), for less CPU.

- `fit`: float32 inputs in one cached `tf.data` pipeline per fit, reshuffled every epoch and not autotuned;
  validation in batches of at least `VALIDATION_BATCH_SIZE` (the mean loss does not depend on the batch size:
  BatchNormalization and Dropout are in inference mode); `STEPS_PER_EXECUTION` training steps per call of the
  compiled function (the callbacks act per epoch).
- Traced twins (`REUSE_TRACED`): Keras traces a model's train and test functions in its first fit. Within a
  process, a fit of the same architecture and compile settings as an earlier one copies the model's variables
  (weights, random-generator states) and fresh optimizer state into the "twin" compiled then, trains the twin with
  the functions already traced, and copies its final variables and optimizer state back: the same results,
  without tracing again.
- `FusedAdamax`: Keras's Adamax updated by TensorFlow's fused kernel (one pass over each variable instead of a
  dozen element-wise operations); `training.optimizer("Adamax")` gives it on the fast path.

XLA (`jit_compile=True`) is not used: on CPU it compiles for longer than Keras traces and did not make epochs
faster. Measurements of each part: benchmarks/README.md, "Training speed".
"""
from __future__ import annotations

import json
import random

import keras
import numpy as np

VALIDATION_BATCH_SIZE = 1024
STEPS_PER_EXECUTION = 16
REUSE_TRACED = True
MAX_TWINS = 8  # compiled twins kept per process (bounds their memory)
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


def fit(model: keras.Model, x, y, validation: tuple, *, epochs: int, batch_size: int,
        callbacks: list[keras.callbacks.Callback]) -> keras.callbacks.History:
    """`model.fit(x, y, validation_data=validation, epochs, batch_size, shuffle=True, callbacks)`, done faster:
    through a traced twin and `tf.data` pipelines; `model` ends as if it had been trained itself."""
    trainee = _trainee(model)
    if trainee.train_function is None:  # not trained yet: the compiled train function is built by this fit
        trainee.steps_per_execution = STEPS_PER_EXECUTION
    train = _dataset(x, y, batch_size, shuffle=True)
    val = _dataset(*validation, max(batch_size, VALIDATION_BATCH_SIZE), shuffle=False)
    history = trainee.fit(train, validation_data=val, epochs=epochs, shuffle=False, callbacks=callbacks,
                          verbose=0)  # shuffle=False: the dataset reshuffles itself
    if trainee is not model:
        _copy_training_state(trainee, model)
    return history


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

    No prefetching and no tf.data autotuning: a batch is a cheap copy, made in the training thread, and
    autotuning's background threads left the cores idle when two simulation workers share them.
    """
    import tensorflow as tf

    x, y = _as_float32(x), _as_float32(y)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).cache()
    if shuffle:
        dataset = dataset.shuffle(len(x), reshuffle_each_iteration=True)
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.batch(batch_size).with_options(options)
