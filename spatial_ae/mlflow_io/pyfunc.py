"""The registered encoder as an MLflow pyfunc: raw audio in, embeddings out, the featurization inside.

Loaded with `mlflow.pyfunc.load_model("models:/spatial-ae-encoder@champion")`, its `predict` takes
- a batch of 16 kHz waveforms: a 2-D float array (clips x samples) or a list of 1-D arrays, or
- WAV paths: a list of strings, or a DataFrame with a `path` column (any sample rate; resampled), only
  when the environment variable SPATIAL_AE_AUDIO_ROOT names the folder they must be in (else refused),
and returns float32 embeddings (clips x embedding_dim). Each clip is padded or trimmed to 1 s.
The Keras encoder inside (flattened 640-d MFCC in) is the artifact `keras_encoder`, for fine-tuning.
`KeywordSpotter` adds a Keras classifier on the embeddings: same inputs, a DataFrame `word`, `confidence` out.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

import mlflow.pyfunc
import numpy as np
from mlflow.exceptions import MlflowException

from spatial_ae.data.audio import MAX_ABS_SAMPLE, SAMPLE_RATE, AudioError, load_clip, to_clip
from spatial_ae.data.features import mfcc_only


AUDIO_ROOT_ENV = "SPATIAL_AE_AUDIO_ROOT"  # the folder served/loaded models may read WAV paths from; unset: none
MAX_CLIPS, MAX_CLIPS_ENV = 1000, "SPATIAL_AE_MAX_CLIPS"  # clips per predict call
CLIPS_PER_CALL = 256  # what our own callers (embed, predict, Spark) send per call: well under MAX_CLIPS
MAX_SAMPLES, MAX_SAMPLES_ENV = 160_000, "SPATIAL_AE_MAX_SAMPLES"  # samples per clip (10 s at 16 kHz)
_PATH_REFUSED = ("clip {path!r}: not an accepted audio file. Fix: pass a WAV file under the folder "
                 "the server allows (" + AUDIO_ROOT_ENV + "), or send the samples instead.")
_PATHS_DISABLED = ("clip {path!r}: this model does not read file paths. Fix: send the samples (a list of "
                   "16 kHz waveforms), or start the server with " + AUDIO_ROOT_ENV + " set to the folder "
                   "of WAV files it may read.")


class InputRefused(MlflowException, AudioError):
    """An input the pyfunc refuses: HTTP 400 when served, with the message only (no stack trace)."""

    def __init__(self, message: str):
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)


def _limit(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit() or int(value) < 1:
        raise InputRefused(f"{name}={value!r} is not a positive integer. Fix: set it to e.g. {default}.")
    return int(value)


def confined_loader(root):
    """A path loader reading only regular files under `root` (after resolving links and `..`).

    Every path outside it, missing, not a regular file or not openable gets the same message, so that
    a client learns nothing about the server's files; WAV-content errors of files under it are reported.
    """
    root = os.path.realpath(root)

    def load(item) -> np.ndarray:
        shown = str(item)
        real = os.path.realpath(os.path.expanduser(shown)) if os.path.isabs(os.path.expanduser(shown)) \
            else os.path.realpath(os.path.join(root, shown))
        try:
            inside = os.path.commonpath([root, real]) == root and os.path.isdir(root)
            regular = inside and stat.S_ISREG(os.stat(real).st_mode) and os.access(real, os.R_OK)
        except (OSError, ValueError):
            regular = False
        if not regular:
            raise InputRefused(_PATH_REFUSED.format(path=shown))
        try:
            return load_clip(real, max_abs=MAX_ABS_SAMPLE)  # beyond it not audio: its embeddings would be NaN
        except AudioError as error:
            if "cannot be read" in str(error) or "not found" in str(error) or "not a regular" in str(error):
                raise InputRefused(_PATH_REFUSED.format(path=shown)) from None
            raise InputRefused(str(error).replace(real, shown)) from None

    return load


def refuse_paths(item) -> np.ndarray:
    raise InputRefused(_PATHS_DISABLED.format(path=str(item)))


def served_path_loader():
    """How the pyfunc reads a path: confined to SPATIAL_AE_AUDIO_ROOT when set, else refused."""
    root = os.environ.get(AUDIO_ROOT_ENV, "").strip()
    return confined_loader(root) if root else refuse_paths


def _waveform(samples, index: int, max_samples: int) -> np.ndarray:
    """One clip from in-memory samples; integer PCM is scaled by its width (int16 / 32768) before any cast."""
    samples = np.asarray(samples)
    if samples.dtype == object or samples.dtype.kind not in "fiub":
        try:
            samples = np.asarray(samples, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputRefused(f"waveform {index}: not numbers (dtype {samples.dtype}). Fix: send each clip "
                               "as a list of float samples in [-1, 1] at 16 kHz.") from None
    if samples.dtype.kind == "u" or samples.dtype.kind == "b":
        raise InputRefused(f"waveform {index}: unsigned or boolean samples ({samples.dtype}). Fix: send float "
                           "samples in [-1, 1] or signed PCM integers (int16).")
    if samples.ndim >= 1 and samples.shape[0] > max_samples:
        raise InputRefused(f"waveform {index}: {samples.shape[0]} samples, more than {max_samples} "
                           f"({MAX_SAMPLES_ENV}). Fix: send clips of 1 s (16000 samples at 16 kHz).")
    try:
        return to_clip(samples, SAMPLE_RATE, f"waveform {index}", max_abs=MAX_ABS_SAMPLE)
    except AudioError as error:
        raise InputRefused(str(error)) from None


def clips_from_input(model_input, load_path=refuse_paths) -> np.ndarray:
    """(n, 16000) float32 clips from waveforms, WAV paths or a DataFrame with a `path` column.

    `load_path` turns a path into a clip: by default paths are refused; the pyfunc passes
    `served_path_loader()` (paths only under SPATIAL_AE_AUDIO_ROOT); trusted in-process code reading the
    user's own files may pass `load_clip`. At most SPATIAL_AE_MAX_CLIPS clips of SPATIAL_AE_MAX_SAMPLES
    samples each, checked before any featurization. Float samples must be finite and within
    +-MAX_ABS_SAMPLE; signed integers are PCM (intN / 2**(N-1)). Raises InputRefused (an AudioError).
    """
    import pandas as pd

    max_clips, max_samples = _limit(MAX_CLIPS_ENV, MAX_CLIPS), _limit(MAX_SAMPLES_ENV, MAX_SAMPLES)
    if isinstance(model_input, pd.DataFrame):
        if "path" in model_input.columns:
            model_input = model_input["path"].tolist()
        elif model_input.shape[1] == 1 and model_input.dtypes.iloc[0] == object:
            model_input = model_input.iloc[:, 0].tolist()
        else:
            model_input = model_input.to_numpy()
    if isinstance(model_input, (str, Path)):
        model_input = [model_input]
    if isinstance(model_input, dict):
        model_input = next(iter(model_input.values()))
    if isinstance(model_input, np.ndarray) and model_input.dtype.kind in "fiub":
        waveforms = model_input[None, :] if model_input.ndim == 1 else model_input
        if len(waveforms) > max_clips:
            raise InputRefused(f"{len(waveforms)} clips in one request, more than {max_clips} "
                               f"({MAX_CLIPS_ENV}). Fix: send them in batches.")
        return np.stack([_waveform(w, i, max_samples) for i, w in enumerate(waveforms)])
    try:
        items = list(model_input)
    except TypeError:
        raise InputRefused(f"unsupported input {type(model_input).__name__}. Fix: send a list of waveforms "
                           "or of WAV paths.") from None
    if len(items) > max_clips:
        raise InputRefused(f"{len(items)} clips in one request, more than {max_clips} ({MAX_CLIPS_ENV}). "
                           "Fix: send them in batches.")
    if not items:
        return np.zeros((0, SAMPLE_RATE), np.float32)
    for i, item in enumerate(items):  # sizes first: nothing is read or featurized for a refused request
        if not isinstance(item, (str, Path)) and np.ndim(item) >= 1 and len(item) > max_samples:
            raise InputRefused(f"waveform {i}: {len(item)} samples, more than {max_samples} "
                               f"({MAX_SAMPLES_ENV}). Fix: send clips of 1 s (16000 samples at 16 kHz).")
    return np.stack([load_path(item) if isinstance(item, (str, Path)) else _waveform(item, i, max_samples)
                     for i, item in enumerate(items)])


class AudioEncoder(mlflow.pyfunc.PythonModel):
    """Raw audio -> MFCC (librosa-equal) -> the Keras encoder -> embeddings."""

    # MLflow would validate inputs against type hints (and warns, at every load, that predict has none): its
    # schemas cannot state "waveforms or paths" and would refuse arrays; clips_from_input checks the inputs instead
    _skip_type_hint_validation = True

    def load_context(self, context):
        import keras

        self.encoder = keras.models.load_model(context.artifacts["keras_encoder"])

    def predict(self, context, model_input, params=None):
        try:
            clips = clips_from_input(model_input, served_path_loader())
        except MlflowException:
            raise
        except (ValueError, TypeError) as error:  # a 400 with the message, not a 500 with a stack trace
            raise InputRefused(f"unsupported input: {error}") from None
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
