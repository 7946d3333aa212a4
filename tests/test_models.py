"""Shapes of the paper's networks, both heads, and the plain auto-encoder of the ablation."""
import numpy as np

from spatial_ae.models import build_autoencoder, build_dnn_probe, build_mfcc_cnn


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
    conv = next(layer for layer in cnn.layers if layer.name.startswith("conv1d"))
    assert (conv.filters, conv.kernel_size, conv.strides) == (64, (32,), (2,))
    probabilities = cnn.predict(np.zeros((2, 640), "float32"), verbose=0)
    assert probabilities.shape == (2, 30) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
