"""Shapes of the paper's networks, both heads, the plain auto-encoder of the ablation, and the data order
the training loop gives them."""
import logging

import keras
import numpy as np
import pytest
import tensorflow as tf

from spatial_ae.method import speed, training
from spatial_ae.method.models import build_autoencoder, build_dnn_probe, build_mfcc_cnn


def test_spatial_autoencoder_has_both_heads():
    autoencoder, encoder = build_autoencoder(embedding_dim=75)
    x = np.random.default_rng(0).normal(size=(4, 640)).astype("float32")
    outputs = autoencoder.predict(x, verbose=0)
    assert outputs["reconstruction"].shape == (4, 640) and outputs["position"].shape == (4, 1)
    assert encoder.predict(x, verbose=0).shape == (4, 75)
    dense_units = [layer.units for layer in encoder.layers if hasattr(layer, "units")]
    assert dense_units == [300, 150, 75]
    assert autoencoder.get_layer("position_dense_50").units == 50
    assert autoencoder.get_layer("decoder_dense_300").units == 300


def test_plain_autoencoder_has_no_position_head():
    autoencoder, encoder = build_autoencoder(embedding_dim=16, with_position_head=False)
    assert list(autoencoder.output.keys()) == ["reconstruction"]
    assert encoder.output.shape[-1] == 16


def test_classifiers():
    dnn = build_dnn_probe(75, 30)
    assert dnn.layers[1].units == (75 + 30) // 2 and dnn.output.shape[-1] == 30
    cnn = build_mfcc_cnn(30)
    conv = cnn.get_layer("conv")
    assert (conv.filters, conv.kernel_size, conv.strides) == (64, (32,), (2,))
    probabilities = cnn.predict(np.zeros((2, 640), "float32"), verbose=0)
    assert probabilities.shape == (2, 30) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)


def _train_probe(seed: int, x: np.ndarray, y: np.ndarray, optimizer: str) -> keras.Model:
    training.seed_everything(seed)
    model = build_dnn_probe(x.shape[1], 3)
    model.compile(optimizer=training.optimizer(optimizer), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    training.fit(model, x[:48], y[:48], (x[48:], y[48:]), epochs=3, patience=3, batch_size=8, prefix="probe")
    return model


@pytest.mark.parametrize("optimizer", ["Nadam", "Adamax"])
def test_reused_traced_functions_train_exactly_like_a_fresh_model(monkeypatch, optimizer):
    """A fit that reuses an earlier fit's compiled twin ends with the same variables (weights, BatchNormalization
    statistics, dropout generator states) and optimizer state as training a fresh model, and reuses the twin's
    train function."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 12)).astype(np.float32), rng.integers(0, 3, 64)
    monkeypatch.setattr(speed, "REUSE_TRACED", False)
    fresh = _train_probe(1, x, y, optimizer)
    monkeypatch.setattr(speed, "REUSE_TRACED", True)
    monkeypatch.setattr(speed, "_twins", {})
    _train_probe(0, x, y, optimizer)
    (twin,) = speed._twins.values()
    train_function = twin.train_function
    reused = _train_probe(1, x, y, optimizer)
    assert list(speed._twins.values()) == [twin] and twin.train_function is train_function
    assert reused is not twin and twin.optimizer.iterations.numpy() == 3 * 6
    assert len(fresh.variables) == len(reused.variables) > len(fresh.weights)  # seed generator states included
    for expected, found in zip(fresh.variables + fresh.optimizer.variables,
                               reused.variables + reused.optimizer.variables):
        np.testing.assert_array_equal(expected.numpy(), found.numpy(), err_msg=expected.path)


def test_fused_adamax_updates_like_keras_adamax(monkeypatch):
    """The fast path's Adamax (TensorFlow's fused kernel) gives Keras's Adamax update, step by step, up to float32
    rounding; the plain path keeps Keras's own."""
    rng = np.random.default_rng(0)
    start = rng.normal(size=(64, 20)).astype(np.float32)
    gradients = rng.normal(size=(6, 64, 20)).astype(np.float32)
    ends = {}
    for name, optimizer in (("keras", keras.optimizers.Adamax()), ("fused", training.optimizer("Adamax"))):
        variable = keras.Variable(start)
        optimizer.learning_rate = 0.01
        for gradient in gradients:
            optimizer.apply([gradient], [variable])
        ends[name] = [variable.numpy()] + [state.numpy() for state in optimizer.variables]
    assert isinstance(training.optimizer("Adamax"), speed.FusedAdamax)
    assert np.abs(ends["keras"][0] - start).min() > 1e-5  # every weight moved
    for expected, found in zip(ends["keras"], ends["fused"], strict=True):
        np.testing.assert_allclose(found, expected, rtol=1e-5, atol=1e-6)
    monkeypatch.setattr(training, "TRAINING_PATH", "plain")
    assert type(training.optimizer("Adamax")) is keras.optimizers.Adamax


class _BatchRecorder(keras.layers.Layer):
    """Identity layer that records, during training, which rows each batch holds."""

    def __init__(self, seen: list, **kwargs):
        super().__init__(**kwargs)
        self.remember = seen.append  # not the list itself: Keras would track a copy of it

    def call(self, inputs, training=None):
        if not training:
            return inputs

        def record(rows):
            self.remember(rows.numpy()[:, 0].astype(int).tolist())
            return rows

        outputs = tf.py_function(record, [inputs], Tout=inputs.dtype)
        outputs.set_shape(inputs.shape)
        return outputs


def test_training_reshuffles_every_epoch_and_sees_every_row_once():
    """Keras 3's NumPy-array fit with a global seed repeats one order in every epoch (benchmarks/README.md);
    the project's path draws a new order each epoch."""
    rows, epochs = 40, 3
    x = np.arange(rows, dtype=np.float32)[:, None]
    seen = []
    inputs = keras.Input((1,))
    model = keras.Model(inputs, keras.layers.Dense(1)(_BatchRecorder(seen)(inputs)))
    model.compile(optimizer="sgd", loss="mse")
    training.seed_everything(0)
    training.fit(model, x, x, (x[:4], x[:4]), epochs=epochs, patience=epochs, batch_size=8, prefix="probe")
    per_epoch = [sum(seen[epoch * 5:(epoch + 1) * 5], []) for epoch in range(epochs)]
    assert len(seen) == epochs * rows // 8
    assert all(sorted(order) == list(range(rows)) for order in per_epoch)
    assert len({tuple(order) for order in per_epoch}) == epochs


def test_training_pipeline_is_not_autotuned():
    """tf.data's autotuning left the cores idle with two simulation workers (benchmarks/dataset_autotune.py)."""
    dataset = speed._dataset(np.zeros((4, 2)), np.zeros(4), 2, shuffle=True)
    assert dataset.options().autotune.enabled is False
    assert [batch[0].shape[0] for batch in dataset] == [2, 2]


@pytest.mark.parametrize("path", ["fast", "plain"])
def test_early_stopping_waits_for_min_epochs(monkeypatch, path):
    """A validation loss that rises from the first epoch stops the fit after `patience` epochs, but not before
    `min_epochs` (the auto-encoder's `ae_min_epochs`)."""
    monkeypatch.setattr(training, "TRAINING_PATH", path)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = x @ np.ones((4, 1), np.float32)

    def epochs_run(min_epochs: int) -> int:
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
        history = training.fit(model, x, y, (x, -y), epochs=12, patience=1, batch_size=16, prefix="t",
                               min_epochs=min_epochs)
        return len(history.history["loss"])

    assert epochs_run(0) <= 3  # the validation target is the opposite of the training one: it only gets worse
    assert epochs_run(8) >= 9


def test_epoch_lines_are_debug_and_at_most_one_a_minute_info(caplog):
    """Every epoch has a DEBUG line; one comes at INFO once PROGRESS_SECONDS have passed (a long fit shows
    progress at the default level, the workflow's short fits add no lines)."""
    caplog.set_level(logging.DEBUG, logger="spatial_ae")
    logger = training.EpochLogger("ae", max_epochs=3)
    logger.on_epoch_end(0, {"loss": 1.0})
    logger.last_info -= training.EpochLogger.PROGRESS_SECONDS  # a minute went by
    logger.on_epoch_end(1, {"loss": 0.5})
    logger.on_epoch_end(2, {"loss": 0.4})
    lines = [(record.levelname, record.getMessage()) for record in caplog.records if " epoch " in record.getMessage()]
    assert [(level, message.split(" ae_")[0]) for level, message in lines] == [
        ("DEBUG", "ae epoch 1/3"), ("INFO", "ae epoch 2/3"), ("DEBUG", "ae epoch 3/3")]
