"""MFCC and mel features equal to per-clip librosa, computed for many clips at once.

Reference (the paper's code, per clip): ``librosa.feature.mfcc(y=clip, sr=16000)``
flattened to 640 values and ``librosa.feature.melspectrogram(y=clip, sr=16000,
n_fft=1025)`` flattened to 4096 values. Here the 32 frames of every clip are cut
with stride tricks, windowed, transformed with ``scipy.fft.rfft`` and multiplied
by the mel and DCT matrices, with the dB floor (80 dB below the maximum) applied
per clip exactly as the per-clip librosa call does.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Sequence

import numpy as np
import scipy.fft
from numpy.lib.stride_tricks import sliding_window_view
from scipy.signal import get_window

from spatial_ae.audio import CLIP_SAMPLES, SAMPLE_RATE, AudioError, load_clip

MFCC_SHAPE = (20, 32)
MEL_SHAPE = (128, 32)
MFCC_DIM = 640
MEL_DIM = 4096

HOP_LENGTH = 512
N_FRAMES = 32
MFCC_N_FFT = 2048  # librosa.feature.mfcc default
MEL_N_FFT = 1025  # the paper's melspectrogram call
N_MELS = 128
TOP_DB = 80.0
AMIN = 1e-10
_CLIPS_PER_BLOCK = 16  # clips transformed together: keeps the frame buffers in cache


@dataclass(frozen=True)
class _Transforms:
    """Windows, transposed mel filterbanks and the DCT matrix."""

    mfcc_window: np.ndarray  # float32 (2048,)
    mfcc_mel: np.ndarray  # float32 (1025, 128)
    mel_window: np.ndarray  # float64 (1025,)
    mel_mel: np.ndarray  # float32 (513, 128)
    dct: np.ndarray  # float64 (128, 20), orthonormal DCT-II


_TRANSFORMS: _Transforms | None = None


def _build_transforms() -> _Transforms:
    import librosa  # only the parent needs librosa; workers receive the matrices

    def dct_matrix(n_in: int, n_out: int) -> np.ndarray:
        """Orthonormal DCT-II as a (n_in, n_out) matrix (scipy's norm='ortho')."""
        k = np.arange(n_out)[None, :]
        m = np.arange(n_in)[:, None]
        matrix = np.sqrt(2.0 / n_in) * np.cos(np.pi * k * (2 * m + 1) / (2 * n_in))
        matrix[:, 0] /= np.sqrt(2.0)
        return matrix

    return _Transforms(
        mfcc_window=get_window("hann", MFCC_N_FFT, fftbins=True).astype(np.float32),
        mfcc_mel=np.ascontiguousarray(librosa.filters.mel(sr=SAMPLE_RATE, n_fft=MFCC_N_FFT).T),
        mel_window=get_window("hann", MEL_N_FFT, fftbins=True),
        mel_mel=np.ascontiguousarray(librosa.filters.mel(sr=SAMPLE_RATE, n_fft=MEL_N_FFT).T),
        dct=dct_matrix(N_MELS, MFCC_SHAPE[0]),
    )


def _transforms() -> _Transforms:
    global _TRANSFORMS
    if _TRANSFORMS is None:
        _TRANSFORMS = _build_transforms()
    return _TRANSFORMS


def _mel_power(clips: np.ndarray, window: np.ndarray, mel_t: np.ndarray) -> np.ndarray:
    """Mel power (n, 32, 128) of centred, zero-padded STFT frames at hop 512.

    The FFT runs in the window's dtype: float64 reproduces librosa's path (float32
    frames times a float64 window, rounded to complex64 afterwards) to float32
    rounding; float32 is faster and differs only far below each frame's peak.
    """
    n_fft = window.size
    pad = n_fft // 2
    padded = np.zeros((clips.shape[0], CLIP_SAMPLES + 2 * pad), dtype=np.float32)
    padded[:, pad:pad + CLIP_SAMPLES] = clips
    frames = sliding_window_view(padded, n_fft, axis=1)[:, ::HOP_LENGTH]  # (n, 32, n_fft) view
    spectrum = scipy.fft.rfft(frames * window, axis=-1)
    parts = spectrum.view(window.dtype)  # re, im interleaved
    np.square(parts, out=parts)
    power = np.add(parts[..., 0::2], parts[..., 1::2], dtype=np.float32)
    return power @ mel_t


def _to_db(power: np.ndarray) -> np.ndarray:
    """librosa.power_to_db(ref=1, amin=1e-10, top_db=80), with the floor per clip (axis 0)."""
    db = np.log10(np.maximum(power, np.float32(AMIN)))
    db *= np.float32(10.0)
    floor = db.max(axis=(1, 2), keepdims=True) - np.float32(TOP_DB)
    return np.maximum(db, floor, out=db)


def _mfcc_block(clips: np.ndarray, t: _Transforms) -> np.ndarray:
    mel = _mel_power(clips, t.mfcc_window, t.mfcc_mel)  # (n, 32, 128)
    # float64 product: a float32 sum of 128 dB values drifts by ~1e-3, scipy's DCT by ~1e-4
    mfcc = _to_db(mel).astype(np.float64) @ t.dct  # (n, 32, 20)
    return mfcc.transpose(0, 2, 1).reshape(len(clips), MFCC_DIM)


def _mel_block(clips: np.ndarray, t: _Transforms) -> np.ndarray:
    mel = _mel_power(clips, t.mel_window, t.mel_mel)  # (n, 32, 128)
    return mel.transpose(0, 2, 1).reshape(len(clips), MEL_DIM)


def _check_clips(clips: np.ndarray) -> np.ndarray:
    clips = np.asarray(clips, dtype=np.float32)
    if clips.ndim != 2 or clips.shape[1] != CLIP_SAMPLES:
        raise ValueError(f"clips must be (n, {CLIP_SAMPLES}) float32, got shape {clips.shape}; "
                         "use spatial_ae.audio.to_clip / load_clip to normalise audio first")
    return clips


def mfcc_and_mel(clips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, 16000) clips -> MFCC (n, 640) and mel power (n, 4096), float32, per-clip semantics."""
    clips = _check_clips(clips)
    t = _transforms()
    mfcc = np.empty((len(clips), MFCC_DIM), dtype=np.float32)
    mel = np.empty((len(clips), MEL_DIM), dtype=np.float32)
    for start in range(0, len(clips), _CLIPS_PER_BLOCK):
        block = clips[start:start + _CLIPS_PER_BLOCK]
        mfcc[start:start + len(block)] = _mfcc_block(block, t)
        mel[start:start + len(block)] = _mel_block(block, t)
    return mfcc, mel


def mfcc_only(clips: np.ndarray) -> np.ndarray:
    """(n, 16000) clips -> MFCC (n, 640) float32, as used by the encoder at inference."""
    clips = _check_clips(clips)
    t = _transforms()
    mfcc = np.empty((len(clips), MFCC_DIM), dtype=np.float32)
    for start in range(0, len(clips), _CLIPS_PER_BLOCK):
        block = clips[start:start + _CLIPS_PER_BLOCK]
        mfcc[start:start + len(block)] = _mfcc_block(block, t)
    return mfcc
