"""The networks of the paper: the spatial auto-encoder, the DNN probe on embeddings and the MFCC-CNN benchmark;
and CATALOGUE, the classifiers the evaluate step trains and compares."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import keras
from keras import layers

from spatial_ae.data.features import MFCC_DIM
from spatial_ae.names import EMBEDDING_DNN, MFCC_CNN, MFCC_DNN, MODEL_TITLES


def build_autoencoder(embedding_dim: int = 75, with_position_head: bool = True, position_dim: int = 1,
                      input_dim: int = MFCC_DIM, input_normalization: layers.Layer | None = None,
                      ) -> tuple[keras.Model, keras.Model]:
    """The auto-encoder (outputs `reconstruction`, and `position` when asked) and its encoder (input -> embedding).

    640 -> Dense 300, BN, PReLU, Dropout .1 -> Dense 150, BN -> Dense 75 (the embedding);
    reconstruction head: Dense 300, BN, Dropout .1, Dense 640; position head: Dense 50, BN, PReLU, Dense 1.
    `input_normalization` (e.g. a fitted `keras.layers.Normalization`) is applied first, inside the encoder.
    """
    inputs = keras.Input((input_dim,), name="mfcc")
    x = inputs if input_normalization is None else input_normalization(inputs)
    x = layers.Dense(300, name="encoder_dense_300")(x)
    x = layers.BatchNormalization(name="encoder_bn_300")(x)
    x = layers.PReLU(name="encoder_prelu_300")(x)
    x = layers.Dropout(0.1, name="encoder_dropout")(x)
    x = layers.Dense(150, name="encoder_dense_150")(x)
    x = layers.BatchNormalization(name="encoder_bn_150")(x)
    embedding = layers.Dense(embedding_dim, name="embedding")(x)

    r = layers.Dense(300, name="decoder_dense_300")(embedding)
    r = layers.BatchNormalization(name="decoder_bn_300")(r)
    r = layers.Dropout(0.1, name="decoder_dropout")(r)
    outputs = {"reconstruction": layers.Dense(input_dim, name="reconstruction")(r)}
    if with_position_head:
        p = layers.Dense(50, name="position_dense_50")(embedding)
        p = layers.BatchNormalization(name="position_bn_50")(p)
        p = layers.PReLU(name="position_prelu_50")(p)
        outputs["position"] = layers.Dense(position_dim, name="position")(p)
    autoencoder = keras.Model(inputs, outputs, name="spatial_autoencoder" if with_position_head else "autoencoder")
    encoder = keras.Model(inputs, embedding, name="encoder")
    return autoencoder, encoder


def build_dnn_probe(input_dim: int, num_classes: int) -> keras.Model:
    """The paper's classifier on embeddings: Dense (in+out)/2, BN, PReLU, Dropout .1, softmax."""
    inputs = keras.Input((input_dim,), name="embedding")
    x = layers.Dense((input_dim + num_classes) // 2, name="hidden_dense")(inputs)
    x = layers.BatchNormalization(name="hidden_bn")(x)
    x = layers.PReLU(name="hidden_prelu")(x)
    x = layers.Dropout(0.1, name="hidden_dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="word")(x)
    return keras.Model(inputs, outputs, name="dnn_probe")


def build_mfcc_cnn(num_classes: int, input_dim: int = MFCC_DIM) -> keras.Model:
    """The paper's benchmark on the flattened MFCC: Conv1D 64 (kernel 32, stride 2), BN, MaxPool, softmax."""
    inputs = keras.Input((input_dim,), name="mfcc")
    x = layers.Reshape((input_dim, 1), name="as_sequence")(inputs)
    x = layers.Conv1D(64, 32, strides=2, activation="relu", name="conv")(x)
    x = layers.BatchNormalization(name="conv_bn")(x)
    x = layers.MaxPooling1D(name="max_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="word")(x)
    return keras.Model(inputs, outputs, name="mfcc_cnn")


EMBEDDINGS, MFCC = "embeddings", "mfcc"  # what a classifier reads: the encoder's embeddings, or the flattened MFCC


@dataclass(frozen=True)
class ModelSpec:
    """One classifier the evaluate step trains on the labelled sample and tests on the test clips.

    name: its name in spatial_ae.names (the prefix of its metrics), which also gives its title;
    build: `build(input_dim=..., num_classes=...)`, an uncompiled Keras model; optimizer: a spatial_ae.method.training
    optimizer name, a fresh one per training; inputs: EMBEDDINGS or MFCC; standardize: MFCC standardised with the
    statistics of the training clips; epochs: the evaluate setting that bounds its training.
    A model that does not read embeddings is a baseline: it does not depend on the encoder, so an evaluation with
    the same labelled sample reuses it.
    """
    name: str
    build: Callable[..., keras.Model]
    optimizer: str
    inputs: str
    standardize: bool = False
    epochs: str = "dnn_epochs"

    @property
    def title(self) -> str:
        return MODEL_TITLES[self.name]

    @property
    def baseline(self) -> bool:
        return self.inputs != EMBEDDINGS


CATALOGUE = (  # in the order the evaluate step trains them and logs their tables
    ModelSpec(EMBEDDING_DNN, build_dnn_probe, "Nadam", EMBEDDINGS),
    ModelSpec(MFCC_CNN, build_mfcc_cnn, "Adamax", MFCC, epochs="cnn_epochs"),
    ModelSpec(MFCC_DNN, build_dnn_probe, "Nadam", MFCC, standardize=True),
)
