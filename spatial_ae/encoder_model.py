"""The registered encoder as an MLflow pyfunc: raw audio in, embeddings out, the featurization inside.

Loaded with `mlflow.pyfunc.load_model("models:/spatial-ae-encoder@champion")`, its `predict` takes
- a batch of 16 kHz waveforms: a 2-D float array (clips x samples) or a list of 1-D arrays, or
- WAV paths: a list of strings, or a DataFrame with a `path` column (any sample rate; resampled),
and returns float32 embeddings (clips x embedding_dim). Each clip is padded or trimmed to 1 s.
The Keras encoder inside (flattened 640-d MFCC in) is the artifact `keras_encoder`, for fine-tuning.
`KeywordSpotter` adds a Keras classifier on the embeddings: same inputs, a DataFrame `word`, `confidence` out.
"""
from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import numpy as np

from .audio import SAMPLE_RATE, load_clip, to_clip
from .features import mfcc_only


def clips_from_input(model_input) -> np.ndarray:
    """(n, 16000) float32 clips from waveforms, WAV paths or a DataFrame with a `path` column."""
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        if "path" in model_input.columns:
            model_input = model_input["path"].tolist()
        elif model_input.shape[1] == 1 and model_input.dtypes.iloc[0] == object:
            model_input = model_input.iloc[:, 0].tolist()
        else:
            model_input = model_input.to_numpy(dtype=np.float32)
    if isinstance(model_input, (str, Path)):
        model_input = [model_input]
    if isinstance(model_input, dict):
        model_input = next(iter(model_input.values()))
    if isinstance(model_input, np.ndarray) and model_input.dtype.kind in "fiu":
        waveforms = model_input[None, :] if model_input.ndim == 1 else model_input
        return np.stack([to_clip(np.asarray(w, dtype=np.float32), SAMPLE_RATE, f"waveform {i}")
                         for i, w in enumerate(waveforms)])
    items = list(model_input)
    if not items:
        return np.zeros((0, SAMPLE_RATE), np.float32)
    return np.stack([load_clip(item) if isinstance(item, (str, Path))
                     else to_clip(np.asarray(item, dtype=np.float32), SAMPLE_RATE, f"waveform {i}")
                     for i, item in enumerate(items)])


class AudioEncoder(mlflow.pyfunc.PythonModel):
    """Raw audio -> MFCC (librosa-equal) -> the Keras encoder -> embeddings."""

    def load_context(self, context):
        import keras

        self.encoder = keras.models.load_model(context.artifacts["keras_encoder"])

    def predict(self, context, model_input, params=None):
        clips = clips_from_input(model_input)
        if len(clips) == 0:
            return np.zeros((0, self.encoder.output_shape[-1]), np.float32)
        return np.asarray(self.encoder.predict(mfcc_only(clips), verbose=0), dtype=np.float32)


class KeywordSpotter(AudioEncoder):
    """Raw audio -> embeddings (as AudioEncoder) -> the Keras classifier -> DataFrame with `word`, `confidence`."""

    def load_context(self, context):
        import json

        import keras

        super().load_context(context)
        self.classifier = keras.models.load_model(context.artifacts["keras_classifier"])
        self.words = json.loads(Path(context.artifacts["words"]).read_text())

    def predict(self, context, model_input, params=None):
        import pandas as pd

        embeddings = super().predict(context, model_input, params)
        probabilities = (self.classifier.predict(embeddings, verbose=0) if len(embeddings)
                         else np.zeros((0, len(self.words)), np.float32))
        best = np.argmax(probabilities, axis=1)
        return pd.DataFrame({"word": np.asarray(self.words, dtype=object)[best],
                             "confidence": probabilities[np.arange(len(best)), best].astype(float)})
